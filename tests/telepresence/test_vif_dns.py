"""The root daemon's DNS server (telepresence.vif._dns), on loopback.

The cluster is played by :class:`FakeCluster`, the manager's ``LookupDNS`` over a small zone
of absolute names; the laptop's original nameserver by :class:`FakeUpstream`, a dnspython
server on 127.0.0.2 (UDP and TCP) that records each query with the transport it came on and
the fwmark of the packet that carried it (``SO_RCVMARK`` for UDP, ``ss -e`` for TCP). The
server under test listens on 127.0.0.3 and is asked with dnspython's client over UDP and TCP,
and through :meth:`DNSServer.resolve`. The decision rules alone are checked on
:class:`ClusterNames` without any server.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import dns._asyncbackend
import dns.asyncbackend
import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from telepresence.vif._dns import (
    DEFAULT_EXCLUDE_SUFFIXES,
    DNSServer,
    DNSSettings,
    parse_resolv_conf,
    read_resolv_conf,
)
from telepresence.vif._dns_names import ClusterNames, Route
from telepresence.wire.proto import manager_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


SERVER_HOST = "127.0.0.3"
UPSTREAM_HOST = "127.0.0.2"
MARK = 0x7E1F
#: Seconds to wait for what a test expects, so that a lost datagram fails the test instead of
#: hanging it.
PATIENCE = 10.0
#: ``SO_RCVMARK`` (Linux 5.19): each datagram's fwmark as a control message.
SO_RCVMARK = getattr(socket, "SO_RCVMARK", 75)
A, AAAA, PTR, CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR, dns.rdatatype.CNAME


def record(owner: str, rdtype: str, text: str, ttl: int = 30) -> manager_pb2.ResourceRecord:
    """A record as the manager sends it: RDATA in wire format, names written out in full."""
    rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
    return manager_pb2.ResourceRecord(
        name=owner,
        type=dns.rdatatype.from_text(rdtype),
        record_class=dns.rdataclass.IN,
        ttl=ttl,
        rdata=rdata.to_wire(),
    )


# --- the cluster -------------------------------------------------------------------------------


def cluster_zone() -> dict[tuple[str, int], list[manager_pb2.ResourceRecord]]:
    echo = "echo.default.svc.cluster.local."
    ext = "ext.default.svc.cluster.local."
    many = "many.default.svc.cluster.local."
    return {
        (echo, A): [record(echo, "A", "10.96.0.12")],
        ("web-0.web.default.svc.cluster.local.", A): [
            record("web-0.web.default.svc.cluster.local.", "A", "10.244.0.7")
        ],
        ("echo.staging.svc.cluster.local.", A): [
            record("echo.staging.svc.cluster.local.", "A", "10.96.1.12")
        ],
        # An ExternalName service: its CNAME, and the target's address after it.
        (ext, A): [
            record(ext, "CNAME", "www.example.org."),
            record("www.example.org.", "A", "192.0.2.80", ttl=300),
        ],
        (many, A): [record(many, "A", f"10.96.2.{n}") for n in range(1, 41)],
        ("12.0.96.10.in-addr.arpa.", PTR): [
            record("12.0.96.10.in-addr.arpa.", "PTR", "echo.default.svc.cluster.local.")
        ],
        # Names under include suffixes, as the manager resolves them.
        ("db.private.", A): [record("db.private.", "A", "10.50.0.5")],
        ("api.internal.org.", A): [record("api.internal.org.", "A", "10.50.0.6")],
    }


@dataclass
class FakeCluster:
    """The manager's ``LookupDNS``: NOERROR with the records of (name, type), NODATA for a
    name with records of other types only, NXDOMAIN otherwise. Counts every call."""

    zone: dict[tuple[str, int], list[manager_pb2.ResourceRecord]] = field(
        default_factory=cluster_zone
    )
    calls: list[tuple[str, int]] = field(default_factory=list)
    #: Names whose lookup raises, as a broken connection to the manager would.
    failing: set[str] = field(default_factory=set)
    #: Names whose lookup never returns.
    hanging: set[str] = field(default_factory=set)
    #: When set, every lookup waits for it.
    gate: anyio.Event | None = None

    async def lookup(self, name: str, rdtype: int) -> manager_pb2.DNSResponse:
        self.calls.append((name, rdtype))
        if self.gate is not None:
            await self.gate.wait()
        if name in self.hanging:
            await anyio.sleep_forever()
        if name in self.failing:
            raise ConnectionError("the connection to the traffic-manager broke")
        if (name, rdtype) in self.zone:
            return manager_pb2.DNSResponse(rcode=dns.rcode.NOERROR, answers=self.zone[name, rdtype])
        if any(owner == name for owner, _ in self.zone):
            return manager_pb2.DNSResponse(rcode=dns.rcode.NOERROR)
        return manager_pb2.DNSResponse(rcode=dns.rcode.NXDOMAIN)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


# --- the laptop's original nameserver ----------------------------------------------------------

UPSTREAM_ZONE = {
    ("intranet.", A): "10.1.2.3",
    ("db.corp.example.", A): "10.1.2.4",
    ("www.example.com.", A): "192.0.2.1",
    ("echo.com.", A): "192.0.2.11",
    # Names the cluster answers; these answers must never be the ones a client sees.
    ("echo.", A): "192.0.2.12",
    ("gone.private.", A): "192.0.2.9",
    ("nope.default.", A): "192.0.2.10",
    ("nope.staging.", A): "192.0.2.13",
    ("7.2.0.192.in-addr.arpa.", PTR): "printer.corp.example.",
}
#: NXDOMAIN with the zone's SOA, whose negative TTL is min(30, MINIMUM 2) = 2 seconds.
GONE = "gone.corp.example."
#: Answered with TC over UDP, in full over TCP.
BIG = "big.corp.example."
BIG_ADDRESSES = ["10.1.2.10", "10.1.2.11", "10.1.2.12"]


@dataclass(frozen=True)
class Seen:
    """A query that reached the upstream."""

    name: str
    transport: str
    #: The fwmark of the packet (UDP) or connection (TCP); None: no mark.
    mark: int | None


@dataclass
class FakeUpstream:
    queries: list[Seen] = field(default_factory=list)
    #: When set, queries are not answered (a nameserver too busy to), or answered SERVFAIL.
    failure: str | None = None

    def names(self) -> list[str]:
        return [seen.name for seen in self.queries]

    def answer(self, query: dns.message.Message, transport: str, mark: int | None) -> bytes | None:
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append(Seen(name, transport, mark))
        response = dns.message.make_response(query)
        if self.failure == "silent":
            return None
        if self.failure == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name == GONE:
            response.set_rcode(dns.rcode.NXDOMAIN)
            soa = dns.rdata.from_text(
                dns.rdataclass.IN,
                dns.rdatatype.SOA,
                "ns.corp.example. admin.corp.example. 1 60 60 60 2",
            )
            response.find_rrset(
                response.authority,
                dns.name.from_text("corp.example."),
                dns.rdataclass.IN,
                dns.rdatatype.SOA,
                create=True,
            ).add(soa, 30)
        elif name == BIG:
            if transport == "udp":
                response.flags |= dns.flags.TC
            else:
                rrset = response.find_rrset(
                    response.answer, question.name, dns.rdataclass.IN, A, create=True
                )
                for address in BIG_ADDRESSES:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, A, address), 60)
        elif (name, question.rdtype) in UPSTREAM_ZONE:
            text = UPSTREAM_ZONE[name, question.rdtype]
            rdata = dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, text)
            response.find_rrset(
                response.answer, question.name, dns.rdataclass.IN, question.rdtype, create=True
            ).add(rdata, 60)
        elif not any(owner == name for owner, _ in UPSTREAM_ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        udp.setblocking(False)
        udp.bind((UPSTREAM_HOST, 0))
        port = udp.getsockname()[1]
        with udp:
            listener = await anyio.create_tcp_listener(local_host=UPSTREAM_HOST, local_port=port)
            async with listener, anyio.create_task_group() as tasks:
                tasks.start_soon(self._serve_udp, udp)
                tasks.start_soon(listener.serve, self._serve_tcp)
                task_status.started(port)

    async def _serve_udp(self, sock: socket.socket) -> None:
        while True:
            await anyio.wait_readable(sock)
            data, ancillary, _flags, client = sock.recvmsg(65535, socket.CMSG_SPACE(4))
            marks = [
                int.from_bytes(payload[:4], sys.byteorder)
                for level, kind, payload in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SO_MARK
            ]
            query = dns.message.from_wire(data)
            # The control message is there for every datagram; 0 is no mark.
            reply = self.answer(query, "udp", marks[0] if marks and marks[0] else None)
            if reply is not None:
                sock.sendto(reply, client)

    async def _serve_tcp(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            mark = await connection_mark(stream.extra(SocketAttribute.remote_port))
            buffered = BufferedByteReceiveStream(stream)
            try:
                while True:
                    size = int.from_bytes(await buffered.receive_exactly(2), "big")
                    query = dns.message.from_wire(await buffered.receive_exactly(size))
                    reply = self.answer(query, "tcp", mark)
                    if reply is not None:
                        await stream.send(len(reply).to_bytes(2, "big") + reply)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return


async def connection_mark(client_port: int) -> int | None:
    """The fwmark of the (loopback) TCP socket whose local port is ``client_port``, as
    ``ss -e`` shows it; None when it has none."""
    shown = await anyio.run_process(
        ["ss", "-tnHe", "state", "established", f"( sport = :{client_port} )"]
    )
    found = re.search(r"fwmark:(0x[0-9a-f]+)", shown.stdout.decode())
    return int(found.group(1), 16) if found else None


# --- the server under test ---------------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    server: DNSServer
    cluster: FakeCluster
    upstream: FakeUpstream
    clock: FakeClock
    port: int
    upstream_port: int

    def reconfigure(self, **changes: Any) -> None:
        self.server.configure(replace(self.server.settings, **changes))

    async def ask(
        self, name: str, rdtype: str = "A", transport: str = "udp"
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        if transport == "resolve":
            reply = await self.server.resolve(query)
            assert reply.id == query.id
            return reply
        if transport == "tcp":
            return await dns.asyncquery.tcp(
                query, SERVER_HOST, timeout=PATIENCE, port=self.port, backend=client_backend()
            )
        return await dns.asyncquery.udp(
            query, SERVER_HOST, timeout=PATIENCE, port=self.port, backend=client_backend()
        )


def client_backend() -> dns._asyncbackend.Backend:
    """dnspython's backend for the running event loop (its default is the first one seen)."""
    return dns.asyncbackend.get_backend(dns.asyncbackend.sniff())


def base_settings(upstream_port: int) -> DNSSettings:
    return DNSSettings(
        namespace="default",
        cluster_domain="cluster.local",
        include_suffixes=(".private", ".internal.org"),
        local_search=("corp.example",),
        cluster_subnets=(ipaddress.IPv4Network("10.96.0.0/16"),),
        upstreams=((UPSTREAM_HOST, upstream_port),),
        upstream_mark=MARK,
        lookup_timeout=PATIENCE,
        upstream_timeout=PATIENCE,
    )


@asynccontextmanager
async def started(**changes: Any) -> AsyncIterator[Harness]:
    """The fake upstream, and the server under test with ``base_settings`` and ``changes``."""
    cluster, upstream, clock = FakeCluster(), FakeUpstream(), FakeClock()
    async with anyio.create_task_group() as tasks:
        upstream_port: int = await tasks.start(upstream.serve)
        settings = replace(base_settings(upstream_port), **changes)
        server = DNSServer(settings, cluster.lookup, clock=clock)
        host, port = await tasks.start(server.serve, SERVER_HOST, 0)
        assert host == SERVER_HOST
        yield Harness(server, cluster, upstream, clock, port, upstream_port)
        tasks.cancel_scope.cancel()


def answers(reply: dns.message.Message) -> list[tuple[str, str, str]]:
    """The answer section as (owner, type, rdata) texts."""
    return [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in reply.answer
        for rdata in rrset
    ]


def addresses(reply: dns.message.Message) -> list[str]:
    return [rdata for _, rdtype, rdata in answers(reply) if rdtype in ("A", "AAAA")]


TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp", "resolve"])


# --- which names are the cluster's ---------------------------------------------------------


def plan(name: str, **changes: Any) -> tuple[Route, list[str]]:
    settings = replace(base_settings(53), **changes)
    decided = ClusterNames(settings).plan(dns.name.from_text(name))
    return decided.route, [candidate.to_text() for candidate in decided.candidates]


def searched(name: str) -> list[str]:
    return [
        f"{name}default.svc.cluster.local.",
        f"{name}svc.cluster.local.",
        f"{name}cluster.local.",
    ]


@pytest.mark.parametrize(
    ("name", "route", "candidates"),
    [
        ("wpad.", Route.REFUSE, []),
        ("wpad.corp.example.", Route.REFUSE, []),
        ("WPAD.default.", Route.REFUSE, []),
        ("12.0.96.10.in-addr.arpa.", Route.CLUSTER, ["12.0.96.10.in-addr.arpa."]),
        ("7.2.0.192.in-addr.arpa.", Route.UPSTREAM, []),
        ("0.96.10.in-addr.arpa.", Route.UPSTREAM, []),
        ("db.private.", Route.CLUSTER, [*searched("db.private."), "db.private."]),
        (
            "a.b.c.d.e.private.",
            Route.CLUSTER,
            ["a.b.c.d.e.private.", *searched("a.b.c.d.e.private.")],
        ),
        ("api.internal.org.", Route.CLUSTER, [*searched("api.internal.org."), "api.internal.org."]),
        ("echo.com.", Route.UPSTREAM, []),
        ("x.in-addr.arpa.", Route.UPSTREAM, []),
        ("echo.default.svc.cluster.local.", Route.CLUSTER, ["echo.default.svc.cluster.local."]),
        ("echo.default.svc.", Route.CLUSTER, ["echo.default.svc.cluster.local."]),
        ("echo.corp.example.", Route.UPSTREAM, []),
        ("echo.", Route.CLUSTER_FIRST, searched("echo.")),
        # The connected namespace: certain, so the cluster's NXDOMAIN is final.
        ("echo.default.", Route.CLUSTER, searched("echo.default.")),
        ("echo.staging.", Route.CLUSTER_FIRST, searched("echo.staging.")),
        ("web-0.web.", Route.CLUSTER_FIRST, searched("web-0.web.")),
        ("web-0.web.default.", Route.CLUSTER, searched("web-0.web.default.")),
        ("web-0.web.staging.", Route.CLUSTER_FIRST, searched("web-0.web.staging.")),
        ("_http._tcp.echo.", Route.CLUSTER_FIRST, searched("_http._tcp.echo.")),
        ("a.b.c.d.", Route.UPSTREAM, []),
        (".", Route.UPSTREAM, []),
    ],
)
def test_the_rules_decide_each_name(name: str, route: Route, candidates: list[str]) -> None:
    assert plan(name) == (route, candidates)


@pytest.mark.parametrize(
    ("name", "route", "candidates"),
    [
        # A mapped namespace: certain, so the cluster's NXDOMAIN is final.
        ("echo.default.", Route.CLUSTER, searched("echo.default.")),
        ("web-0.web.default.", Route.CLUSTER, searched("web-0.web.default.")),
        # Another namespace is never asked; a headless pod of the connected one may be.
        (
            "echo.staging.",
            Route.CLUSTER_FIRST,
            ["echo.staging.default.svc.cluster.local.", "echo.staging.cluster.local."],
        ),
        ("web-0.web.staging.", Route.UPSTREAM, []),
        ("echo.staging.svc.cluster.local.", Route.UPSTREAM, []),
        ("echo.staging.svc.", Route.UPSTREAM, []),
        ("echo.", Route.CLUSTER_FIRST, ["echo.default.svc.cluster.local.", "echo.cluster.local."]),
        ("x.y.dev.", Route.CLUSTER, searched("x.y.dev.")),
    ],
)
def test_mapped_namespaces_decide_which_names_are_the_clusters(
    name: str, route: Route, candidates: list[str]
) -> None:
    assert plan(name, mapped_namespaces=("default", "dev")) == (route, candidates)


def test_exclude_suffixes_default_and_override() -> None:
    assert DNSSettings("default", "cluster.local").exclude_suffixes is None
    assert plan("echo.com.") == (Route.UPSTREAM, [])
    assert ".com" in DEFAULT_EXCLUDE_SUFFIXES
    # Excluding nothing makes echo.com. a possible service in a namespace "com".
    assert plan("echo.com.", exclude_suffixes=()) == (Route.CLUSTER_FIRST, searched("echo.com."))
    assert plan("echo.staging.", exclude_suffixes=("staging.",)) == (Route.UPSTREAM, [])
    # An include suffix wins over an exclude suffix.
    assert plan("db.private.", exclude_suffixes=(".private",))[0] is Route.CLUSTER


# --- answers from the cluster ------------------------------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize(
    ("name", "asked", "address"),
    [
        ("echo.", ["echo.default.svc.cluster.local."], "10.96.0.12"),
        (
            "echo.default.",
            ["echo.default.default.svc.cluster.local.", "echo.default.svc.cluster.local."],
            "10.96.0.12",
        ),
        ("web-0.web.", ["web-0.web.default.svc.cluster.local."], "10.244.0.7"),
        (
            "web-0.web.default.",
            [
                "web-0.web.default.default.svc.cluster.local.",
                "web-0.web.default.svc.cluster.local.",
            ],
            "10.244.0.7",
        ),
        ("echo.default.svc.", ["echo.default.svc.cluster.local."], "10.96.0.12"),
        ("echo.default.svc.cluster.local.", ["echo.default.svc.cluster.local."], "10.96.0.12"),
        ("echo.staging.", [*searched("echo.staging.")[:2]], "10.96.1.12"),
    ],
)
@pytest.mark.anyio
async def test_cluster_names_resolve_with_the_search_path_under_the_name_asked(
    transport: str, name: str, asked: list[str], address: str
) -> None:
    async with started() as harness:
        reply = await harness.ask(name, "A", transport)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.RA
        assert answers(reply) == [(name, "A", address)]
        assert harness.cluster.names() == asked
        # The upstream knows an "echo." of its own: never asked, never answered.
        assert harness.upstream.queries == []


@pytest.mark.anyio
async def test_an_external_name_keeps_its_cname_under_the_name_asked() -> None:
    async with started() as harness:
        reply = await harness.ask("ext.default.")
        assert answers(reply) == [
            ("ext.default.", "CNAME", "www.example.org."),
            ("www.example.org.", "A", "192.0.2.80"),
        ]


@pytest.mark.anyio
async def test_a_cluster_name_without_the_type_asked_is_nodata() -> None:
    async with started() as harness:
        reply = await harness.ask("echo.", "AAAA")
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == []
        # NODATA ends the search: the name exists, the first candidate is it.
        assert harness.cluster.calls == [("echo.default.svc.cluster.local.", AAAA)]
        assert harness.upstream.queries == []


@pytest.mark.anyio
async def test_reverse_names_of_cluster_addresses_resolve_in_the_cluster_others_upstream() -> None:
    async with started() as harness:
        reply = await harness.ask("12.0.96.10.in-addr.arpa.", "PTR")
        assert answers(reply) == [
            ("12.0.96.10.in-addr.arpa.", "PTR", "echo.default.svc.cluster.local.")
        ]
        reply = await harness.ask("7.2.0.192.in-addr.arpa.", "PTR")
        assert answers(reply) == [("7.2.0.192.in-addr.arpa.", "PTR", "printer.corp.example.")]
        assert harness.cluster.names() == ["12.0.96.10.in-addr.arpa."]
        assert harness.upstream.names() == ["7.2.0.192.in-addr.arpa."]


@pytest.mark.anyio
async def test_include_suffixes_resolve_in_the_cluster_only() -> None:
    async with started() as harness:
        reply = await harness.ask("db.private.")
        assert addresses(reply) == ["10.50.0.5"]
        # Searched like a pod would, then as it is.
        assert harness.cluster.names() == [*searched("db.private."), "db.private."]
        # ".org" is excluded by default, but the include suffix wins.
        assert addresses(await harness.ask("api.internal.org.")) == ["10.50.0.6"]
        # Certainly the cluster's: its NXDOMAIN is final, though the upstream has the name.
        reply = await harness.ask("gone.private.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert harness.upstream.queries == []


@pytest.mark.parametrize(
    "name", ["nope.default.svc.cluster.local.", "nope.default.svc.", "nope.private."]
)
@pytest.mark.anyio
async def test_a_certain_cluster_name_missing_there_is_nxdomain_without_asking_upstream(
    name: str,
) -> None:
    async with started() as harness:
        reply = await harness.ask(name)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert harness.cluster.calls
        assert harness.upstream.queries == []


@pytest.mark.anyio
async def test_mapped_namespaces_keep_other_namespaces_out_of_the_cluster() -> None:
    async with started(mapped_namespaces=("default",)) as harness:
        # Service echo of namespace staging exists, but staging is not mapped.
        reply = await harness.ask("echo.staging.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert not any(".staging.svc." in name for name in harness.cluster.names())
        assert harness.upstream.names() == ["echo.staging."]
        reply = await harness.ask("echo.staging.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert harness.upstream.names()[-1] == "echo.staging.svc.cluster.local."
        # A mapped namespace: the cluster's NXDOMAIN is final, the upstream's "nope.default."
        # is not asked for.
        upstream_before = len(harness.upstream.queries)
        reply = await harness.ask("nope.default.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert len(harness.upstream.queries) == upstream_before
        assert addresses(await harness.ask("echo.default.")) == ["10.96.0.12"]
        assert addresses(await harness.ask("web-0.web.")) == ["10.244.0.7"]


@pytest.mark.anyio
async def test_without_mapped_namespaces_a_short_name_unknown_in_the_cluster_goes_upstream() -> (
    None
):
    async with started() as harness:
        # "nope.staging." could have been service nope of namespace staging; it is not.
        assert addresses(await harness.ask("nope.staging.")) == ["192.0.2.13"]
        assert addresses(await harness.ask("intranet.")) == ["10.1.2.3"]
        assert harness.cluster.names()[-3:] == searched("intranet.")
        reply = await harness.ask("nowhere.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        # In the connected namespace the cluster's NXDOMAIN is final.
        reply = await harness.ask("nope.default.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert harness.upstream.names() == ["nope.staging.", "intranet.", "nowhere."]


# --- names that are not the cluster's --------------------------------------------------------


@pytest.mark.parametrize("name", ["wpad.", "wpad.corp.example.", "WPAD.default.", "wpad.private."])
@pytest.mark.anyio
async def test_wpad_is_refused_and_asked_of_nobody(name: str) -> None:
    async with started() as harness:
        reply = await harness.ask(name)
        assert reply.rcode() == dns.rcode.REFUSED
        assert harness.cluster.calls == []
        assert harness.upstream.queries == []


@TRANSPORTS
@pytest.mark.anyio
async def test_names_under_the_laptops_search_domains_go_upstream(transport: str) -> None:
    async with started() as harness:
        # glibc tries echo.corp.example. first; its NXDOMAIN makes glibc ask echo. next.
        reply = await harness.ask("echo.corp.example.", "A", transport)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert addresses(await harness.ask("db.corp.example.", "A", transport)) == ["10.1.2.4"]
        assert harness.cluster.calls == []
        assert harness.upstream.names() == ["echo.corp.example.", "db.corp.example."]


@pytest.mark.anyio
async def test_excluded_names_go_upstream_without_asking_the_cluster() -> None:
    async with started() as harness:
        assert addresses(await harness.ask("echo.com.")) == ["192.0.2.11"]
        assert addresses(await harness.ask("www.example.com.")) == ["192.0.2.1"]
        assert harness.cluster.calls == []
    async with started(exclude_suffixes=("staging",)) as harness:
        reply = await harness.ask("echo.staging.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert harness.cluster.calls == []


@pytest.mark.anyio
async def test_a_truncated_upstream_reply_is_asked_again_over_tcp_with_marked_sockets() -> None:
    async with started() as harness:
        reply = await harness.ask(BIG)
        assert sorted(addresses(reply)) == BIG_ADDRESSES
        assert harness.upstream.queries == [
            Seen(BIG, "udp", MARK),
            Seen(BIG, "tcp", MARK),
        ]
    async with started(upstream_mark=None) as harness:
        await harness.ask("intranet.")
        assert harness.upstream.queries == [Seen("intranet.", "udp", None)]


@pytest.mark.anyio
async def test_upstreams_are_tried_in_order_and_none_answering_is_servfail() -> None:
    # A port where nothing listens: the kernel answers "port unreachable".
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((UPSTREAM_HOST, 0))
        dead = (UPSTREAM_HOST, probe.getsockname()[1])
    async with started() as harness:
        live = (UPSTREAM_HOST, harness.upstream_port)
        harness.reconfigure(upstreams=(dead, live))
        assert addresses(await harness.ask("www.example.com.")) == ["192.0.2.1"]
        harness.reconfigure(upstreams=(dead,))
        reply = await harness.ask("www.example.com.")
        assert reply.rcode() == dns.rcode.SERVFAIL
        # A maybe-cluster name that neither the cluster nor an upstream could tell about.
        reply = await harness.ask("intranet.")
        assert reply.rcode() == dns.rcode.SERVFAIL


@pytest.mark.anyio
async def test_without_upstreams_other_names_are_refused_and_short_ones_nxdomain() -> None:
    async with started(upstreams=()) as harness:
        assert (await harness.ask("www.example.com.")).rcode() == dns.rcode.REFUSED
        assert (await harness.ask("intranet.")).rcode() == dns.rcode.NXDOMAIN
        assert addresses(await harness.ask("echo.")) == ["10.96.0.12"]
        assert harness.upstream.queries == []


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_lookup_that_fails_or_times_out_is_servfail_and_not_cached() -> None:
    async with started(lookup_timeout=0.2) as harness:
        harness.cluster.failing.add("boom.default.svc.cluster.local.")
        harness.cluster.hanging.add("slow.default.svc.cluster.local.")
        for name in ("boom.default.svc.cluster.local.", "slow.default.svc.", "boom.default."):
            reply = await harness.ask(name)
            assert reply.rcode() == dns.rcode.SERVFAIL, name
        assert harness.cluster.names().count("boom.default.svc.cluster.local.") == 2
        # A maybe-cluster name: the upstream's NXDOMAIN does not hide the cluster's failure
        # (boom.default. above), but its answer is taken.
        harness.cluster.failing.add("intranet.default.svc.cluster.local.")
        assert addresses(await harness.ask("intranet.")) == ["10.1.2.3"]


@pytest.mark.anyio
async def test_records_that_do_not_parse_are_servfail() -> None:
    async with started() as harness:
        bad = "bad.default.svc.cluster.local."
        harness.cluster.zone[bad, A] = [
            manager_pb2.ResourceRecord(name=bad, type=A, record_class=1, ttl=5, rdata=b"\x01\x02")
        ]
        assert (await harness.ask(bad)).rcode() == dns.rcode.SERVFAIL


@pytest.mark.anyio
async def test_malformed_packets_get_formerr_or_nothing_and_the_server_goes_on() -> None:
    async with started() as harness:
        good = dns.message.make_query("echo.", "A")
        header_only = b"\x12\x34\x01\x00\x00\x01" + bytes(6)  # one question promised, none there
        response = b"\x56\x78\x81\x80" + bytes(8)  # QR set: dropped
        async with await anyio.create_connected_udp_socket(SERVER_HOST, harness.port) as udp:
            for garbage in (b"", b"\x01", response, b"\x00\x07\x01\x00" + b"\xff" * 36):
                await udp.send(garbage)
            await udp.send(header_only)
            await udp.send(good.to_wire())
            with anyio.fail_after(PATIENCE):
                replies = [dns.message.from_wire(await udp.receive()) for _ in range(3)]
        formerr = {r.id: r.rcode() for r in replies if r.rcode() == dns.rcode.FORMERR}
        assert formerr == {7: dns.rcode.FORMERR, 0x1234: dns.rcode.FORMERR}
        [answered] = [r for r in replies if r.id == good.id]
        assert addresses(answered) == ["10.96.0.12"]

        async with await anyio.connect_tcp(SERVER_HOST, harness.port) as tcp:
            buffered = BufferedByteReceiveStream(tcp)
            for message in (header_only, good.to_wire()):
                await tcp.send(len(message).to_bytes(2, "big") + message)
            with anyio.fail_after(PATIENCE):
                replies = []
                for _ in range(2):
                    size = int.from_bytes(await buffered.receive_exactly(2), "big")
                    replies.append(dns.message.from_wire(await buffered.receive_exactly(size)))
        assert {r.id: r.rcode() for r in replies} == {
            0x1234: dns.rcode.FORMERR,
            good.id: dns.rcode.NOERROR,
        }
        assert addresses(await harness.ask("echo.default.")) == ["10.96.0.12"]


@pytest.mark.anyio
async def test_resolve_raises_for_a_response() -> None:
    async with started() as harness:
        query = dns.message.make_query("echo.", "A")
        with pytest.raises(ValueError, match="response"):
            await harness.server.resolve(dns.message.make_response(query))


@pytest.mark.anyio
async def test_other_opcodes_questions_and_edns_versions_get_their_rcodes() -> None:
    async with started() as harness:
        notify = dns.message.make_query("echo.", "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        assert (await harness.server.resolve(notify)).rcode() == dns.rcode.NOTIMP
        empty = dns.message.Message()
        assert (await harness.server.resolve(empty)).rcode() == dns.rcode.FORMERR
        future = dns.message.make_query("echo.", "A", use_edns=1)
        assert (await harness.server.resolve(future)).rcode() == dns.rcode.BADVERS
        transfer = dns.message.make_query("default.svc.cluster.local.", "AXFR")
        assert (await harness.server.resolve(transfer)).rcode() == dns.rcode.REFUSED
        assert harness.cluster.calls == []


# --- sizes and TCP -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_reply_too_large_for_udp_is_truncated_and_whole_over_tcp() -> None:
    async with started() as harness:
        query = dns.message.make_query("many.default.", "A")
        reply = await dns.asyncquery.udp(
            query, SERVER_HOST, timeout=PATIENCE, port=harness.port, backend=client_backend()
        )
        assert reply.flags & dns.flags.TC
        reply, used_tcp = await dns.asyncquery.udp_with_fallback(
            query, SERVER_HOST, timeout=PATIENCE, port=harness.port, backend=client_backend()
        )
        assert used_tcp
        assert len(addresses(reply)) == 40
        # With EDNS the client takes more over UDP.
        large = dns.message.make_query("many.default.", "A", use_edns=0, payload=4096)
        reply = await dns.asyncquery.udp(
            large, SERVER_HOST, timeout=PATIENCE, port=harness.port, backend=client_backend()
        )
        assert not reply.flags & dns.flags.TC
        assert len(addresses(reply)) == 40


@pytest.mark.anyio
async def test_queries_pipelined_on_one_tcp_connection_are_all_answered() -> None:
    async with started() as harness:
        names = ["echo.", "web-0.web.", "intranet.", "db.corp.example."]
        wires = [dns.message.make_query(name, "A") for name in names]
        queries = {query.id: query.question[0].name.to_text() for query in wires}
        async with await anyio.connect_tcp(SERVER_HOST, harness.port) as tcp:
            await tcp.send(b"".join(query.to_wire(prepend_length=True) for query in wires))
            buffered = BufferedByteReceiveStream(tcp)
            got = {}
            with anyio.fail_after(PATIENCE):
                for _ in wires:
                    size = int.from_bytes(await buffered.receive_exactly(2), "big")
                    reply = dns.message.from_wire(await buffered.receive_exactly(size))
                    got[queries[reply.id]] = addresses(reply)
        assert got == {
            "echo.": ["10.96.0.12"],
            "web-0.web.": ["10.244.0.7"],
            "intranet.": ["10.1.2.3"],
            "db.corp.example.": ["10.1.2.4"],
        }


# --- cache and coalescing ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_answers_are_cached_for_their_ttl_counting_down() -> None:
    async with started() as harness:
        reply = await harness.ask("echo.", transport="resolve")
        assert reply.answer[0].ttl == 30
        harness.clock.now += 10
        reply = await harness.ask("echo.", transport="resolve")
        assert reply.answer[0].ttl == 20
        assert len(harness.cluster.calls) == 1
        # The same cluster name through another query name shares the cache entry.
        await harness.ask("echo.default.svc.", transport="resolve")
        assert len(harness.cluster.calls) == 1
        harness.clock.now += 20
        reply = await harness.ask("echo.", transport="resolve")
        assert reply.answer[0].ttl == 30
        assert len(harness.cluster.calls) == 2
        harness.server.flush()
        await harness.ask("echo.", transport="resolve")
        assert len(harness.cluster.calls) == 3


@pytest.mark.anyio
async def test_upstream_replies_are_cached_as_a_caching_resolver_keeps_them() -> None:
    async with started(negative_ttl=4.0) as harness:
        # Positive: for the answer's TTL (60), counting down, with each query's own id.
        first = await harness.ask("db.corp.example.", transport="resolve")
        harness.clock.now += 10
        second = await harness.ask("db.corp.example.", transport="udp")
        assert addresses(second) == addresses(first) == ["10.1.2.4"]
        assert second.answer[0].ttl == 50
        assert harness.upstream.names() == ["db.corp.example."]
        harness.clock.now += 50
        await harness.ask("db.corp.example.", transport="resolve")
        assert harness.upstream.names() == ["db.corp.example."] * 2
        # NXDOMAIN without an SOA: the configured negative TTL; with one: the SOA's.
        for name, lifetime in (("echo.corp.example.", 4), (GONE, 2)):
            harness.upstream.queries.clear()
            for _ in range(2):
                reply = await harness.ask(name, transport="resolve")
                assert reply.rcode() == dns.rcode.NXDOMAIN
            assert harness.upstream.names() == [name]
            harness.clock.now += lifetime
            await harness.ask(name, transport="resolve")
            assert harness.upstream.names() == [name, name]
        # A burst of identical queries is one query upstream.
        harness.upstream.queries.clear()
        replies: list[dns.message.Message] = []

        async def ask() -> None:
            replies.append(await harness.ask("intranet.", transport="udp"))

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(ask)
        assert [addresses(reply) for reply in replies] == [["10.1.2.3"]] * 20
        assert harness.upstream.names() == ["intranet."]


@pytest.mark.anyio
async def test_upstream_failures_are_not_cached() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((UPSTREAM_HOST, 0))
        dead = (UPSTREAM_HOST, probe.getsockname()[1])
    async with started() as harness:
        live = (UPSTREAM_HOST, harness.upstream_port)
        harness.reconfigure(upstreams=(dead,))
        reply = await harness.ask("www.example.com.", transport="resolve")
        assert reply.rcode() == dns.rcode.SERVFAIL
        harness.reconfigure(upstreams=(live,))
        assert addresses(await harness.ask("www.example.com.")) == ["192.0.2.1"]


@pytest.mark.anyio
@pytest.mark.parametrize("failure", ["silent", "servfail"])
async def test_when_the_nameservers_fail_an_expired_reply_is_given_again(failure: str) -> None:
    async with started(upstream_timeout=0.3, negative_ttl=4.0, serve_stale=600.0) as harness:
        assert addresses(await harness.ask("db.corp.example.")) == ["10.1.2.4"]
        assert (await harness.ask("echo.corp.example.")).rcode() == dns.rcode.NXDOMAIN
        harness.clock.now += 100  # both expired
        harness.upstream.failure = failure
        for transport in ("udp", "tcp", "resolve"):
            harness.upstream.queries.clear()
            reply = await harness.ask("db.corp.example.", transport=transport)
            assert reply.rcode() == dns.rcode.NOERROR
            assert addresses(reply) == ["10.1.2.4"]
            assert reply.answer[0].ttl == 30  # RFC 8767's stale TTL, not the 60 kept
            # The nameserver was asked first (UDP, sent again while the timeout lasts).
            assert set(harness.upstream.names()) == {"db.corp.example."}
            reply = await harness.ask("echo.corp.example.", transport=transport)
            assert reply.rcode() == dns.rcode.NXDOMAIN
        # The nameserver is back: its new answer is taken and kept, as before.
        harness.upstream.failure = None
        harness.upstream.queries.clear()
        reply = await harness.ask("db.corp.example.")
        assert reply.answer[0].ttl == 60
        assert harness.upstream.names() == ["db.corp.example."]
        # Past the stale time, nothing is left to give: SERVFAIL.
        harness.upstream.failure = failure
        harness.clock.now += 60 + 600
        assert (await harness.ask("db.corp.example.")).rcode() == dns.rcode.SERVFAIL
        # A name never answered before has nothing stale either.
        assert (await harness.ask("www.example.com.")).rcode() == dns.rcode.SERVFAIL
    async with started(upstream_timeout=0.3, serve_stale=0.0) as harness:
        await harness.ask("db.corp.example.")
        harness.clock.now += 60
        harness.upstream.failure = failure
        assert (await harness.ask("db.corp.example.")).rcode() == dns.rcode.SERVFAIL


@pytest.mark.anyio
async def test_when_the_cluster_fails_its_expired_answer_is_given_again() -> None:
    async with started(lookup_timeout=0.3, serve_stale=600.0) as harness:
        full = "echo.default.svc.cluster.local."
        assert addresses(await harness.ask(full)) == ["10.96.0.12"]
        harness.clock.now += 100
        for broken in ("failing", "hanging"):
            harness.cluster.calls.clear()
            getattr(harness.cluster, broken).add(full)
            reply = await harness.ask(full)
            assert addresses(reply) == ["10.96.0.12"]
            assert reply.answer[0].ttl == 30
            assert harness.cluster.names() == [full]  # asked, and failed
            getattr(harness.cluster, broken).clear()
        # A failed lookup for a name never answered is still SERVFAIL; so is one whose
        # answer was flushed (a new session).
        harness.cluster.failing.add("other.default.svc.cluster.local.")
        assert (await harness.ask("other.default.svc.cluster.local.")).rcode() == dns.rcode.SERVFAIL
        harness.server.flush()
        harness.cluster.failing.add(full)
        assert (await harness.ask(full)).rcode() == dns.rcode.SERVFAIL


@pytest.mark.anyio
async def test_nxdomain_and_nodata_are_cached_briefly() -> None:
    async with started(negative_ttl=3.0) as harness:
        for name, rdtype in [("nope.default.svc.cluster.local.", "A"), ("echo.", "AAAA")]:
            await harness.ask(name, rdtype, "resolve")
            await harness.ask(name, rdtype, "resolve")
            assert len(harness.cluster.calls) == 1
            harness.clock.now += 3
            await harness.ask(name, rdtype, "resolve")
            assert len(harness.cluster.calls) == 2
            harness.cluster.calls.clear()


@pytest.mark.anyio
async def test_a_lookup_under_way_when_the_cache_is_flushed_is_not_cached() -> None:
    async with started() as harness:
        harness.cluster.gate = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(harness.ask, "echo.", "A", "resolve")
            await anyio.wait_all_tasks_blocked()
            harness.server.flush()
            harness.cluster.gate.set()
        await harness.ask("echo.", "A", "resolve")
        assert len(harness.cluster.calls) == 2


@pytest.mark.anyio
async def test_concurrent_queries_for_one_name_share_one_lookup() -> None:
    async with started() as harness:
        harness.cluster.gate = anyio.Event()
        replies: list[dns.message.Message] = []

        async def ask() -> None:
            replies.append(await harness.ask("echo.default.svc.", transport="resolve"))

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert len(harness.cluster.calls) == 1
            harness.cluster.gate.set()
        assert [addresses(reply) for reply in replies] == [["10.96.0.12"]] * 20
        assert len(harness.cluster.calls) == 1


@pytest.mark.anyio
async def test_when_the_query_asking_is_cancelled_a_waiting_one_asks_again() -> None:
    async with started() as harness:
        harness.cluster.gate = anyio.Event()
        replies: list[dns.message.Message] = []

        async def wait_for_it() -> None:
            replies.append(await harness.ask("echo.default.svc.", "A", "resolve"))

        async with anyio.create_task_group() as tasks:
            async with anyio.create_task_group() as first:
                first.start_soon(harness.ask, "echo.default.svc.", "A", "resolve")
                await anyio.wait_all_tasks_blocked()
                tasks.start_soon(wait_for_it)
                await anyio.wait_all_tasks_blocked()
                assert len(harness.cluster.calls) == 1
                first.cancel_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert len(harness.cluster.calls) == 2
            harness.cluster.gate.set()
        assert [addresses(reply) for reply in replies] == [["10.96.0.12"]]


# --- the laptop's resolv.conf ------------------------------------------------------------------

RESOLV_CONF = """\
# Generated by NetworkManager
; another comment
search corp.example lab.corp.example.
options ndots:2 timeout:1 attempts:3 edns0
nameserver 10.0.0.53
nameserver   192.168.1.1   # the router
nameserver not-an-address
nameserver 2001:db8::53
nameserver fe80::1%eth0
sortlist 130.155.160.0/255.255.240.0
"""


def test_read_resolv_conf_gives_nameservers_with_port_53_and_the_search_domains(
    tmp_path: Path,
) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(RESOLV_CONF)
    nameservers, search = read_resolv_conf(path)
    assert nameservers == [
        ("10.0.0.53", 53),
        ("192.168.1.1", 53),
        ("2001:db8::53", 53),
        ("fe80::1%eth0", 53),
    ]
    assert search == ["corp.example", "lab.corp.example"]


def test_the_last_search_or_domain_line_wins() -> None:
    assert parse_resolv_conf("search a.example b.example\ndomain c.example\n")[1] == ["c.example"]
    assert parse_resolv_conf("domain c.example\nsearch a.example .\n")[1] == ["a.example"]
    assert parse_resolv_conf("") == ([], [])


def test_a_missing_resolv_conf_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_resolv_conf(tmp_path / "missing")
