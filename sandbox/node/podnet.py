"""A node's pod network: each pod a network namespace on the node's bridge.

The node's namespace holds a bridge (:data:`BRIDGE`) with the first address of the node's pod
CIDR, the pods' gateway. A pod gets the next free address of that CIDR as a /32 on its
``eth0`` (one end of a veth pair; the other end is a port of the bridge) and a default route
to the gateway *on link*. With a /32 a pod never talks to another pod directly over the
bridge: every packet goes through the node's routing, so the node's conntrack sees both
directions of each flow and kube-proxy's DNAT of a ClusterIP is undone on the way back even
when the chosen endpoint is on the same bridge. (Kubernetes needs ``br_netfilter`` for that;
this way needs nothing from the host.)

The bridge gets a fixed MAC address (:func:`bridge_address`) when it is made. A bridge
without one takes the lowest MAC of its ports, so it changes as pods come and go, and the
kernel tells no one (no gratuitous ARP unless ``arp_notify``): a pod whose port had the lowest
MAC goes, and every other pod keeps sending to the old MAC, which the bridge no longer takes,
until its neighbour entry expires, up to 45 s or more without any connectivity. (kubenet
pinned ``cbr0``'s MAC, made from the gateway's address too, for the same reason.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute

from sandbox.node import netns

BRIDGE = "cbr0"


def bridge_address(gateway: str) -> str:
    """The node bridge's fixed MAC: locally administered (``02:00:``), then the gateway's
    IPv4 address, so each node's differs."""
    return ":".join(f"{byte:02x}" for byte in (2, 0, *ipaddress.IPv4Address(gateway).packed))


@dataclass(frozen=True, slots=True)
class PodAddress:
    """Where a pod lives: its namespace's name and its IP."""

    namespace: str
    ip: str


async def veth_into(ipr: AsyncIPRoute, ifname: str, namespace: str) -> int:
    """Add a veth pair: ``ifname`` on ``ipr``'s side, ``eth0`` inside ``namespace``; returns
    ``ifname``'s index. How each namespace of the sandbox is wired to the one above it."""
    await ipr.link(
        "add", ifname=ifname, kind="veth", peer={"ifname": "eth0", "net_ns_fd": namespace}
    )
    (index,) = await ipr.link_lookup(ifname=ifname)
    return int(index)


class AddressesExhausted(Exception):
    """The node's pod CIDR has no free address left."""


class PodNetwork:
    """Attaches pods to one node's bridge, giving out addresses from its pod CIDR."""

    def __init__(self, node_namespace: str, pod_cidr: str, prefix: str) -> None:
        self.node_namespace = node_namespace
        self.cidr = ipaddress.ip_network(pod_cidr)
        self.gateway = str(next(self.cidr.hosts()))
        #: Pod namespaces are named ``<prefix><pod uid's first 12 hex digits>``.
        self.prefix = prefix
        self._used: dict[str, str] = {}  # ip -> pod uid

    def _allocate(self, uid: str) -> str:
        for host in list(self.cidr.hosts())[1:]:
            ip = str(host)
            if ip not in self._used:
                self._used[ip] = uid
                return ip
        raise AddressesExhausted(f"no free pod address left in {self.cidr}")

    def namespace_of(self, uid: str) -> str:
        return self.prefix + uid.replace("-", "")[:12]

    async def attach(self, uid: str) -> PodAddress:
        """Make the pod's namespace, wire it to the bridge, give it an address."""
        name = self.namespace_of(uid)
        host_side = "v" + uid.replace("-", "")[:12]
        ip = self._allocate(uid)
        try:
            netns.create(name)
            async with AsyncIPRoute(netns=self.node_namespace) as node:
                port = await veth_into(node, host_side, name)
                (bridge,) = await node.link_lookup(ifname=BRIDGE)
                await node.link("set", index=port, master=bridge, state="up")
            async with AsyncIPRoute(netns=name) as pod:
                (lo,) = await pod.link_lookup(ifname="lo")
                await pod.link("set", index=lo, state="up")
                (eth0,) = await pod.link_lookup(ifname="eth0")
                await pod.addr("add", index=eth0, address=ip, prefixlen=32)
                await pod.link("set", index=eth0, state="up")
                await pod.route("add", dst=f"{self.gateway}/32", oif=eth0, scope="link")
                await pod.route("add", dst="0.0.0.0/0", gateway=self.gateway, oif=eth0)
        except BaseException:
            await self.detach(uid)
            raise
        return PodAddress(name, ip)

    async def detach(self, uid: str) -> None:
        """Remove the pod's namespace (its veth goes with it) and free its address."""
        netns.remove(self.namespace_of(uid))
        for ip, owner in list(self._used.items()):
            if owner == uid:
                del self._used[ip]
