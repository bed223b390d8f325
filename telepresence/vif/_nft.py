"""The root daemon's nftables table: one table of its own, replaced and removed atomically.

All of the daemon's packet rewriting lives in the table ``ip telepresence`` (:data:`TABLE`),
which nothing else touches, so that the daemon never edits rules it does not own and a crash
leaves one thing to clean up. The table is written and read through ``nft -j`` (libnftables'
JSON), never by parsing nft's text output, and each write is one transaction: ``nft -f``
commits the whole batch or none of it.

**The rules.** Two named interval sets hold the addresses: ``cluster`` (pod and service
subnets and also-proxy) and ``never`` (never-proxy, which wins even inside ``cluster``), so the
rules stay the same few whatever the number of subnets. Three base chains, each starting with
``ip daddr @never return``:

- ``output_nat`` (nat, output, dstnat -100): TCP to ``@cluster`` is redirected to the daemon's
  listener on ``127.0.0.1:tcp_port``; the kernel keeps the original destination in conntrack,
  where the daemon reads it with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)``.
- ``output_route`` (route, output, mangle -150): UDP to ``@cluster`` gets the fwmark ``mark``;
  a ``route`` chain re-runs the routing decision after a mark changes, so the policy rule
  ``fwmark mark lookup T`` (with ``local 0.0.0.0/0 dev lo`` in table T, set up with the VIF's
  routes) sends the datagram back in through ``lo``.
- ``prerouting_tproxy`` (filter, prerouting, mangle -150): that marked UDP, arriving on ``lo``,
  is handed by ``tproxy`` to the daemon's ``IP_TRANSPARENT`` socket on ``127.0.0.1:udp_port``
  with its destination unchanged (``IP_RECVORIGDSTADDR`` gives it back).

**DNS redirection** (the DNS mode without systemd-resolved; :class:`DNSRedirect`): in
``output_nat``, before the rules above, queries (UDP and TCP port 53) to the laptop's
nameservers (the set ``dns_servers``) are DNATed to the daemon's DNS server, except packets
carrying ``skip_mark``: the DNS server's own queries to those nameservers, for names that are
not the cluster's. Conntrack rewrites the answers back, so programs see their nameserver
answer. Being in this table, the redirection goes with it: deleting the table undoes it.

NAT is decided once per conntrack entry, by its first packet, and an entry outlives its
socket (30 s for UDP). The programs' queries and the server's own go from the same address
to the same nameserver port, from ephemeral ports of the same range, so a query may find an
entry that the other side left: a program's query then went straight to the nameserver
(which knows no cluster name), and the server's own query came back to the server (which
then waited for itself until its upstream timeout), about once in a thousand lookups under
load. So the redirected traffic has a conntrack zone of its own (:data:`DNS_ZONE`, set in a
fourth base chain, ``output_raw``, at priority raw, before conntrack): the programs' queries
to the nameservers, and everything to and from the DNS server itself. The server's marked
queries stay in the default zone, and entries of one zone never match packets of the other.

**IPv6 nameservers.** The cluster and the daemon's listeners are IPv4, but a laptop's
``/etc/resolv.conf`` may name an IPv6 nameserver first, and then the programs' queries for
cluster names would go to it unredirected (and get NXDOMAIN). So when there are IPv6
nameservers, a second table of the same name in the ``ip6`` family holds the same DNS rules
for them: a ``dns_servers`` set, the zone chain and, in its ``output_nat``, ``redirect`` to the
daemon's DNS server's second listener on ``[::1]`` (:attr:`DNSRedirect.ipv6_port`). It is
written in the same transaction as the ``ip`` table, and :func:`delete` removes both; without
IPv6 nameservers it is not made at all (a kernel without IPv6 refuses the ``ip6`` family).

**Replacing.** :func:`ruleset` starts with ``add table``, ``delete table``, ``add table``: the
first makes the delete valid whether or not the table exists, so applying always replaces the
previous version (a stale one left by a killed daemon included) in the same transaction that
installs the new one; there is no moment without rules, and a refused ruleset leaves the old
table as it was.

nft refuses overlapping elements in an interval set ("conflicting intervals specified"), and
also-proxy subnets commonly lie inside a pod or service subnet, so each set is collapsed
(:func:`ipaddress.collapse_addresses`) before it is written.

The calls block (``nft`` is a short-lived process); the daemon runs them in a worker thread.
``netns`` runs ``nft`` inside a named network namespace (``ip netns exec``), for tests and the
sandbox's workstation.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "FAMILY",
    "FAMILY6",
    "DNSRedirect",
    "TABLE",
    "NftError",
    "Redirection",
    "apply",
    "delete",
    "exists",
    "listed",
    "ruleset",
]

#: The address family of the table: IPv4, like the daemon's listeners and the cluster.
FAMILY = "ip"
#: The family of the second table, made only to redirect queries to IPv6 nameservers.
FAMILY6 = "ip6"
#: The name of the daemon's table (of each family).
TABLE = "telepresence"
#: The program, looked up on ``PATH``.
NFT = "nft"
#: How long one ``nft`` run may take; it normally takes milliseconds.
TIMEOUT = 10.0

#: The sets' names, as the rules reference them (``@cluster``).
CLUSTER_SET = "cluster"
NEVER_SET = "never"
DNS_SET = "dns_servers"
#: The conntrack zone of the redirected DNS traffic (see the module docstring).
DNS_ZONE = 0x7E1F


class NftError(Exception):
    """``nft`` failed or refused the input; the message is nft's own, or why it did not run."""


@dataclass(frozen=True, slots=True)
class DNSRedirect:
    """Queries to the laptop's nameservers, sent to the daemon's DNS server instead."""

    #: The laptop's nameservers, from ``/etc/resolv.conf``.
    nameservers: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    #: The daemon's DNS server.
    server: ipaddress.IPv4Address
    port: int
    #: The mark of the DNS server's own queries to the nameservers: not redirected.
    skip_mark: int
    #: The port of the daemon's DNS server's second listener, on ``::1``, where queries to the
    #: IPv6 nameservers are redirected (an IPv6 packet cannot be sent on to the server's IPv4
    #: address); 0: none, those queries are left alone.
    ipv6_port: int = 0

    @property
    def ipv4_nameservers(self) -> list[ipaddress.IPv4Address]:
        return [a for a in self.nameservers if isinstance(a, ipaddress.IPv4Address)]

    @property
    def ipv6_nameservers(self) -> list[ipaddress.IPv6Address]:
        """Without their scopes (``fe80::1%eth0``): nft matches the address alone."""
        return [
            ipaddress.IPv6Address(str(a).partition("%")[0])
            for a in self.nameservers
            if isinstance(a, ipaddress.IPv6Address)
        ]


@dataclass(frozen=True, slots=True)
class Redirection:
    """What the table sends where.

    Zero ports and a zero mark are refused here, because nft accepts them and they mean
    something else (``redirect to :0``; ``meta mark 0`` matches every unmarked packet). Other
    range limits (ports up to 65535, marks up to 2**32 - 1) are nft's to enforce.
    """

    #: Routed to the cluster: pod and service subnets, and also-proxy.
    subnets: tuple[ipaddress.IPv4Network, ...]
    #: Never-proxy: excluded, even inside ``subnets``.
    never: tuple[ipaddress.IPv4Network, ...]
    #: The daemon's TCP listener on 127.0.0.1 (the ``redirect`` target).
    tcp_port: int
    #: The daemon's UDP ``tproxy`` listener on 127.0.0.1.
    udp_port: int
    #: The fwmark of UDP to ``subnets``, which the policy routing rule matches.
    mark: int
    #: DNS queries to redirect to the daemon's DNS server; None: leave DNS alone.
    dns: DNSRedirect | None = None

    def __post_init__(self) -> None:
        for name in ("tcp_port", "udp_port", "mark"):
            if getattr(self, name) == 0:
                raise ValueError(f"Redirection.{name} must not be 0")


# --- the ruleset: pure data ------------------------------------------------------------------


def _daddr_in(set_name: str, family: str = FAMILY) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": family, "field": "daddr"}},
            "right": f"@{set_name}",
        }
    }


def _l4proto(protocol: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": protocol}}


def _port_is(protocol: str, field: str, port: int) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": field}},
            "right": port,
        }
    }


def _addr_is(field: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, Any]:
    protocol = FAMILY if address.version == 4 else FAMILY6
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": field}},
            "right": str(address),
        }
    }


def _mark_is_not(mark: int) -> dict[str, Any]:
    return {"match": {"op": "!=", "left": {"meta": {"key": "mark"}}, "right": mark}}


def _set_zone(zone: int) -> dict[str, Any]:
    return {"mangle": {"key": {"ct": {"key": "zone"}}, "value": zone}}


def _mark_is(mark: int) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": mark}}


def _set_mark(mark: int) -> dict[str, Any]:
    return {"mangle": {"key": {"meta": {"key": "mark"}}, "value": mark}}


def _elements[N: (ipaddress.IPv4Network, ipaddress.IPv6Network)](
    networks: Iterable[N],
) -> list[dict[str, Any]]:
    return [
        {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}
        for network in ipaddress.collapse_addresses(networks)
    ]


def ruleset(redirection: Redirection, table: str = TABLE) -> dict[str, Any]:
    """The ``nft -j`` input that (re)creates the table in one transaction.

    Args:
        redirection: the subnets, listeners and mark to write into the rules.
        table: the table's name (another one only for tests that want two).

    Returns:
        ``{"nftables": [...]}``: replace the table, then its sets, chains and rules; and the
        ``ip6`` table when queries to IPv6 nameservers are redirected.
    """
    never_return = (_daddr_in(NEVER_SET), {"return": None})
    cluster = _daddr_in(CLUSTER_SET)
    dns = redirection.dns
    ip = _TableWriter(FAMILY, table)
    dns_raw: list[dict[str, Any]] = []  # conntrack zones, before conntrack
    dns_nat: list[dict[str, Any]] = []
    if dns is not None:
        dns_raw, dns_nat = _dns_rules(
            ip, dns, dns.server, dns.port, {"dnat": {"addr": str(dns.server), "port": dns.port}}
        )
    commands = [
        *ip.replace(),
        ip.interval_set(CLUSTER_SET, "ipv4_addr", redirection.subnets),
        ip.interval_set(NEVER_SET, "ipv4_addr", redirection.never),
        ip.interval_set(
            DNS_SET,
            "ipv4_addr",
            [ipaddress.IPv4Network(ns) for ns in dns.ipv4_nameservers] if dns else [],
        ),
        *dns_raw,
        ip.base_chain("output_nat", "nat", "output", -100),
        *dns_nat,
        ip.rule("output_nat", *never_return),
        ip.rule(
            "output_nat", cluster, _l4proto("tcp"), {"redirect": {"port": redirection.tcp_port}}
        ),
        ip.base_chain("output_route", "route", "output", -150),
        ip.rule("output_route", *never_return),
        ip.rule("output_route", cluster, _l4proto("udp"), _set_mark(redirection.mark)),
        ip.base_chain("prerouting_tproxy", "filter", "prerouting", -150),
        ip.rule("prerouting_tproxy", *never_return),
        ip.rule(
            "prerouting_tproxy",
            cluster,
            _l4proto("udp"),
            _mark_is(redirection.mark),
            {"tproxy": {"addr": "127.0.0.1", "port": redirection.udp_port}},
            _set_mark(redirection.mark),
            {"accept": None},
        ),
    ]
    if dns is not None and dns.ipv6_port and (nameservers := dns.ipv6_nameservers):
        # Queries to IPv6 nameservers go to the server's listener on ::1: nat's redirect
        # sends a locally made packet to the loopback address of its family.
        ip6 = _TableWriter(FAMILY6, table)
        loopback = ipaddress.IPv6Address("::1")
        raw6, nat6 = _dns_rules(
            ip6, dns, loopback, dns.ipv6_port, {"redirect": {"port": dns.ipv6_port}}
        )
        commands += [
            *ip6.replace(),
            ip6.interval_set(
                DNS_SET, "ipv6_addr", [ipaddress.IPv6Network(ns) for ns in nameservers]
            ),
            *raw6,
            ip6.base_chain("output_nat", "nat", "output", -100),
            *nat6,
        ]
    return {"nftables": commands}


class _TableWriter:
    """The ``nft -j`` commands for one table of the daemon's."""

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self._where = {"family": family, "table": table}
        self._id = {"family": family, "name": table}

    def replace(self) -> list[dict[str, Any]]:
        # "add" first makes the "delete" valid whether or not the table exists.
        return [
            {"add": {"table": self._id}},
            {"delete": {"table": self._id}},
            {"add": {"table": self._id}},
        ]

    def base_chain(self, name: str, kind: str, hook: str, priority: int) -> dict[str, Any]:
        chain = {"name": name, "type": kind, "hook": hook, "prio": priority, "policy": "accept"}
        return {"add": {"chain": {**self._where, **chain}}}

    def interval_set[N: (ipaddress.IPv4Network, ipaddress.IPv6Network)](
        self, name: str, kind: str, networks: Sequence[N]
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"name": name, "type": kind, "flags": ["interval"]}
        if networks:  # nft refuses an empty "elem" array ("Invalid set elem expression")
            content["elem"] = _elements(networks)
        return {"add": {"set": {**self._where, **content}}}

    def rule(self, chain: str, *expressions: dict[str, Any]) -> dict[str, Any]:
        return {"add": {"rule": {**self._where, "chain": chain, "expr": list(expressions)}}}


def _dns_rules(
    table: _TableWriter,
    dns: DNSRedirect,
    server: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    to_server: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The DNS redirection's rules in ``table``: its ``output_raw`` chain (the conntrack
    zone of the programs' queries and of the server's traffic at ``server:port``) and its
    rules for ``output_nat`` (the programs' queries, sent on by ``to_server``)."""
    raw = [table.base_chain("output_raw", "filter", "output", -300)]
    nat = []
    for protocol in ("udp", "tcp"):
        to_nameservers = (_daddr_in(DNS_SET, table.family), _port_is(protocol, "dport", 53))
        raw += [
            table.rule(
                "output_raw", *to_nameservers, _mark_is_not(dns.skip_mark), _set_zone(DNS_ZONE)
            ),
            table.rule(
                "output_raw",
                _addr_is("daddr", server),
                _port_is(protocol, "dport", port),
                _set_zone(DNS_ZONE),
            ),
            table.rule(
                "output_raw",
                _addr_is("saddr", server),
                _port_is(protocol, "sport", port),
                _set_zone(DNS_ZONE),
            ),
        ]
        nat.append(
            table.rule("output_nat", *to_nameservers, _mark_is_not(dns.skip_mark), to_server)
        )
    return raw, nat


# --- running nft -----------------------------------------------------------------------------


def _nft(*arguments: str, netns: str | None, stdin: str | None = None) -> str:
    argv = [NFT, "-j", *arguments]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise NftError(f"{' '.join(argv)} did not finish within {TIMEOUT:g}s") from error
    except OSError as error:
        raise NftError(f"cannot run {argv[0]}: {error}") from error
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise NftError(message or f"{' '.join(argv)} exited with {result.returncode}")
    return result.stdout


def _transaction(commands: dict[str, Any], netns: str | None) -> None:
    _nft("-f", "-", netns=netns, stdin=json.dumps(commands))


def apply(redirection: Redirection, *, netns: str | None = None) -> None:
    """Replace the daemon's table (or create it) with the rules for ``redirection``.

    Raises:
        NftError: nft refused the ruleset (its message says why; the table is as it was) or
            could not run.
    """
    commands = ruleset(redirection)
    writes_ip6 = any(
        command.get("add", {}).get("table", {}).get("family") == FAMILY6
        for command in commands["nftables"]
    )
    if not writes_ip6 and FAMILY6 in _tables(netns):
        # An ip6 table of an earlier ruleset, with IPv6 nameservers, goes in the same step.
        table_id = {"family": FAMILY6, "name": TABLE}
        commands["nftables"] += [{"delete": {"table": table_id}}]
    _transaction(commands, netns)


def exists(*, netns: str | None = None) -> bool:
    """Whether a table of the daemon's is there (of either family)."""
    return bool(_tables(netns))


def _tables(netns: str | None) -> list[str]:
    """The families that have a table of the daemon's."""
    output = json.loads(_nft("list", "tables", netns=netns))
    return [
        table["family"]
        for item in output.get("nftables", ())
        if (table := item.get("table", {})).get("name") == TABLE
        and table.get("family") in (FAMILY, FAMILY6)
    ]


def delete(*, netns: str | None = None) -> bool:
    """Delete the daemon's tables if they are there: at quit, and at start for stale ones.

    Returns:
        Whether there was a table to delete.
    """
    families = _tables(netns)
    # The ip6 table only when it is there: on a kernel without IPv6, nft refuses "ip6".
    commands = []
    for family in {FAMILY, *families}:
        # "add" first, as in ruleset(): the delete is then valid whether or not it exists.
        table_id = {"family": family, "name": TABLE}
        commands += [{"add": {"table": table_id}}, {"delete": {"table": table_id}}]
    _transaction({"nftables": commands}, netns)
    return bool(families)


def listed(*, family: str = FAMILY, netns: str | None = None) -> dict[str, Any]:
    """The daemon's table of ``family`` as ``nft -j list table`` gives it:
    ``{"nftables": [...]}``.

    Raises:
        NftError: there is no such table, or nft could not run.
    """
    listing: dict[str, Any] = json.loads(_nft("list", "table", family, TABLE, netns=netns))
    return listing
