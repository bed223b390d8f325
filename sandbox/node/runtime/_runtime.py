"""The subresources as the API server calls them: one method a subresource.

``APIServer._pod_runtime`` authorizes a request, fetches the pod and calls the method of
:class:`PodRuntime` named after the subresource with the aiohttp request and the Pod object.
log, exec, port-forward and proxy are served by their modules; attach, eviction and
ephemeral containers are refused here with errors that say what to use instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.apiserver import errors
from sandbox.node.runtime._exec import serve_exec
from sandbox.node.runtime._logs import FOLLOW_INTERVAL, serve_log
from sandbox.node.runtime._pods import pod_name, stream_container
from sandbox.node.runtime._portforward import serve_portforward
from sandbox.node.runtime._proxy import serve_proxy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sandbox.node.runtime._pods import Containers


class PodRuntime:
    """The pod subresources a kubelet serves, for :class:`~sandbox.apiserver.server.APIServer`.

    Args:
        containers: what the node knows about its containers.
        follow_interval: how often a followed log looks for more output.
    """

    def __init__(self, containers: Containers, *, follow_interval: float = FOLLOW_INTERVAL):
        self.containers = containers
        self.follow_interval = follow_interval

    async def log(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``GET pods/NAME/log``: the container's output as text, followed if asked."""
        return await serve_log(http, pod, self.containers, self.follow_interval)

    async def exec(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/exec``: run a command in a container over the remote-command
        protocol."""
        return await serve_exec(http, pod, self.containers)

    async def portforward(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/portforward``: TCP to the pod's ports over the port-forward protocol."""
        return await serve_portforward(http, pod, self._network_namespace(pod))

    def _network_namespace(self, pod: Mapping[str, Any]) -> str | None:
        """The pod's network namespace, through any of its running containers."""
        for container in pod.get("spec", {}).get("containers", []):
            pid = self.containers.container_pid(pod, container.get("name", ""))
            if pid is not None:
                return f"/proc/{pid}/ns/net"
        return None

    async def proxy(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]``: one plain HTTP request to the pod."""
        return await serve_proxy(http, pod)

    # -- refused ------------------------------------------------------------------------------

    async def attach(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/attach``: not supported (containers' stdin is not kept open)."""
        stream_container(pod, http.query.get("container", ""))
        raise errors.bad_request(
            "attach is not supported by the sandbox: use kubectl exec, or kubectl logs -f for "
            "the container's output"
        )

    async def eviction(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/eviction``: not supported here (it is the API server's to implement)."""
        raise errors.bad_request(
            f"eviction is not supported by the sandbox: delete the pod instead "
            f"(kubectl delete pod {pod_name(pod)})"
        )

    async def ephemeral(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/ephemeralcontainers``: reading works (it is the pod), changes do not."""
        if http.method == "GET":
            return web.json_response(pod)
        raise errors.bad_request("ephemeral containers are not supported by the sandbox")
