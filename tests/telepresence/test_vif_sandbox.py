"""The VIF end to end: after ``telepresence connect``, any program in the workstation reaches
the cluster by name and address, TCP and UDP, with no proxy settings.

One sandbox (one node) with the chart in ``ambassador`` (the ``sandbox-developer`` user bound
by ``clientRbac``) and, in ``default``: an ``echo`` pod (HTTP 8080, TCP echo 7000, UDP echo
7001) behind a Service, a headless StatefulSet ``web``, and an ExternalName ``intranet`` for
the workstation's corporate ``intranet.corp.example``. Every command runs in the workstation
namespace as root (so ``connect`` starts the root daemon and its VIF), with XDG directories of
the test's own. The workstation reaches nothing of the cluster by itself: what answers came
through the VIF and the traffic-manager. Its corporate resolver (``nameserver 10.88.0.1``,
``search corp.example``) is what the VIF's DNS redirects and passes other names on to.

The module's end quits and asserts that the workstation's links, routes (all tables), policy
rules and nftables ruleset are exactly what they were before the first connect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.cluster.daemon import prefix_for
from tests.sandbox.test_cluster import Sandbox, wait_for
from tests.telepresence.test_connect_sandbox import DEVELOPER, Laptop, _alive
from tests.telepresence.test_helm_sandbox import TELEPRESENCE
from tests.telepresence.test_session_sandbox import DEVELOPER_BINDING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(300)

WORKLOADS = """\
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: http, image: sandbox/http-echo, ports: [{containerPort: 8080}]}
    - {name: tcp, image: sandbox/tcp-echo, ports: [{containerPort: 7000}]}
    - {name: udp, image: sandbox/udp-echo, ports: [{containerPort: 7001, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
    - {name: http, port: 8080}
    - {name: tcp, port: 7000}
    - {name: udp, port: 7001, protocol: UDP}
---
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
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: sandbox/http-echo
          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: intranet}
spec: {type: ExternalName, externalName: intranet.corp.example}
---
apiVersion: v1
kind: Pod
metadata: {name: runner}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: runner, image: sandbox/exec, command: [sleep, infinity]}
"""

#: 1,000 concurrent TCP connections to echo:7000, each with its own bytes; prints how many
#: came back whole.
THOUSAND = """
import asyncio, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
async def one(index):
    reader, writer = await asyncio.open_connection(sys.argv[1], 7000)
    payload = os.urandom(2000) + index.to_bytes(4, "big")
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    echoed = await reader.read(-1)
    writer.close()
    return echoed == payload
async def main():
    results = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(1000)), return_exceptions=True), 120)
    errors = [r for r in results if isinstance(r, BaseException)]
    print(sum(r is True for r in results), repr(errors[:3]))
asyncio.run(main())
"""

UDP_ECHO = """
import socket, sys
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(5)
for attempt in range(3):  # UDP: the first datagram of a flow may race the flow's opening
    client.sendto(b"ping over udp", (sys.argv[1], 7001))
    try:
        print(client.recvfrom(100)[0].decode())
        break
    except TimeoutError:
        continue
"""

#: One DNS query straight to the workstation's nameserver (the VIF redirects it), with its
#: rcode, so NXDOMAIN is told apart from a timeout.
QUERY = """
import sys, dns.message, dns.query, dns.rcode
query = dns.message.make_query(sys.argv[1], "A")
reply = dns.query.udp(query, "10.88.0.1", timeout=5)
print(dns.rcode.to_text(reply.rcode()), *[r.to_text() for r in reply.answer])
"""


def network_state(laptop: Laptop) -> dict[str, str]:
    """What the VIF may change in the workstation, and must put back."""
    commands = {
        "links": ["ip", "-o", "link"],
        "routes": ["ip", "route", "show", "table", "all"],
        "rules": ["ip", "rule"],
        "nft": ["nft", "list", "ruleset"],
    }
    return {name: laptop.sandbox.ws(*argv).stdout for name, argv in commands.items()}


def tel_links(laptop: Laptop) -> list[dict[str, Any]]:
    links = json.loads(laptop.sandbox.ws("ip", "-j", "link").stdout)
    return [link for link in links if link["ifname"].startswith("tel")]


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Laptop]:
    directory = tmp_path_factory.mktemp("sandbox")
    box = Sandbox(directory)
    machine = Laptop(box, tmp_path_factory.mktemp("laptop"))
    try:
        box.run("up", "--dir", str(directory), "--nodes", "1", timeout=180)
        installed = box.ws(
            TELEPRESENCE, "helm", "install", "--namespace", "ambassador",
            "--set", f"namespaces={{default}},{DEVELOPER_BINDING}", check=False,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        box.kubectl("apply", "-f", "-", stdin=WORKLOADS)
        box.kubectl("wait", "--for=condition=Ready", "pod/echo", "pod/runner", "--timeout=60s")
        box.kubectl("rollout", "status", "statefulset/web", "--timeout=90s")
        yield machine
    finally:
        quit_ = machine.telepresence("quit", "-s")
        down = box.run("down", "--dir", str(directory), check=False)
        assert quit_.returncode == 0, quit_.stderr
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def before(laptop: Laptop) -> dict[str, str]:
    """The workstation's network before any connect."""
    return network_state(laptop)


@pytest.fixture(scope="module")
def connected(laptop: Laptop, before: dict[str, str]) -> Laptop:
    done = laptop.telepresence("connect", "--context", DEVELOPER, "-n", "default")
    assert done.returncode == 0, done.stderr
    return laptop


def curl(laptop: Laptop, url: str, *options: str) -> subprocess.CompletedProcess[str]:
    return laptop.run("curl", "-sS", "--max-time", "10", *options, url)


def echo_ips(laptop: Laptop) -> tuple[str, str]:
    service = laptop.sandbox.get("service", "echo")["spec"]["clusterIP"]
    pod = laptop.sandbox.get("pod", "echo")["status"]["podIP"]
    return service, pod


def test_status_shows_the_vif_its_routes_and_dns_mode(connected: Laptop) -> None:
    status = connected.status()
    vif = status["vif"]
    assert vif["device"].startswith("tel")
    assert set(vif["routed"]) == {*status["pod_subnets"], status["service_subnet"]}
    assert vif["dns_address"] == f"{status['cluster_dns']}:53"
    assert vif["dns_mode"] == "redirect"  # no systemd-resolved in the workstation
    assert vif["conflicts"] == []
    text = connected.telepresence("status").stdout
    assert f"VIF: {vif['device']}, routing " in text
    assert f"DNS: {status['cluster_dns']}:53 (redirect)" in text


def test_names_and_addresses_answer_without_any_proxy(connected: Laptop) -> None:
    service_ip, pod_ip = echo_ips(connected)
    for host in ("echo", "echo.default", "echo.default.svc.cluster.local", service_ip, pod_ip):
        done = curl(connected, f"http://{host}:8080/")
        assert done.returncode == 0, (host, done.stderr)
        assert done.stdout.startswith("pod: echo\nnamespace: default\n"), (host, done.stdout)


def test_udp_echo_by_name(connected: Laptop) -> None:
    done = connected.run(sys.executable, "-c", UDP_ECHO, "echo")
    assert done.stdout.strip() == "ping over udp", done.stderr


def test_a_headless_statefulset_pod_by_name(connected: Laptop) -> None:
    done = curl(connected, "http://web-0.web:8080/")
    assert done.stdout.startswith("pod: web-0\n"), done.stderr


def test_an_external_name_service_and_the_corporate_names(connected: Laptop) -> None:
    external = connected.run("getent", "hosts", "intranet.default")
    assert external.stdout.split()[:1] == ["192.0.2.10"], external.stderr
    for name, address in (("intranet.corp.example", "192.0.2.10"), ("wiki", "192.0.2.11")):
        corporate = connected.run("getent", "hosts", name)
        assert corporate.stdout.split()[:1] == [address], (name, corporate.stderr)


def test_an_unknown_cluster_name_is_nxdomain(connected: Laptop) -> None:
    answer = connected.run(sys.executable, "-c", QUERY, "nothing-here.default.")
    assert answer.stdout.split() == ["NXDOMAIN"], answer.stderr
    known = connected.run(sys.executable, "-c", QUERY, "echo.default.")
    service_ip, _ = echo_ips(connected)
    assert known.stdout.split()[0] == "NOERROR"
    assert service_ip in known.stdout
    assert connected.run("getent", "hosts", "nothing-here.default").returncode == 2


def test_a_thousand_concurrent_connections_all_complete(connected: Laptop) -> None:
    done = connected.run(sys.executable, "-c", THOUSAND, "echo")
    assert done.stdout.split(maxsplit=1)[0] == "1000", (done.stdout, done.stderr)


def test_a_never_proxy_subnet_is_not_routed(connected: Laptop) -> None:
    service_ip, pod_ip = echo_ips(connected)
    assert connected.telepresence("quit").returncode == 0
    try:
        done = connected.telepresence(
            "connect", "--context", DEVELOPER, "-n", "default", "--never-proxy", f"{pod_ip}/32"
        )
        assert done.returncode == 0, done.stderr
        vif = connected.status()["vif"]
        assert vif["never_proxied"] == [f"{pod_ip}/32"]
        # The pod's address goes the way it went before: nowhere (the workstation has no
        # route into the cluster), and not into the TUN.
        route = connected.sandbox.ws("ip", "route", "get", pod_ip, check=False)
        assert vif["device"] not in route.stdout + route.stderr
        refused = curl(connected, f"http://{pod_ip}:8080/", "--max-time", "3")
        assert refused.returncode != 0
        # The rest of the subnet, and the Service in front of that pod, still answer.
        assert curl(connected, f"http://{service_ip}:8080/").stdout.startswith("pod: echo\n")
    finally:
        assert connected.telepresence("quit").returncode == 0
        again = connected.telepresence("connect", "--context", DEVELOPER, "-n", "default")
        assert again.returncode == 0, again.stderr


def test_the_vif_stays_while_the_manager_pod_is_replaced(connected: Laptop) -> None:
    [device] = tel_links(connected)
    arrivals = connected.status()["arrivals"]
    connected.sandbox.kubectl("delete", "pod", "-n", "ambassador", "-l", "app=traffic-manager")
    wait_for(
        lambda: (
            (status := connected.status())["arrivals"] > arrivals
            and status["state"] == "connected"
            and status["root_data_plane"] == "connected"
        ),
        "the session and the root daemon's data plane to come back",
        timeout=120,
    )
    done = wait_for(
        lambda: curl(connected, "http://echo:8080/").stdout.startswith("pod: echo\n"),
        "a new connection to answer",
    )
    assert done
    assert tel_links(connected) == [device]  # the same device (same index) throughout


def test_killed_root_daemon_then_connect_then_quit_leaves_nothing(
    connected: Laptop, before: dict[str, str]
) -> None:
    root_pid = connected.status()["root_daemon"]["pid"]
    os.kill(root_pid, signal.SIGKILL)  # the test's own daemon (it connected)
    wait_for(lambda: not _alive(root_pid), "the root daemon to die")
    # The TUN device went with the process; the nftables table and the policy rule did not.
    assert tel_links(connected) == []
    left = network_state(connected)
    assert "table ip telepresence" in left["nft"]
    assert "fwmark" in left["rules"]

    done = connected.telepresence("connect", "--context", DEVELOPER, "-n", "default")
    assert done.returncode == 0, done.stderr
    status = connected.status()
    assert status["root_daemon"]["pid"] != root_pid
    assert status["root_data_plane"] == "connected"
    assert curl(connected, "http://echo:8080/").stdout.startswith("pod: echo\n")

    quit_ = connected.telepresence("quit", "-s")
    assert quit_.returncode == 0, quit_.stderr
    assert network_state(connected) == before


def test_the_direct_transport_from_inside_the_cluster_network(
    laptop: Laptop, tmp_path: Path
) -> None:
    # A CI runner in a pod: its network namespace reaches the manager pod's address. The pod
    # subnet overlaps the pod's own routes: reported as a conflict, not routed (pod addresses
    # are reached directly); the service subnet goes through the VIF, and cluster names
    # resolve through its DNS (the runner's resolv.conf here is the machine's: its queries
    # are redirected to the VIF's server).
    runner = laptop.sandbox.get("pod", "runner")["metadata"]["uid"]
    namespace = f"{prefix_for(laptop.sandbox.directory)}p0-{runner.replace('-', '')[:12]}"
    manager = laptop.sandbox.get("pods", "-n", "ambassador", "-l", "app=traffic-manager")
    address = manager["items"][0]["status"]["podIP"]
    service_ip, _ = echo_ips(laptop)
    environment = [
        f"XDG_RUNTIME_DIR={tmp_path / 'run'}",
        f"XDG_CACHE_HOME={tmp_path / 'cache'}",
        f"XDG_CONFIG_HOME={tmp_path / 'config'}",
        f"KUBECONFIG={laptop.sandbox.directory / 'kubeconfig'}",
    ]

    def in_runner(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, "env", *environment, *command],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    routes_before = in_runner("ip", "route", "show", "table", "all").stdout
    try:
        done = in_runner(
            TELEPRESENCE, "connect", "--context", DEVELOPER, "-n", "default",
            "--transport", "direct", "--manager-address", address,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        status = json.loads(in_runner(TELEPRESENCE, "status", "-o", "json").stdout)
        assert (status["state"], status["root_data_plane"]) == ("connected", "connected")
        vif = status["vif"]
        assert vif["routed"] == [status["service_subnet"]]
        [conflict] = vif["conflicts"]
        assert conflict.startswith(f"{status['pod_subnets'][0]} overlaps the route to ")
        resolved = in_runner("getent", "hosts", "echo.default.svc.cluster.local.")
        assert resolved.stdout.split()[:1] == [service_ip], resolved.stderr
        answer = in_runner("curl", "-sS", "--max-time", "10", "http://echo.default:8080/")
        assert answer.stdout.startswith("pod: echo\n"), answer.stderr
    finally:
        assert in_runner(TELEPRESENCE, "quit", "-s").returncode == 0
    assert in_runner("ip", "route", "show", "table", "all").stdout == routes_before
    assert "telepresence" not in in_runner("nft", "list", "tables").stdout
