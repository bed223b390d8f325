"""The root daemon's nftables table, applied for real inside a throwaway network namespace.

Each test gets a fresh namespace (``tpvif-<random>``) and removes it however the test ends;
``nft`` only ever runs inside it (``netns=``), never on the host's ruleset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import secrets
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.node import netns as sandbox_netns
from telepresence.vif._nft import (
    FAMILY6,
    TABLE,
    DNSRedirect,
    NftError,
    Redirection,
    apply,
    delete,
    exists,
    listed,
    ruleset,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.timeout(60)

net = ipaddress.IPv4Network


def redirection(*subnets: str, never: tuple[str, ...] = (), tcp_port: int = 4100) -> Redirection:
    return Redirection(
        subnets=tuple(net(subnet) for subnet in subnets),
        never=tuple(net(subnet) for subnet in never),
        tcp_port=tcp_port,
        udp_port=4200,
        mark=0x7E1E,
    )


def namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace, removed (with anything left running in it) at the end."""
    name = f"tpvif-{secrets.token_hex(4)}"
    sandbox_netns.create(name)
    try:
        yield name
    finally:
        sandbox_netns.kill_processes_in([name])
        sandbox_netns.remove(name)
        assert name not in namespaces()


def ip(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ip", *argv], check=True, timeout=10)


# --- reading the listing back ----------------------------------------------------------------


def items(listing: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item[kind] for item in listing["nftables"] if kind in item]


def set_contents(listing: dict[str, Any]) -> dict[str, set[str]]:
    """Each set's elements as prefixes (a single address is listed bare: a /32 or a /128)."""

    def prefix(element: Any) -> str:
        if isinstance(element, str):
            return f"{element}/{128 if ':' in element else 32}"
        return f"{element['prefix']['addr']}/{element['prefix']['len']}"

    return {s["name"]: {prefix(e) for e in s.get("elem", ())} for s in items(listing, "set")}


def statements(listing: dict[str, Any], chain: str) -> list[list[dict[str, Any]]]:
    return [rule["expr"] for rule in items(listing, "rule") if rule["chain"] == chain]


# --- tests -----------------------------------------------------------------------------------


def test_ruleset_applies_with_chains_sets_ports_and_mark(ns: str) -> None:
    given = redirection("10.96.0.0/12", "10.244.0.0/16", "192.168.7.9/32", never=("10.96.5.0/24",))

    apply(given, netns=ns)

    listing = listed(netns=ns)
    [table] = items(listing, "table")
    assert (table["family"], table["name"]) == ("ip", TABLE)
    chains = {c["name"]: (c["type"], c["hook"], c["prio"]) for c in items(listing, "chain")}
    assert chains == {
        "output_nat": ("nat", "output", -100),
        "output_route": ("route", "output", -150),
        "prerouting_tproxy": ("filter", "prerouting", -150),
    }
    assert set_contents(listing) == {
        "cluster": {"10.96.0.0/12", "10.244.0.0/16", "192.168.7.9/32"},
        "never": {"10.96.5.0/24"},
        "dns_servers": set(),
    }
    never_first = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": "@never"}},
        {"return": None},
    ]  # fmt: skip
    for chain in chains:
        assert statements(listing, chain)[0] == never_first
    [_, nat] = statements(listing, "output_nat")
    assert {"redirect": {"port": 4100}} in nat
    [_, route] = statements(listing, "output_route")
    assert {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 0x7E1E}} in route
    [_, tproxy] = statements(listing, "prerouting_tproxy")
    assert {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 0x7E1E}} in tproxy
    assert {"tproxy": {"addr": "127.0.0.1", "port": 4200}} in tproxy
    assert tproxy[-1] == {"accept": None}


def test_empty_sets_and_overlapping_subnets_are_accepted(ns: str) -> None:
    # Also-proxy subnets often lie inside a service subnet; nft refuses overlapping intervals.
    apply(redirection("10.96.0.0/12", "10.96.3.0/24", "10.97.0.0/16"), netns=ns)

    assert set_contents(listed(netns=ns)) == {
        "cluster": {"10.96.0.0/12"},
        "never": set(),
        "dns_servers": set(),
    }


def test_applying_again_replaces_the_table(ns: str) -> None:
    apply(redirection("10.96.0.0/12", never=("10.96.0.1/32",)), netns=ns)

    apply(redirection("172.20.0.0/16", tcp_port=4101), netns=ns)

    listing = listed(netns=ns)
    assert len(items(listing, "table")) == 1
    assert len(items(listing, "chain")) == 3
    assert set_contents(listing) == {
        "cluster": {"172.20.0.0/16"},
        "never": set(),
        "dns_servers": set(),
    }
    [_, nat] = statements(listing, "output_nat")
    assert {"redirect": {"port": 4101}} in nat


def test_a_stale_table_is_deleted_once(ns: str) -> None:
    assert not exists(netns=ns)
    assert delete(netns=ns) is False  # nothing to clean up at a first start

    apply(redirection("10.96.0.0/12"), netns=ns)  # ... and then the daemon was killed
    assert exists(netns=ns)

    assert delete(netns=ns) is True
    assert not exists(netns=ns)
    assert delete(netns=ns) is False
    with pytest.raises(NftError, match="No such file or directory"):
        listed(netns=ns)


def test_a_refused_ruleset_raises_with_nfts_message_and_changes_nothing(ns: str) -> None:
    with pytest.raises(NftError, match="Service out of range"):
        apply(redirection("10.96.0.0/12", tcp_port=70000), netns=ns)
    assert not exists(netns=ns)

    apply(redirection("10.96.0.0/12"), netns=ns)
    before = listed(netns=ns)
    with pytest.raises(NftError, match="Service out of range"):
        apply(redirection("172.20.0.0/16", tcp_port=70000), netns=ns)
    assert listed(netns=ns) == before


def test_nft_that_cannot_run_raises_nft_error() -> None:
    with pytest.raises(NftError, match="tpvif-absent"):
        exists(netns=f"tpvif-absent-{secrets.token_hex(4)}")


@pytest.mark.parametrize("field", ["tcp_port", "udp_port", "mark"])
def test_zero_ports_and_mark_are_refused_before_nft(field: str) -> None:
    values: dict[str, Any] = {"tcp_port": 1, "udp_port": 2, "mark": 3, field: 0}
    with pytest.raises(ValueError, match=field):
        Redirection(subnets=(), never=(), **values)


def test_ruleset_replaces_the_table_in_its_own_transaction() -> None:
    commands = ruleset(redirection("10.96.0.0/12"), table="other")["nftables"]

    assert commands[:3] == [
        {"add": {"table": {"family": "ip", "name": "other"}}},
        {"delete": {"table": {"family": "ip", "name": "other"}}},
        {"add": {"table": {"family": "ip", "name": "other"}}},
    ]
    # Every set, chain and rule after them goes into that table, and nowhere else.
    targets = {obj["table"] for command in commands[3:] for obj in command["add"].values()}
    assert targets == {"other"}


# --- the kernel follows the rules ------------------------------------------------------------

LISTENER = """
import socket, struct, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print("ready", flush=True)
connection, _ = server.accept()
raw = connection.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST: a struct sockaddr_in
port, address = struct.unpack_from("!H4s", raw, 2)
print(f"{socket.inet_ntoa(address)}:{port}", flush=True)
"""

CONNECT = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
"""


def test_tcp_to_a_cluster_subnet_reaches_the_listener_with_its_destination(ns: str) -> None:
    ip(ns, "link", "set", "lo", "up")
    # A TUN device like the VIF (this kernel has no dummy links); with no process attached it
    # has no carrier, but still owns the route, which is all the output path looks at.
    ip(ns, "tuntap", "add", "dev", "vif0", "mode", "tun")
    ip(ns, "addr", "add", "10.123.255.254/32", "dev", "vif0")
    ip(ns, "link", "set", "vif0", "up")
    ip(ns, "route", "add", "10.123.0.0/16", "dev", "vif0")
    apply(redirection("10.123.0.0/16", never=("10.123.9.0/24",), tcp_port=4300), netns=ns)

    python = ["ip", "netns", "exec", ns, sys.executable, "-I", "-S", "-c"]
    with subprocess.Popen(
        [*python, LISTENER, "4300"], stdout=subprocess.PIPE, text=True
    ) as listener:
        try:
            assert listener.stdout is not None
            assert listener.stdout.readline() == "ready\n"
            subprocess.run([*python, CONNECT, "10.123.4.5", "80"], check=True, timeout=20)
            assert listener.stdout.readline() == "10.123.4.5:80\n"
        finally:
            listener.kill()


DNS_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
server.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = server.recvfrom(512)
    server.sendto(sys.argv[3].encode() + b":" + data, peer)
"""

ASK = """
import socket, sys
ipv6 = ":" in sys.argv[1]
client = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 3 and int(sys.argv[3]):  # the mark; 0: none
    client.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[3]))
if len(sys.argv) > 4:  # the source port
    client.bind(("::" if ipv6 else "0.0.0.0", int(sys.argv[4])))
client.settimeout(2)
client.sendto(b"query", (sys.argv[1], int(sys.argv[2])))
try:
    data, peer = client.recvfrom(512)
    print(data.decode(), f"{peer[0]}:{peer[1]}")
except TimeoutError:
    print("no answer")
"""


@contextlib.contextmanager
def udp_servers(ns: str, *servers: tuple[str, str, str]) -> Iterator[Callable[..., str]]:
    """``DNS_SERVER``s in ``ns`` at each ``(address, port, name)``, until the block ends; the
    block gets ``ask(address, port[, mark[, source port]])``, which runs ``ASK`` there."""
    python = ["ip", "netns", "exec", ns, sys.executable, "-I", "-S", "-c"]
    running = [
        subprocess.Popen([*python, DNS_SERVER, *where], stdout=subprocess.PIPE, text=True)
        for where in servers
    ]
    try:
        for server in running:
            assert server.stdout is not None
            assert server.stdout.readline() == "ready\n"

        def ask(*argv: str) -> str:
            done = subprocess.run(
                [*python, ASK, *argv], capture_output=True, text=True, check=True, timeout=20
            )
            return done.stdout.strip()

        yield ask
    finally:
        for server in running:
            server.kill()
            server.communicate()


def assert_zones_keep_queries_apart(
    ask: Callable[..., str], nameserver: str, ports: tuple[int, int]
) -> None:
    """A program's query from the source port of one of the daemon's own a moment ago (its
    conntrack entry, not redirected, still there) is redirected all the same, and the other
    way round: the two kinds are in conntrack zones of their own."""
    mark = str(0x7E1F)
    for port, first, then in ((ports[0], mark, "0"), (ports[1], "0", mark)):
        firsts = ask(nameserver, "53", first, str(port))
        thens = ask(nameserver, "53", then, str(port))
        assert {first: firsts, then: thens} == {
            mark: f"nameserver:query {nameserver}:53",
            "0": f"daemon:query {nameserver}:53",
        }


def test_dns_queries_to_the_nameserver_reach_the_daemons_server_unless_marked(ns: str) -> None:
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "tuntap", "add", "dev", "vif0", "mode", "tun")
    ip(ns, "addr", "add", "10.96.0.10/32", "dev", "vif0")
    ip(ns, "link", "set", "vif0", "up")
    ip(ns, "route", "add", "10.96.0.0/12", "dev", "vif0")
    # The laptop's nameserver: here a local address too, with its own server, so that an
    # unredirected (marked) query gets an answer we can tell apart.
    ip(ns, "addr", "add", "192.0.2.53/32", "dev", "lo")
    dns = DNSRedirect(
        nameservers=(ipaddress.IPv4Address("192.0.2.53"),),
        server=ipaddress.IPv4Address("10.96.0.10"),
        port=5353,
        skip_mark=0x7E1F,
    )
    given = dataclasses.replace(redirection("10.96.0.0/12", never=("10.96.0.10/32",)), dns=dns)
    apply(given, netns=ns)
    assert set_contents(listed(netns=ns))["dns_servers"] == {"192.0.2.53/32"}

    daemon, nameserver = ("10.96.0.10", "5353", "daemon"), ("192.0.2.53", "53", "nameserver")
    with udp_servers(ns, daemon, nameserver) as ask:
        # Redirected to the daemon's server; the answer comes back from the nameserver's
        # address, as the program expects.
        assert ask("192.0.2.53", "53") == "daemon:query 192.0.2.53:53"
        # The daemon's own query (marked) goes to the nameserver itself.
        assert ask("192.0.2.53", "53", str(0x7E1F)) == "nameserver:query 192.0.2.53:53"
        # Queries straight to the daemon's server are answered too.
        assert ask("10.96.0.10", "5353") == "daemon:query 10.96.0.10:5353"
        assert_zones_keep_queries_apart(ask, "192.0.2.53", (40001, 40002))
        # Without the DNS redirect (the systemd-resolved mode), queries are left alone.
        apply(dataclasses.replace(given, dns=None), netns=ns)
        assert ask("192.0.2.53", "53") == "nameserver:query 192.0.2.53:53"


def test_dns_queries_to_an_ipv6_nameserver_reach_the_daemons_server_on_ipv6_loopback(
    ns: str,
) -> None:
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "addr", "add", "192.0.2.53/32", "dev", "lo")
    ip(ns, "addr", "add", "fd00::53/128", "dev", "lo", "nodad")
    dns = DNSRedirect(
        nameservers=(ipaddress.IPv6Address("fd00::53"), ipaddress.IPv4Address("192.0.2.53")),
        server=ipaddress.IPv4Address("10.96.0.10"),
        port=5353,
        skip_mark=0x7E1F,
        ipv6_port=5354,
    )
    given = dataclasses.replace(redirection("10.96.0.0/12", never=("10.96.0.10/32",)), dns=dns)
    apply(given, netns=ns)
    assert set_contents(listed(netns=ns))["dns_servers"] == {"192.0.2.53/32"}
    assert set_contents(listed(family=FAMILY6, netns=ns))["dns_servers"] == {"fd00::53/128"}

    daemon, nameserver = ("::1", "5354", "daemon"), ("fd00::53", "53", "nameserver")
    with udp_servers(ns, daemon, nameserver) as ask:
        # Redirected to the daemon's listener on [::1], answered from the nameserver's address.
        assert ask("fd00::53", "53") == "daemon:query fd00::53:53"
        # The daemon's own (marked) query goes to the nameserver itself.
        assert ask("fd00::53", "53", str(0x7E1F)) == "nameserver:query fd00::53:53"
        # The conntrack zones keep the two kinds apart on a reused source port, as in IPv4.
        assert_zones_keep_queries_apart(ask, "fd00::53", (40003, 40004))
        # Applied again without the IPv6 listener: the ip6 table goes, queries are left alone.
        apply(dataclasses.replace(given, dns=dataclasses.replace(dns, ipv6_port=0)), netns=ns)
        with pytest.raises(NftError):
            listed(family=FAMILY6, netns=ns)
        assert ask("fd00::53", "53") == "nameserver:query fd00::53:53"
        apply(given, netns=ns)
    # Deleting removes both tables.
    assert delete(netns=ns) is True
    assert not exists(netns=ns)
    with pytest.raises(NftError):
        listed(family=FAMILY6, netns=ns)


def test_ipv6_nameservers_get_an_ip6_table_in_the_same_transaction_scopes_dropped() -> None:
    dns = DNSRedirect(
        nameservers=(ipaddress.ip_address("fe80::1%eth0"), ipaddress.ip_address("192.0.2.53")),
        server=ipaddress.IPv4Address("10.96.0.10"),
        port=53,
        skip_mark=0x7E1F,
        ipv6_port=5354,
    )
    given = dataclasses.replace(redirection("10.96.0.0/12"), dns=dns)
    commands = ruleset(given)["nftables"]
    tables = [c["add"]["table"] for c in commands if "table" in c.get("add", {})]
    assert tables == [{"family": "ip", "name": TABLE}] * 2 + [{"family": "ip6", "name": TABLE}] * 2
    elements = {
        c["add"]["set"]["family"]: c["add"]["set"].get("elem")
        for c in commands
        if c.get("add", {}).get("set", {}).get("name") == "dns_servers"
    }
    assert elements == {
        "ip": [{"prefix": {"addr": "192.0.2.53", "len": 32}}],
        "ip6": [{"prefix": {"addr": "fe80::1", "len": 128}}],
    }
    redirects = [
        expression
        for c in commands
        if c.get("add", {}).get("rule", {}).get("family") == "ip6"
        for expression in c["add"]["rule"]["expr"]
        if "redirect" in expression
    ]
    assert redirects == [{"redirect": {"port": 5354}}] * 2  # UDP and TCP
    # Without the IPv6 listener, or without IPv6 nameservers, there is no ip6 table.
    for other in (
        dataclasses.replace(dns, ipv6_port=0),
        dataclasses.replace(dns, nameservers=(ipaddress.ip_address("192.0.2.53"),)),
    ):
        commands = ruleset(dataclasses.replace(given, dns=other))["nftables"]
        assert all(c.get("add", {}).get("table", {}).get("family") != "ip6" for c in commands)
