"""The whole sandbox, end to end: ``sandbox up``, real kubectl in the workstation namespace,
workloads in pod namespaces, Services through nftables, cluster DNS, port-forward, and
``sandbox down`` leaving nothing behind.

One sandbox (two nodes) serves the whole module; each test uses its own names. What a user
would observe is asserted: kubectl's output, answers from the echo pods, DNS answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from sandbox.cluster.daemon import prefix_for
from sandbox.node import netns

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.timeout(240)

ECHO = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: sandbox/http-echo
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: client, image: sandbox/exec, command: [sleep, infinity]}
"""


@dataclass
class Sandbox:
    directory: Path

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"sandbox {' '.join(args)}: {result.returncode}\n{result.stderr}")
        return result

    def ws(
        self, *command: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", "ws", "--dir", str(self.directory), "--", *command],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {result.returncode}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        return self.ws("kubectl", *args, check=check, stdin=stdin).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def exec(self, pod: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.ws("kubectl", "exec", pod, "--", *command, check=check)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``condition`` until it returns something true (the cluster converges by itself:
    there is nothing to await from outside)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _host_snapshot() -> dict[str, Any]:
    """What the host has that a sandbox must not change: links, nft tables, mounts."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    return {
        "links": sorted(line.split(":")[1].strip() for line in links.splitlines()),
        "tables": sorted(tables.splitlines()),
        "routes": subprocess.run(
            ["ip", "route"], capture_output=True, text=True, check=True
        ).stdout,
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    before = _host_snapshot()
    box = Sandbox(directory)
    try:
        box.run("up", "--dir", str(directory), "--nodes", "2", timeout=180)
        yield box
    finally:
        down = box.run("down", "--dir", str(directory), check=False)
        prefix = prefix_for(directory)
        leftovers = netns.with_prefix(prefix)
        mounts = [
            line
            for line in Path("/proc/mounts").read_text().splitlines()
            if str(directory) in line or prefix in line
        ]
        processes = [
            pid
            for pid in os.listdir("/proc")
            if pid.isdigit() and str(directory).encode() in _cmdline(pid)
        ]
        after = _host_snapshot()
        assert down.returncode == 0, down.stderr
        assert leftovers == [], leftovers
        assert mounts == [], mounts
        assert processes == [], processes
        assert after == before


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def echo(sandbox: Sandbox) -> Sandbox:
    sandbox.kubectl("apply", "-f", "-", stdin=ECHO)
    sandbox.kubectl("rollout", "status", "deployment/echo", "--timeout=90s")
    sandbox.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
    return sandbox


def test_nodes_are_ready(sandbox: Sandbox) -> None:
    nodes = sandbox.get("nodes")["items"]
    assert len(nodes) == 2
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
    status = sandbox.run("status", "--dir", str(sandbox.directory), "-o", "json")
    assert json.loads(status.stdout)["nodes"] == {"node-0": "True", "node-1": "True"}


def _answering_pods(sandbox: Sandbox, url: str, count: int) -> Counter[str]:
    script = f"for i in $(seq {count}); do curl -sS --max-time 5 {url}; done"
    output = sandbox.exec("client", "sh", "-c", script).stdout
    return Counter(
        line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("pod: ")
    )


def test_service_by_name_over_cluster_ip(echo: Sandbox) -> None:
    pods = {p["metadata"]["name"] for p in echo.get("pods", "-l", "app=echo")["items"]}
    for name in ("echo", "echo.default", "echo.default.svc.cluster.local"):
        answered = _answering_pods(echo, f"http://{name}/", 12)
        assert sum(answered.values()) == 12
        assert set(answered) <= pods
        assert len(answered) > 1, f"{name}: every answer came from {answered}"
    ip = echo.get("service", "echo")["spec"]["clusterIP"]
    resolved = echo.exec("client", "getent", "hosts", "echo").stdout.split()[0]
    assert resolved == ip


def test_env_has_service_links_and_token(echo: Sandbox) -> None:
    env = echo.exec("client", "env").stdout
    ip = echo.get("service", "echo")["spec"]["clusterIP"]
    assert f"ECHO_SERVICE_HOST={ip}" in env
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env
    token = echo.exec("client", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout
    # --validate=false: kubectl would fetch the OpenAPI schema first, which the sandbox
    # does not serve (docs/sandbox.md, known gaps).
    review = echo.kubectl(
        "create",
        "--validate=false",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
        ),
    )
    assert (
        json.loads(review)["status"]["user"]["username"] == "system:serviceaccount:default:default"
    )
    # In-cluster clients reach the API server through the kubernetes Service.
    out = echo.exec(
        "client",
        "sh",
        "-c",
        "curl -sS --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt "
        '-H "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)" '
        "https://kubernetes.default.svc/version",
    ).stdout
    assert json.loads(out)["major"] == "1"


def test_scale_and_rollout_restart(echo: Sandbox) -> None:
    echo.kubectl("scale", "deployment/echo", "--replicas=2")
    wait_for(lambda: len(echo.get("pods", "-l", "app=echo")["items"]) == 2, "2 echo pods")
    before = {p["metadata"]["name"] for p in echo.get("pods", "-l", "app=echo")["items"]}
    echo.kubectl("rollout", "restart", "deployment/echo")
    echo.kubectl("rollout", "status", "deployment/echo", "--timeout=90s")
    after = wait_for(
        lambda: (
            (names := {p["metadata"]["name"] for p in echo.get("pods", "-l", "app=echo")["items"]})
            and len(names) == 2
            and not names & before
            and names
        ),
        "the restarted pods",
    )
    answered = _answering_pods(echo, "http://echo/", 8)
    assert set(answered) <= after


def test_failing_readiness_leaves_the_endpoints(sandbox: Sandbox) -> None:
    sandbox.kubectl(
        "apply",
        "-f",
        "-",
        stdin="""
apiVersion: v1
kind: Pod
metadata: {name: gated, labels: {app: gated}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: gated
      image: sandbox/exec
      command: [sh, -c, "touch /tmp/gated-ready; exec sleep infinity"]
      readinessProbe:
        exec: {command: [test, -f, /tmp/gated-ready]}
        periodSeconds: 1
        failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: gated}
spec:
  selector: {app: gated}
  ports: [{port: 80}]
""",
    )

    def addresses() -> list[str]:
        endpoints = sandbox.get("endpoints", "gated")
        return [a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]

    wait_for(addresses, "the gated pod in the endpoints")
    sandbox.exec("gated", "rm", "/tmp/gated-ready")
    wait_for(lambda: not addresses(), "the gated pod to leave the endpoints")
    ready = [c for c in sandbox.get("pod", "gated")["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "False"


def test_crashing_container_shows_crash_loop_back_off(sandbox: Sandbox) -> None:
    sandbox.kubectl(
        "run",
        "crasher",
        "--image=sandbox/exec",
        "--restart=Always",
        "--command",
        "--",
        "sh",
        "-c",
        "echo bye; exit 1",
    )

    def waiting_reason() -> str | None:
        statuses = sandbox.get("pod", "crasher").get("status", {}).get("containerStatuses") or []
        waiting = statuses[0].get("state", {}).get("waiting") if statuses else None
        return (
            waiting.get("reason") if waiting and statuses[0].get("restartCount", 0) >= 1 else None
        )

    assert wait_for(lambda: waiting_reason() == "CrashLoopBackOff", "CrashLoopBackOff", timeout=60)
    assert "bye" in sandbox.kubectl("logs", "crasher", "--previous")
    assert "CrashLoopBackOff" in sandbox.kubectl("get", "pod", "crasher")


def test_stateful_set_headless_names(sandbox: Sandbox) -> None:
    sandbox.kubectl(
        "apply",
        "-f",
        "-",
        stdin="""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: sandbox/http-echo
          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
""",
    )
    sandbox.kubectl("rollout", "status", "statefulset/web", "--timeout=90s")
    ip = sandbox.get("pod", "web-0")["status"]["podIP"]
    wait_for(
        lambda: sandbox.exec(
            "client", "getent", "hosts", "web-0.web.default.svc.cluster.local", check=False
        ).stdout.startswith(ip),
        "web-0.web to resolve",
    )
    answer = sandbox.exec("client", "curl", "-sS", "http://web-0.web:8080/").stdout
    assert "pod: web-0" in answer


def test_workstation_is_outside_the_cluster(echo: Sandbox) -> None:
    version = json.loads(echo.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["major"] == "1"
    corporate = echo.ws("getent", "hosts", "intranet.corp.example").stdout
    assert corporate.split()[0] == "192.0.2.10"
    pod_ip = echo.get("pods", "-l", "app=echo")["items"][0]["status"]["podIP"]
    service_ip = echo.get("service", "echo")["spec"]["clusterIP"]
    for address in (pod_ip, service_ip, "10.96.0.10"):
        probe = echo.ws("curl", "-sS", "--max-time", "3", f"http://{address}/", check=False)
        assert probe.returncode != 0
        assert "Couldn't connect" in probe.stderr or "unreachable" in probe.stderr.lower()
    assert echo.ws("getent", "hosts", "echo.default.svc.cluster.local", check=False).returncode != 0


@pytest.mark.anyio
async def test_port_forward_moves_256_mib_both_ways(echo: Sandbox) -> None:
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.stream import WsApiClient

    echo.kubectl(
        "apply",
        "-f",
        "-",
        stdin="""
apiVersion: v1
kind: Pod
metadata: {name: tcp-echo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: echo
      image: sandbox/tcp-echo
      readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
""",
    )
    echo.kubectl("wait", "--for=condition=Ready", "pod/tcp-echo", "--timeout=60s")
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(echo.directory / "host.kubeconfig"), client_configuration=configuration
    )
    size = 256 * 1024 * 1024
    chunk = os.urandom(256 * 1024)
    async with WsApiClient(configuration=configuration) as api_client:
        # Typed as answering a str; with _preload_content=False it is the websocket.
        api: Any = client.CoreV1Api(api_client)
        ws = await api.connect_get_namespaced_pod_portforward(
            "tcp-echo", "default", ports="7000", _preload_content=False
        )
        async with ws as socket:
            sent, received = hashlib.sha256(), hashlib.sha256()
            got = 0
            headers = 0

            async def send() -> None:
                for _ in range(size // len(chunk)):
                    await socket.send_bytes(b"\x00" + chunk)
                    sent.update(chunk)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                while got < size:
                    message = await socket.receive_bytes()
                    channel, payload = message[0], message[1:]
                    if headers < 2:  # each channel first carries its port number
                        assert payload == (7000).to_bytes(2, "little")
                        headers += 1
                        continue
                    assert channel == 0, payload
                    received.update(payload)
                    got += len(payload)
            assert received.hexdigest() == sent.hexdigest()


def test_a_killed_sandbox_is_cleaned_by_the_next_up(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    directory = str(tmp_path)
    prefix = prefix_for(tmp_path)
    try:
        box.run("up", "--dir", directory, "--nodes", "1")
        box.kubectl("run", "sleeper", "--image=sandbox/exec", "--command", "--", "sleep", "300")
        box.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        state = json.loads((tmp_path / "state.json").read_text())
        os.kill(state["pid"], 9)
        wait_for(lambda: not Path(f"/proc/{state['pid']}").exists(), "the daemon to die")
        status = box.run("status", "--dir", directory, check=False)
        assert status.returncode == 3
        assert "namespaces left behind" in status.stdout
        assert netns.with_prefix(prefix)
        again = box.run("up", "--dir", directory, "--nodes", "1")
        assert "removed a stale sandbox" in again.stderr
        assert box.kubectl("get", "pods", "-o", "name") == ""
    finally:
        down = box.run("down", "--dir", directory, check=False)
    assert down.returncode == 0, down.stderr
    assert "nothing left behind" in down.stderr
    assert netns.with_prefix(prefix) == []
    assert not [p for p in os.listdir("/proc") if p.isdigit() and directory.encode() in _cmdline(p)]


def test_commands_without_a_sandbox_say_so(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    ws = box.ws("true", check=False)
    assert ws.returncode == 1
    assert f"no sandbox is running in {tmp_path}" in ws.stderr
    down = box.run("down", "--dir", str(tmp_path))
    assert "nothing was running" in down.stderr
    bad = box.run("up", "--dir", str(tmp_path), "--nodes", "0", check=False)
    assert bad.returncode == 1
    assert "--nodes must be between 1 and 16" in bad.stderr
    assert "Traceback" not in ws.stderr + down.stderr + bad.stderr


def test_external_name_resolves_through_the_corporate_zone(echo: Sandbox) -> None:
    echo.kubectl(
        "create", "service", "externalname", "intranet", "--external-name=intranet.corp.example"
    )
    # The cluster DNS answers the CNAME; the pod's resolver follows it, and the cluster DNS
    # forwards that name to the corporate resolver, as CoreDNS forwards to its node's.
    # Polled, as a client retries: the upstream leg may time out on a loaded machine.
    answer = wait_for(
        lambda: (
            echo.exec(
                "client", "getent", "hosts", "intranet.default.svc.cluster.local", check=False
            ).stdout
        ),
        "the ExternalName to resolve",
    )
    assert answer.split()[0] == "192.0.2.10"
    unknown = echo.exec(
        "client", "getent", "hosts", "nothing-here.default.svc.cluster.local", check=False
    )
    assert unknown.returncode == 2  # getent: not found


def test_deleting_a_namespace_stops_its_pods(sandbox: Sandbox) -> None:
    sandbox.kubectl("create", "namespace", "doomed")
    sandbox.kubectl(
        "-n",
        "doomed",
        "create",
        "deployment",
        "sleepers",
        "--image=sandbox/http-echo",
        "--replicas=2",
    )
    sandbox.kubectl("-n", "doomed", "rollout", "status", "deployment/sleepers", "--timeout=60s")
    uids = [p["metadata"]["uid"] for p in sandbox.get("-n", "doomed", "pods")["items"]]
    assert len(uids) == 2
    sandbox.kubectl("delete", "namespace", "doomed", "--timeout=60s")
    assert "doomed" not in sandbox.kubectl("get", "namespaces", "-o", "name")
    # Their pods' network namespaces (named after their uids) are gone, and with them
    # whatever ran inside.
    names = netns.with_prefix(prefix_for(sandbox.directory))
    assert not [n for n in names for uid in uids if n.endswith(uid.replace("-", "")[:12])]
