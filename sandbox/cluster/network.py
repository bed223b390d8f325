"""The sandbox's network: the fabric, the nodes and the workstation, as namespaces.

:func:`build` makes the namespaces and links of :mod:`~sandbox.cluster.addresses`' plan;
:func:`tear_down` removes everything a sandbox with the same prefix made, whether or not the
process that made it is still alive: it kills whatever still runs inside those namespaces,
then removes them, and links, addresses, routes and nftables tables go with them. Nothing is
ever created in the host's namespace.

::

    workstation --(10.88.0.0/30)-- fabric --(bridge, 10.89.0.0/24)-- node0 --(cbr0)-- pods
                                   API server, DNS        \\-------- node1 --(cbr0)-- pods

The fabric keeps the workstation out of the cluster with one rule of its own (table
``ip sandbox``): nothing that enters from the workstation is forwarded anywhere, so even a
route added on the workstation cannot reach a pod or a Service. The workstation itself has no
route but its link to the fabric: pod and service addresses are unreachable from it, as from
a laptop outside the cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from pyroute2 import AsyncIPRoute

from sandbox.cluster import addresses
from sandbox.node import netns
from sandbox.node.podnet import BRIDGE, bridge_address, veth_into

log = logging.getLogger("sandbox.network")

FORWARDING = {"net.ipv4.ip_forward": "1"}
#: A node routes pod-to-pod packets back out of the bridge they came in on; it must not tell
#: the pods to talk directly (they have /32 addresses and could not).
NO_REDIRECTS = {
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
}
NODES_BRIDGE = "nodes"
WORKSTATION_LINK = "ws0"


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    name: str  # the Node object's name
    namespace: str
    ip: str
    pod_cidr: str

    @property
    def gateway(self) -> str:
        return self.pod_cidr.rsplit(".", 1)[0] + ".1"


@dataclass(frozen=True, slots=True)
class Network:
    """The namespaces of one sandbox."""

    prefix: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def fabric(self) -> str:
        return self.prefix + "fabric"

    @property
    def workstation(self) -> str:
        return self.prefix + "ws"

    def pod_prefix(self, node: Node) -> str:
        return f"{self.prefix}p{node.index}-"


def plan(prefix: str, node_count: int) -> Network:
    if not 1 <= node_count <= addresses.MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {addresses.MAX_NODES}")
    nodes = [
        Node(
            index=i,
            name=f"node-{i}",
            namespace=f"{prefix}node{i}",
            ip=addresses.node_ip(i),
            pod_cidr=addresses.pod_cidr(i),
        )
        for i in range(node_count)
    ]
    return Network(prefix, nodes)


async def _up(ipr: AsyncIPRoute, ifname: str) -> int:
    (index,) = await ipr.link_lookup(ifname=ifname)
    await ipr.link("set", index=index, state="up")
    return int(index)


async def build(network: Network) -> None:
    """Make every namespace, link, address and route of ``network``."""
    netns.create(network.fabric)
    async with AsyncIPRoute(netns=network.fabric) as fabric:
        await _up(fabric, "lo")
        await fabric.link("add", ifname=NODES_BRIDGE, kind="bridge")
        bridge = await _up(fabric, NODES_BRIDGE)
        await fabric.addr(
            "add",
            index=bridge,
            address=addresses.FABRIC_IP,
            prefixlen=addresses.NODE_NETWORK.prefixlen,
        )
        for node in network.nodes:
            netns.create(node.namespace)
            port = f"n{node.index}"
            index = await veth_into(fabric, port, node.namespace)
            await fabric.link("set", index=index, master=bridge, state="up")
            await fabric.route("add", dst=node.pod_cidr, gateway=node.ip)
        netns.create(network.workstation)
        ws_link = await veth_into(fabric, WORKSTATION_LINK, network.workstation)
        await fabric.link("set", index=ws_link, state="up")
        await fabric.addr(
            "add",
            index=ws_link,
            address=addresses.WORKSTATION_GATEWAY,
            prefixlen=addresses.WORKSTATION_NETWORK.prefixlen,
        )
    await netns.sysctl(network.fabric, FORWARDING)
    await netns.nft(network.fabric, _fabric_rules())
    for node in network.nodes:
        await _build_node(network, node)
    async with AsyncIPRoute(netns=network.workstation) as workstation:
        await _up(workstation, "lo")
        eth0 = await _up(workstation, "eth0")
        await workstation.addr(
            "add",
            index=eth0,
            address=addresses.WORKSTATION_IP,
            prefixlen=addresses.WORKSTATION_NETWORK.prefixlen,
        )


async def _build_node(network: Network, node: Node) -> None:
    # Before the bridge exists: a new link copies the "default" settings when it is made.
    await netns.sysctl(node.namespace, FORWARDING | NO_REDIRECTS)
    # With br_netfilter loaded on the host, every new namespace passes bridged frames through
    # its IP hooks; a pod reaching a Service whose endpoint is itself (hairpin) then has its
    # packet dropped on the way back out of its own port. Per namespace; -e: the key is
    # absent where the module is not loaded.
    await netns.run(
        node.namespace, "sysctl", "-q", "-e", "-w", "net.bridge.bridge-nf-call-iptables=0"
    )
    async with AsyncIPRoute(netns=node.namespace) as ipr:
        await _up(ipr, "lo")
        eth0 = await _up(ipr, "eth0")
        await ipr.addr(
            "add", index=eth0, address=node.ip, prefixlen=addresses.NODE_NETWORK.prefixlen
        )
        # A MAC of its own: else it takes its ports' lowest, which changes as pods come and go
        # (see sandbox.node.podnet).
        await ipr.link("add", ifname=BRIDGE, kind="bridge", address=bridge_address(node.gateway))
        bridge = await _up(ipr, BRIDGE)
        cidr_length = int(node.pod_cidr.split("/")[1])
        await ipr.addr("add", index=bridge, address=node.gateway, prefixlen=cidr_length)
        # Other nodes' pods directly over the node network (flannel's host-gw); the rest of
        # the cluster (API server, DNS) through the fabric.
        for other in network.nodes:
            if other is not node:
                await ipr.route("add", dst=other.pod_cidr, gateway=other.ip)
        await ipr.route("add", dst="0.0.0.0/0", gateway=addresses.FABRIC_IP)


def _fabric_rules() -> list[dict[str, object]]:
    table = {"family": "ip", "table": "sandbox"}
    return [
        {"add": {"table": {"family": "ip", "name": "sandbox"}}},
        {
            "add": {
                "chain": {
                    **table,
                    "name": "forward",
                    "type": "filter",
                    "hook": "forward",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        },
        {
            "add": {
                "rule": {
                    **table,
                    "chain": "forward",
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"meta": {"key": "iifname"}},
                                "right": WORKSTATION_LINK,
                            }
                        },
                        {"drop": None},
                    ],
                }
            }
        },
    ]


async def tear_down(prefix: str) -> list[str]:
    """Remove every namespace whose name starts with ``prefix``, after killing what runs
    inside; returns the names removed."""
    names = netns.with_prefix(prefix)
    for _ in range(50):
        if not netns.kill_processes_in(names):
            break
        await anyio.sleep(0.02)  # let the kernel reap them before the namespaces go
    # Pods first, then nodes, then the fabric, so no link is left pointing at nothing.
    for name in sorted(names, key=lambda n: (n.endswith("fabric"), "node" in n)):
        netns.remove(name)
    if names:
        log.info("removed %d namespaces", len(names))
    return names
