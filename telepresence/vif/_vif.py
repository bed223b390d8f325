"""The VIF as a whole: what the root daemon holds while connected, and takes down on quit.

:func:`open_vif` puts it up in this order, and takes it down in the reverse order when its
block ends (also on failure, cancellation or a signal):

1. leftovers of a killed daemon removed: its nftables table (which also held the DNS
   redirection) and its policy-routing rule (:func:`remove_leftovers`; the daemon also calls
   it when it starts);
2. the TUN device, with the DNS server's address, and a route for each cluster subnet that
   does not collide with one of the laptop's routes (collisions are reported in the status
   and logged, not routed, unless ``allow_conflicting`` covers them);
3. the forwarders' sockets (:mod:`._forward`): TCP on ``127.0.0.1``, UDP ``IP_TRANSPARENT``;
4. the DNS server (:mod:`._dns`) on the DNS address, port 53 (and, in the redirect mode with
   IPv6 nameservers, on ``[::1]`` and a free port as well), listening before anything sends
   queries to it;
5. the nftables table (:mod:`._nft`) sending TCP and UDP for the routed subnets to the
   forwarders, and the policy routing for UDP; the forwarders serve;
6. the laptop's resolver pointed at the DNS server: through systemd-resolved where it runs
   (:mod:`._resolved`: link DNS and routing domains on the TUN), else by redirecting queries
   to the laptop's nameservers to it (rules in the same nftables table, and in an ``ip6``
   table of the same name for IPv6 nameservers), the server passing names that are not the
   cluster's on to those nameservers.

**Addresses.** The DNS server listens on the cluster DNS Service's own ClusterIP (what pods
have in their ``resolv.conf``), which lies in the routed service subnet: it is a local
address of the TUN, kept out of the redirection (``never``), so that the kernel delivers
queries to it to the daemon's server instead of redirecting them into the cluster. The
manager's own address is kept out too with the ``direct`` transport (``exclude``): the data
plane to it must not be redirected into itself.

**One VIF per network namespace.** The table, the policy rule and the routes are the
namespace's, not the daemon's: a second root daemon (another user's, or a test's) must neither
replace nor remove them. The VIF holds an exclusive ``flock`` on a file named after the network
namespace (:func:`_vif_lock`) while it is up; the kernel releases it when the process dies, so
a held lock means a live VIF, and a free one with a table left means a killed daemon's
leftovers, which are then removed.

**Updates.** The cluster's subnets can change while connected (a new node's pod subnet):
:meth:`VIF.update` routes the new set and replaces the nftables table in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from telepresence.vif import _device, _dns, _forward, _nft, _resolved

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from telepresence.socks import ClusterDialer

__all__ = [
    "DNS_MARK",
    "UDP_MARK",
    "VIF",
    "VIFBusy",
    "VIFSettings",
    "open_vif",
    "remove_leftovers",
]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network
Address = ipaddress.IPv4Address

#: The fwmark of UDP for the cluster (matched by the policy rule) and of the DNS server's own
#: queries to the laptop's nameservers (kept out of the DNS redirection).
UDP_MARK = 0x7E1E
DNS_MARK = 0x7E1F
DNS_PORT = 53
#: How long a UDP flow may be idle before it is closed.
UDP_IDLE_TIMEOUT = 60.0
#: Where systemd-resolved is the laptop's resolver, and where not.
RESOLVED, REDIRECT = "systemd-resolved", "redirect"
#: Where the VIF's lock files live (root's).
LOCK_DIRECTORY = Path("/run/telepresence")


class VIFBusy(OSError):
    """Another live root daemon has the VIF of this network namespace."""


@dataclass(frozen=True, slots=True)
class VIFSettings:
    """What the VIF routes and resolves: the cluster's subnets and DNS, and the user's
    settings."""

    #: The cluster's pod and service subnets.
    cluster_subnets: tuple[Network, ...]
    #: The cluster DNS Service's IP (the DNS server's address here); None: no DNS.
    dns_ip: Address | None
    cluster_domain: str
    namespace: str
    mapped_namespaces: tuple[str, ...] = ()
    also_proxy: tuple[Network, ...] = ()
    never_proxy: tuple[Network, ...] = ()
    allow_conflicting: tuple[Network, ...] = ()
    include_suffixes: tuple[str, ...] = ()
    exclude_suffixes: tuple[str, ...] | None = None
    lookup_timeout: float = 4.0
    #: Addresses that must never be redirected: the manager's, with the direct transport.
    exclude: tuple[Network, ...] = ()

    @property
    def wanted(self) -> tuple[Network, ...]:
        """Every subnet to route: the cluster's and also-proxy."""
        return (*self.cluster_subnets, *self.also_proxy)

    @property
    def never(self) -> tuple[Network, ...]:
        """Never redirected: never-proxy, the excluded addresses and the DNS address."""
        own = (Network(self.dns_ip),) if self.dns_ip is not None else ()
        return (*self.never_proxy, *self.exclude, *own)


@dataclass(slots=True)
class VIF:
    """The VIF while its :func:`open_vif` block runs."""

    settings: VIFSettings
    tun: _device.Tun
    dns_mode: str
    routed: tuple[Network, ...] = ()
    conflicts: tuple[_device.Conflict, ...] = ()
    _ports: tuple[int, int] = (0, 0)
    _nameservers: tuple[Address | ipaddress.IPv6Address, ...] = ()
    _dns_server: _dns.DNSServer | None = None
    #: The DNS server's port on [::1], for queries to IPv6 nameservers (redirect mode); 0: none.
    _dns6_port: int = 0
    _local_search: tuple[str, ...] = field(default=())

    async def update(self, settings: VIFSettings) -> None:
        """Route ``settings``' subnets instead of the current ones (the cluster's changed)."""
        routed, conflicts = await anyio.to_thread.run_sync(_routable, settings, self.tun.index)
        gone = [subnet for subnet in self.routed if subnet not in routed]
        await anyio.to_thread.run_sync(_device.routes, self.tun, routed)
        await anyio.to_thread.run_sync(self._redirect, settings, routed)
        await anyio.to_thread.run_sync(_device.unroute, self.tun, gone)
        await anyio.to_thread.run_sync(_device.remove_exemptions)
        await anyio.to_thread.run_sync(_device.exempt, self.tun, _exempted(settings, routed))
        self.settings, self.routed, self.conflicts = settings, routed, conflicts
        if self._dns_server is not None:
            self._dns_server.configure(self._dns_settings())
        _report(self)

    def _redirect(self, settings: VIFSettings, routed: Sequence[Network]) -> None:
        dns = None
        if self.dns_mode == REDIRECT and settings.dns_ip is not None and self._nameservers:
            dns = _nft.DNSRedirect(
                nameservers=self._nameservers,
                server=settings.dns_ip,
                port=DNS_PORT,
                skip_mark=DNS_MARK,
                ipv6_port=self._dns6_port,
            )
        tcp_port, udp_port = self._ports
        _nft.apply(
            _nft.Redirection(
                subnets=tuple(routed),
                never=settings.never,
                tcp_port=tcp_port,
                udp_port=udp_port,
                mark=UDP_MARK,
                dns=dns,
            )
        )

    def _dns_settings(self) -> _dns.DNSSettings:
        settings = self.settings
        upstreams: tuple[tuple[str, int], ...] = ()
        if self.dns_mode == REDIRECT:
            upstreams = tuple((str(address), DNS_PORT) for address in self._nameservers)
        return _dns.DNSSettings(
            namespace=settings.namespace,
            cluster_domain=settings.cluster_domain,
            mapped_namespaces=settings.mapped_namespaces,
            include_suffixes=settings.include_suffixes,
            exclude_suffixes=settings.exclude_suffixes,
            local_search=self._local_search,
            cluster_subnets=self.routed,
            upstreams=upstreams,
            upstream_mark=DNS_MARK,
            lookup_timeout=settings.lookup_timeout,
        )


def remove_leftovers() -> bool:
    """Remove what a killed daemon left: its nftables table (with the DNS redirection), its
    policy routing and its never-proxy routes. (Its TUN device, the routes on it and its
    systemd-resolved link settings went with its process.) Nothing is touched while another
    live daemon holds the VIF. Blocking.

    Returns:
        Whether there was anything to remove.
    """
    try:
        lock = _vif_lock()
    except VIFBusy:
        return False
    with lock:
        return _remove_leftovers()


def _remove_leftovers() -> bool:
    table = _nft.delete()
    policy = _device.remove_policy(UDP_MARK)
    exempted = _device.remove_exemptions()
    return table or policy or exempted


def _vif_lock() -> contextlib.closing[_Lock]:
    """The VIF's lock for this network namespace, taken.

    Raises:
        VIFBusy: Another process holds it.
    """
    namespace = os.stat("/proc/self/ns/net").st_ino
    LOCK_DIRECTORY.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = LOCK_DIRECTORY / f"vif-{namespace}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
        os.close(descriptor)
        raise VIFBusy(
            f"another telepresence root daemon (pid {holder}) has the VIF of this network "
            "namespace: quit it first (telepresence quit -s as its user)"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return contextlib.closing(_Lock(descriptor))


class _Lock:
    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    def close(self) -> None:
        os.close(self._descriptor)  # releases the flock


@contextlib.asynccontextmanager
async def open_vif(
    settings: VIFSettings,
    dialer: ClusterDialer,
    lookup: _dns.Lookup,
    *,
    resolv_conf: str = "/etc/resolv.conf",
) -> AsyncIterator[VIF]:
    """Put the VIF up for ``settings``, streams going through ``dialer`` and cluster names
    through ``lookup``, and take it down when the block ends (see the module docstring).

    Raises:
        OSError: The TUN device, a route or a socket could not be made.
        telepresence.vif._nft.NftError: nft refused the table.
    """
    _raise_file_limit()
    nameservers, local_search = _dns.read_resolv_conf(resolv_conf)
    dns_mode = RESOLVED if await anyio.to_thread.run_sync(_resolved.available) else REDIRECT
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(await anyio.to_thread.run_sync(_vif_lock))
        if await anyio.to_thread.run_sync(_remove_leftovers):
            log.info("removed the nftables table and routing a killed daemon left")
        tun = await anyio.to_thread.run_sync(_device.open_tun, settings.dns_ip)
        stack.callback(tun.close)
        stack.push_async_callback(_take_down, tun.index, dns_mode)
        routed, conflicts = await anyio.to_thread.run_sync(_routable, settings, tun.index)
        await anyio.to_thread.run_sync(_device.routes, tun, routed)
        await anyio.to_thread.run_sync(_device.exempt, tun, _exempted(settings, routed))
        tcp = _forward.tcp_listener()
        stack.callback(tcp.close)
        udp = _forward.udp_socket()
        stack.callback(udp.close)
        vif = VIF(
            settings=settings,
            tun=tun,
            dns_mode=dns_mode,
            routed=routed,
            conflicts=conflicts,
            _ports=(tcp.getsockname()[1], udp.getsockname()[1]),
            _nameservers=tuple(ipaddress.ip_address(host) for host, _ in nameservers),
            _local_search=tuple(local_search),
        )
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        if settings.dns_ip is not None:
            # The DNS server listens before the table redirects queries to it.
            vif._dns_server = _dns.DNSServer(vif._dns_settings(), lookup)
            await tasks.start(vif._dns_server.serve, str(settings.dns_ip), DNS_PORT)
            if dns_mode == REDIRECT and any(ns.version == 6 for ns in vif._nameservers):
                vif._dns6_port = await _serve_ipv6(vif._dns_server, tasks)
        await anyio.to_thread.run_sync(vif._redirect, settings, routed)
        await anyio.to_thread.run_sync(_device.add_policy, UDP_MARK)
        await tasks.start(_forward.serve_tcp, tcp, dialer)
        await tasks.start(
            lambda task_status: _forward.serve_udp(
                udp, dialer, idle_timeout=UDP_IDLE_TIMEOUT, task_status=task_status
            )
        )
        if settings.dns_ip is not None and dns_mode == RESOLVED:
            await anyio.to_thread.run_sync(_configure_resolved, vif)
        _report(vif)
        yield vif


async def _serve_ipv6(server: _dns.DNSServer, tasks: anyio.abc.TaskGroup) -> int:
    """A second listener of ``server``, on [::1] and a free port, for the queries to IPv6
    nameservers; its port, or 0 where the host has no IPv6 loopback (those queries are then
    left alone, and cluster names resolve only through the IPv4 nameservers)."""
    try:
        _, port = await tasks.start(server.serve, "::1", 0)
    except OSError as error:
        log.warning(
            "DNS: queries to the IPv6 nameservers of /etc/resolv.conf cannot be redirected "
            "(no IPv6 loopback: %s); list an IPv4 nameserver first for cluster names to resolve",
            error,
        )
        return 0
    return int(port)


def _routable(
    settings: VIFSettings, own_index: int
) -> tuple[tuple[Network, ...], tuple[_device.Conflict, ...]]:
    """The subnets to route, and those left out because a local route overlaps them."""
    wanted = tuple(ipaddress.collapse_addresses(settings.wanted))
    existing = _device.local_routes(exclude_index=own_index)
    found = _device.conflicts(
        wanted, existing, allowed=settings.allow_conflicting, kept_out=settings.never
    )
    clashing = {conflict.subnet for conflict in found}
    return tuple(subnet for subnet in wanted if subnet not in clashing), tuple(found)


def _exempted(settings: VIFSettings, routed: Sequence[Network]) -> list[Network]:
    """The never-redirected subnets that lie inside a routed one: they need a route of their
    own to stay out of the TUN (the DNS address is local; it needs none)."""
    return [
        subnet
        for subnet in (*settings.never_proxy, *settings.exclude)
        if any(subnet.overlaps(route) for route in routed)
    ]


def _configure_resolved(vif: VIF) -> None:
    settings = vif.settings
    assert settings.dns_ip is not None
    domains = _resolved.link_domains(
        settings.namespace,
        settings.mapped_namespaces,
        settings.cluster_domain,
        settings.include_suffixes,
    )
    _resolved.configure_link(vif.tun.index, (str(settings.dns_ip), DNS_PORT), domains)


async def _take_down(index: int, dns_mode: str) -> None:
    """Undo what :func:`open_vif` did outside the process (the rest goes with the TUN), in a
    worker thread (pyroute2's blocking calls run an event loop of their own), shielded: it
    runs when the VIF's holder is cancelled."""

    def undo() -> None:
        if dns_mode == RESOLVED:
            with contextlib.suppress(_resolved.ResolvedError):
                _resolved.revert_link(index)
        _nft.delete()
        _device.remove_policy(UDP_MARK)
        _device.remove_exemptions()

    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(undo)


def _report(vif: VIF) -> None:
    log.info(
        "VIF %s: routing %s; DNS %s (%s)",
        vif.tun.name,
        ", ".join(map(str, vif.routed)) or "nothing",
        vif.settings.dns_ip,
        vif.dns_mode,
    )
    for conflict in vif.conflicts:
        log.warning(
            "not routing %s: %s (allow it with routing.allowConflictingSubnets, or leave it "
            "out with --never-proxy)",
            conflict.subnet,
            conflict,
        )


def _raise_file_limit() -> None:
    """Every proxied TCP connection holds a descriptor in the daemon (its streams into the
    cluster share the one data-plane connection); lift the soft limit to the hard one, as a
    laptop may hold thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
