"""``telepresence connect`` end to end: the CLI in the sandbox's workstation, as on a laptop.

One sandbox (one node) with two traffic-managers, each with the ``sandbox-developer`` context's
user bound by ``clientRbac``: one in ``ambassador`` that manages ``default``, one in
``staging`` that manages ``staging``; and a ``web`` pod (HTTP echo on 8080, UDP echo on 7001)
behind a Service in ``default``. Every command runs as a process in the workstation namespace,
with XDG directories of the test's own, so the daemons it starts, their sockets and logs are
the test's alone; the module's end stops them (``quit -s``) and checks that nothing is left.

The workstation reaches no pod or Service address by itself: everything that answers through
the SOCKS port came through the traffic-manager.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from sandbox.cluster.daemon import prefix_for
from tests.sandbox.test_cluster import Sandbox, wait_for
from tests.telepresence.test_helm_sandbox import TELEPRESENCE
from tests.telepresence.test_session_sandbox import DEVELOPER_BINDING

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)

DEVELOPER = "sandbox-developer"
WEB = """\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: http, image: sandbox/http-echo, ports: [{containerPort: 8080}]}
    - {name: udp, image: sandbox/udp-echo, ports: [{containerPort: 7001, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 8080}
    - {name: udp, port: 7001, protocol: UDP}
"""


class Laptop:
    """The workstation, with the test's own XDG directories."""

    def __init__(self, sandbox: Sandbox, home: Path) -> None:
        self.sandbox = sandbox
        self.home = home
        self.environment = {
            "XDG_RUNTIME_DIR": str(home / "run"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }

    @property
    def runtime(self) -> Path:
        return self.home / "run" / "telepresence"

    def run(self, *command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        variables = [f"{name}={value}" for name, value in self.environment.items()]
        return self.sandbox.ws("env", *variables, *command, check=check)

    def telepresence(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(TELEPRESENCE, *args)

    def status(self) -> dict[str, Any]:
        done = self.telepresence("status", "--output", "json")
        assert done.returncode == 0, done.stderr
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def curl(self, url: str) -> str:
        done = self.run(
            "curl", "-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:1080", url
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Laptop]:
    directory = tmp_path_factory.mktemp("sandbox")
    box = Sandbox(directory)
    machine = Laptop(box, tmp_path_factory.mktemp("laptop"))
    try:
        box.run("up", "--dir", str(directory), "--nodes", "1", timeout=180)
        for namespace, managed in (("ambassador", "default"), ("staging", "staging")):
            installed = box.ws(
                TELEPRESENCE, "helm", "install", "--namespace", namespace,
                "--set", f"namespaces={{{managed}}},{DEVELOPER_BINDING}", check=False,
            )  # fmt: skip
            assert installed.returncode == 0, installed.stderr
        box.kubectl("apply", "-f", "-", stdin=WEB)
        box.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=60s")
        yield machine
    finally:
        quit_ = machine.telepresence("quit", "-s")
        down = box.run("down", "--dir", str(directory), check=False)
        assert quit_.returncode == 0, quit_.stderr
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def connected(laptop: Laptop) -> Laptop:
    done = laptop.telepresence(
        "connect", "--context", DEVELOPER, "-n", "default", "--socks", "1080"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"Connected to context {DEVELOPER}, namespace default (https://10.88.0.1:6443), "
        "traffic-manager 0.1.0 in namespace ambassador\n"
    )
    return laptop


def test_names_and_addresses_answer_through_socks(connected: Laptop) -> None:
    pod_ip = connected.sandbox.get("pod", "web")["status"]["podIP"]
    for host in ("web", "web.default", "web.default.svc.cluster.local", pod_ip):
        answer = connected.curl(f"http://{host}:8080/")
        assert answer.startswith("pod: web\nnamespace: default\n"), (host, answer)


def test_udp_through_socks_udp_associate(connected: Laptop) -> None:
    # A SOCKS5 client by hand (curl has no UDP): associate, send to web:7001 by name, read.
    answer = connected.run(sys.executable, "-c", UDP_CLIENT, "web", "7001")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == "echoed: hello over udp\n"


def test_status_shows_the_session(connected: Laptop) -> None:
    status = connected.status()
    service = connected.sandbox.get("service", "web")
    assert status["state"] == "connected"
    assert status["context"] == DEVELOPER
    assert status["namespace"] == "default"
    assert (status["manager_namespace"], status["manager_namespace_source"]) == (
        "ambassador",
        "default",
    )
    assert status["manager_version"] == "0.1.0"
    assert status["transport"] == "portforward"
    assert status["pod_subnets"] == ["10.244.0.0/24"]
    assert status["service_subnet"] == "10.96.0.0/12"
    assert service["spec"]["clusterIP"].startswith("10.9")
    assert status["socks_address"] == "127.0.0.1:1080"
    assert status["session_id"]
    assert status["user_daemon"]["pid"] > 0
    # The tests run as root: the root daemon runs too, with a data plane of its own.
    assert status["root_daemon"]["pid"] > 0
    assert status["root_data_plane"] == "connected"


def test_a_second_connect_is_the_same_session(connected: Laptop) -> None:
    before = connected.status()
    again = connected.telepresence(
        "connect", "--context", DEVELOPER, "-n", "default", "--output", "json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["session_id"] == before["session_id"]
    other = connected.telepresence("connect", "--context", DEVELOPER, "-n", "kube-system")
    assert other.returncode == 12, other.stderr
    assert "run telepresence quit first" in other.stderr


def test_the_manager_restarting_is_survived(connected: Laptop) -> None:
    before = connected.status()
    connected.sandbox.kubectl(
        "delete", "pod", "-n", "ambassador", "-l", "app=traffic-manager", "--wait=false"
    )
    seen = wait_for(
        lambda: (status := connected.status())["state"] == "reconnecting" and status,
        "status to show reconnecting",
        timeout=30,
    )
    assert seen["error"]
    after = wait_for(
        lambda: (status := connected.status())["state"] == "connected" and status,
        "the session to come back",
        timeout=90,
    )
    assert after["session_id"] != before["session_id"]
    assert after["arrivals"] == before["arrivals"] + 1
    # The same daemons.
    assert after["user_daemon"]["pid"] == before["user_daemon"]["pid"]
    assert after["root_daemon"]["pid"] == before["root_daemon"]["pid"]
    wait_for(lambda: connected.status()["root_data_plane"] == "connected", "the root data plane")
    assert connected.curl("http://web:8080/").startswith("pod: web\n")


UDP_CLIENT = """
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
control = socket.create_connection(("127.0.0.1", 1080))
control.sendall(b"\\x05\\x01\\x00")
assert control.recv(2) == b"\\x05\\x00"
control.sendall(b"\\x05\\x03\\x00\\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
reply = control.recv(10)
assert reply[1] == 0, reply
relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(10)
name = host.encode()
header = b"\\x00\\x00\\x00\\x03" + bytes([len(name)]) + name + struct.pack("!H", port)
udp.sendto(header + b"hello over udp", relay)
data, _ = udp.recvfrom(65535)
assert data.startswith(header), data
print("echoed:", data[len(header):].decode())
"""


def test_the_manager_namespace_from_the_kubeconfig_extension(
    laptop: Laptop, tmp_path: Path
) -> None:
    # The documented extension on the cluster of a copy of the kubeconfig.
    kubeconfig = yaml.safe_load((laptop.sandbox.directory / "kubeconfig").read_text())
    kubeconfig["clusters"][0]["cluster"]["extensions"] = [
        {
            "name": "telepresence.io",
            "extension": {"cluster": {"defaultManagerNamespace": "staging"}},
        }
    ]
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    other = Laptop(laptop.sandbox, tmp_path)
    try:
        done = other.telepresence(
            "connect", "--kubeconfig", str(path), "--context", DEVELOPER, "-n", "staging"
        )
        assert done.returncode == 0, done.stderr
        status = other.status()
        assert (status["manager_namespace"], status["manager_namespace_source"]) == (
            "staging",
            "kubeconfig",
        )
        assert status["state"] == "connected"
    finally:
        assert other.telepresence("quit", "-s").returncode == 0


def test_two_concurrent_connects_end_with_one_session(laptop: Laptop, tmp_path: Path) -> None:
    other = Laptop(laptop.sandbox, tmp_path)
    variables = [f"{name}={value}" for name, value in other.environment.items()]
    command = [
        sys.executable, "-m", "sandbox", "ws", "--dir", str(laptop.sandbox.directory), "--",
        "env", *variables, TELEPRESENCE, "connect", "--context", DEVELOPER, "-n", "default",
        "--output", "json",
    ]  # fmt: skip
    try:
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        outputs = [process.communicate(timeout=120) for process in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outputs
        sessions = {json.loads(stdout)["session_id"] for stdout, _ in outputs}
        assert len(sessions) == 1
        status = other.status()
        assert status["arrivals"] == 1
        assert {status["session_id"]} == sessions
    finally:
        assert other.telepresence("quit", "-s").returncode == 0


def test_the_library_connects_reads_status_and_quits(laptop: Laptop, tmp_path: Path) -> None:
    other = Laptop(laptop.sandbox, tmp_path)
    script = tmp_path / "ci.py"
    script.write_text(LIBRARY_SCRIPT)
    done = other.run(sys.executable, str(script), DEVELOPER)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "connected default ambassador 0.1.0",
        "status connected",
        "after quit disconnected",
    ]
    assert other.telepresence("quit", "-s").returncode == 0


LIBRARY_SCRIPT = """
import sys
import anyio
from telepresence import Client

async def main() -> None:
    async with Client(context=sys.argv[1]) as client:
        status = await client.connect(namespace="default")
        print("connected", status.namespace, status.manager_namespace, status.manager_version)
        print("status", (await client.status()).state)
        await client.quit()
        print("after quit", (await client.status()).state)

anyio.run(main)
"""


def test_no_manager_is_the_documented_error(laptop: Laptop, tmp_path: Path) -> None:
    # Another laptop (its own daemons), asking for a namespace without a manager (one where
    # the user may list pods).
    other = Laptop(laptop.sandbox, tmp_path)
    try:
        done = other.telepresence(
            "connect", "--context", DEVELOPER, "--manager-namespace", "default"
        )
        assert done.returncode == 9
        assert done.stderr.strip().endswith(
            "traffic manager not found in namespace default: install it with telepresence "
            "helm install"
        )
    finally:
        assert other.telepresence("quit", "-s").returncode == 0
    assert not list(other.runtime.glob("*.sock"))


def test_quit_stops_both_daemons_and_removes_their_sockets(laptop: Laptop, tmp_path: Path) -> None:
    other = Laptop(laptop.sandbox, tmp_path)
    done = other.telepresence("connect", "--context", DEVELOPER, "-n", "default")
    assert done.returncode == 0, done.stderr
    status = other.status()
    pids = [status["user_daemon"]["pid"], status["root_daemon"]["pid"]]
    assert sorted(path.name for path in other.runtime.glob("*.sock")) == [
        "connector.sock",
        "daemon.sock",
    ]
    quit_ = other.telepresence("quit", "-s")
    assert quit_.returncode == 0, quit_.stderr
    assert not list(other.runtime.glob("*.sock"))
    for pid in pids:
        assert not _alive(pid)
    assert other.status()["state"] == "disconnected"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_user_without_the_client_role_is_refused(laptop: Laptop, tmp_path: Path) -> None:
    # A service account with no rights at all, as a kubeconfig user of its own.
    laptop.sandbox.kubectl("create", "serviceaccount", "nobody")
    token = laptop.sandbox.kubectl("create", "token", "nobody").strip()
    kubeconfig = yaml.safe_load((laptop.sandbox.directory / "kubeconfig").read_text())
    kubeconfig["users"].append({"name": "nobody", "user": {"token": token}})
    kubeconfig["contexts"].append(
        {"name": "nobody", "context": {"cluster": "sandbox", "user": "nobody"}}
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    other = Laptop(laptop.sandbox, tmp_path)
    try:
        done = other.telepresence("connect", "--kubeconfig", str(path), "--context", "nobody")
        assert done.returncode == 10, done.stderr
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith("telepresence connect: error: ")
        assert "forbidden" in message
        assert "the Helm chart's clientRbac" in message
    finally:
        assert other.telepresence("quit", "-s").returncode == 0


def test_no_kubeconfig_and_an_unreachable_cluster(laptop: Laptop, tmp_path: Path) -> None:
    other = Laptop(laptop.sandbox, tmp_path)
    try:
        missing = other.telepresence("connect", "--kubeconfig", str(tmp_path / "none"))
        assert missing.returncode == 8, missing.stderr
        assert "telepresence connect: error: " in missing.stderr
        assert str(tmp_path / "none") in missing.stderr
        # A cluster whose API server does not answer (nothing listens on that port).
        kubeconfig = yaml.safe_load((laptop.sandbox.directory / "kubeconfig").read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = "https://10.88.0.1:1"
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        unreachable = other.telepresence(
            "connect", "--kubeconfig", str(path), "--context", DEVELOPER
        )
        assert unreachable.returncode == 6, unreachable.stderr
        assert "cannot reach the cluster's API server" in unreachable.stderr
        assert "Traceback" not in missing.stderr + unreachable.stderr
    finally:
        assert other.telepresence("quit", "-s").returncode == 0


def test_the_other_commands(connected: Laptop, tmp_path: Path) -> None:
    version = connected.telepresence("version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines() == [
        "Client: v0.1.0",
        "User daemon: v0.1.0",
        "Root daemon: v0.1.0",
        "Traffic manager: v0.1.0",
    ]
    contexts = connected.telepresence("list-contexts", "--output", "json")
    assert {c["name"] for c in json.loads(contexts.stdout)} == {"sandbox", DEVELOPER}
    namespaces = connected.run(
        TELEPRESENCE, "list-namespaces", "--context", "sandbox", "--output", "json"
    )
    assert {"default", "ambassador", "staging"} <= set(json.loads(namespaces.stdout))
    view = connected.telepresence("config", "view", "--output", "json")
    assert json.loads(view.stdout)["timeouts"]["proxyDial"] == 5.0
    level = connected.telepresence("loglevel", "debug", "--duration", "1m")
    assert level.returncode == 0, level.stderr
    # The user daemon logs at debug level now: a status call leaves a debug line.
    connected.status()
    log_file = connected.home / "cache" / "telepresence" / "logs" / "connector.log"
    assert " DEBUG " in log_file.read_text()
    archive = tmp_path / "logs.zip"
    gathered = connected.run(TELEPRESENCE, "gather-logs", "--output-file", str(archive))
    assert gathered.returncode == 0, gathered.stderr
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
    assert "daemons/connector.log" in names
    assert "daemons/daemon.log" in names
    assert any(name.startswith("traffic-manager/traffic-manager-") for name in names)


def test_a_client_certificate_user_connects_through_the_port_forward(
    laptop: Laptop, tmp_path: Path
) -> None:
    # The sandbox context's admin authenticates with a client certificate: no token to hand
    # the traffic-manager, whose loopback only the (authorized) port-forward reaches.
    other = Laptop(laptop.sandbox, tmp_path)
    try:
        done = other.telepresence("connect", "--context", "sandbox", "-n", "default")
        assert done.returncode == 0, done.stderr
        assert other.status()["state"] == "connected"
        direct = other.telepresence("quit")
        assert direct.returncode == 0
        refused = other.telepresence(
            "connect", "--context", "sandbox", "--transport", "direct",
            "--manager-address", "10.244.0.2",
        )  # fmt: skip
        assert refused.returncode == 10, refused.stderr
        assert "use the portforward transport" in refused.stderr
    finally:
        assert other.telepresence("quit", "-s").returncode == 0


def test_the_direct_transport_from_inside_the_cluster_network(
    laptop: Laptop, tmp_path: Path
) -> None:
    # A CI runner in the cluster's network: the node's namespace reaches the manager pod's
    # address, so --transport direct skips the port-forward.
    node = prefix_for(laptop.sandbox.directory) + "node0"
    manager = laptop.sandbox.get("pods", "-n", "ambassador", "-l", "app=traffic-manager")
    address = manager["items"][0]["status"]["podIP"]
    environment = [
        f"XDG_RUNTIME_DIR={tmp_path / 'run'}",
        f"XDG_CACHE_HOME={tmp_path / 'cache'}",
        f"XDG_CONFIG_HOME={tmp_path / 'config'}",
        f"KUBECONFIG={laptop.sandbox.directory / 'kubeconfig'}",
    ]

    def in_node(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", node, "env", *environment, *command],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    try:
        done = in_node(
            TELEPRESENCE, "connect", "--context", DEVELOPER, "-n", "default",
            "--transport", "direct", "--manager-address", address, "--socks", "1082",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        status = json.loads(in_node(TELEPRESENCE, "status", "-o", "json").stdout)
        assert (status["state"], status["transport"]) == ("connected", "direct")
        assert status["root_data_plane"] == "connected"
        answer = in_node(
            "curl", "-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:1082",
            "http://web:8080/",
        )  # fmt: skip
        assert answer.stdout.startswith("pod: web\n"), answer.stderr
    finally:
        assert in_node(TELEPRESENCE, "quit", "-s").returncode == 0
