"""One cluster, as the kubeconfig's user: the client's Kubernetes adapter.

:class:`Kube` owns kubernetes-asyncio's two clients for one loaded kubeconfig context: the
plain ``ApiClient`` for requests, and the ``WsApiClient`` whose requests upgrade to
WebSockets (port-forwards). Both are aiohttp sessions, so they run on asyncio only, and both
are closed when :meth:`Kube.open` exits, shielded from cancellation.

Objects are read as plain JSON dictionaries (``_preload_content=False``): a few fields (a
pod's name, conditions and ports; a Deployment's status) are all that is needed, and building
kubernetes-asyncio's models for every object listed would cost more than the request. Changes
are noticed with watches that only wake the caller up (:meth:`Kube.next_change`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import anyio
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.stream import WsApiClient

from telepresence.kube._config import load_config
from telepresence.kube._errors import ClusterUnreachable, Forbidden, KubeError
from telepresence.kube._pods import named_ports, newest_ready_pod
from telepresence.kube._portforward import open_port_forward

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from telepresence.kube._config import KubeTarget, LoadedConfig
    from telepresence.kube._portforward import PortForwardStream

__all__ = ["WATCH_SECONDS", "Kube", "Watch"]

type Object = dict[str, Any]

#: Seconds a watch stays open before the server ends it (and the caller reads again).
WATCH_SECONDS = 30
#: The request timeout of reads; the caller's cancel scope usually ends a wait first.
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
_WATCH_TIMEOUT = aiohttp.ClientTimeout(sock_connect=30, sock_read=WATCH_SECONDS + 30)


@dataclass(frozen=True, slots=True)
class Watch:
    """A watch for :meth:`Kube.next_change`: a collection, the resource version to start
    after, and its selectors."""

    path: str
    version: str
    field_selector: str = ""
    label_selector: str = ""


class Kube:
    """One cluster, as the kubeconfig's user.

    Get one with :meth:`open`; the constructor takes clients that :meth:`open` made.
    """

    def __init__(
        self, config: LoadedConfig, api: k8s_client.ApiClient, ws_api: WsApiClient
    ) -> None:
        self._config = config
        self._api = api
        self._ws_api = ws_api

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, target: KubeTarget) -> AsyncIterator[Self]:
        """Load the target's kubeconfig context (or, in a pod, the in-cluster configuration)
        and keep the clients open until the block ends.

        Raises:
            ClusterUnreachable: The kubeconfig is missing or malformed, or names no such
                context.
        """
        loaded = await load_config(target)
        # Every port-forward holds a connection of its own for as long as it lasts: aiohttp's
        # default limit of 100 connections would make the 101st wait without a word.
        loaded.configuration.connection_pool_maxsize = 0  # no limit
        async with contextlib.AsyncExitStack() as clients:
            api = k8s_client.ApiClient(loaded.configuration)
            clients.push_async_callback(_close, api)
            ws_api = WsApiClient(loaded.configuration)
            clients.push_async_callback(_close, ws_api)
            yield cls(loaded, api, ws_api)

    @property
    def bearer_token(self) -> str | None:
        """The kubeconfig user's bearer token (a static token, an exec plugin's, or the
        service account's as last read), or None when the user authenticates otherwise (a
        client certificate, a password)."""
        configuration = self._config.configuration
        for key in ("BearerToken", "authorization"):  # the second in older kubernetes-asyncio
            value = configuration.api_key.get(key)
            if not value:
                continue
            prefix = configuration.api_key_prefix.get(key)
            scheme, _, token = (f"{prefix} {value}" if prefix else str(value)).partition(" ")
            if scheme.lower() != "bearer":
                return None  # "Basic ...": a user name and password
            return token.strip() or None
        return None

    @property
    def namespace(self) -> str:
        """The context's namespace; ``default`` when it names none."""
        return self._config.namespace

    async def ready_pod(
        self, namespace: str, label_selector: str
    ) -> tuple[str, dict[str, int]] | None:
        """The newest Ready pod (not being deleted) that ``label_selector`` picks in
        ``namespace``: its name and its containers' named ports ``{name: containerPort}``;
        None when none is Ready.

        Raises:
            ClusterUnreachable: The API server cannot be reached.
            KubeError: The API server refused to list the pods.
        """
        pods, _ = await self.collection(
            f"/api/v1/namespaces/{namespace}/pods", label_selector=label_selector
        )
        pod = newest_ready_pod(pods)
        if pod is None:
            return None
        return str(pod["metadata"]["name"]), named_ports(pod)

    async def port_forward(self, namespace: str, pod: str, port: int) -> PortForwardStream:
        """A connection to ``port`` of pod ``namespace/pod`` through the API server.

        Raises:
            PortForwardError: The API server refused (the user may not port-forward there,
                there is no such pod).
            ClusterUnreachable: The API server cannot be reached.
        """
        return await open_port_forward(self._ws_api, namespace, pod, port)

    async def get(self, path: str) -> Object | None:
        """The object at ``path`` as JSON, or None when there is none.

        Raises:
            ClusterUnreachable: The API server cannot be reached.
            KubeError: The API server refused to show it.
        """
        status, body = await self._json(path, [])
        if status == 404:
            return None
        return _checked(status, body, path)

    async def collection(self, path: str, *, label_selector: str = "") -> tuple[list[Object], str]:
        """The objects of the collection at ``path``, and the resource version to watch it
        from.

        Raises:
            ClusterUnreachable: The API server cannot be reached.
            KubeError: The API server refused to list it.
        """
        query = [("labelSelector", label_selector)] if label_selector else []
        status, body = await self._json(path, query)
        listed = _checked(status, body, path)
        version = (listed.get("metadata") or {}).get("resourceVersion") or ""
        return list(listed.get("items") or []), str(version)

    async def text(self, path: str, query: list[tuple[str, str]] | None = None) -> str:
        """The plain-text body at ``path`` (a pod's log, say).

        Raises:
            ClusterUnreachable: The API server cannot be reached.
            KubeError: The API server refused (the message is its own).
        """
        status, body = await self._json(path, query or [])
        if status >= 400:
            _checked(status, body, path)  # raises with the API server's message
        return body.decode(errors="replace")

    async def next_change(self, *watches: Watch) -> None:
        """Return at the first event of any of ``watches``, or as soon as one of them ends or
        fails: the caller reads again either way, so a watch is only a wake-up call (one that
        expired, ``410 Gone``, also leads to the next read).

        Raises:
            ClusterUnreachable: The API server cannot be reached.
        """
        async with anyio.create_task_group() as tasks:

            async def watch(spec: Watch) -> None:
                query = [
                    ("watch", "true"),
                    ("resourceVersion", spec.version),
                    ("timeoutSeconds", str(WATCH_SECONDS)),
                ]
                if spec.field_selector:
                    query.append(("fieldSelector", spec.field_selector))
                if spec.label_selector:
                    query.append(("labelSelector", spec.label_selector))
                response = await self._send(spec.path, query, _WATCH_TIMEOUT)
                try:
                    # The first bytes of an event, of an error, or the end of the watch.
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        await response.content.readany()
                finally:
                    _abandon(response)
                tasks.cancel_scope.cancel()

            for spec in watches:
                tasks.start_soon(watch, spec, name=f"watch {spec.path}")

    async def _json(self, path: str, query: list[tuple[str, str]]) -> tuple[int, bytes]:
        response = await self._send(path, query, _REQUEST_TIMEOUT)
        try:
            return response.status, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise ClusterUnreachable(f"the API server's answer broke off: {error}") from error
        finally:
            response.release()

    async def _send(
        self, path: str, query: list[tuple[str, str]], deadline: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=deadline,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise ClusterUnreachable(
                f"cannot reach the cluster's API server: {error or type(error).__name__}"
            ) from error
        return response


def _checked(status: int, body: bytes, path: str) -> Object:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if status >= 400 or not isinstance(parsed, dict):
        message = parsed.get("message") if isinstance(parsed, dict) else None
        kind = Forbidden if status == 403 else KubeError
        raise kind(f"the API server refused to read {path}: {message or status}")
    return parsed


def _abandon(response: aiohttp.ClientResponse) -> None:
    """Drop a watch's connection at once. Closing it politely would send TLS close_notify and
    keep the socket until the API server answers, which it may never get to do before the
    event loop is gone; Python < 3.12.8 then never closes that socket (CPython gh-118960)."""
    connection = response.connection
    if connection is not None and connection.transport is not None:
        connection.transport.abort()
    response.close()


async def _close(client: k8s_client.ApiClient) -> None:
    # Shielded: a caller whose time ran out is a cancelled scope, in which an unshielded
    # close would be cancelled at once and leave the connections open.
    with anyio.CancelScope(shield=True):
        await client.close()
