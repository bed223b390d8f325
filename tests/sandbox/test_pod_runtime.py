"""Pod logs, exec and port-forward as kubectl and kubernetes-asyncio see them.

The API server runs in-process with a :class:`PodRuntime` over a fake kubelet whose
"containers" are real processes started on the host (``sleep``): exec's launcher then joins
the host's own namespaces (nothing changes) and ``/proc/PID/root`` is ``/``, so the tests need
no network namespaces. Logs are CRI log files the tests write; port-forwards dial servers the
tests run on loopback (the pods' IP is 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import ClientSession, web
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from sandbox.apiserver.errors import APIError
from sandbox.node.runtime import LogFormatter, PodRuntime, tail_offset

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from pathlib import Path

    from aiohttp import ClientWebSocketResponse
    from anyio.abc import Process, SocketStream

    from sandbox.apiserver.run import Running
    from tests.sandbox.conftest import Kubectl

pytestmark = pytest.mark.anyio

MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
MIB = 1024 * 1024


# -- a fake kubelet -----------------------------------------------------------------------------


@dataclass
class FakeContainer:
    """A container as the fake kubelet knows it: a host process and its log files."""

    log: Path
    previous: Path | None = None
    process: Process | None = None
    running: bool = True


@dataclass
class FakeContainers:
    """The :class:`~sandbox.node.runtime.Containers` of a kubelet, for tests."""

    containers: dict[str, FakeContainer] = field(default_factory=dict)

    def _find(self, pod: Mapping[str, Any], container: str) -> FakeContainer | None:
        return self.containers.get(f"{pod['metadata']['name']}/{container}")

    def container_pid(self, pod: Mapping[str, Any], container: str) -> int | None:
        found = self._find(pod, container)
        if found is None or not found.running or found.process is None:
            return None
        return found.process.pid

    def log_file(
        self, pod: Mapping[str, Any], container: str, *, previous: bool = False
    ) -> Path | None:
        found = self._find(pod, container)
        if found is None:
            return None
        path = found.previous if previous else found.log
        return path if path is not None and path.exists() else None

    def is_running(self, pod: Mapping[str, Any], container: str) -> bool:
        found = self._find(pod, container)
        return found is not None and found.running


def record(content: str, *, stream: str = "stdout", tag: str = "F", second: int = 0) -> str:
    """One CRI log record."""
    return f"2025-01-02T03:04:{second:02d}.123456789Z {stream} {tag} {content}\n"


@dataclass
class Cluster:
    """The API server with the fake kubelet behind it, and what a test does as that kubelet."""

    running: Running
    api: client.ApiClient
    kubelet: FakeContainers
    tmp: Path

    @property
    def core(self) -> Any:  # kubernetes-asyncio types its bodies as models; dicts go as they are
        return client.CoreV1Api(self.api)

    async def pod(self, name: str, containers: Mapping[str, str | None]) -> None:
        """Create pod ``name`` whose containers are running (None) or waiting (a reason)."""
        spec = {"containers": [{"name": c, "image": "sandbox/exec"} for c in containers]}
        await self.core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": spec})
        statuses = [
            {
                "name": c,
                "ready": reason is None,
                "restartCount": 0,
                "image": "sandbox/exec",
                "imageID": "",
                "state": {"running": {"startedAt": "2025-01-02T03:04:00Z"}}
                if reason is None
                else {"waiting": {"reason": reason}},
            }
            for c, reason in containers.items()
        ]
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "containerStatuses": statuses,
        }
        await self.core.patch_namespaced_pod_status(
            name, "default", {"status": status}, **MERGE_PATCH
        )

    def logs(self, pod: str, container: str, text: str, previous: str | None = None) -> Path:
        """Give the container a log file (and a previous instance's) holding ``text``."""
        path = self.tmp / f"{pod}-{container}.log"
        path.write_text(text)
        previous_path = None
        if previous is not None:
            previous_path = self.tmp / f"{pod}-{container}-previous.log"
            previous_path.write_text(previous)
        entry = self.kubelet.containers.setdefault(f"{pod}/{container}", FakeContainer(path))
        entry.log, entry.previous = path, previous_path
        return path

    async def start(self, pod: str, container: str, tasks: anyio.abc.TaskGroup) -> Process:
        """Run the container's process: ``sleep``, in the test's directory, with its own
        environment (what exec must take over)."""
        process = await anyio.open_process(
            ["sleep", "300"],
            cwd=self.tmp,
            env={"PATH": os.environ["PATH"], "GREETING": "hello from the container"},
        )
        entry = self.kubelet.containers.setdefault(
            f"{pod}/{container}", FakeContainer(self.tmp / "none.log")
        )
        entry.process = process
        tasks.start_soon(_reap, process)
        return process


def status_message(error: ApiException) -> str:
    """The message of the Status an API error carries."""
    return str(json.loads(error.body or "{}").get("message"))


async def _reap(process: Process) -> None:
    """Kill and reap ``process`` when the task group it runs in ends."""
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


@contextlib.asynccontextmanager
async def api_client(running: Running, cls: type[client.ApiClient] = client.ApiClient) -> Any:
    """kubernetes-asyncio on the server's kubeconfig (``WsApiClient`` for the streams)."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(running.kubeconfig),
        client_configuration=configuration,
        persist_config=False,
    )
    async with cls(configuration) as api:
        yield api


@pytest.fixture
async def cluster(apiserver: Running, tmp_path: Path) -> AsyncIterator[Cluster]:
    kubelet = FakeContainers()
    # serve() does not take a runtime yet; the server reads the attribute per request.
    apiserver.server.pod_runtime = PodRuntime(kubelet, follow_interval=0.02)
    async with api_client(apiserver) as api:
        yield Cluster(apiserver, api, kubelet, tmp_path)


@pytest.fixture
async def processes() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group that stops and reaps the test's processes, also when the test fails."""
    async with anyio.create_task_group() as tasks:
        yield tasks
        tasks.cancel_scope.cancel()


# -- logs ---------------------------------------------------------------------------------------


async def test_logs_print_the_containers_output_with_tail_and_timestamps(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    await cluster.pod("web", {"app": None})
    cluster.logs(
        "web",
        "app",
        record("first")
        + record("err line", stream="stderr", second=1)
        + record("sec", tag="P", second=2)
        + record("ond", second=3)
        + record("third", second=4),
    )
    result = await kubectl("logs", "web")
    assert result.stdout == "first\nerr line\nsecond\nthird\n"

    result = await kubectl("logs", "web", "--tail=2")
    assert result.stdout == "ond\nthird\n"  # records, counted as the kubelet counts them

    result = await kubectl("logs", "web", "--tail=3", "--timestamps")
    assert result.stdout == (
        "2025-01-02T03:04:02.123456789Z second\n2025-01-02T03:04:04.123456789Z third\n"
    )

    result = await kubectl("logs", "web", "--since-time=2025-01-02T03:04:03Z", "--limit-bytes=6")
    assert result.stdout == "ond\nth"


async def test_log_errors_are_worded_as_upstream(cluster: Cluster, kubectl: Kubectl) -> None:
    await cluster.pod("web", {"app": None, "sidecar": None, "db": "ImagePullBackOff"})
    cluster.logs("web", "app", record("hello"))
    cluster.logs("web", "sidecar", record("side"))

    result = await kubectl("logs", "web", "-c", "app", "--previous", check=False)
    assert result.returncode != 0
    assert 'previous terminated container "app" in pod "web" not found' in result.stderr

    result = await kubectl("logs", "web", "-c", "nope", check=False)
    assert "container nope is not valid for pod web" in result.stderr

    result = await kubectl("logs", "web", "-c", "db", check=False)
    assert 'container "db" in pod "web" is waiting to start: ImagePullBackOff' in result.stderr

    # kubectl picks the first container itself; other clients get the server's answer.
    with pytest.raises(ApiException) as raised:
        await cluster.core.read_namespaced_pod_log("web", "default")
    assert raised.value.status == 400
    assert status_message(raised.value) == (
        "a container name must be specified for pod web, choose one of: [app sidecar db]"
    )

    with pytest.raises(ApiException) as raised:
        await cluster.core.read_namespaced_pod_log("web", "default", container="app", tail_lines=-1)
    assert raised.value.status == 422

    cluster.logs("web", "app", record("now"), previous=record("before the restart"))
    result = await kubectl("logs", "web", "-c", "app", "--previous")
    assert result.stdout == "before the restart\n"


async def test_follow_streams_until_the_container_stops(
    cluster: Cluster, kubectl: Kubectl, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    path = cluster.logs("web", "app", record("one"))
    follower = await anyio.open_process(
        ["kubectl", f"--kubeconfig={kubectl.kubeconfig}", "logs", "-f", "web"],
        env={**os.environ, "HOME": str(kubectl.home)},
    )
    processes.start_soon(_reap, follower)
    assert follower.stdout is not None
    with anyio.fail_after(20):
        seen = await _read_until(follower.stdout, b"one\n")
        with path.open("a") as file:
            file.write(record("two", tag="P") + record(" and three"))
        seen += await _read_until(follower.stdout, b"two and three\n")
        assert seen == b"one\ntwo and three\n"
        with path.open("a") as file:
            file.write(record("last words"))
        cluster.kubelet.containers["web/app"].running = False
        seen += await _read_until(follower.stdout, b"")
        assert seen.endswith(b"two and three\nlast words\n")
        assert await follower.wait() == 0


async def _read_until(stream: anyio.abc.ByteReceiveStream, expected: bytes) -> bytes:
    """Read until ``expected`` has arrived (or, for b"", until the end of the stream)."""
    seen = b""
    async for data in stream:
        seen += data
        if expected and seen.endswith(expected):
            break
    return seen


def test_log_formatter_output_does_not_depend_on_how_reads_split_the_file() -> None:
    text = (
        record("a")
        + record("b", tag="P")
        + record("c", stream="stderr")
        + "garbage\n"
        + record("")
        + record("d e f")
    ).encode()

    @given(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=8))
    def check(cuts: list[int]) -> None:
        formatter = LogFormatter(timestamps=True)
        bounds = [0, *sorted(cuts), len(text)]
        output = b"".join(formatter.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
        stamp = b"2025-01-02T03:04:00.123456789Z "
        assert output == stamp + b"a\n" + stamp + b"bc\n" + stamp + b"\n" + stamp + b"d e f\n"

    check()


def test_tail_offset_finds_the_last_records(tmp_path: Path) -> None:
    path = tmp_path / "log"
    lines = [f"line {i}\n".encode() * (i % 5000) for i in range(200)]
    path.write_bytes(b"".join(line or b"\n" for line in lines))
    data = path.read_bytes()
    for count in (0, 1, 2, 150, 10_000_000):
        offset = tail_offset(path, count)
        expected = data.splitlines(keepends=True)[-count:] if count else []
        assert data[offset:] == b"".join(expected)


# -- exec ---------------------------------------------------------------------------------------


async def test_exec_runs_in_the_container_and_exits_with_the_commands_code(
    cluster: Cluster, kubectl: Kubectl, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    await cluster.start("web", "app", processes)

    result = await kubectl(
        "exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr

    # The container's directory and environment, not the API server's.
    result = await kubectl("exec", "web", "--", "sh", "-c", 'pwd; echo "$GREETING"')
    assert result.stdout == f"{cluster.tmp}\nhello from the container\n"

    result = await kubectl("exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z", stdin="quiet\n")
    assert result.stdout == "QUIET\n"


async def test_exec_of_a_missing_program_or_container_fails_clearly(
    cluster: Cluster, kubectl: Kubectl, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None, "sidecar": None})
    await cluster.start("web", "app", processes)

    result = await kubectl("exec", "web", "-c", "app", "--", "no-such-program", check=False)
    assert result.returncode != 0
    assert 'exec: "no-such-program": executable file not found in $PATH' in result.stderr

    result = await kubectl("exec", "web", "-c", "app", "--", "./nowhere/x", check=False)
    assert result.returncode != 0
    assert "no such file or directory" in result.stderr

    result = await kubectl("exec", "web", "-c", "sidecar", "--", "true", check=False)
    assert result.returncode != 0
    assert 'container not found ("sidecar")' in result.stderr

    result = await kubectl("exec", "web", "-c", "nope", "--", "true", check=False)
    assert "container nope is not valid for pod web" in result.stderr


async def test_exec_through_kubernetes_asyncio(
    cluster: Cluster, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    await cluster.start("web", "app", processes)
    async with api_client(cluster.running, WsApiClient) as ws_api:
        core: Any = client.CoreV1Api(ws_api)
        output = await core.connect_get_namespaced_pod_exec(
            "web",
            "default",
            command=["sh", "-c", "echo hi; echo there >&2"],
            stdout=True,
            stderr=True,
        )
        assert sorted(output.splitlines()) == ["hi", "there"]

        ws_context = await core.connect_get_namespaced_pod_exec(
            "web",
            "default",
            command=["sh", "-c", "exit 7"],
            stdout=True,
            stderr=True,
            _preload_content=False,
        )
        async with ws_context as ws:
            channels = await _collect(ws)
        assert WsApiClient.parse_error_data(channels[3]) == 7
        assert json.loads(channels[3])["reason"] == "NonZeroExitCode"

        # A client that goes away takes its command with it.
        ws_context = await core.connect_get_namespaced_pod_exec(
            "web",
            "default",
            command=["sh", "-c", "echo $$; exec sleep 100"],
            stdout=True,
            _preload_content=False,
        )
        async with ws_context as ws:
            message = await ws.receive_bytes()
        with anyio.fail_after(10):
            await _exited(int(message[1:]))


async def _exited(pid: int) -> None:
    """Wait for process ``pid`` (not ours) to end."""
    with contextlib.suppress(ProcessLookupError):
        fd = os.pidfd_open(pid)
        try:
            await anyio.wait_readable(fd)
        finally:
            os.close(fd)


async def test_kubectl_cp_copies_both_ways(
    cluster: Cluster, kubectl: Kubectl, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    await cluster.start("web", "app", processes)
    (cluster.tmp / "local.txt").write_text("from the laptop\n")
    # The "container" sees the host's filesystem: the copy lands in the test's directory.
    await kubectl("cp", str(cluster.tmp / "local.txt"), f"web:{cluster.tmp}/in-pod.txt")
    assert (cluster.tmp / "in-pod.txt").read_text() == "from the laptop\n"
    await kubectl("cp", f"web:{cluster.tmp}/in-pod.txt", str(cluster.tmp / "back.txt"))
    assert (cluster.tmp / "back.txt").read_text() == "from the laptop\n"


async def test_exec_with_a_terminal_honours_resizes(
    cluster: Cluster, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    await cluster.start("web", "app", processes)
    async with api_client(cluster.running, WsApiClient) as ws_api:
        core: Any = client.CoreV1Api(ws_api)
        ws_context = await core.connect_get_namespaced_pod_exec(
            "web",
            "default",
            command=["sh", "-c", "read line; stty size; tty"],
            stdin=True,
            stdout=True,
            tty=True,
            _preload_content=False,
        )
        async with ws_context as ws:
            await ws.send_bytes(b"\x04" + json.dumps({"Width": 123, "Height": 45}).encode())
            await ws.send_bytes(b"\x00go\n")
            channels = await _collect(ws)
    lines = channels[1].decode().splitlines()
    assert "45 123" in lines
    assert lines[-1].startswith("/dev/pts/")
    assert json.loads(channels[3])["status"] == "Success"


async def _collect(ws: ClientWebSocketResponse) -> dict[int, bytes]:
    """Everything the server sends, by channel, until it closes."""
    channels: dict[int, bytes] = {}
    with anyio.fail_after(20):
        async for message in ws:
            data: bytes = message.data
            channels[data[0]] = channels.get(data[0], b"") + data[1:]
    return channels


# -- port-forward -------------------------------------------------------------------------------


async def _serve(
    listener: anyio.abc.Listener[SocketStream], handler: Callable[[SocketStream], Awaitable[None]]
) -> None:
    async with listener:
        await listener.serve(handler)


async def _portforward(ws_api: client.ApiClient, port: int | str) -> Any:
    core: Any = client.CoreV1Api(ws_api)
    return await core.connect_get_namespaced_pod_portforward(
        "web", "default", ports=port, _preload_content=False
    )


async def _opening(ws: ClientWebSocketResponse, *ports: int) -> None:
    """Each port's channels open with the port number."""
    for index, port in enumerate(ports):
        for channel in (2 * index, 2 * index + 1):
            message = await ws.receive_bytes()
            assert message == bytes([channel]) + struct.pack("<H", port)


def _chunk(block: bytes, index: int, size: int) -> bytes:
    start = (index * 7919) % (len(block) - size)
    return block[start : start + size]


async def test_portforward_moves_256_mib_each_way_at_once(
    cluster: Cluster, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    total, size = 256 * MIB, 256 * 1024
    pod_block, client_block = os.urandom(2 * MIB), os.urandom(2 * MIB)
    pod_side: dict[str, str] = {}
    served = anyio.Event()

    async def pod(stream: SocketStream) -> None:
        """Send 256 MiB and take 256 MiB at the same time, then close."""
        received = hashlib.sha256()

        async def take() -> None:
            left = total
            while left:
                data = await stream.receive(min(left, 1 * MIB))
                received.update(data)
                left -= len(data)

        async with stream, anyio.create_task_group() as both:
            both.start_soon(take)
            sent = hashlib.sha256()
            for index in range(total // size):
                chunk = _chunk(pod_block, index, size)
                sent.update(chunk)
                await stream.send(chunk)
        pod_side.update(sent=sent.hexdigest(), received=received.hexdigest())
        served.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    processes.start_soon(_serve, listener, pod)

    client_sent, client_received = hashlib.sha256(), hashlib.sha256()
    with anyio.fail_after(50):
        async with (
            api_client(cluster.running, WsApiClient) as ws_api,
            await _portforward(ws_api, port) as ws,
        ):
            await _opening(ws, port)

            async def send() -> None:
                for index in range(total // size):
                    chunk = _chunk(client_block, index, size)
                    client_sent.update(chunk)
                    await ws.send_bytes(b"\x00" + chunk)

            received = 0
            async with anyio.create_task_group() as both:
                both.start_soon(send)
                async for message in ws:  # until the pod closes and so the server
                    data = message.data
                    assert data[0] == 0, data
                    client_received.update(memoryview(data)[1:])
                    received += len(data) - 1
        await served.wait()
    assert received == total
    assert pod_side["received"] == client_sent.hexdigest()
    assert pod_side["sent"] == client_received.hexdigest()


async def test_portforward_to_a_closed_port_reports_on_the_error_channel(
    cluster: Cluster,
) -> None:
    await cluster.pod("web", {"app": None})
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    async with (
        api_client(cluster.running, WsApiClient) as ws_api,
        await _portforward(ws_api, port) as ws,
    ):
        await _opening(ws, port)
        channels = await _collect(ws)
    assert list(channels) == [1]
    assert channels[1].decode() == (
        f"error forwarding port {port} to pod web, uid {await _uid(cluster)}: "
        f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


async def test_portforward_closes_the_pod_connection_when_the_client_leaves(
    cluster: Cluster, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})
    pod_saw: list[bytes] = []
    ended = anyio.Event()

    async def pod(stream: SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    pod_saw.append(await stream.receive())
            ended.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    processes.start_soon(_serve, listener, pod)
    with anyio.fail_after(10):
        async with api_client(cluster.running, WsApiClient) as ws_api:
            async with await _portforward(ws_api, port) as ws:
                await _opening(ws, port)
                await ws.send_bytes(b"\x00hello")
            await ended.wait()
    assert b"".join(pod_saw) == b"hello"


async def test_kubectl_port_forward_is_told_what_to_use_instead(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    await cluster.pod("web", {"app": None})
    result = await kubectl("port-forward", "pod/web", "0:8080", check=False)
    assert result.returncode != 0
    assert "kubectl port-forward speaks SPDY" in result.stderr
    assert "v4.channel.k8s.io" in result.stderr


async def test_portforward_forwards_several_ports_and_rejects_bad_ones(
    cluster: Cluster, processes: anyio.abc.TaskGroup
) -> None:
    await cluster.pod("web", {"app": None})

    async def greet(stream: SocketStream) -> None:
        async with stream:
            port = stream.extra(anyio.abc.SocketAttribute.local_port)
            await stream.send(f"port {port}: ".encode() + await stream.receive())

    ports = []
    for _ in range(2):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        ports.append(listener.extra(anyio.abc.SocketAttribute.local_port))
        processes.start_soon(_serve, listener, greet)
    async with api_client(cluster.running, WsApiClient) as ws_api:
        async with await _portforward(ws_api, f"{ports[0]},{ports[1]}") as ws:
            await _opening(ws, *ports)
            await ws.send_bytes(b"\x02two")
            await ws.send_bytes(b"\x00one")
            channels = await _collect(ws)
        assert channels == {
            0: f"port {ports[0]}: one".encode(),
            2: f"port {ports[1]}: two".encode(),
        }

        for bad, message in [
            ("0", 'port "0" must be > 0'),
            ("http", 'unable to parse "http" as a port'),
        ]:
            with pytest.raises(Exception, match="400"):
                async with await _portforward(ws_api, bad):
                    pass
            core: Any = client.CoreV1Api(cluster.api)
            with pytest.raises(ApiException) as raised:
                await core.connect_get_namespaced_pod_portforward("web", "default", ports=bad)
            assert message in status_message(raised.value)


async def _uid(cluster: Cluster) -> str:
    pod = await cluster.core.read_namespaced_pod("web", "default")
    return str(pod.metadata.uid)


# -- the rest -----------------------------------------------------------------------------------


async def test_attach_eviction_and_ephemeral_containers_say_they_are_not_supported(
    cluster: Cluster, kubectl: Kubectl
) -> None:
    await cluster.pod("web", {"app": None})
    result = await kubectl("attach", "web", check=False)
    assert result.returncode != 0
    assert "attach is not supported by the sandbox" in result.stderr

    result = await kubectl("debug", "web", "--image=busybox", "--", "true", check=False)
    assert "ephemeral containers are not supported by the sandbox" in result.stderr

    with pytest.raises(ApiException) as raised:
        await cluster.core.create_namespaced_pod_eviction(
            "web", "default", {"metadata": {"name": "web", "namespace": "default"}}
        )
    assert raised.value.status == 400
    assert "eviction is not supported by the sandbox" in status_message(raised.value)


async def test_proxy_relays_a_request_to_the_pods_port(processes: anyio.abc.TaskGroup) -> None:
    # The API server does not route pods/NAME:PORT/proxy/PATH to the runtime yet: the handler
    # is driven by an application of its own, with the paths kube-apiserver would pass it.
    async def target(request: web.Request) -> web.Response:
        lines = [f"{request.method} {request.raw_path}", await request.text(), *request.headers]
        return web.Response(text="\n".join(lines))

    pod_app = web.Application()
    pod_app.router.add_route("*", "/{tail:.*}", target)
    pod_port = await _start_app(pod_app, processes)
    pod = {
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "ports": [{"containerPort": pod_port}]}]},
        "status": {"podIP": "127.0.0.1"},
    }
    runtime = PodRuntime(FakeContainers())

    async def front(request: web.Request) -> web.StreamResponse:
        try:
            return await runtime.proxy(request, pod)
        except APIError as error:
            return web.json_response(error.status(), status=error.code)

    front_app = web.Application()
    front_app.router.add_route("*", "/{tail:.*}", front)
    front_port = await _start_app(front_app, processes)
    pods = f"http://127.0.0.1:{front_port}/api/v1/namespaces/default/pods"
    with anyio.fail_after(10):
        async with ClientSession() as session:
            async with session.post(
                f"{pods}/web:{pod_port}/proxy/a/b%20c?x=1",
                data=b"body",
                headers={"Authorization": "Bearer secret", "X-Trace": "1"},
            ) as answer:
                assert answer.status == 200
                lines = (await answer.text()).splitlines()
            assert lines[:2] == ["POST /a/b%20c?x=1", "body"]
            assert "X-Trace" in lines
            assert "Authorization" not in lines  # the user's credentials stay with the server

            async with session.get(f"{pods}/web/proxy") as answer:  # the first declared port
                assert (await answer.text()).splitlines()[0] == "GET /"

            async with session.get(f"{pods}/web:1/proxy/") as answer:
                assert answer.status == 503
                assert (await answer.json())["message"].startswith("error trying to reach service")


async def _start_app(app: web.Application, processes: anyio.abc.TaskGroup) -> int:
    """Serve ``app`` on a loopback port until the test ends; the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()

    async def cleanup() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    processes.start_soon(cleanup)
    return int(runner.addresses[0][1])
