"""kube-proxy: its rules as :func:`render` writes them, and as packets between pods meet them.

The packet tests build one node the way :mod:`sandbox.cluster.network` does (a namespace with
the bridge ``cbr0``, ``10.244.0.1/24``, forwarding on, redirects and bridge netfilter off),
with pods from
:class:`~sandbox.node.podnet.PodNetwork`. The node's IP, where NodePorts are served, is
``10.89.0.10`` on the node's loopback: a real node holds it on its link to the fabric, but
a pod reaches it through its gateway either way, so the test needs no fabric. Each pod runs a
small server that answers every TCP connection or UDP datagram with its name and the address
the request came from, and clients are a script run in a pod's namespace that makes a number
of requests and prints one answer (or ``refused``, ``timeout``, ``error ...``) per line.

The Services and EndpointSlices go straight into a :class:`~sandbox.apiserver.store.Store`,
as the controllers would write them, and :meth:`KubeProxy.synced` says when the rules
reflect them. Every namespace is named with a random ``tpp-`` prefix and removed at the end,
with the processes the test started in them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from pyroute2 import AsyncIPRoute

from sandbox.apiserver.store import Store
from sandbox.cluster import addresses
from sandbox.node import netns, proxy
from sandbox.node.podnet import BRIDGE, PodAddress, PodNetwork
from sandbox.node.proxy import KubeProxy, render

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from anyio.abc import Process

    from sandbox.apiserver.store import Key

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Obj = dict[str, Any]
SERVICES: Key = ("", "services")
SLICES: Key = ("discovery.k8s.io", "endpointslices")
PODS: Key = ("", "pods")
CLUSTER_IP = "10.96.0.20"
NODE_IP = addresses.node_ip(0)
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
#: How long one client request may wait for an answer.
REQUEST_TIMEOUT = 2.0
#: The bound on waiting for kube-proxy to load a change.
SYNC_DEADLINE = 10.0

SERVER = """
import selectors, socket, sys
name, sel = sys.argv[1], selectors.DefaultSelector()
for listener in sys.argv[2:]:
    protocol, port = listener.split(":")
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", int(port)))
    if protocol == "tcp":
        sock.listen(128)
    sel.register(sock, selectors.EVENT_READ, protocol)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "tcp":
            conn, peer = key.fileobj.accept()
            with conn:
                conn.sendall(f"{name} {peer[0]}".encode())
        else:
            _, peer = key.fileobj.recvfrom(512)
            key.fileobj.sendto(f"{name} {peer[0]}".encode(), peer)
"""

CLIENT = """
import errno, socket, sys
protocol, host, port, count, timeout = sys.argv[1:]

def ask():
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(float(timeout))
        sock.connect((host, int(port)))
        if protocol == "udp":
            sock.send(b"?")
            return sock.recv(512).decode()
        answer = b""
        while chunk := sock.recv(512):
            answer += chunk
        return answer.decode()

for _ in range(int(count)):
    try:
        print(ask())
    except ConnectionRefusedError:
        print("refused")
    except TimeoutError:
        print("timeout")
    except OSError as error:
        print("error", errno.errorcode.get(error.errno, error.errno))
"""


# -- objects ----------------------------------------------------------------------------------


def service(
    name: str = "web",
    *ports: Obj,
    cluster_ip: str = CLUSTER_IP,
    kind: str = "ClusterIP",
    **spec: Any,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": name, "uid": str(uuid.uuid4())},
        "spec": {"type": kind, "clusterIP": cluster_ip, "ports": list(ports), **spec},
    }


def port(name: str, number: int, target: int | str, protocol: str = "TCP", **extra: Any) -> Obj:
    return {"name": name, "port": number, "targetPort": target, "protocol": protocol, **extra}


def endpoint(ip: str, *, ready: bool | None = True, **conditions: bool) -> Obj:
    if ready is not None:
        conditions["ready"] = ready
    return {"addresses": [ip], "conditions": conditions}


def endpoint_slice(
    service_name: str,
    endpoints: Sequence[Obj],
    ports: Sequence[tuple[str, int | None, str]],
    *,
    name: str | None = None,
    address_type: str = "IPv4",
) -> Obj:
    """A slice as the EndpointSlice controller writes it, ports already resolved."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "default",
            "name": name or f"{service_name}-abcde",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "endpoints": list(endpoints),
        # A slice without endpoints has no port numbers to give.
        "ports": [
            {"name": n, "protocol": proto} | ({} if p is None else {"port": p})
            for n, p, proto in ports
        ],
    }


# -- reading rendered commands ----------------------------------------------------------------


def added(commands: list[Obj], kind: str) -> Iterator[Obj]:
    for command in commands:
        if kind in command.get("add", {}):
            yield command["add"][kind]


def chain_names(commands: list[Obj]) -> set[str]:
    return {chain["name"] for chain in added(commands, "chain")}


def rules_of(commands: list[Obj], chain: str) -> list[list[Obj]]:
    return [rule["expr"] for rule in added(commands, "rule") if rule["chain"] == chain]


def elements(commands: list[Obj], name: str) -> list[Any]:
    return [
        element
        for command in added(commands, "element")
        if command["name"] == name
        for element in command["elem"]
    ]


def map_keys(commands: list[Obj], name: str) -> list[tuple[Any, ...]]:
    return [tuple(key["concat"]) for key, _ in elements(commands, name)]


def dnat_targets(commands: list[Obj]) -> set[tuple[str, int]]:
    return {
        (expression["dnat"]["addr"], expression["dnat"]["port"])
        for rule in added(commands, "rule")
        for expression in rule["expr"]
        if "dnat" in expression
    }


WEB = service("web", port("http", 80, "web"), port("dns", 53, 5353, "UDP"))
WEB_SLICE = endpoint_slice(
    "web",
    [
        endpoint("10.244.0.2"),
        endpoint("10.244.0.3", ready=None),
        endpoint("10.244.0.4", ready=False),
    ],
    [("http", 8080, "TCP"), ("dns", 5353, "UDP")],
)


# -- render -----------------------------------------------------------------------------------


class TestRender:
    pytestmark = pytest.mark.timeout(10)

    def test_replaces_the_table_in_one_transaction(self) -> None:
        commands = render([WEB], [WEB_SLICE], NODE_IP)
        table = {"table": {"family": "ip", "name": "kube-proxy"}}
        assert commands[:3] == [{"add": table}, {"delete": table}, {"add": table}]
        for command in commands[3:]:
            assert list(command) == ["add"]
            (body,) = command["add"].values()
            assert (body["family"], body["table"]) == ("ip", "kube-proxy")

    def test_without_services_only_the_hooks_and_empty_maps_remain(self) -> None:
        commands = render([], [], NODE_IP)
        hooks = {(c["type"], c["hook"], c["prio"]) for c in added(commands, "chain") if "hook" in c}
        assert hooks == {
            ("filter", "prerouting", -110),
            ("filter", "output", -110),
            ("filter", "prerouting", -90),
            ("filter", "output", -90),
            ("nat", "prerouting", -100),
            ("nat", "output", -100),
            ("nat", "postrouting", 100),
        }
        assert not list(added(commands, "element"))
        assert not dnat_targets(commands)

    def test_headless_external_name_and_unproxied_services_get_no_rules(self) -> None:
        http = port("http", 80, 8080)
        services = [
            service("headless", http, cluster_ip="None"),
            service("unallocated", http, cluster_ip=""),
            service("v6", http, cluster_ip="fd00::20"),
            service("outside", http, kind="ExternalName", externalName="example.com"),
        ]
        slices = [
            endpoint_slice(s["metadata"]["name"], [endpoint("10.244.0.2")], [("http", 8080, "TCP")])
            for s in services
        ]
        assert render(services, slices, NODE_IP) == render([], [], NODE_IP)

    def test_ready_endpoints_on_their_resolved_ports(self) -> None:
        commands = render([WEB], [WEB_SLICE], NODE_IP)
        assert map_keys(commands, "service-ips") == [
            (CLUSTER_IP, "tcp", 80),
            (CLUSTER_IP, "udp", 53),
        ]
        # Ready, and ready by default; the not-ready one is left out.
        assert dnat_targets(commands) == {
            ("10.244.0.2", 8080),
            ("10.244.0.3", 8080),
            ("10.244.0.2", 5353),
            ("10.244.0.3", 5353),
        }
        (spread,) = rules_of(commands, "service-default/web/tcp/http")[-1]
        assert spread["vmap"]["key"] == {"numgen": {"mode": "random", "mod": 2, "offset": 0}}
        assert [choice for choice, _ in spread["vmap"]["data"]["set"]] == [0, 1]

    def test_slices_match_by_service_label_port_name_and_protocol(self) -> None:
        slices = [
            endpoint_slice("other", [endpoint("10.244.0.9")], [("http", 9999, "TCP")]),
            endpoint_slice("web", [endpoint("10.244.0.8")], [("http", 7777, "UDP")], name="w-2"),
            endpoint_slice("web", [endpoint("10.244.0.7")], [("metrics", 9090, "TCP")], name="w-3"),
            endpoint_slice("web", [endpoint("10.244.0.2")], [("http", 8080, "TCP")], name="w-4"),
            endpoint_slice("web", [endpoint("10.244.0.3")], [("http", 8080, "TCP")], name="w-5"),
        ]
        commands = render([service("web", port("http", 80, "web"))], slices, NODE_IP)
        assert dnat_targets(commands) == {("10.244.0.2", 8080), ("10.244.0.3", 8080)}

    def test_terminating_serving_endpoints_stand_in_when_none_is_ready(self) -> None:
        slices = [
            endpoint_slice(
                "web",
                [
                    endpoint("10.244.0.2", ready=False, serving=True, terminating=True),
                    endpoint("10.244.0.3", ready=False, serving=False, terminating=True),
                    endpoint("10.244.0.4", ready=False, serving=True, terminating=False),
                ],
                [("http", 8080, "TCP")],
            )
        ]
        commands = render([service("web", port("http", 80, 8080))], slices, NODE_IP)
        assert dnat_targets(commands) == {("10.244.0.2", 8080)}

    def test_a_port_without_endpoints_is_rejected(self) -> None:
        web = service("web", port("http", 80, 8080, nodePort=30080), kind="NodePort")
        slices = [
            endpoint_slice("web", [endpoint("10.244.0.2", ready=False)], [("http", 8080, "TCP")])
        ]
        commands = render([web], slices, NODE_IP)
        assert map_keys(commands, "service-ips") == []
        assert elements(commands, "no-endpoint-services") == [
            [{"concat": [CLUSTER_IP, "tcp", 80]}, {"goto": {"target": "reject-chain"}}]
        ]
        assert elements(commands, "no-endpoint-nodeports") == [
            [{"concat": ["tcp", 30080]}, {"goto": {"target": "reject-chain"}}]
        ]
        assert elements(commands, "cluster-ips") == [CLUSTER_IP]
        assert not dnat_targets(commands)

    def test_node_ports_and_external_ips_are_masqueraded(self) -> None:
        web = service(
            "web",
            port("http", 80, 8080, nodePort=30080),
            kind="LoadBalancer",
            externalIPs=["192.0.2.7"],
        )
        web["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.8"}, {"hostname": "lb"}]}}
        slices = [endpoint_slice("web", [endpoint("10.244.0.2")], [("http", 8080, "TCP")])]
        commands = render([web], slices, NODE_IP)
        external = "external-default/web/tcp/http"
        assert elements(commands, "service-nodeports") == [
            [{"concat": ["tcp", 30080]}, {"goto": {"target": external}}]
        ]
        assert {
            tuple(key["concat"]): verdict["goto"]["target"]
            for key, verdict in elements(commands, "service-ips")
        } == {
            (CLUSTER_IP, "tcp", 80): "service-default/web/tcp/http",
            ("192.0.2.7", "tcp", 80): external,
            ("192.0.2.8", "tcp", 80): external,
        }
        assert rules_of(commands, external) == [
            [{"jump": {"target": "mark-for-masquerade"}}],
            [{"goto": {"target": "service-default/web/tcp/http"}}],
        ]

    def test_an_endpoint_reaching_itself_is_masqueraded(self) -> None:
        commands = render([WEB], [WEB_SLICE], NODE_IP)
        first, *_ = rules_of(commands, "endpoint-default/web/tcp/http__10.244.0.2/8080")
        assert first == [
            {"match": {"op": "==", "left": proxy.SADDR, "right": "10.244.0.2"}},
            {"jump": {"target": "mark-for-masquerade"}},
        ]

    def test_traffic_from_outside_the_pod_network_is_masqueraded(self) -> None:
        commands = render([WEB], [WEB_SLICE], NODE_IP, cluster_cidr="10.244.0.0/16")
        assert rules_of(commands, "service-default/web/tcp/http")[0] == [
            {
                "match": {
                    "op": "!=",
                    "left": proxy.SADDR,
                    "right": {"prefix": {"addr": "10.244.0.0", "len": 16}},
                }
            },
            {"jump": {"target": "mark-for-masquerade"}},
        ]
        without = render([WEB], [WEB_SLICE], NODE_IP, cluster_cidr=None)
        assert len(rules_of(without, "service-default/web/tcp/http")) == 1

    def test_client_ip_affinity_remembers_each_client(self) -> None:
        web = service(
            "web",
            port("http", 80, 8080),
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
        )
        slices = [endpoint_slice("web", [endpoint("10.244.0.2")], [("http", 8080, "TCP")])]
        commands = render([web], slices, NODE_IP)
        affinity = "affinity-default/web/tcp/http__10.244.0.2/8080"
        assert {"family": "ip", "table": "kube-proxy", "name": affinity, "type": "ipv4_addr",
                "flags": ["timeout"], "timeout": 60} in list(added(commands, "set"))  # fmt: skip
        assert [
            {"match": {"op": "==", "left": proxy.SADDR, "right": f"@{affinity}"}},
            {"goto": {"target": "endpoint-default/web/tcp/http__10.244.0.2/8080"}},
        ] in rules_of(commands, "service-default/web/tcp/http")
        assert [{"set": {"op": "update", "elem": proxy.SADDR, "set": f"@{affinity}"}}] in rules_of(
            commands, "endpoint-default/web/tcp/http__10.244.0.2/8080"
        )

    def test_malformed_objects_are_skipped_not_fatal(self) -> None:
        services = [
            service("bad-ip", port("http", 80, 8080), cluster_ip="10.96.0.300"),
            service("bad-port", port("http", 70000, 8080), cluster_ip="10.96.0.21"),
            service("bad-protocol", port("http", 80, 8080, "ICMP"), cluster_ip="10.96.0.22"),
            service("bad-node-port", port("http", 80, 8080, nodePort="x"), cluster_ip="10.96.0.23"),
            {"metadata": {"name": "no-spec", "namespace": "default"}},
        ]
        slices = [
            endpoint_slice(
                "bad-node-port", [endpoint("10.244.0.999"), {}], [("http", 8080, "TCP")]
            ),
            endpoint_slice(
                "bad-node-port",
                [endpoint("fd00::1")],
                [("http", 8080, "TCP")],
                name="v6",
                address_type="IPv6",
            ),
            endpoint_slice(
                "bad-node-port", [endpoint("10.244.0.5")], [("http", 0, "TCP")], name="port0"
            ),
        ]
        commands = render(services, slices, NODE_IP)
        assert map_keys(commands, "service-ips") == []
        assert map_keys(commands, "no-endpoint-services") == [("10.96.0.23", "tcp", 80)]
        assert map_keys(commands, "no-endpoint-nodeports") == []

    def test_the_same_objects_in_another_order_give_the_same_commands(self) -> None:
        other = service("other", port("", 443, 8443), cluster_ip="10.96.0.21")
        other_slice = endpoint_slice("other", [endpoint("10.244.0.6")], [("", 8443, "TCP")])
        split = endpoint_slice("web", [endpoint("10.244.0.5")], [("http", 8080, "TCP")], name="w-2")
        assert render([WEB, other], [WEB_SLICE, split, other_slice], NODE_IP) == render(
            [other, WEB], [other_slice, split, WEB_SLICE], NODE_IP
        )

    def test_a_bad_node_ip_is_the_callers_mistake(self) -> None:
        with pytest.raises(ValueError, match="not-an-ip"):
            render([], [], "not-an-ip")


# -- the loop, with a recorded apply ----------------------------------------------------------


@dataclass
class Recorder:
    """Stands in for ``netns.nft``: keeps what would have been loaded, fails when told."""

    loads: list[list[Obj]] = field(default_factory=list)
    failures: int = 0

    async def __call__(self, namespace: str, commands: list[Obj]) -> None:
        assert namespace == "node"
        if self.failures:
            self.failures -= 1
            raise netns.NamespaceError("nft failed")
        self.loads.append(commands)


#: The packet tests need asyncio (pyroute2 runs on it); the loop alone runs on trio as well.
every_backend = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Store, KubeProxy, Recorder]]:
    store, recorder = Store(), Recorder()
    kube_proxy = KubeProxy(store, "node", NODE_IP, apply=recorder)
    async with anyio.create_task_group() as tasks:
        await tasks.start(kube_proxy.run)
        yield store, kube_proxy, recorder
        tasks.cancel_scope.cancel()


async def synced(kube_proxy: KubeProxy) -> None:
    with anyio.fail_after(SYNC_DEADLINE):
        await kube_proxy.synced()


@every_backend
async def test_a_burst_of_changes_is_one_reload(
    recorded: tuple[Store, KubeProxy, Recorder],
) -> None:
    store, kube_proxy, recorder = recorded
    assert recorder.loads == [render([], [], NODE_IP)]
    for number in range(20):
        store.create(
            SERVICES, service(f"s{number}", port("", 80, 80), cluster_ip=f"10.96.1.{number}")
        )
    store.create(SLICES, endpoint_slice("s0", [endpoint("10.244.0.2")], [("", 80, "TCP")]))
    await synced(kube_proxy)
    assert len(recorder.loads) == 2
    assert recorder.loads[-1] == render(store.list(SERVICES), store.list(SLICES), NODE_IP)


@every_backend
async def test_changes_that_change_no_rule_load_nothing(
    recorded: tuple[Store, KubeProxy, Recorder],
) -> None:
    store, kube_proxy, recorder = recorded
    store.create(PODS, {"metadata": {"namespace": "default", "name": "p"}})
    web = store.create(SERVICES, service("web", port("http", 80, 8080)))
    await synced(kube_proxy)
    assert len(recorder.loads) == 2
    store.update(SERVICES, {**web, "metadata": {**web["metadata"], "annotations": {"a": "b"}}})
    await synced(kube_proxy)
    assert len(recorder.loads) == 2


@every_backend
async def test_a_failed_load_is_retried(
    recorded: tuple[Store, KubeProxy, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, kube_proxy, recorder = recorded
    monkeypatch.setattr(proxy, "RETRY_DELAY", 0.01)
    recorder.failures = 1
    store.create(SERVICES, service("web", port("http", 80, 8080)))
    await synced(kube_proxy)  # returns after the retry, which nothing else triggered
    assert recorder.failures == 0
    assert recorder.loads[-1] == render(store.list(SERVICES), [], NODE_IP)


@every_backend
async def test_stopping_unsubscribes_and_removes_the_table() -> None:
    store, recorder = Store(), Recorder()
    kube_proxy = KubeProxy(store, "node", NODE_IP, apply=recorder)
    async with anyio.create_task_group() as tasks:
        await tasks.start(kube_proxy.run)
        assert len(store.listeners) == 1
        tasks.cancel_scope.cancel()
    assert store.listeners == []
    table = {"table": {"family": "ip", "name": "kube-proxy"}}
    assert recorder.loads[-1] == [{"add": table}, {"delete": table}]


@every_backend
async def test_a_first_load_that_fails_fails_the_start() -> None:
    store, recorder = Store(), Recorder(failures=1)
    kube_proxy = KubeProxy(store, "node", NODE_IP, apply=recorder)
    with pytest.raises(netns.NamespaceError, match="nft failed"):
        await kube_proxy.run()
    assert store.listeners == []


# -- real packets -----------------------------------------------------------------------------


@dataclass
class Node:
    """One node's namespace and its pods, and the processes a test started in them."""

    namespace: str
    network: PodNetwork
    processes: list[Process] = field(default_factory=list)

    async def pod(self) -> PodAddress:
        return await self.network.attach(str(uuid.uuid4()))

    async def serve(self, pod: PodAddress, name: str, *listeners: str) -> None:
        """Run a server named ``name`` in ``pod`` on ``listeners`` (``tcp:8080``, ...)."""
        argv = netns.enter_argv(pod.namespace, sys.executable, "-I", "-S", "-c", SERVER, name)
        process = await anyio.open_process([*argv, *listeners])
        self.processes.append(process)
        assert process.stdout is not None
        with anyio.fail_after(SYNC_DEADLINE):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
        assert line == b"ready"

    async def ask(
        self, namespace: str, protocol: str, host: str, port: int, count: int = 1
    ) -> list[str]:
        """Make ``count`` requests from ``namespace``; one answer per request."""
        output = await netns.run(
            namespace,
            *(sys.executable, "-I", "-S", "-c", CLIENT),
            *(protocol, host, str(port), str(count), str(REQUEST_TIMEOUT)),
        )
        return output.splitlines()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    prefix = f"tpp-{secrets.token_hex(3)}-"
    name = prefix + "node"
    node = Node(name, PodNetwork(name, POD_CIDR, prefix))
    try:
        netns.create(name)
        # Before the bridge exists: a link takes its "default" settings when it is made, and
        # a node that sends redirects also rate-limits its ICMP errors to that pod (the two
        # share one per-source budget), so a refused connection could look like a timeout.
        await netns.sysctl(
            name,
            {
                "net.ipv4.ip_forward": "1",
                "net.ipv4.conf.all.send_redirects": "0",
                "net.ipv4.conf.default.send_redirects": "0",
            },
        )
        # Where br_netfilter is loaded, frames through a bridge meet the IP hooks too and a
        # DNAT back to the bridge is bridged, not routed: a hairpin packet would be sent
        # back out of the port it came from, and dropped. The node routes (see podnet).
        # (-e: a kernel without br_netfilter has no such key.)
        await netns.run(name, "sysctl", "-q", "-e", "-w", "net.bridge.bridge-nf-call-iptables=0")
        async with AsyncIPRoute(netns=name) as ipr:
            (lo,) = await ipr.link_lookup(ifname="lo")
            await ipr.link("set", index=lo, state="up")
            await ipr.addr("add", index=lo, address=NODE_IP, prefixlen=32)
            await ipr.link("add", ifname=BRIDGE, kind="bridge")
            (bridge,) = await ipr.link_lookup(ifname=BRIDGE)
            await ipr.addr("add", index=bridge, address=GATEWAY, prefixlen=24)
            await ipr.link("set", index=bridge, state="up")
        yield node
    finally:
        with anyio.CancelScope(shield=True):
            for process in node.processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.aclose()
            for namespace in netns.with_prefix(prefix):
                netns.remove(namespace)
        assert netns.with_prefix(prefix) == []


@dataclass
class Cluster:
    """The store kube-proxy follows; writes return once the node's rules reflect them."""

    store: Store
    kube_proxy: KubeProxy

    async def put(self, key: Key, obj: Obj) -> None:
        metadata = obj["metadata"]
        if self.store.get(key, metadata["namespace"], metadata["name"]) is None:
            self.store.create(key, obj)
        else:
            self.store.update(key, obj)
        await synced(self.kube_proxy)

    async def delete(self, key: Key, name: str) -> None:
        self.store.delete(key, "default", name)
        await synced(self.kube_proxy)


@pytest.fixture
async def cluster(node: Node) -> AsyncIterator[Cluster]:
    store = Store()
    kube_proxy = KubeProxy(store, node.namespace, NODE_IP)
    async with anyio.create_task_group() as tasks:
        await tasks.start(kube_proxy.run)
        yield Cluster(store, kube_proxy)
        tasks.cancel_scope.cancel()


def names(answers: list[str]) -> set[str]:
    return {answer.split()[0] for answer in answers}


async def test_a_cluster_ip_spreads_connections_over_the_ready_endpoints(
    node: Node, cluster: Cluster
) -> None:
    client, a, b, c = [await node.pod() for _ in range(4)]
    for pod, name in ((a, "a"), (b, "b"), (c, "c")):
        await node.serve(pod, name, "tcp:8080")
    # targetPort "web" is a named container port: the slice carries its number, 8080.
    await cluster.put(SERVICES, service("web", port("http", 80, "web")))
    slice_ = endpoint_slice(
        "web",
        [endpoint(a.ip), endpoint(b.ip), endpoint(c.ip, ready=False)],
        [("http", 8080, "TCP")],
    )
    await cluster.put(SLICES, slice_)
    answers = await node.ask(client.namespace, "tcp", CLUSTER_IP, 80, count=30)
    assert names(answers) == {"a", "b"}
    # Pods see each other's own addresses: in-cluster traffic is not masqueraded.
    assert {answer.split()[1] for answer in answers} == {client.ip}


async def test_udp_and_tcp_on_the_same_port_number(node: Node, cluster: Cluster) -> None:
    client, a, b = [await node.pod() for _ in range(3)]
    await node.serve(a, "a", "udp:5353", "tcp:5353")
    await node.serve(b, "b", "udp:5353", "tcp:5353")
    dns = service("dns", port("dns", 53, 5353, "UDP"), port("dns-tcp", 53, 5353, "TCP"))
    await cluster.put(SERVICES, dns)
    ports = [("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP")]
    await cluster.put(SLICES, endpoint_slice("dns", [endpoint(a.ip), endpoint(b.ip)], ports))
    assert names(await node.ask(client.namespace, "udp", CLUSTER_IP, 53, count=30)) == {"a", "b"}
    assert names(await node.ask(client.namespace, "tcp", CLUSTER_IP, 53, count=30)) == {"a", "b"}


async def test_traffic_follows_the_endpoint_slices(node: Node, cluster: Cluster) -> None:
    client, a, b = [await node.pod() for _ in range(3)]
    await node.serve(a, "a", "tcp:8080")
    await node.serve(b, "b", "tcp:8080")
    await cluster.put(SERVICES, service("web", port("http", 80, 8080)))
    ports = [("http", 8080, "TCP")]
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], ports))
    assert names(await node.ask(client.namespace, "tcp", CLUSTER_IP, 80, count=10)) == {"a"}
    await cluster.put(
        SLICES, endpoint_slice("web", [endpoint(a.ip, ready=False), endpoint(b.ip)], ports)
    )
    assert names(await node.ask(client.namespace, "tcp", CLUSTER_IP, 80, count=10)) == {"b"}
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(b.ip, ready=False)], ports))
    assert await node.ask(client.namespace, "tcp", CLUSTER_IP, 80) == ["refused"]


async def test_without_endpoints_connections_are_refused_at_once(
    node: Node, cluster: Cluster
) -> None:
    client, a = await node.pod(), await node.pod()
    await node.serve(a, "a", "tcp:8080")
    empty = service(
        "empty",
        port("http", 80, 8080, nodePort=30081),
        port("dns", 53, 5353, "UDP"),
        kind="NodePort",
    )
    await cluster.put(SERVICES, empty)
    await cluster.put(SLICES, endpoint_slice("empty", [], [("http", None, "TCP")]))
    assert await node.ask(client.namespace, "tcp", CLUSTER_IP, 80) == ["refused"]
    assert await node.ask(client.namespace, "udp", CLUSTER_IP, 53) == ["refused"]
    assert await node.ask(client.namespace, "tcp", NODE_IP, 30081) == ["refused"]
    # A port the Service does not have is refused as well, also when others have endpoints.
    web = service("web", port("http", 80, 8080), cluster_ip="10.96.0.21")
    await cluster.put(SERVICES, web)
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], [("http", 8080, "TCP")]))
    assert await node.ask(client.namespace, "tcp", "10.96.0.21", 81) == ["refused"]
    assert await node.ask(client.namespace, "tcp", "10.96.0.21", 80) == [f"a {client.ip}"]


async def test_a_node_port_on_the_node_ip_is_masqueraded(node: Node, cluster: Cluster) -> None:
    client, a = await node.pod(), await node.pod()
    await node.serve(a, "a", "tcp:8080", "udp:8080")
    web = service(
        "web",
        port("http", 80, 8080, nodePort=30080),
        port("udp", 80, 8080, "UDP", nodePort=30080),
        kind="NodePort",
    )
    await cluster.put(SERVICES, web)
    ports = [("http", 8080, "TCP"), ("udp", 8080, "UDP")]
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], ports))
    # Replies must come back through the node, so the endpoint sees the node's address.
    assert await node.ask(client.namespace, "tcp", NODE_IP, 30080) == [f"a {GATEWAY}"]
    assert await node.ask(client.namespace, "udp", NODE_IP, 30080) == [f"a {GATEWAY}"]
    # Only the node IP serves NodePorts (upstream's default --nodeport-addresses=primary).
    assert await node.ask(client.namespace, "tcp", GATEWAY, 30080) == ["refused"]


async def test_a_pod_reaching_its_own_service_gets_hairpinned(node: Node, cluster: Cluster) -> None:
    a = await node.pod()
    await node.serve(a, "a", "tcp:8080")
    await cluster.put(SERVICES, service("web", port("http", 80, 8080)))
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], [("http", 8080, "TCP")]))
    assert await node.ask(a.namespace, "tcp", CLUSTER_IP, 80, count=3) == [f"a {GATEWAY}"] * 3


async def test_the_node_itself_reaches_cluster_ips_and_node_ports(
    node: Node, cluster: Cluster
) -> None:
    a = await node.pod()
    await node.serve(a, "a", "tcp:8080")
    web = service("web", port("http", 80, 8080, nodePort=30080), kind="NodePort")
    await cluster.put(SERVICES, web)
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], [("http", 8080, "TCP")]))
    # A real node sends to the service CIDR along its default route; this one has none.
    async with AsyncIPRoute(netns=node.namespace) as ipr:
        (bridge,) = await ipr.link_lookup(ifname=BRIDGE)
        await ipr.route("add", dst=str(addresses.SERVICE_NETWORK), oif=bridge)
    assert await node.ask(node.namespace, "tcp", CLUSTER_IP, 80) == [f"a {GATEWAY}"]
    assert await node.ask(node.namespace, "tcp", NODE_IP, 30080) == [f"a {GATEWAY}"]


async def test_client_ip_affinity_keeps_a_client_on_one_endpoint(
    node: Node, cluster: Cluster
) -> None:
    client, a, b = [await node.pod() for _ in range(3)]
    await node.serve(a, "a", "tcp:8080")
    await node.serve(b, "b", "tcp:8080")
    await cluster.put(SERVICES, service("web", port("http", 80, 8080), sessionAffinity="ClientIP"))
    slice_ = endpoint_slice("web", [endpoint(a.ip), endpoint(b.ip)], [("http", 8080, "TCP")])
    await cluster.put(SLICES, slice_)
    assert len(names(await node.ask(client.namespace, "tcp", CLUSTER_IP, 80, count=20))) == 1


async def test_deleting_the_service_removes_its_rules(node: Node, cluster: Cluster) -> None:
    client, a = await node.pod(), await node.pod()
    await node.serve(a, "a", "tcp:8080")
    await cluster.put(SERVICES, service("web", port("http", 80, 8080)))
    await cluster.put(SLICES, endpoint_slice("web", [endpoint(a.ip)], [("http", 8080, "TCP")]))
    assert await node.ask(client.namespace, "tcp", CLUSTER_IP, 80) == [f"a {client.ip}"]
    await cluster.delete(SERVICES, "web")  # its slice is left, as until the GC removes it
    ruleset = str(await netns.nft_list(node.namespace))
    assert "default/web" not in ruleset
    assert CLUSTER_IP not in ruleset
    # The node has no route for a ClusterIP that nothing DNATs.
    (answer,) = await node.ask(client.namespace, "tcp", CLUSTER_IP, 80)
    assert answer.startswith("error")


async def test_the_table_goes_when_kube_proxy_stops(node: Node) -> None:
    store = Store()
    store.create(SERVICES, service("web", port("http", 80, 8080)))
    kube_proxy = KubeProxy(store, node.namespace, NODE_IP)

    def tables(ruleset: list[Obj]) -> list[str]:
        return [item["table"]["name"] for item in ruleset if "table" in item]

    async with anyio.create_task_group() as tasks:
        await tasks.start(kube_proxy.run)
        assert tables(await netns.nft_list(node.namespace)) == ["kube-proxy"]
        tasks.cancel_scope.cancel()
    assert tables(await netns.nft_list(node.namespace)) == []


async def test_stopping_after_the_namespace_is_gone_is_quiet(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    kube_proxy = KubeProxy(Store(), node.namespace, NODE_IP)
    async with anyio.create_task_group() as tasks:
        await tasks.start(kube_proxy.run)
        netns.remove(node.namespace)
        tasks.cancel_scope.cancel()
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
