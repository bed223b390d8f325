"""``telepresence.kube`` end to end through the sandbox's API server.

The API server runs in-process with a pod runtime but no kubelet: the tests write the pods'
status themselves (IP 127.0.0.1, Ready or not), and a pod's "port" is a server the test runs
on loopback, which the API server dials for each port-forward. The client side is what the
daemons use: :class:`~telepresence.kube.Kube` on a kubeconfig, its port-forward streams, and
:func:`~telepresence.kube.serve_port_forward` behind a unix socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
import yaml
from kubernetes_asyncio import client, config

from sandbox.node.runtime import PodRuntime
from telepresence.kube import (
    ClusterUnreachable,
    Kube,
    KubeTarget,
    PortForwardError,
    serve_port_forward,
)
from tests.telepresence.conftest import client_sockets_to

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from pathlib import Path

    from anyio.abc import SocketStream

    from sandbox.apiserver.run import Running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MIB = 1024 * 1024
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
DEVELOPER = "sandbox-developer"
RBAC = "rbac.authorization.k8s.io"
type Handler = Callable[[SocketStream], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    # The API server is an aiohttp application, and kubernetes-asyncio runs on asyncio only.
    return "asyncio"


class _NoContainers:
    """The kubelet's view of its containers, which port-forward does not ask for."""

    def container_pid(self, pod: Mapping[str, Any], container: str) -> int | None:
        return None

    def log_file(self, pod: Mapping[str, Any], container: str, *, previous: bool = False) -> None:
        return None

    def is_running(self, pod: Mapping[str, Any], container: str) -> bool:
        return False


@dataclass
class Pods:
    """The API server, what the test does there as the admin, and the pods' servers."""

    running: Running
    api: client.ApiClient
    servers: anyio.abc.TaskGroup

    @property
    def kubeconfig(self) -> str:
        return str(self.running.kubeconfig)

    @property
    def core(self) -> Any:  # kubernetes-asyncio types its bodies as models; dicts go as they are
        return client.CoreV1Api(self.api)

    async def create(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        ready: bool = True,
        ports: Mapping[str, int] | None = None,
        deleting: bool = False,
    ) -> str:
        """A running pod whose IP is loopback, Ready or not, being deleted or not; its UID."""
        container: dict[str, Any] = {"name": "app", "image": "sandbox/echo"}
        if ports:
            container["ports"] = [
                *({"name": port, "containerPort": number} for port, number in ports.items()),
                {"containerPort": 9999},  # unnamed: not reported
            ]
        metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
        if deleting:
            metadata["finalizers"] = ["example.com/keep"]  # it stays, being deleted
        created = await self.core.create_namespaced_pod(
            "default", {"metadata": metadata, "spec": {"containers": [container]}}
        )
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        await self.core.patch_namespaced_pod_status(
            name, "default", {"status": status}, **MERGE_PATCH
        )
        if deleting:
            await self.core.delete_namespaced_pod(name, "default")
        return str(created.metadata.uid)

    async def listen(self, handler: Handler) -> int:
        """Serve ``handler`` on a loopback port until the test ends; the port."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.servers.start_soon(_serve, listener, handler)
        return int(listener.extra(anyio.abc.SocketAttribute.local_port))


async def _serve(listener: anyio.abc.Listener[SocketStream], handler: Handler) -> None:
    async with listener:
        await listener.serve(handler)


async def _closed_port() -> int:
    """A loopback port nothing listens on."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.aclose()
    return port


@pytest.fixture
async def pods(apiserver: Running) -> AsyncIterator[Pods]:
    # serve() takes no runtime in the apiserver fixture; the server reads it per request.
    apiserver.server.pod_runtime = PodRuntime(_NoContainers())
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(apiserver.kubeconfig),
        client_configuration=configuration,
        persist_config=False,
    )
    async with client.ApiClient(configuration) as api, anyio.create_task_group() as servers:
        yield Pods(apiserver, api, servers)
        servers.cancel_scope.cancel()


@pytest.fixture
async def kube(pods: Pods) -> AsyncIterator[Kube]:
    async with Kube.open(KubeTarget(kubeconfig=pods.kubeconfig)) as opened:
        yield opened


async def _greet_and_close(stream: SocketStream) -> None:
    async with stream:
        await stream.send(b"hello from the pod")


async def _echo(stream: SocketStream) -> None:
    """Answer each read with its bytes, upper-cased, until the client's end."""
    async with stream:
        async for data in stream:
            await stream.send(data.upper())


# -- the stream ---------------------------------------------------------------------------------


async def test_bytes_cross_both_ways_at_once_and_reads_honour_max_bytes(
    pods: Pods, kube: Kube
) -> None:
    # What goes to the pod is one write bigger than the largest WebSocket message the API
    # server takes (16 MiB): the stream must split it.
    to_pod, from_pod = os.urandom(17 * MIB), os.urandom(3 * MIB + 12345)
    pod_received = hashlib.sha256()

    async def pod(stream: SocketStream) -> None:
        """Send everything and take everything at once, then close."""

        async def take() -> None:
            left = len(to_pod)
            while left:
                data = await stream.receive()
                pod_received.update(data)
                left -= len(data)

        async with stream, anyio.create_task_group() as both:
            both.start_soon(take)
            await stream.send(from_pod)

    port = await pods.listen(pod)
    await pods.create("web")
    received = bytearray()
    sizes = random.Random(7)
    with anyio.fail_after(30):
        async with (
            await kube.port_forward("default", "web", port) as stream,
            anyio.create_task_group() as both,
        ):
            both.start_soon(stream.send, to_pod)  # one call: more than one message
            while True:
                max_bytes = sizes.choice([1, 7, 1000, 65536, 300_000])
                try:
                    data = await stream.receive(max_bytes)
                except anyio.EndOfStream:
                    break
                assert 0 < len(data) <= max_bytes
                received += data
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(from_pod).hexdigest()
    assert pod_received.hexdigest() == hashlib.sha256(to_pod).hexdigest()


async def test_the_pod_closing_its_connection_is_the_end_of_the_stream(
    pods: Pods, kube: Kube
) -> None:
    port = await pods.listen(_greet_and_close)
    await pods.create("web")
    async with await kube.port_forward("default", "web", port) as stream:
        with anyio.fail_after(10):
            assert await stream.receive(5) == b"hello"
            assert await stream.receive() == b" from the pod"
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"too late")


async def test_a_closed_port_is_reported_with_the_error_channels_text(
    pods: Pods, kube: Kube
) -> None:
    port = await _closed_port()
    uid = await pods.create("web")
    async with await kube.port_forward("default", "web", port) as stream:
        for _ in range(2):  # and again: the stream stays failed
            with anyio.fail_after(10), pytest.raises(PortForwardError) as raised:
                await stream.receive()
            assert str(raised.value) == (
                f"error forwarding port {port} to pod web, uid {uid}: "
                f"dial tcp 127.0.0.1:{port}: connect: connection refused"
            )


async def test_a_closed_stream_says_so_and_closes_once(pods: Pods, kube: Kube) -> None:
    port = await pods.listen(_echo)
    await pods.create("web")
    stream = await kube.port_forward("default", "web", port)
    await stream.send(b"ping")
    with anyio.fail_after(10):
        assert await stream.receive() == b"PING"
    with pytest.raises(NotImplementedError, match="no half-close"):
        await stream.send_eof()
    await stream.aclose()
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.send(b"more")


async def test_closing_a_stream_wakes_its_reader(pods: Pods, kube: Kube) -> None:
    port = await pods.listen(_echo)
    await pods.create("web")
    stream = await kube.port_forward("default", "web", port)
    outcome: list[type[BaseException]] = []

    async def read() -> None:
        try:
            await stream.receive()
        except anyio.ClosedResourceError as error:
            outcome.append(type(error))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await stream.aclose()
    assert outcome == [anyio.ClosedResourceError]


# -- refusals -----------------------------------------------------------------------------------


async def test_a_user_without_the_right_to_port_forward_is_refused_naming_the_pod(
    pods: Pods,
) -> None:
    port = await pods.listen(_greet_and_close)
    await pods.create("web")
    target = KubeTarget(kubeconfig=pods.kubeconfig, context=DEVELOPER)
    async with Kube.open(target) as developer:
        with pytest.raises(PortForwardError) as raised:
            await developer.port_forward("default", "web", port)
        message = str(raised.value)
        assert "may not port-forward to pod web in namespace default" in message
        assert "403" in message

        await _grant_port_forward(pods, "developer")
        async with await developer.port_forward("default", "web", port) as stream:
            with anyio.fail_after(10):
                assert await stream.receive() == b"hello from the pod"


@pytest.mark.parametrize("verb", ["get", "create"])
async def test_a_websocket_port_forward_needs_get_and_create(pods: Pods, verb: str) -> None:
    # The upgrade is a GET (authorized as get); Kubernetes >= 1.30 asks for create as well.
    port = await pods.listen(_greet_and_close)
    await pods.create("web")
    await _grant_port_forward(pods, "developer", verbs=[verb])
    target = KubeTarget(kubeconfig=pods.kubeconfig, context=DEVELOPER)
    async with Kube.open(target) as developer:
        with pytest.raises(PortForwardError, match="may not port-forward to pod web"):
            await developer.port_forward("default", "web", port)


async def _grant_port_forward(pods: Pods, user: str, verbs: list[str] | None = None) -> None:
    rbac: Any = client.RbacAuthorizationV1Api(pods.api)
    rule = {
        "apiGroups": [""],
        "resources": ["pods/portforward"],
        "verbs": verbs or ["get", "create"],
    }
    await rbac.create_namespaced_role(
        "default", {"metadata": {"name": "port-forward"}, "rules": [rule]}
    )
    await rbac.create_namespaced_role_binding(
        "default",
        {
            "metadata": {"name": "port-forward"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "port-forward",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


async def test_a_missing_pod_is_named(pods: Pods, kube: Kube) -> None:
    with pytest.raises(PortForwardError, match="there is no pod nope in namespace default"):
        await kube.port_forward("default", "nope", 8080)


async def test_an_api_server_that_does_not_answer_is_unreachable(
    pods: Pods, tmp_path: Path
) -> None:
    document = yaml.safe_load(pods.running.kubeconfig.read_text())
    document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{await _closed_port()}"
    kubeconfig = tmp_path / "unreachable"
    kubeconfig.write_text(yaml.safe_dump(document))
    async with Kube.open(KubeTarget(kubeconfig=str(kubeconfig))) as unreachable:
        with pytest.raises(ClusterUnreachable, match="cannot reach the cluster's API server"):
            await unreachable.port_forward("default", "web", 8080)
        with pytest.raises(ClusterUnreachable, match="cannot reach the cluster's API server"):
            await unreachable.ready_pod("default", "app=web")


# -- the kubeconfig and the pods ----------------------------------------------------------------


async def test_the_kubeconfig_gives_the_users_token_and_the_contexts_namespace(
    pods: Pods, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = yaml.safe_load(pods.running.kubeconfig.read_text())
    token = next(u["user"]["token"] for u in document["users"] if u["name"] == "developer")
    for context in document["contexts"]:
        if context["name"] == DEVELOPER:
            context["context"]["namespace"] = "team-a"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))

    async with Kube.open(KubeTarget(kubeconfig=str(kubeconfig), context=DEVELOPER)) as developer:
        assert developer.bearer_token == token
        assert developer.namespace == "team-a"

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    async with Kube.open(KubeTarget()) as admin:  # KUBECONFIG's current context
        assert admin.bearer_token is None  # a client certificate
        assert admin.namespace == "default"  # the context names none

    with pytest.raises(ClusterUnreachable, match="cannot use the kubeconfig"):
        async with Kube.open(KubeTarget(context="nope")):
            pass
    (tmp_path / "empty").write_text("")
    with pytest.raises(ClusterUnreachable, match="not a valid kubeconfig"):
        async with Kube.open(KubeTarget(kubeconfig=str(tmp_path / "empty"))):
            pass

    # No kubeconfig at all means the pod's service account, and this is no pod.
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nowhere"))
    with pytest.raises(ClusterUnreachable, match="Service host/port is not set"):
        async with Kube.open(KubeTarget()):
            pass


async def test_ready_pod_is_the_newest_ready_one_with_its_named_ports(
    pods: Pods, kube: Kube
) -> None:
    # Creation times a minute apart, in the order of creation (they have seconds only).
    now = [dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC)]
    pods.running.server.objects.clock = lambda: now[0]
    web = {"app": "web"}
    await pods.create("web-old", labels=web, ports={"http": 8080})
    now[0] += dt.timedelta(minutes=1)
    await pods.create("web-new", labels=web, ports={"http": 8080, "grpc": 8081})
    now[0] += dt.timedelta(minutes=1)
    await pods.create("web-starting", labels=web, ports={"http": 8080}, ready=False)
    now[0] += dt.timedelta(minutes=1)
    await pods.create("web-leaving", labels=web, ports={"http": 8080}, deleting=True)
    await pods.create("db", labels={"app": "db"}, ready=False)

    assert await kube.ready_pod("default", "app=web") == ("web-new", {"http": 8080, "grpc": 8081})
    assert await kube.ready_pod("default", "app=db") is None
    assert await kube.ready_pod("default", "app=nothing") is None


# -- serving a unix socket ----------------------------------------------------------------------


async def test_serve_port_forward_carries_concurrent_connections_over_a_unix_socket(
    pods: Pods, kube: Kube, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pod_ended = anyio.Event()

    async def pod(stream: SocketStream) -> None:
        await _echo(stream)
        pod_ended.set()

    port = await pods.listen(pod)
    await pods.create("web")
    path = tmp_path / "web.sock"
    missing = tmp_path / "missing.sock"
    with anyio.fail_after(20):
        async with (
            await anyio.create_unix_listener(path) as listener,
            await anyio.create_unix_listener(missing) as missing_listener,
            anyio.create_task_group() as servers,
        ):
            await servers.start(serve_port_forward, listener, kube, "default", "web", port)
            await servers.start(serve_port_forward, missing_listener, kube, "default", "nope", port)
            async with await anyio.connect_unix(path) as one, await anyio.connect_unix(path) as two:
                await one.send(b"first")
                await two.send(b"second")
                assert await two.receive() == b"SECOND"
                assert await one.receive() == b"FIRST"
                await one.send_eof()  # ends that forward, and its pod connection
                await pod_ended.wait()
                with pytest.raises(anyio.EndOfStream):
                    await one.receive()
                await two.send(b"still here")
                assert await two.receive() == b"STILL HERE"

            with caplog.at_level(logging.WARNING, logger="telepresence.kube"):
                for _ in range(2):  # a failed forward ends its connection, not the server
                    async with await anyio.connect_unix(missing) as refused:
                        with pytest.raises(anyio.EndOfStream):
                            await refused.receive()
            servers.cancel_scope.cancel()
    assert [record.getMessage() for record in caplog.records] == [
        f"port-forward to pod default/nope port {port} failed: "
        "there is no pod nope in namespace default"
    ] * 2


async def test_a_cancelled_forward_leaves_no_connection_open(pods: Pods) -> None:
    """A forward cancelled while the API server is busy is closed without waiting for it, so
    nothing stays open once the client's event loop is gone (as the CLI's loop goes, in a
    thread of its own here; see ``test_helm_cluster``)."""
    port = await pods.listen(_echo)
    await pods.create("web")
    api_port = urlsplit(pods.running.url).port
    assert api_port is not None
    server_loop = asyncio.get_running_loop()

    async def client() -> None:
        async with Kube.open(KubeTarget(kubeconfig=pods.kubeconfig)) as kube:
            with anyio.move_on_after(0.5):
                async with await kube.port_forward("default", "web", port) as stream:
                    await stream.send(b"ping")
                    assert await stream.receive() == b"PING"
                    # From here the API server answers nothing for a second.
                    server_loop.call_soon_threadsafe(time.sleep, 1.0)
                    await stream.receive()

    def client_side() -> set[str]:
        before = client_sockets_to(api_port)
        anyio.run(client)
        return client_sockets_to(api_port) - before

    assert await anyio.to_thread.run_sync(client_side) == set()
