"""The cluster's network facts, discovered from the cluster and followed as they change.

A client routes the pod and Service subnets through its VIF and sends DNS for the cluster
domain to the manager. None of it is configured; the manager finds it out:

- **Pod subnets.** A cluster-wide manager that may read nodes takes their ``podCIDRs``;
  otherwise (a namespaced manager, nodes forbidden or without ``podCIDRs``) it covers the
  managed pods' addresses with /24s (IPv4) and /64s (IPv6), merged where adjacent. Either way
  the subnets follow the watch: a new node or a pod in a new range re-streams the facts.
- **Service subnet.** The API server says its range when it refuses a ClusterIP outside it
  (``The range of valid IPs is 10.96.0.0/12``), so the manager asks it to create, in dry-run,
  a Service with the ClusterIP ``1.1.1.1``; nothing is ever created. (The original does the
  same without dry-run.) If that says nothing, the subnet is derived from the ClusterIPs the
  manager knows (the ``kubernetes`` Service's, from ``KUBERNETES_SERVICE_HOST``, kube-dns's,
  and a namespaced manager's Services): the smallest network that holds them all, but at least
  a /16 (IPv4) or /64 (IPv6), as the original derives it from its own Service's address.
- **Cluster DNS address**: kube-dns's ClusterIP (``kube-system/kube-dns``, watched), else the
  pod's resolv.conf nameserver, which is the same address in a ``ClusterFirst`` pod.
- **Cluster domain**: from the pod's resolv.conf search path (``svc.cluster.local``), else
  ``cluster.local.``.

:class:`ClusterInfo` recomputes the facts whenever a watched object changes, and publishes
them in a :class:`~manager.changes.Latest` that every ``WatchClusterInfo`` stream follows.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from manager import kube
from manager.changes import Latest, Signal
from manager.informer import Reflector
from manager.inventory import Addresses, Inventory, IPAddress, service_addresses

if TYPE_CHECKING:
    from collections.abc import Iterable

    from anyio.abc import TaskStatus

    from manager.resolv import ResolvConf

log = logging.getLogger(__name__)

type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The granularity that pods' addresses are covered with, per IP version.
POD_PREFIX = {4: 24, 6: 64}
#: The longest prefix a derived Service subnet gets, per IP version.
SERVICE_PREFIX = {4: 16, 6: 64}
#: The dry-run Service whose refusal names the Service range.
PROBE_NAME = "t2-tst-dummy"
PROBE_IP = "1.1.1.1"
_VALID_RANGE = re.compile(r"range of valid IPs is (.+?)\s*$")


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """What ``WatchClusterInfo`` sends (see ``ClusterInfo`` in manager.proto)."""

    pod_subnets: tuple[IPNetwork, ...]
    service_subnet: IPNetwork | None
    dns_ip: IPAddress | None
    domain: str
    manager_pod_ip: IPAddress | None
    api_port: int
    mux_port: int
    mux_ca: bytes

    def describe(self) -> str:
        pods = ", ".join(map(str, self.pod_subnets)) or "none"
        return (
            f"pod subnets {pods}; service subnet {self.service_subnet or 'unknown'};"
            f" DNS {self.dns_ip or 'unknown'}; domain {self.domain}"
        )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where this manager is reached: its pod's address, its listeners' ports, and the CA
    certificate (PEM) that clients verify the data plane's TLS against."""

    pod_ip: IPAddress | None
    api_port: int
    mux_port: int
    mux_ca: bytes


class NodeSubnets:
    """The nodes' ``podCIDRs``, when the manager may read nodes and they have them."""

    def __init__(self, kubernetes: kube.Kubernetes, changed: Signal) -> None:
        self._reflector = Reflector(kubernetes, kube.NODES, _pod_cidrs, changed.notify)

    def subnets(self) -> tuple[IPNetwork, ...]:
        return collapse(net for nets in self._reflector.items.values() for net in nets)

    async def run(self, *, task_status: TaskStatus[bool] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the nodes; reports whether they give pod subnets at all (when they do not,
        it stops at once)."""
        async with anyio.create_task_group() as tasks:
            try:
                await tasks.start(self._reflector.run, name="watch nodes")
            except kube.Forbidden:
                log.info("nodes cannot be read: pod subnets come from the pods' addresses")
                task_status.started(False)
                return
            if not self.subnets():
                log.info("the nodes have no podCIDRs: pod subnets come from the pods' addresses")
                self._reflector.stop()
                task_status.started(False)
                return
            task_status.started(True)


class ClusterInfo:
    """Discovers the cluster's facts and publishes them in :attr:`latest`.

    Args:
        kubernetes: The API server.
        namespace: The manager's namespace (where the Service range probe is made).
        inventory: The managed namespaces' pods and Services.
        nodes: The nodes' subnets, or None to cover the pods' addresses instead.
        resolv: The manager pod's resolv.conf.
        endpoints: Where clients reach this manager.
        kubernetes_service_host: ``KUBERNETES_SERVICE_HOST``, one ClusterIP known for sure.
        changed: Notified by every watcher that feeds the facts.
    """

    def __init__(
        self,
        kubernetes: kube.Kubernetes,
        *,
        namespace: str,
        inventory: Inventory,
        nodes: NodeSubnets | None,
        resolv: ResolvConf,
        endpoints: Endpoints,
        kubernetes_service_host: str | None,
        changed: Signal,
    ) -> None:
        self._kubernetes = kubernetes
        self._namespace = namespace
        self._inventory = inventory
        self._nodes = nodes
        self._resolv = resolv
        self._endpoints = endpoints
        self._kubernetes_ip = _ip(kubernetes_service_host)
        self._changed = changed
        self._kube_dns: Reflector[Addresses] | None = Reflector(
            kubernetes,
            kube.SERVICES,
            service_addresses,
            changed.notify,
            namespace="kube-system",
            field_selector="metadata.name=kube-dns",
        )
        self._probed_subnet: IPNetwork | None = None
        self.latest: Latest[ClusterFacts] = Latest()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Discover, publish, and publish again on every change, until cancelled; started
        once the first facts are published."""
        async with anyio.create_task_group() as tasks:
            if self._kube_dns is not None:
                try:
                    await tasks.start(self._kube_dns.run, name="watch kube-dns")
                except kube.Forbidden:
                    log.info("kube-system/kube-dns cannot be read: DNS address from resolv.conf")
                    self._kube_dns = None
            self._probed_subnet = await probe_service_subnet(self._kubernetes, self._namespace)
            started = False
            while True:
                facts = self.compute()
                if self.latest.set(facts):
                    log.info("cluster: %s", facts.describe())
                if not started:
                    task_status.started()
                    started = True
                await self._changed.wait()

    def domain(self) -> str:
        """The cluster domain, fully qualified (``cluster.local.``)."""
        facts = self.latest.value
        return facts.domain if facts else self._domain()

    def _domain(self) -> str:
        return (self._resolv.cluster_domain() or "cluster.local").rstrip(".") + "."

    def compute(self) -> ClusterFacts:
        """The facts from what the watchers know now."""
        if self._nodes is not None:
            pod_subnets = self._nodes.subnets()
        else:
            pod_subnets = covering_subnets(self._inventory.pod_ips())
        dns_ips = self._kube_dns_ips()
        service_subnet = self._probed_subnet or derive_service_subnet(
            [
                *([self._kubernetes_ip] if self._kubernetes_ip else []),
                *dns_ips,
                *sorted(self._inventory.service_ips(), key=_sort_key),
            ]
        )
        dns_ip = dns_ips[0] if dns_ips else _ip(next(iter(self._resolv.nameservers), None))
        return ClusterFacts(
            pod_subnets=pod_subnets,
            service_subnet=service_subnet,
            dns_ip=dns_ip,
            domain=self._domain(),
            manager_pod_ip=self._endpoints.pod_ip,
            api_port=self._endpoints.api_port,
            mux_port=self._endpoints.mux_port,
            mux_ca=self._endpoints.mux_ca,
        )

    def _kube_dns_ips(self) -> list[IPAddress]:
        if self._kube_dns is None:
            return []
        found = self._kube_dns.items.get(("kube-system", "kube-dns"))
        return sorted(found.ips, key=_sort_key) if found else []


async def probe_service_subnet(kubernetes: kube.Kubernetes, namespace: str) -> IPNetwork | None:
    """The Service range, from the API server's refusal of a dry-run Service with a ClusterIP
    outside it; None when it does not say."""
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": PROBE_NAME, "namespace": namespace},
        "spec": {"clusterIP": PROBE_IP, "ports": [{"port": 443}]},
    }
    try:
        await kubernetes.create(kube.SERVICES, probe, namespace, dry_run=True)
    except kube.APIError as error:
        subnet = parse_service_range(error.message)
        if subnet is not None:
            log.info("the API server's Service range is %s", subnet)
            return subnet
        log.info("the Service range probe did not say the range (%s)", error)
        return None
    except kube.KubernetesError as error:
        log.warning("the Service range probe failed: %s", error)
        return None
    log.info(
        "the API server accepted ClusterIP %s in dry-run without naming its Service range;"
        " deriving the Service subnet from known ClusterIPs",
        PROBE_IP,
    )
    return None


def parse_service_range(message: str) -> IPNetwork | None:
    """The first subnet of ``... The range of valid IPs is 10.96.0.0/12`` (a dual-stack or
    multi-CIDR server may list several, separated by commas or spaces)."""
    match = _VALID_RANGE.search(message)
    if match is None:
        return None
    for text in re.split(r"[,\s]+", match.group(1)):
        try:
            return ipaddress.ip_network(text.strip().rstrip(".").strip("[]\"'"), strict=False)
        except ValueError:
            continue
    return None


def covering_subnets(ips: Iterable[IPAddress]) -> tuple[IPNetwork, ...]:
    """Subnets that cover ``ips``: each address's /24 (or /64), merged where adjacent."""
    return collapse(
        ipaddress.ip_network(f"{ip}/{POD_PREFIX[ip.version]}", strict=False) for ip in ips
    )


def derive_service_subnet(ips: list[IPAddress]) -> IPNetwork | None:
    """The smallest network holding every address of the first address's version, at least
    a /16 (IPv4) or /64 (IPv6); None without addresses."""
    if not ips:
        return None
    first = ips[0]
    family = [ip for ip in ips if ip.version == first.version]
    prefix = SERVICE_PREFIX[first.version]
    while True:
        network = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
        if prefix == 0 or all(ip in network for ip in family):
            return network
        prefix -= 1


def collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Networks merged where they overlap or are adjacent, IPv4 first, in address order."""
    every = list(networks)
    v4 = [n for n in every if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in every if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _pod_cidrs(node: kube.Object) -> tuple[IPNetwork, ...] | None:
    spec = node.get("spec") or {}
    texts = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except (ValueError, TypeError):
            name = (node.get("metadata") or {}).get("name")
            log.warning("node %s: podCIDR %r is not a subnet", name, text)
    return tuple(networks) or None


def _ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _sort_key(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)
