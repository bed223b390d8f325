"""The kubelet running real pods: network namespaces, processes, probes, logs, deletion.

Each test gets a node of its own: a network namespace with the node's bridge (``cbr0``,
10.244.0.1/24) under a unique prefix, and a :class:`Kubelet` for it, writing to an
in-process API server. The test process stays in the host's namespace, which has no route
to pods (and gets none: the host's network is never touched), so the kubelet is given a
dialer that opens its sockets inside the node's namespace, as the sandbox's daemon does by
living in the fabric namespace. What a test observes is what a user would: the pod's status
and events in the API, the container's log file, files a container wrote into a hostPath
volume, an HTTP answer from the pod.

Waiting is on the API server's store (``Cluster.until`` wakes on every write); nothing
sleeps to wait for something. Every namespace and process a test made is gone at its end,
checked. The last tests check the parts alone, without namespaces: the image map, the CRI log
format, the restart backoff, and the probe handlers against servers on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.abc import SocketStream
from pyroute2 import AsyncIPRoute

from sandbox import images
from sandbox.apiserver.rbac import UserInfo
from sandbox.node import netns
from sandbox.node.containers import MAX_LOG_LINE, Backoff, LogWriter, go_duration
from sandbox.node.kubelet import Kubelet
from sandbox.node.podnet import BRIDGE, PodNetwork
from sandbox.node.probes import Outcome, Target, connect_tcp, run_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from sandbox.apiserver.run import Running
    from sandbox.apiserver.server import APIServer
    from sandbox.apiserver.store import Change, Key, Obj

pytestmark = pytest.mark.anyio

PODS: Key = ("", "pods")
EVENTS: Key = ("", "events")
ADMIN = UserInfo(name="test-admin", groups=("system:masters", "system:authenticated"))
NODE_NAME = "node-0"
NODE_IP = "10.89.0.10"
POD_CIDR = "10.244.0.0/24"
DEADLINE = 20
CRASH_BACKOFF = 0.5


# -- the node -------------------------------------------------------------------------------------


def _socket_in(namespace: str) -> socket.socket:
    """A TCP socket of ``namespace`` (made by a thread that enters it and comes back)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns.path(namespace), os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            os.setns(own, os.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Node:
    namespace: str
    prefix: str

    @property
    def pod_prefix(self) -> str:
        return self.prefix + "p"

    async def dial(self, host: str, port: int) -> SocketStream:
        """Connect to ``host:port`` from inside the node's namespace (the kubelet's dialer)."""
        sock = await anyio.to_thread.run_sync(_socket_in, self.namespace)
        try:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, port))
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            return await SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    prefix = f"kt{secrets.token_hex(3)}-"
    name = prefix + "node"
    netns.create(name)
    try:
        async with AsyncIPRoute(netns=name) as ipr:
            (lo,) = await ipr.link_lookup(ifname="lo")
            await ipr.link("set", index=lo, state="up")
            await ipr.link("add", ifname=BRIDGE, kind="bridge")
            (bridge,) = await ipr.link_lookup(ifname=BRIDGE)
            await ipr.addr("add", index=bridge, address="10.244.0.1", prefixlen=24)
            await ipr.link("set", index=bridge, state="up")
        await netns.sysctl(name, {"net.ipv4.ip_forward": "1"})
        yield Node(name, prefix)
        left = [ns for ns in netns.with_prefix(prefix) if ns != name]
        assert not left, f"pod namespaces left behind: {left}"
    finally:
        leftovers = netns.with_prefix(prefix)
        netns.kill_processes_in(leftovers)
        for leftover in leftovers:
            netns.remove(leftover)


@contextlib.asynccontextmanager
async def running_kubelet(api: APIServer, node: Node, directory: Path) -> AsyncIterator[Kubelet]:
    network = PodNetwork(node.namespace, POD_CIDR, node.pod_prefix)
    kubelet = Kubelet(
        api,
        NODE_NAME,
        NODE_IP,
        network,
        directory,
        cluster_dns="10.96.0.10",
        crash_backoff=CRASH_BACKOFF,
        dialer=node.dial,
    )
    async with anyio.create_task_group() as tasks:
        await tasks.start(kubelet.run)
        yield kubelet
        tasks.cancel_scope.cancel()


@pytest.fixture
async def kubelet(apiserver: Running, node: Node, tmp_path: Path) -> AsyncIterator[Kubelet]:
    async with running_kubelet(apiserver.server, node, tmp_path / "node") as kubelet:
        yield kubelet


# -- the API ----------------------------------------------------------------------------------


class Cluster:
    """The API as the tests use it: create, delete, look, and wait for the store."""

    def __init__(self, api: APIServer) -> None:
        self.api = api
        self.store = api.store
        self.history: list[tuple[str, Obj]] = []  # every pod version written, in order
        self._changed = anyio.Event()
        self.store.listeners.append(self._listen)

    def _listen(self, key: Key, change: Change) -> None:
        if key == PODS:
            self.history.append((change.type, change.object))
        self._changed.set()

    async def until[T](self, check: Callable[[], T | None]) -> T:
        """Wait until ``check()`` gives something (re-checked on every write to the store)."""
        with anyio.move_on_after(DEADLINE):
            while not (result := check()):
                self._changed = anyio.Event()
                await self._changed.wait()
            return result
        raise AssertionError(f"timed out; the pods and events now:\n{self.describe()}")

    def describe(self) -> str:
        pods = [json.dumps(p.get("status"), indent=1) for p in self.store.list(PODS)]
        events = [
            f"{e['involvedObject']['name']} {e['reason']}: {e['message']} (x{e['count']})"
            for e in self.store.list(EVENTS)
        ]
        return "\n".join([*pods, *events])

    async def create_pod(self, name: str, spec: dict[str, Any]) -> Obj:
        body = {"metadata": {"name": name}, "spec": {"nodeName": NODE_NAME, **spec}}
        resource = self.api.registry.lookup("", "v1", "pods")
        assert resource is not None
        return await self.api.objects.create(resource, "default", body, ADMIN)

    async def delete_pod(self, name: str, grace: int) -> None:
        resource = self.api.registry.lookup("", "v1", "pods")
        assert resource is not None
        await self.api.objects.delete(
            resource, "default", name, ADMIN, {"gracePeriodSeconds": grace}
        )

    def pod(self, name: str) -> Obj | None:
        return self.store.get(PODS, "default", name)

    def container_status(self, name: str, container: str) -> Obj:
        pod = self.pod(name) or {}
        status = pod.get("status", {})
        for entry in status.get("containerStatuses", []) + status.get("initContainerStatuses", []):
            if entry["name"] == container:
                return dict(entry)
        return {}

    def events(self, name: str, reason: str) -> list[Obj]:
        return [
            event
            for event in self.store.list(EVENTS, "default")
            if event["involvedObject"]["name"] == name and event["reason"] == reason
        ]

    def ready_pod(self, name: str) -> Obj | None:
        pod = self.pod(name)
        return pod if is_ready(pod) else None

    def phase_is(self, name: str, phase: str) -> Obj | None:
        pod = self.pod(name)
        return pod if pod and pod.get("status", {}).get("phase") == phase else None


@pytest.fixture
def cluster(apiserver: Running) -> Cluster:
    return Cluster(apiserver.server)


def condition(pod: Obj, kind: str) -> str:
    for entry in pod.get("status", {}).get("conditions", []):
        if entry["type"] == kind:
            return str(entry["status"])
    return ""


def is_ready(pod: Obj | None) -> bool:
    return pod is not None and condition(pod, "Ready") == "True"


def shell(script: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    """A ``sandbox/exec`` container running ``sh -c script``."""
    return {"name": name, "image": "sandbox/exec", "command": ["sh", "-c", script], **extra}


def log_text(kubelet: Kubelet, pod: Obj, container: str, *, previous: bool = False) -> str:
    """The container's output, from its CRI log file."""
    path = kubelet.log_file(pod, container, previous=previous)
    assert path is not None, f"no log for {container}"
    lines = []
    for record in path.read_text().splitlines():
        _stamp, stream, tag, content = record.split(" ", 3)
        assert stream in ("stdout", "stderr")
        assert tag in ("F", "P")
        lines.append(content)
    return "\n".join(lines)


# -- tests ------------------------------------------------------------------------------------


async def test_echo_pod_runs_with_an_address_and_answers(
    cluster: Cluster, kubelet: Kubelet, node: Node
) -> None:
    node_object = cluster.store.get(("", "nodes"), "", NODE_NAME)
    assert node_object is not None
    assert condition(node_object, "Ready") == "True"
    assert node_object["spec"]["podCIDR"] == POD_CIDR
    assert node_object["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.0"
    lease = cluster.store.get(("coordination.k8s.io", "leases"), "kube-node-lease", NODE_NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == NODE_NAME
    await cluster.create_pod(
        "echo",
        {
            "containers": [
                {
                    "name": "echo",
                    "image": "ghcr.io/sandbox/http-echo:1.0",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 1},
                }
            ]
        },
    )
    pod = await cluster.until(lambda: cluster.ready_pod("echo"))
    status = pod["status"]
    assert status["phase"] == "Running"
    assert status["podIP"].startswith("10.244.0.")
    assert status["podIP"] != "10.244.0.1"
    assert status["hostIP"] == NODE_IP
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    (container,) = status["containerStatuses"]
    assert "running" in container["state"]
    assert container["ready"] is True
    assert container["started"] is True
    assert container["restartCount"] == 0
    assert container["containerID"].startswith("sandbox://")
    assert "@sha256:" in container["imageID"]

    stream = await node.dial(status["podIP"], 8080)
    async with stream:
        await stream.send(b"GET /hello HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
        answer = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                answer += await stream.receive()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"pod: echo" in answer
    assert b"GET /hello HTTP/1.1" in answer
    assert "listening on port 8080" in log_text(kubelet, pod, "echo")
    reasons = {e["reason"] for e in cluster.store.list(EVENTS, "default")}
    assert {"Pulled", "Created", "Started"} <= reasons


async def test_a_volume_over_the_checkouts_parent_hides_no_python_image(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    # The chart's emptyDir at /tmp, with this checkout in /tmp (as in a CI clone): the
    # image's own files (checkout, virtual environment, interpreter) stay visible.
    top = "/" + images.CHECKOUT.parts[1]
    await cluster.create_pod(
        "covered",
        {
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [
                {
                    "name": "echo",
                    "image": "sandbox/http-echo",
                    "volumeMounts": [{"name": "scratch", "mountPath": top}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    )
    pod = await cluster.until(lambda: cluster.ready_pod("covered"))
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


async def test_a_container_sees_its_environment_volumes_and_dns(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    configmaps = cluster.api.registry.lookup("", "v1", "configmaps")
    assert configmaps is not None
    await cluster.api.objects.create(
        configmaps, "default", {"metadata": {"name": "settings"}, "data": {"color": "blue"}}, ADMIN
    )
    script = (
        "cat /etc/resolv.conf; echo ---; env; echo ---; cat /config/color; echo; "
        "ls /var/run/secrets/kubernetes.io/serviceaccount; echo ---; cat /etc/hosts; hostname"
    )
    await cluster.create_pod(
        "inspect",
        {
            "restartPolicy": "Never",
            "containers": [
                shell(
                    script,
                    env=[{"name": "GREETING", "value": "hello $(MISSING) world"}],
                    volumeMounts=[{"name": "settings", "mountPath": "/config"}],
                )
            ],
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
        },
    )
    pod = await cluster.until(lambda: cluster.phase_is("inspect", "Succeeded"))
    output = log_text(kubelet, pod, "main")
    resolv, environment, rest = output.split("---\n", 2)
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    variables = dict(line.split("=", 1) for line in environment.splitlines() if "=" in line)
    assert variables["GREETING"] == "hello $(MISSING) world"
    assert variables["HOSTNAME"] == "inspect"
    assert variables["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert variables["PATH"].startswith("/usr/local/sbin")
    assert "PYTEST_CURRENT_TEST" not in variables  # nothing of the kubelet's own environment
    assert rest.startswith("blue\n")
    assert "token" in rest
    assert f"{pod['status']['podIP']}\tinspect" in rest
    assert rest.rstrip().endswith("inspect")
    (container,) = pod["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert condition(pod, "Ready") == "False"


async def test_init_containers_run_first_and_in_order(cluster: Cluster, kubelet: Kubelet) -> None:
    work = {"name": "work", "mountPath": "/work"}
    await cluster.create_pod(
        "ordered",
        {
            "restartPolicy": "OnFailure",
            "initContainers": [
                shell("echo first >> /work/order", "first", volumeMounts=[work]),
                shell("echo second >> /work/order", "second", volumeMounts=[work]),
            ],
            "containers": [shell("cat /work/order; echo main", volumeMounts=[work])],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    )
    pod = await cluster.until(lambda: cluster.phase_is("ordered", "Succeeded"))
    assert log_text(kubelet, pod, "main") == "first\nsecond\nmain"
    for init in pod["status"]["initContainerStatuses"]:
        assert init["state"]["terminated"]["reason"] == "Completed"
        assert init["ready"] is True
    # While the init containers ran, the pod was Pending, not Initialized, and the main
    # container waited.
    initializing = [
        p
        for _, p in cluster.history
        if any("terminated" not in s["state"] for s in p["status"].get("initContainerStatuses", []))
    ]
    assert initializing
    for version in initializing:
        assert version["status"]["phase"] == "Pending"
        assert condition(version, "Initialized") == "False"
        main = version["status"]["containerStatuses"][0]["state"]
        assert main["waiting"]["reason"] == "PodInitializing"


async def test_a_crashing_container_restarts_with_backoff(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    await cluster.create_pod("crash", {"containers": [shell("echo crashing; exit 3")]})

    def backing_off() -> Obj | None:
        state = cluster.container_status("crash", "main")
        waiting = state.get("state", {}).get("waiting", {})
        return state if waiting.get("reason") == "CrashLoopBackOff" else None

    status = await cluster.until(backing_off)
    assert status["restartCount"] >= 1
    assert (
        "back-off 500ms restarting failed container=main" in status["state"]["waiting"]["message"]
    )
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    pod = cluster.pod("crash")
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert log_text(kubelet, pod, "main", previous=True) == "crashing"
    await cluster.until(lambda: cluster.container_status("crash", "main")["restartCount"] >= 2)
    assert cluster.events("crash", "BackOff")


async def test_readiness_follows_the_probe(
    cluster: Cluster, kubelet: Kubelet, tmp_path: Path
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    await cluster.create_pod(
        "gated",
        {
            "containers": [
                shell(
                    "trap 'exit 0' TERM; while true; do sleep 0.1; done",
                    readinessProbe={
                        "exec": {"command": ["test", "-e", "/flags/ready"]},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                    volumeMounts=[{"name": "flags", "mountPath": "/flags"}],
                )
            ],
            "volumes": [{"name": "flags", "hostPath": {"path": str(flags)}}],
        },
    )
    await cluster.until(lambda: cluster.events("gated", "Unhealthy"))
    pod = cluster.phase_is("gated", "Running")
    assert pod is not None
    assert condition(pod, "Ready") == "False"
    containers_ready = next(
        c for c in pod["status"]["conditions"] if c["type"] == "ContainersReady"
    )
    assert containers_ready["reason"] == "ContainersNotReady"
    assert containers_ready["message"] == "containers with unready status: [main]"
    assert cluster.events("gated", "Unhealthy")[0]["message"].startswith("Readiness probe failed")

    (flags / "ready").touch()
    await cluster.until(lambda: cluster.ready_pod("gated"))
    (flags / "ready").unlink()
    await cluster.until(lambda: not is_ready(cluster.pod("gated")))


async def test_a_failing_liveness_probe_restarts_the_container(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    await cluster.create_pod(
        "unwell",
        {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "echo",
                    "image": "sandbox/tcp-echo",
                    "livenessProbe": {
                        "tcpSocket": {"port": 7999},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
        },
    )

    def restarted() -> Obj | None:
        status = cluster.container_status("unwell", "echo")
        return status if status.get("restartCount", 0) >= 1 else None

    status = await cluster.until(restarted)
    assert "terminated" in status["lastState"]
    (killing,) = [e for e in cluster.events("unwell", "Killing") if "liveness" in e["message"]][:1]
    assert killing["message"] == "Container echo failed liveness probe, will be restarted"
    unhealthy = cluster.events("unwell", "Unhealthy")[0]["message"]
    assert unhealthy.startswith("Liveness probe failed: dial tcp ")
    assert "connection refused" in unhealthy


async def test_an_unknown_image_cannot_be_pulled(cluster: Cluster, kubelet: Kubelet) -> None:
    image = "registry.example/team/nonesuch:2"
    await cluster.create_pod("nopull", {"containers": [{"name": "app", "image": image}]})
    seen: set[str] = set()

    def both_reasons() -> bool:
        waiting = cluster.container_status("nopull", "app").get("state", {}).get("waiting", {})
        if image in waiting.get("message", ""):
            seen.add(waiting["reason"])
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    await cluster.until(both_reasons)
    pod = cluster.pod("nopull")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    message = cluster.container_status("nopull", "app")["state"]["waiting"]["message"]
    assert "image not known to the sandbox" in message
    assert "sandbox/http-echo" in message
    assert kubelet.log_file(pod, "app") is None


async def test_a_deleted_pod_is_stopped_gracefully(
    cluster: Cluster, kubelet: Kubelet, node: Node, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = "trap 'echo TERM > /out/term; exit 0' TERM; touch /out/trapped; sleep 1000 & wait"
    pod = await cluster.create_pod(
        "graceful",
        {
            "containers": [
                shell(
                    script,
                    lifecycle={
                        "preStop": {"exec": {"command": ["sh", "-c", "echo pre > /out/prestop"]}}
                    },
                    volumeMounts=[{"name": "out", "mountPath": "/out"}],
                    readinessProbe={
                        "exec": {"command": ["test", "-e", "/out/trapped"]},
                        "periodSeconds": 1,
                    },
                )
            ],
            "volumes": [{"name": "out", "hostPath": {"path": str(out)}}],
        },
    )
    await cluster.until(lambda: cluster.ready_pod("graceful"))
    assert netns.with_prefix(node.pod_prefix)
    await cluster.delete_pod("graceful", 10)
    await cluster.until(lambda: cluster.pod("graceful") is None)
    assert (out / "prestop").exists(), cluster.describe()
    assert (out / "prestop").read_text() == "pre\n"
    assert (out / "term").read_text() == "TERM\n"
    final = [p for kind, p in cluster.history if kind == "MODIFIED"][-1]
    assert final["metadata"]["deletionTimestamp"]
    assert final["status"]["phase"] == "Succeeded"
    terminated = final["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert not netns.with_prefix(node.pod_prefix)
    assert not (kubelet.directory / "pods" / pod["metadata"]["uid"]).exists()


async def test_a_stopping_pod_reports_its_containers_as_they_stop(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    flags = [{"name": "flags", "mountPath": "/flags"}]

    def ready_once(flag: str) -> dict[str, Any]:
        return {"exec": {"command": ["test", "-e", f"/flags/{flag}"]}, "periodSeconds": 1}

    quick = shell(
        "trap 'exit 0' TERM; touch /flags/quick; sleep 1000 & wait",
        "quick",
        readinessProbe=ready_once("quick"),
        volumeMounts=flags,
    )
    stubborn = shell(
        "trap '' TERM; touch /flags/stubborn; sleep 1000",
        "stubborn",
        readinessProbe=ready_once("stubborn"),
        volumeMounts=flags,
    )
    await cluster.create_pod(
        "stopping",
        {"containers": [quick, stubborn], "volumes": [{"name": "flags", "emptyDir": {}}]},
    )
    await cluster.until(lambda: cluster.ready_pod("stopping"))
    await cluster.delete_pod("stopping", 3)

    def states(pod: Obj | None) -> dict[str, Any]:
        statuses = (pod or {}).get("status", {}).get("containerStatuses", [])
        return {status["name"]: status["state"] for status in statuses}

    def quick_stopped() -> Obj | None:
        pod = cluster.pod("stopping")
        return pod if "terminated" in states(pod).get("quick", {}) else None

    # Written while the stubborn one waits out its grace period: the pod is still there.
    stopping = await cluster.until(quick_stopped)
    assert stopping["metadata"]["deletionTimestamp"]
    assert states(stopping)["quick"]["terminated"]["exitCode"] == 0
    assert "running" in states(stopping)["stubborn"]
    await cluster.until(lambda: cluster.pod("stopping") is None)
    final = [p for kind, p in cluster.history if kind == "MODIFIED"][-1]
    assert final["status"]["phase"] == "Failed"
    assert states(final)["stubborn"]["terminated"]["exitCode"] == 137


async def test_a_program_that_cannot_start_is_a_start_error(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    await cluster.create_pod(
        "nostart",
        {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "sandbox/exec", "command": ["no-such-program-here"]}
            ],
        },
    )
    pod = await cluster.until(lambda: cluster.phase_is("nostart", "Failed"))
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert terminated["message"] == "cannot run no-such-program-here: No such file or directory"


async def test_a_stopping_kubelet_leaves_no_pods_behind(
    cluster: Cluster, apiserver: Running, node: Node, tmp_path: Path
) -> None:
    async with running_kubelet(apiserver.server, node, tmp_path / "node") as kubelet:
        # It ignores SIGTERM (ready once the trap is set): only SIGKILL stops it.
        stubborn = shell(
            "trap '' TERM; touch /flag/set; sleep 1000",
            readinessProbe={"exec": {"command": ["test", "-e", "/flag/set"]}, "periodSeconds": 1},
            volumeMounts=[{"name": "flag", "mountPath": "/flag"}],
        )
        await cluster.create_pod(
            "stubborn",
            {"containers": [stubborn], "volumes": [{"name": "flag", "emptyDir": {}}]},
        )
        await cluster.create_pod(
            "echo", {"containers": [{"name": "e", "image": "sandbox/udp-echo"}]}
        )
        await cluster.until(lambda: cluster.ready_pod("stubborn"))
        await cluster.until(lambda: cluster.phase_is("echo", "Running"))
        pids = []
        for name, container in (("stubborn", "main"), ("echo", "e")):
            pod = cluster.pod(name)
            assert pod is not None
            pid = kubelet.container_pid(pod, container)
            assert pid is not None
            assert kubelet.is_running(pod, container)
            pids.append(pid)
        assert len(netns.with_prefix(node.pod_prefix)) == 2
    assert not netns.with_prefix(node.pod_prefix)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(netns.processes_in([node.namespace]).values())


# -- the parts, without namespaces --------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "args", "expected"),
    [
        ("sandbox/http-echo", (), ["sandbox.images.echo", "http", "--port", "8080"]),
        ("docker.io/sandbox/tcp-echo:latest", ("--port", "9"), ["ns", "--port", "9"]),
        ("localhost:5000/sandbox/udp-echo@sha256:ab", (), ["udp", "--port", "7001"]),
        ("ghcr.io/telepresenceio/tel2:2.20.0", ("agent", "--x"), ["-m", "agent", "--x"]),
        ("docker.io/datawire/tel2", ("--debug",), ["-m", "manager", "--debug"]),
    ],
)
def test_images_map_to_programs(image: str, args: tuple[str, ...], expected: list[str]) -> None:
    program = images.default_images().resolve(
        images.Container(image, ("ignored",), args, pod="p", namespace="ns")
    )
    assert program.argv[0] == sys.executable
    words = list(program.argv)
    assert any(words[i : i + len(expected)] == expected for i in range(len(words)))
    assert "ignored" not in words
    assert program.env["PYTHONPATH"] == str(images.CHECKOUT)


def test_exec_image_runs_host_programs_and_unknown_images_fail_to_pull() -> None:
    known = images.default_images()
    program = known.resolve(images.Container("sandbox/exec", ("redis-server",), ("--port", "1")))
    assert program.argv == ("redis-server", "--port", "1")
    assert program.env["PATH"].endswith("/usr/bin:/sbin:/bin")
    with pytest.raises(images.NoCommand):
        known.resolve(images.Container("sandbox/exec"))
    with pytest.raises(images.UnknownImage) as unknown:
        known.resolve(images.Container("nginx:1.27"))
    assert str(unknown.value).startswith('failed to pull image "nginx:1.27": image not known')
    assert "*/tel2" in str(unknown.value)


def test_log_lines_are_in_the_cri_format(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    writer = LogWriter(path)
    writer.write("stdout", b"one\ntw")
    writer.write("stderr", b"oops\n")
    writer.write("stdout", b"o\n" + b"x" * (MAX_LOG_LINE + 5) + b"\n")
    writer.write("stdout", b"no newline")
    writer.close()
    records = [line.split(" ", 3) for line in path.read_text().splitlines()]
    assert [(stream, tag, content[:5]) for _, stream, tag, content in records] == [
        ("stdout", "F", "one"),
        ("stderr", "F", "oops"),
        ("stdout", "F", "two"),
        ("stdout", "P", "xxxxx"),
        ("stdout", "F", "xxxxx"),
        ("stdout", "F", "no ne"),
    ]
    assert len(records[3][3]) == MAX_LOG_LINE
    for stamp, *_ in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", stamp)


def test_restart_backoff_doubles_up_to_its_cap_and_starts_afresh() -> None:
    backoff = Backoff(10.0)
    assert backoff.delay(exited_at=0.0, now=0.0) == (0.0, 0.0)  # the first restart is at once
    assert backoff.delay(exited_at=5.0, now=5.0) == (10.0, 10.0)
    assert backoff.delay(exited_at=20.0, now=23.0) == (17.0, 20.0)
    periods = [backoff.delay(exited_at=30.0 + i, now=30.0 + i)[1] for i in range(6)]
    assert periods == [40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert backoff.delay(exited_at=1000.0, now=1000.0) == (0.0, 0.0)  # 10 quiet minutes
    assert go_duration(10.0) == "10s"
    assert go_duration(160.0) == "2m40s"
    assert go_duration(300.0) == "5m0s"
    assert go_duration(0.5) == "500ms"


async def test_probe_handlers_against_loopback_servers() -> None:
    from grpclib.health.check import ServiceStatus
    from grpclib.health.service import OVERALL, Health
    from grpclib.server import Server

    async def answer(stream: SocketStream, status: bytes) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream):  # a TCP probe only connects
                await stream.receive()
                await stream.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")

    target = Target(name="c", pod_ip="127.0.0.1", ports={"web": 0}, pid=None, env={})
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as healthy,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as failing,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(healthy.serve, lambda s: answer(s, b"204 No Content"))
        tasks.start_soon(failing.serve, lambda s: answer(s, b"503 Unavailable"))
        good = healthy.extra(anyio.abc.SocketAttribute.local_port)
        bad = failing.extra(anyio.abc.SocketAttribute.local_port)
        refused = await anyio.create_tcp_listener(local_host="127.0.0.1")
        closed = refused.extra(anyio.abc.SocketAttribute.local_port)
        await refused.aclose()

        async def check(action: dict[str, Any]) -> Outcome:
            return await run_handler(action, target, connect_tcp, time_limit=5)

        assert (await check({"httpGet": {"port": good, "path": "health"}})).success
        failed = await check({"httpGet": {"port": bad}})
        assert failed == Outcome(False, "HTTP probe failed with statuscode: 503")
        assert (await check({"tcpSocket": {"port": good}})).success
        refusal = await check({"httpGet": {"port": closed}})
        assert refusal.message == (
            f'Get "http://127.0.0.1:{closed}/": dial tcp 127.0.0.1:{closed}: connect: '
            "connection refused"
        )
        unknown_port = await check({"tcpSocket": {"port": "db"}})
        assert unknown_port.message == "couldn't find port: db in container c"

        status = ServiceStatus()
        server = Server([Health({OVERALL: [status]})])
        await server.start("127.0.0.1", 0)
        try:
            port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            status.set(True)
            assert (await check({"grpc": {"port": port}})).success
            status.set(False)
            not_serving = await check({"grpc": {"port": port}})
            assert not_serving == Outcome(False, 'service unhealthy (responded with "NOT_SERVING")')
        finally:
            server.close()
            await server.wait_closed()
        tasks.cancel_scope.cancel()


async def test_sidecars_hooks_and_a_changed_image(cluster: Cluster, kubelet: Kubelet) -> None:
    shared = [{"name": "shared", "mountPath": "/shared"}]
    sidecar = shell(
        "trap 'exit 0' TERM; touch /shared/sidecar; sleep 1000 & wait",
        "sidecar",
        restartPolicy="Always",
        startupProbe={"exec": {"command": ["test", "-e", "/shared/sidecar"]}, "periodSeconds": 1},
        volumeMounts=shared,
    )
    main = shell(
        "trap 'exit 0' TERM; cat /shared/started; sleep 1000 & wait",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo hook > /shared/hook"]}}},
        readinessProbe={"exec": {"command": ["test", "-e", "/shared/hook"]}, "periodSeconds": 1},
        volumeMounts=shared,
    )
    await cluster.create_pod(
        "sidecar",
        {
            "initContainers": [sidecar],
            "containers": [main],
            "volumes": [{"name": "shared", "emptyDir": {}}],
        },
    )
    pod = await cluster.until(lambda: cluster.ready_pod("sidecar"))
    statuses = pod["status"]
    (side,) = statuses["initContainerStatuses"]
    assert "running" in side["state"]
    assert side["started"] is True
    assert condition(pod, "Initialized") == "True"

    resource = cluster.api.registry.lookup("", "v1", "pods")
    assert resource is not None
    await cluster.api.objects.patch(
        resource,
        "default",
        "sidecar",
        "json",
        [{"op": "replace", "path": "/spec/containers/0/image", "value": "sandbox/exec:2"}],
        ADMIN,
    )

    def restarted() -> Obj | None:
        status = cluster.container_status("sidecar", "main")
        running = "running" in status.get("state", {})
        return status if running and status.get("restartCount") == 1 else None

    status = await cluster.until(restarted)
    assert status["image"] == "sandbox/exec:2"
    assert any("definition changed" in e["message"] for e in cluster.events("sidecar", "Killing"))
    side = cluster.container_status("sidecar", "sidecar")
    assert side["restartCount"] == 0
