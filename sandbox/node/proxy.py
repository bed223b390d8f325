"""kube-proxy for a sandbox node: Services as nftables rules in the node's namespace.

:class:`KubeProxy` follows the API server's store (it runs in the same process, so a store
listener replaces kube-proxy's informers) and keeps one nftables table, ``ip kube-proxy``, in
the node's network namespace in line with the Services and EndpointSlices. Every change
re-renders the whole table from the store's current state with :func:`render`, a pure
function, and loads it as one ``nft -j`` transaction that adds, deletes and re-creates the
table: the kernel swaps the old ruleset for the new one at once, so a packet always meets a
complete ruleset, never a half-written one. A burst of changes costs one reload, because the
listener only sets an event and the loop renders whatever the store holds when it wakes.

The table is laid out as kube-proxy's nftables mode lays out its own
(``pkg/proxy/nftables/proxier.go``), so its rules read the same:

- ``nat-prerouting`` (traffic from pods, which are routed through the node; see
  :mod:`sandbox.node.podnet`) and ``nat-output`` (the node's own traffic) jump to
  ``services``, which looks ``ip daddr . meta l4proto . th dport`` up in the ``service-ips``
  verdict map (ClusterIPs, external IPs, load balancer IPs) and, for the node IP,
  ``meta l4proto . th dport`` in ``service-nodeports``.
- A service port's chain picks one of its endpoint chains with ``numgen random mod N``; the
  endpoint chain DNATs to the endpoint's address and port. Named target ports need nothing
  here: the EndpointSlice controller has resolved them into the slices' port numbers.
- Packets that must leave with the node's address get the mark ``0x4000`` (chain
  ``mark-for-masquerade``) and ``nat-postrouting`` masquerades them: traffic that came in
  through a NodePort or an external IP (so that replies come back through this node to be
  un-NATed), traffic to a ClusterIP from outside the pod network, and *hairpin* traffic, a
  pod that reaches a Service and is picked as the endpoint itself (without a new source it
  would receive a packet from its own address, which its kernel drops as a martian).
- A service port without usable endpoints is rejected (TCP reset, else ICMP port
  unreachable), so that clients fail at once instead of waiting for a timeout; and so is a
  ClusterIP's port that no Service port serves (``cluster-ips-check``, after DNAT). Upstream
  rejects in the filter ``forward``/``input``/``output`` hooks; here the first check runs in
  ``prerouting`` (before DNAT, as upstream's priority ``dstnat - 10``), because a sandbox
  node need not have a route for the service CIDR, and a packet it cannot route never
  reaches ``forward``.

The node must *route* its pods' packets, as :mod:`sandbox.node.podnet` means it to: where the
host has ``br_netfilter`` loaded, the node's namespace needs
``net.bridge.bridge-nf-call-iptables=0``, or a packet DNAT-ed back onto the bridge is
bridged instead, and a hairpin packet, sent back out of the port it came in on, is dropped.

Endpoints are those of the Service's EndpointSlices (label ``kubernetes.io/service-name``)
whose ``ready`` condition is not false; when a port has none, the serving endpoints that are
terminating take their place, as upstream's ``CategorizeEndpoints`` does. Session affinity
``ClientIP`` is kept in a dynamic set per endpoint (the sets start empty after each reload).

Not done: IPv6, ``externalTrafficPolicy``/``internalTrafficPolicy: Local``, topology hints,
``loadBalancerSourceRanges``, and removing stale UDP conntrack entries when an endpoint goes
(a UDP flow keeps its endpoint until its conntrack entry expires).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import anyio

from sandbox.cluster import addresses
from sandbox.node import netns

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from sandbox.apiserver.store import Change, Key, Obj, Store

log = logging.getLogger("sandbox.node.proxy")

SERVICES: Key = ("", "services")
ENDPOINT_SLICES: Key = ("discovery.k8s.io", "endpointslices")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

FAMILY = "ip"
TABLE = "kube-proxy"
#: The packet mark that asks ``nat-postrouting`` to masquerade (kube-proxy's own bit).
MASQUERADE_MARK = 0x4000
#: ``service.spec.sessionAffinityConfig.clientIP.timeoutSeconds``'s default (3 hours).
DEFAULT_AFFINITY_TIMEOUT = 10800
#: How long to wait before retrying a reload that failed, when nothing else changes.
RETRY_DELAY = 1.0
#: How long removing the table at exit may take.
CLEANUP_DEADLINE = 10.0

PROXIED_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer"})
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

Command = dict[str, Any]
Expression = dict[str, Any]
Apply = Callable[[str, list[Command]], Awaitable[None]]


# -- the model: what each service port means to the proxy -------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a service port's traffic may go."""

    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a proxied Service, with the endpoints that serve it."""

    namespace: str
    service: str
    name: str
    protocol: str  # nft's spelling: tcp, udp, sctp
    cluster_ip: str
    port: int
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    affinity_timeout: int | None = None  # seconds, when sessionAffinity is ClientIP

    @property
    def id(self) -> str:
        # Upstream's chain names read the same: namespace/name/protocol/port name.
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.name}"

    @property
    def service_chain(self) -> str:
        return f"service-{self.id}"

    @property
    def external_chain(self) -> str:
        return f"external-{self.id}"

    def endpoint_chain(self, endpoint: Endpoint) -> str:
        return f"endpoint-{self.id}__{endpoint.ip}/{endpoint.port}"

    def affinity_set(self, endpoint: Endpoint) -> str:
        return f"affinity-{self.id}__{endpoint.ip}/{endpoint.port}"


def service_ports(services: Iterable[Obj], endpoint_slices: Iterable[Obj]) -> list[ServicePort]:
    """The ports of the proxied Services, each with its usable endpoints, in a stable order."""
    endpoints = _endpoints_by_port(endpoint_slices)
    found = []
    for service in services:
        metadata, spec = service.get("metadata") or {}, service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if spec.get("type", "ClusterIP") not in PROXIED_TYPES or not _is_ipv4(cluster_ip):
            continue  # headless ("None"), ExternalName, IPv6-only: no rules, as upstream
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        for port in spec.get("ports") or []:
            protocol = PROTOCOLS.get(port.get("protocol", "TCP"))
            number = port.get("port")
            if protocol is None or not _is_port(number):
                continue
            port_name = port.get("name") or ""
            found.append(
                ServicePort(
                    namespace=namespace,
                    service=name,
                    name=port_name,
                    protocol=protocol,
                    cluster_ip=cluster_ip,
                    port=number,
                    node_port=port.get("nodePort") if _is_port(port.get("nodePort")) else None,
                    external_ips=_external_ips(service),
                    endpoints=tuple(
                        _usable(endpoints.get((namespace, name, port_name, protocol), []))
                    ),
                    affinity_timeout=_affinity_timeout(spec),
                )
            )
    return sorted(found, key=lambda port: (port.id, port.port))


@dataclass(frozen=True, slots=True)
class _Candidate:
    endpoint: Endpoint
    ready: bool
    serving: bool
    terminating: bool


def _endpoints_by_port(
    endpoint_slices: Iterable[Obj],
) -> dict[tuple[str, str, str, str], list[_Candidate]]:
    """Slice endpoints by (namespace, service, port name, protocol), each address once."""
    found: dict[tuple[str, str, str, str], dict[Endpoint, _Candidate]] = {}
    for endpoint_slice in endpoint_slices:
        metadata = endpoint_slice.get("metadata") or {}
        service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service or endpoint_slice.get("addressType") != "IPv4":
            continue
        namespace = metadata.get("namespace", "")
        for port in endpoint_slice.get("ports") or []:
            protocol = PROTOCOLS.get(port.get("protocol", "TCP"))
            if protocol is None or not _is_port(port.get("port")):
                continue
            key = (namespace, service, port.get("name") or "", protocol)
            candidates = found.setdefault(key, {})
            for entry in endpoint_slice.get("endpoints") or []:
                for candidate in _candidates(entry, port["port"]):
                    candidates.setdefault(candidate.endpoint, candidate)
    return {key: sorted(by_endpoint.values(), key=_order) for key, by_endpoint in found.items()}


def _candidates(entry: Obj, port: int) -> list[_Candidate]:
    # Absent conditions count as ready and serving (EndpointConditions' documented defaults).
    conditions = entry.get("conditions") or {}
    ready = conditions.get("ready") is not False
    serving = conditions.get("serving") is not False
    terminating = conditions.get("terminating") is True
    return [
        _Candidate(Endpoint(address, port), ready, serving, terminating)
        for address in (entry.get("addresses") or [])[:1]  # one address per endpoint in IPv4
        if _is_ipv4(address)
    ]


def _order(candidate: _Candidate) -> tuple[int, int]:
    return (int(ipaddress.IPv4Address(candidate.endpoint.ip)), candidate.endpoint.port)


def _usable(candidates: list[_Candidate]) -> list[Endpoint]:
    """The ready endpoints; if there are none, the serving terminating ones (KEP-1669)."""
    ready = [c.endpoint for c in candidates if c.ready]
    return ready or [c.endpoint for c in candidates if c.serving and c.terminating]


def _external_ips(service: Obj) -> tuple[str, ...]:
    ips = list((service.get("spec") or {}).get("externalIPs") or [])
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips += [entry.get("ip") for entry in ingress if isinstance(entry, dict)]
    return tuple(sorted({ip for ip in ips if _is_ipv4(ip)}))


def _affinity_timeout(spec: Obj) -> int | None:
    if spec.get("sessionAffinity") != "ClientIP":
        return None
    config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
    timeout = config.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    return timeout if isinstance(timeout, int) and timeout > 0 else DEFAULT_AFFINITY_TIMEOUT


def _is_ipv4(value: object) -> TypeGuard[str]:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


# -- nft JSON expressions -----------------------------------------------------------------------


def _payload(protocol: str, name: str) -> Expression:
    return {"payload": {"protocol": protocol, "field": name}}


DADDR = _payload("ip", "daddr")
SADDR = _payload("ip", "saddr")
DPORT = _payload("th", "dport")
L4PROTO: Expression = {"meta": {"key": "l4proto"}}
MARK: Expression = {"meta": {"key": "mark"}}
CT_STATE_NEW: Expression = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}


def _match(left: Expression, right: Any, op: str = "==") -> Expression:
    return {"match": {"op": op, "left": left, "right": right}}


def _jump(chain: str) -> Expression:
    return {"jump": {"target": chain}}


def _goto(chain: str) -> Expression:
    return {"goto": {"target": chain}}


def _vmap(key: Expression, data: Any) -> Expression:
    return {"vmap": {"key": key, "data": data}}


def _concat(*parts: Any) -> Expression:
    return {"concat": list(parts)}


# -- the table ------------------------------------------------------------------------------


@dataclass
class _Table:
    """The commands of one table, gathered in any order and emitted in the order nft needs:
    chains and sets before the elements and rules that name them."""

    chains: list[Command] = field(default_factory=list)
    sets: list[Command] = field(default_factory=list)
    elements: dict[str, dict[Any, Any]] = field(default_factory=dict)
    rules: list[Command] = field(default_factory=list)

    def chain(
        self, name: str, *rules: list[Expression], hook: tuple[str, str, int] | None = None
    ) -> None:
        chain: Command = {"family": FAMILY, "table": TABLE, "name": name}
        if hook is not None:
            kind, hook_name, priority = hook
            chain |= {"type": kind, "hook": hook_name, "prio": priority, "policy": "accept"}
        self.chains.append({"add": {"chain": chain}})
        for rule in rules:
            self.rule(name, *rule)

    def rule(self, chain: str, *expressions: Expression) -> None:
        rule = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expressions)}
        self.rules.append({"add": {"rule": rule}})

    def map(self, name: str, key_type: list[str]) -> None:
        spec = {"family": FAMILY, "table": TABLE, "name": name, "type": key_type, "map": "verdict"}
        self.sets.append({"add": {"map": spec}})
        self.elements[name] = {}

    def set(self, name: str, *, timeout: int | None = None) -> None:
        spec: Command = {"family": FAMILY, "table": TABLE, "name": name, "type": "ipv4_addr"}
        if timeout is not None:
            # Filled by the packet path (``update @set``): nft adds the "dynamic" flag itself.
            spec |= {"flags": ["timeout"], "timeout": timeout}
        self.sets.append({"add": {"set": spec}})
        self.elements[name] = {}

    def element(
        self, name: str, key: tuple[Any, ...] | str, verdict: Expression | None = None
    ) -> None:
        # A key goes in once (the first Service to claim it wins): a duplicate with another
        # verdict would fail the whole transaction.
        self.elements[name].setdefault(key, verdict)

    def commands(self) -> list[Command]:
        table = {"table": {"family": FAMILY, "name": TABLE}}
        # Adding first makes the delete succeed when there is no table yet.
        commands: list[Command] = [{"add": table}, {"delete": table}, {"add": table}]
        commands += self.chains + self.sets
        for name, elements in self.elements.items():
            if elements:
                entries = [_element(key, verdict) for key, verdict in elements.items()]
                spec = {"family": FAMILY, "table": TABLE, "name": name, "elem": entries}
                commands.append({"add": {"element": spec}})
        return commands + self.rules


def _element(key: tuple[Any, ...] | str, verdict: Expression | None) -> Any:
    value = _concat(*key) if isinstance(key, tuple) else key
    return value if verdict is None else [value, verdict]


ADDRESS_PROTOCOL_PORT = ["ipv4_addr", "inet_proto", "inet_service"]
PROTOCOL_PORT = ["inet_proto", "inet_service"]


def render(
    services: Iterable[Obj],
    endpoint_slices: Iterable[Obj],
    node_ip: str,
    *,
    cluster_cidr: str | None = str(addresses.POD_NETWORK),
) -> list[Command]:
    """The ``nft -j`` commands that replace the ``ip kube-proxy`` table with the rules for
    ``services`` and their ``endpoint_slices``, as one transaction.

    Args:
        services: Service objects (of any namespace).
        endpoint_slices: EndpointSlice objects (of any namespace).
        node_ip: the node's IP, where NodePorts are served.
        cluster_cidr: the pod network; traffic to a ClusterIP from outside it is
            masqueraded (kube-proxy's ``--cluster-cidr``). None masquerades none of it.
    """
    ipaddress.IPv4Address(node_ip)  # a ValueError here is the caller's mistake
    table = _Table()
    _skeleton(table, node_ip)
    for port in service_ports(services, endpoint_slices):
        if port.endpoints:
            _proxied_port(table, port, cluster_cidr)
        else:
            _rejected_port(table, port)
    return table.commands()


def _skeleton(table: _Table, node_ip: str) -> None:
    """Base chains, maps and the chains every service port's rules lead to."""
    # Filter chains run before DNAT (dstnat - 10) to see the Service's address, and after it
    # (dstnat + 10) to catch what no DNAT rule took.
    before_dnat, dnat, after_dnat, snat = -110, -100, -90, 100
    table.map("service-ips", ADDRESS_PROTOCOL_PORT)
    table.map("service-nodeports", PROTOCOL_PORT)
    table.map("no-endpoint-services", ADDRESS_PROTOCOL_PORT)
    table.map("no-endpoint-nodeports", PROTOCOL_PORT)
    table.set("cluster-ips")
    check_endpoints = [CT_STATE_NEW, _jump("endpoints-check")]
    check_cluster_ips = [CT_STATE_NEW, _jump("cluster-ips-check")]
    table.chain("filter-prerouting", check_endpoints, hook=("filter", "prerouting", before_dnat))
    table.chain("filter-output", check_endpoints, hook=("filter", "output", before_dnat))
    table.chain(
        "filter-prerouting-post-dnat",
        check_cluster_ips,
        hook=("filter", "prerouting", after_dnat),
    )
    table.chain("filter-output-post-dnat", check_cluster_ips, hook=("filter", "output", after_dnat))
    table.chain("nat-prerouting", [_jump("services")], hook=("nat", "prerouting", dnat))
    table.chain("nat-output", [_jump("services")], hook=("nat", "output", dnat))
    table.chain("nat-postrouting", [_jump("masquerading")], hook=("nat", "postrouting", snat))
    table.chain(
        "services",
        [_vmap(_concat(DADDR, L4PROTO, DPORT), "@service-ips")],
        [_match(DADDR, node_ip), _vmap(_concat(L4PROTO, DPORT), "@service-nodeports")],
    )
    table.chain(
        "endpoints-check",
        [_vmap(_concat(DADDR, L4PROTO, DPORT), "@no-endpoint-services")],
        [_match(DADDR, node_ip), _vmap(_concat(L4PROTO, DPORT), "@no-endpoint-nodeports")],
    )
    # Still addressed to a ClusterIP after DNAT: a port the Service does not have.
    table.chain("cluster-ips-check", [_match(DADDR, "@cluster-ips"), _goto("reject-chain")])
    table.chain(
        "reject-chain",
        [_match(L4PROTO, "tcp"), {"reject": {"type": "tcp reset"}}],
        [{"reject": {"type": "icmp", "expr": "port-unreachable"}}],
    )
    table.chain(
        "mark-for-masquerade",
        [{"mangle": {"key": MARK, "value": {"|": [MARK, MASQUERADE_MARK]}}}],
    )
    table.chain(
        "masquerading",
        [_match({"&": [MARK, MASQUERADE_MARK]}, 0), {"return": None}],
        # Clear the mark, so that a packet that is routed again is not masqueraded twice.
        [{"mangle": {"key": MARK, "value": {"^": [MARK, MASQUERADE_MARK]}}}],
        [{"masquerade": {"flags": ["fully-random"]}}],
    )


def _proxied_port(table: _Table, port: ServicePort, cluster_cidr: str | None) -> None:
    """DNAT the port's ClusterIP, external IPs and NodePort to its endpoints."""
    table.element("cluster-ips", port.cluster_ip)
    table.element(
        "service-ips", (port.cluster_ip, port.protocol, port.port), _goto(port.service_chain)
    )
    if port.external_ips or port.node_port is not None:
        # Traffic from outside the node: its replies must come back here to be un-NATed.
        table.chain(
            port.external_chain, [_jump("mark-for-masquerade")], [_goto(port.service_chain)]
        )
        for ip in port.external_ips:
            table.element("service-ips", (ip, port.protocol, port.port), _goto(port.external_chain))
        if port.node_port is not None:
            table.element(
                "service-nodeports", (port.protocol, port.node_port), _goto(port.external_chain)
            )
    rules: list[list[Expression]] = []
    if cluster_cidr is not None:
        network = ipaddress.IPv4Network(cluster_cidr)
        prefix = {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}
        rules.append([_match(SADDR, prefix, "!="), _jump("mark-for-masquerade")])
    if port.affinity_timeout is not None:
        # A client seen lately goes back to the endpoint it was sent to.
        for endpoint in port.endpoints:
            table.set(port.affinity_set(endpoint), timeout=port.affinity_timeout)
            rules.append(
                [
                    _match(SADDR, f"@{port.affinity_set(endpoint)}"),
                    _goto(port.endpoint_chain(endpoint)),
                ]
            )
    spread = {"numgen": {"mode": "random", "mod": len(port.endpoints), "offset": 0}}
    choices = [
        [index, _goto(port.endpoint_chain(endpoint))]
        for index, endpoint in enumerate(port.endpoints)
    ]
    rules.append([_vmap(spread, {"set": choices})])
    table.chain(port.service_chain, *rules)
    for endpoint in port.endpoints:
        _endpoint_chain(table, port, endpoint)


def _endpoint_chain(table: _Table, port: ServicePort, endpoint: Endpoint) -> None:
    rules = [[_match(SADDR, endpoint.ip), _jump("mark-for-masquerade")]]  # hairpin
    if port.affinity_timeout is not None:
        remember = {
            "set": {"op": "update", "elem": SADDR, "set": f"@{port.affinity_set(endpoint)}"}
        }
        rules.append([remember])
    rules.append(
        [
            _match(L4PROTO, port.protocol),  # nft needs it to rewrite a port
            {"dnat": {"addr": endpoint.ip, "port": endpoint.port}},
        ]
    )
    table.chain(port.endpoint_chain(endpoint), *rules)


def _rejected_port(table: _Table, port: ServicePort) -> None:
    """No endpoints: refuse new connections to the port at once, wherever they are sent."""
    table.element("cluster-ips", port.cluster_ip)
    for ip in (port.cluster_ip, *port.external_ips):
        table.element("no-endpoint-services", (ip, port.protocol, port.port), _goto("reject-chain"))
    if port.node_port is not None:
        table.element(
            "no-endpoint-nodeports", (port.protocol, port.node_port), _goto("reject-chain")
        )


# -- the loop -------------------------------------------------------------------------------


class KubeProxy:
    """Keeps a node's ``ip kube-proxy`` table in line with the store's Services.

    Args:
        store: the API server's store, followed through its listeners.
        node_namespace: the node's network namespace, where the table lives.
        node_ip: the node's IP, where NodePorts are served.
        apply: loads nft JSON commands into a namespace (tests may record them instead).
        cluster_cidr: the pod network (see :func:`render`).
    """

    def __init__(
        self,
        store: Store,
        node_namespace: str,
        node_ip: str,
        *,
        apply: Apply = netns.nft,
        cluster_cidr: str | None = str(addresses.POD_NETWORK),
    ) -> None:
        self.store = store
        self.node_namespace = node_namespace
        self.node_ip = node_ip
        self.cluster_cidr = cluster_cidr
        self._apply = apply
        self._loaded: list[Command] | None = None
        # Store changes seen, and how many of them the loaded rules reflect.
        self._changes = 0
        self._synced = -1
        # Created in run(): an anyio Event belongs to the event loop it is made in.
        self._wake: anyio.Event | None = None
        self._progress: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the rules, report started, then reload them on every change until cancelled;
        the table is removed on the way out."""
        self._wake, self._progress = anyio.Event(), anyio.Event()
        self.store.listeners.append(self._listen)
        try:
            await self._sync()  # a failure here is the caller's to see
            task_status.started()
            await self._follow()
        finally:
            self.store.listeners.remove(self._listen)
            await self._remove_table()

    async def synced(self) -> None:
        """Return once the loaded rules reflect every change the store had when called.

        Waits for :meth:`run`, which must be running; the caller bounds the wait.
        """
        wanted = self._changes
        while self._synced < wanted:
            if self._progress is None:
                raise RuntimeError("KubeProxy.synced() needs KubeProxy.run() to be running")
            await self._progress.wait()

    def _listen(self, key: Key, change: Change) -> None:
        # Called inside the store's write: only note it, the loop does the work.
        if key in (SERVICES, ENDPOINT_SLICES) and self._wake is not None:
            self._changes += 1
            self._wake.set()

    async def _follow(self) -> None:
        failed = False
        while True:
            assert self._wake is not None
            with anyio.move_on_after(RETRY_DELAY if failed else math.inf):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._sync()
            except Exception:
                # Keep the rules that are loaded and try again: upstream's sync loop does too.
                log.exception("kube-proxy in %s: loading the rules failed", self.node_namespace)
                failed = True
            else:
                failed = False

    async def _sync(self) -> None:
        seen = self._changes
        commands = render(
            self.store.list(SERVICES),
            self.store.list(ENDPOINT_SLICES),
            self.node_ip,
            cluster_cidr=self.cluster_cidr,
        )
        if commands != self._loaded:  # most writes (status, annotations) change no rule
            await self._apply(self.node_namespace, commands)
            self._loaded = commands
            log.debug("kube-proxy in %s: %d commands loaded", self.node_namespace, len(commands))
        self._synced = seen
        assert self._progress is not None
        self._progress.set()
        self._progress = anyio.Event()

    async def _remove_table(self) -> None:
        table = {"table": {"family": FAMILY, "name": TABLE}}
        with anyio.move_on_after(CLEANUP_DEADLINE, shield=True):
            try:
                await self._apply(self.node_namespace, [{"add": table}, {"delete": table}])
            except (netns.NamespaceError, OSError) as error:
                # The node's namespace is gone already, and the table with it.
                log.debug("kube-proxy in %s: table not removed: %s", self.node_namespace, error)
