"""The VIF's device and routing: a TUN device that owns the cluster's routes, and the policy
routing that loops the cluster's UDP back in for ``tproxy``.

**The TUN device** (python-pytun, non-persistent) exists only while the root daemon holds its
file descriptor: when the daemon exits, or is killed, the kernel removes the device and every
route and address on it. So routes to the cluster need no cleanup of their own. The device
carries the DNS server's address (a /32) and the routes to the cluster's subnets; connections
never reach it as packets (the nftables table redirects TCP and UDP to the daemon's sockets
first), it only makes the kernel pick a route for them. A packet that does reach it (ICMP to
a cluster address) is dropped when its queue is full; nobody reads it.

**Policy routing for UDP** does outlive the process: the rule ``fwmark MARK lookup TABLE`` and
``local 0.0.0.0/0 dev lo`` in ``TABLE`` (see :mod:`telepresence.vif._nft`), so
:func:`remove_policy` removes them by their mark and table, also at start for ones left by a
killed daemon.

**Never-proxy** subnets inside a routed one get a route of their own (the protocol
:data:`ROUTE_PROTOCOL` marks it as the daemon's), more specific than the VIF's: the way the
laptop reached them before (its covering route's gateway and device), or, where it had none, a
``throw`` route, so that they stay unreachable instead of vanishing into the TUN. These live
in the main table and outlive a killed daemon: :func:`remove_exemptions` removes them by their
protocol.

**Conflicts**: a cluster subnet that overlaps a route the laptop already has (other than the
default route) is not routed unless the user allowed it (``routing.allowConflictingSubnets``):
routing it would break the laptop's own network there, and the more specific of the two routes
would win anyway, silently. The caller reports what :func:`conflicts` finds.

The calls block (netlink round trips); the daemon runs them in a worker thread.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytun
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "DEVICE_PATTERN",
    "POLICY_PRIORITY",
    "ROUTE_TABLE",
    "Conflict",
    "Tun",
    "conflicts",
    "open_tun",
    "add_policy",
    "exempt",
    "remove_exemptions",
    "remove_policy",
    "routes",
]

#: The TUN device's name: the kernel picks the first free ``tel<N>``.
DEVICE_PATTERN = "tel%d"
#: The routing table that sends marked UDP back in through ``lo``, and its rule's priority
#: (before ``main``, 32766).
ROUTE_TABLE = 0x7E1E
POLICY_PRIORITY = 1000
#: The routing protocol number of the daemon's never-proxy routes (``ip route ... proto 126``;
#: unassigned in iproute2's rt_protos).
ROUTE_PROTOCOL = 126

Network = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class Conflict:
    """A cluster subnet that overlaps one of the laptop's routes."""

    subnet: Network
    route: Network
    device: str

    def __str__(self) -> str:
        return f"{self.subnet} overlaps the route to {self.route} on {self.device}"


class Tun:
    """The open TUN device; :meth:`close` (or the process ending) removes it."""

    def __init__(self, device: pytun.TunTapDevice, index: int) -> None:
        self._device = device
        self.name: str = device.name
        self.index = index

    def close(self) -> None:
        self._device.close()


def open_tun(address: ipaddress.IPv4Address | None) -> Tun:
    """Create the TUN device, bring it up, and give it ``address`` (the DNS server's) as a /32.

    Raises:
        OSError: The kernel refused (no ``/dev/net/tun``, not root).
    """
    try:
        device = pytun.TunTapDevice(name=DEVICE_PATTERN, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    except pytun.Error as error:
        raise OSError(f"cannot create a TUN device: {error}") from error
    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=device.name)
            ipr.link("set", index=index, state="up")
            if address is not None:
                ipr.addr("add", index=index, address=str(address), prefixlen=32)
    except BaseException:
        device.close()
        raise
    return Tun(device, index)


def routes(tun: Tun, subnets: Iterable[Network]) -> None:
    """Route ``subnets`` through the device (routes already there are left as they are)."""
    with IPRoute() as ipr:
        for subnet in subnets:
            try:
                ipr.route("add", dst=str(subnet), oif=tun.index)
            except NetlinkError as error:
                if error.code != 17:  # EEXIST
                    raise


def unroute(tun: Tun, subnets: Iterable[Network]) -> None:
    """Remove routes of the device (gone already is fine)."""
    with IPRoute() as ipr:
        for subnet in subnets:
            try:
                ipr.route("del", dst=str(subnet), oif=tun.index)
            except NetlinkError as error:
                if error.code not in (3, 19):  # ESRCH, ENODEV
                    raise


def local_routes(exclude_index: int | None = None) -> list[tuple[Network, str]]:
    """The laptop's IPv4 routes in the main table, except default routes and those of the
    device ``exclude_index``: ``(destination, device name)``."""
    found: list[tuple[Network, str]] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            length = route["dst_len"]
            index = route.get_attr("RTA_OIF")
            if length == 0 or (exclude_index is not None and index == exclude_index):
                continue
            destination = Network(f"{route.get_attr('RTA_DST')}/{length}")
            found.append((destination, names.get(index, "?")))
    return found


def conflicts(
    subnets: Iterable[Network],
    existing: Sequence[tuple[Network, str]],
    allowed: Sequence[Network] = (),
    kept_out: Sequence[Network] = (),
) -> list[Conflict]:
    """The subnets that overlap an existing route, except those inside an ``allowed`` one.
    A route for addresses that are ``kept_out`` of the VIF anyway (never-proxy, the manager's
    address) is no conflict: it is how they stay reachable."""
    found = []
    for subnet in subnets:
        if any(subnet.subnet_of(allow) for allow in allowed):
            continue
        for route, device in existing:
            if any(route.subnet_of(out) for out in kept_out):
                continue
            if subnet.overlaps(route):
                found.append(Conflict(subnet, route, device))
                break
    return found


def exempt(tun: Tun, subnets: Iterable[Network]) -> None:
    """Give each of ``subnets`` (never-proxy inside a routed subnet) the route the laptop
    would use without the VIF (see the module docstring); one the laptop routes itself, with a
    route for exactly that subnet, keeps it untouched."""
    with IPRoute() as ipr:
        existing = [
            route
            for route in ipr.get_routes(family=socket.AF_INET, table=254)
            if route.get_attr("RTA_OIF") != tun.index
            and route["proto"] != ROUTE_PROTOCOL
            and route["type"] == 1  # RTN_UNICAST
        ]
        for subnet in subnets:
            covering = [
                route
                for route in existing
                if subnet.subnet_of(
                    Network(f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route['dst_len']}")
                )
            ]
            best = max(covering, key=lambda route: route["dst_len"], default=None)
            if best is not None and best["dst_len"] == subnet.prefixlen:
                continue  # the laptop routes it itself, more specifically than the VIF
            try:
                if best is not None:
                    via = {"oif": best.get_attr("RTA_OIF")}
                    if (gateway := best.get_attr("RTA_GATEWAY")) is not None:
                        via["gateway"] = gateway
                    ipr.route("add", dst=str(subnet), proto=ROUTE_PROTOCOL, **via)
                else:
                    ipr.route("add", dst=str(subnet), type="throw", proto=ROUTE_PROTOCOL)
            except NetlinkError as error:
                if error.code != 17:  # EEXIST: ours already (an update)
                    raise


def remove_exemptions() -> bool:
    """Remove the daemon's never-proxy routes (at quit, and a killed daemon's at start).

    Returns:
        Whether there were any.
    """
    removed = False
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route["proto"] == ROUTE_PROTOCOL:
                ipr.route(
                    "del",
                    dst=f"{route.get_attr('RTA_DST')}/{route['dst_len']}",
                    type=route["type"],
                    proto=ROUTE_PROTOCOL,
                )
                removed = True
    return removed


def add_policy(mark: int) -> None:
    """Send packets marked ``mark`` back in through ``lo`` (for ``tproxy``): the rule and its
    table's one route, replacing any left by an earlier daemon."""
    remove_policy(mark)
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.route("add", dst="0.0.0.0/0", type="local", oif=lo, table=ROUTE_TABLE, scope="host")
        ipr.rule("add", fwmark=mark, table=ROUTE_TABLE, priority=POLICY_PRIORITY)


def remove_policy(mark: int) -> bool:
    """Remove the rule for ``mark`` and flush the daemon's table.

    Returns:
        Whether there was anything to remove.
    """
    removed = False
    with IPRoute() as ipr:
        for rule in ipr.get_rules(family=socket.AF_INET):
            if rule.get_attr("FRA_FWMARK") == mark and rule.get_attr("FRA_TABLE") == ROUTE_TABLE:
                ipr.rule(
                    "del", fwmark=mark, table=ROUTE_TABLE, priority=rule.get_attr("FRA_PRIORITY")
                )
                removed = True
        for route in ipr.get_routes(family=socket.AF_INET, table=ROUTE_TABLE):
            ipr.route(
                "del",
                dst=f"{route.get_attr('RTA_DST') or '0.0.0.0'}/{route['dst_len']}",
                type=route["type"],
                table=ROUTE_TABLE,
                oif=route.get_attr("RTA_OIF"),
                scope=route["scope"],
            )
            removed = True
    return removed
