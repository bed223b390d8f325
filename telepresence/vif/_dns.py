"""The root daemon's DNS server: cluster names from the manager, every other name as before.

The server listens on UDP and TCP at the address the daemon gives it (the VIF's DNS address,
port 53), and the laptop's resolver is pointed at it (through systemd-resolved, or by an
nftables redirection of the queries to the laptop's own nameservers). For each query,
:class:`~telepresence.vif._dns_names.ClusterNames` decides where it goes (its docstring has
the rules): REFUSED; the cluster, through ``lookup`` (the manager's ``LookupDNS``), with
candidate names from a pod's search path; or the upstreams, the laptop's original
nameservers. :meth:`DNSServer.resolve` answers one parsed query, with or without sockets.

**Cluster answers.** The candidates are asked in order until one gives an answer other than
NXDOMAIN (the manager's REFUSED, "outside the namespaces I serve", counts as NXDOMAIN). The
reply keeps the query's id, RD bit, question and EDNS, sets RA, and copies the records,
relabelling those whose owner is the candidate with the name asked: glibc keeps only records
owned by the name it asked or by a CNAME target, so the answer must be for ``echo.``, not for
``echo.default.svc.cluster.local.``, and no CNAME is made up between them. An ExternalName
service's own CNAME is relabelled the same way, and its target's records follow it unchanged.
A lookup that raises, outlasts ``lookup_timeout`` or sends records that do not parse is a
failure: SERVFAIL (unless the cache still holds a stale answer, see below), and the search
stops there, so that a manager that does not answer costs one timeout per query instead of
one per candidate. For a maybe-cluster name, NXDOMAIN or a
failure passes the query upstream; the upstream's NOERROR wins, else the cluster's failure
(SERVFAIL) is the answer rather than the upstream's NXDOMAIN: a name is not said to be
missing when the cluster could not tell.

**Cache and coalescing.** The cluster's answers are cached by (candidate, type) (see
:mod:`._dns_cache` for how long). Concurrent queries for the same candidate and type share
one lookup: the first asks, the others wait for its answer (and ask again themselves if the
first was cancelled before it had one). :meth:`DNSServer.flush` forgets everything, also the
lookups under way, whose answers are then not cached; the daemon calls it on reconnection.
The upstreams' replies are cached and shared the same way, as a caching resolver keeps them
(:class:`~._dns_cache.ReplyCache`): glibc has no cache, and asks ``NAME.<search domain>``
before ``NAME`` for every connection a program opens, so a burst of connections by a short
name would otherwise be a burst of queries to the laptop's nameservers.
When the cluster or the upstreams fail (no answer in time, a broken connection, SERVFAIL),
an answer the cache kept past its TTL, for up to ``serve_stale`` seconds, is given instead
(RFC 8767): a name resolved a moment ago goes on resolving while the cluster or the
nameserver is busy, where SERVFAIL would make glibc give up at once.

**Upstreams.** A query not for the cluster goes to the laptop's original nameservers, with
marked sockets (:mod:`._dns_upstream`). Without upstreams (the systemd-resolved mode, where
resolved sends only the cluster's routing domains here) the answer for a name that is not
the cluster's is REFUSED, which tells resolved to ask elsewhere, and a maybe-cluster name
that the cluster does not know is NXDOMAIN.

**Sockets.** :meth:`DNSServer.serve` binds UDP and TCP to the same address and port and
answers each query in a task of its own. A UDP reply larger than the client can take (512
bytes, or its EDNS payload size) is truncated with TC set, and the client asks again over
TCP. A TCP connection may carry many queries, answered as each is ready, possibly out of
order (RFC 7766 §6.2.1.1); it is closed after :data:`TCP_IDLE_TIMEOUT` without a query. A
query that does not parse is answered FORMERR when its header can be read and dropped when
not; a message with QR set (a response) is dropped, so that two servers cannot feed each
other. Nothing a client sends ends the server.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from anyio.streams.buffered import BufferedByteReceiveStream

from telepresence.vif._dns_cache import (
    AnswerCache,
    CacheKey,
    ClusterAnswer,
    ReplyCache,
    UpstreamKey,
)
from telepresence.vif._dns_names import (
    DEFAULT_EXCLUDE_SUFFIXES,
    ClusterNames,
    DNSSettings,
    Plan,
    Route,
)
from telepresence.vif._dns_upstream import (
    MAX_MESSAGE,
    Upstreams,
    describe,
    parse_resolv_conf,
    read_resolv_conf,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from telepresence.wire.proto import manager_pb2

__all__ = [
    "DEFAULT_EXCLUDE_SUFFIXES",
    "DNSServer",
    "DNSSettings",
    "Lookup",
    "parse_resolv_conf",
    "read_resolv_conf",
]

log = logging.getLogger(__name__)

#: Asks the cluster one question: an absolute name and a type's number (the manager's
#: ``LookupDNS``); the answer's records carry wire-format RDATA.
type Lookup = Callable[[str, int], Awaitable[manager_pb2.DNSResponse]]

#: The EDNS payload size advertised (DNS flag day 2020: fits any path unfragmented).
EDNS_PAYLOAD = 1232
#: Seconds a TCP connection may go without a query before it is closed.
TCP_IDLE_TIMEOUT = 10.0
#: UDP queries answered at once; beyond that new ones are dropped (their clients try again).
MAX_UDP_QUERIES = 2048
#: The TCP listener's backlog.
TCP_BACKLOG = 128
#: The UDP socket's receive buffer: room for a burst of some thousand queries (every
#: program on the laptop may ask at once) while the event loop is busy; the kernel's default
#: (about 200 KiB, some 300 small datagrams) drops the rest.
UDP_RECEIVE_BUFFER = 2 * 1024 * 1024
#: The largest message a client without EDNS takes over UDP (RFC 1035 §4.2.1).
_CLASSIC_UDP = 512
#: How often :meth:`DNSServer.serve` looks for a port free for both UDP and TCP (port 0).
_BIND_ATTEMPTS = 20
#: accept() errors that mean "out of resources for now": wait a little (as trio does).
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: accept() errors about one connection only: go on.
_ACCEPT_PEER_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})
_ACCEPT_BACKOFF = 0.1
#: Linux's SO_RCVBUFFORCE (socket(7)), which Python's socket module does not name.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Query types the cluster is not asked: zone transfers.
_TRANSFERS = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


@dataclass(eq=False)
class _Pending[V]:
    """A lookup under way, which later queries for the same key wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    #: Whether the lookup finished (with an answer, or failed); not when it was cancelled.
    settled: bool = False
    value: V | None = None


class _Lookups[K, V]:
    """Lookups under way, by key: the first query asks, the others for the same key wait for
    its result (and ask again themselves if the first was cancelled before it had one)."""

    def __init__(self) -> None:
        self._pending: dict[K, _Pending[V]] = {}
        #: Counts :meth:`clear` calls: a lookup that started before one is not kept.
        self._generation = 0

    def clear(self) -> None:
        """Forget the lookups under way (their results go only to the queries waiting)."""
        self._pending.clear()
        self._generation += 1

    async def run(
        self,
        key: K,
        *,
        cached: Callable[[], V | None],
        ask: Callable[[], Awaitable[V | None]],
        store: Callable[[V], None],
    ) -> tuple[V | None, bool]:
        """What ``cached`` has for ``key``; else the result of the lookup under way, waited
        for; else the result of ``ask``, which ``store`` keeps unless :meth:`clear` came in
        between. Returns it (None: failed) and whether it is this call's own (cached or asked
        here) rather than another query's, shared."""
        while True:
            hit = cached()
            if hit is not None:
                return hit, True
            under_way = self._pending.get(key)
            if under_way is None:
                break
            await under_way.done.wait()
            if under_way.settled:
                return under_way.value, False
        mine: _Pending[V] = _Pending()
        self._pending[key] = mine
        generation = self._generation
        try:
            value = await ask()
            mine.value, mine.settled = value, True
            if value is not None and generation == self._generation:
                store(value)
            return value, True
        finally:
            if self._pending.get(key) is mine:
                del self._pending[key]
            mine.done.set()


class DNSServer:
    """The DNS server: cluster names through ``lookup``, the others through the upstreams.

    Args:
        settings: The cluster's and the laptop's names (:class:`DNSSettings`).
        lookup: Asks the cluster (the manager's ``LookupDNS``).
        clock: Monotonic seconds, for the cache (tests pass their own).

    Raises:
        dns.exception.DNSException: A suffix, domain or namespace is no valid DNS name.
    """

    def __init__(
        self,
        settings: DNSSettings,
        lookup: Lookup,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._settings = settings
        self._names = ClusterNames(settings)
        self._upstreams = _upstreams(settings)
        self._cache, self._replies = _caches(settings)
        self._pending: _Lookups[CacheKey, ClusterAnswer] = _Lookups()
        self._forwarding: _Lookups[UpstreamKey, dns.message.Message] = _Lookups()
        self._udp_queries = 0

    @property
    def settings(self) -> DNSSettings:
        """The settings in force."""
        return self._settings

    def configure(self, settings: DNSSettings) -> None:
        """Use ``settings`` from now on, and forget every cached answer.

        Raises:
            dns.exception.DNSException: A suffix, domain or namespace is no valid DNS name;
                the settings in force stay.
        """
        names = ClusterNames(settings)
        self._settings = settings
        self._names = names
        self._upstreams = _upstreams(settings)
        self._cache, self._replies = _caches(settings)
        self.flush()

    def flush(self) -> None:
        """Forget every cached answer, and the lookups under way (their answers go only to the
        queries already waiting for them)."""
        self._cache.clear()
        self._replies.clear()
        self._pending.clear()
        self._forwarding.clear()

    # --- answering ---------------------------------------------------------------------------

    async def resolve(self, query: dns.message.Message) -> dns.message.Message:
        """The reply to ``query``: the decision of the module docstring, and the answer.

        Never raises for a query it cannot answer: that is SERVFAIL, logged.

        Raises:
            ValueError: ``query`` is a response (QR is set).
        """
        if query.flags & dns.flags.QR:
            raise ValueError("a response is no query")
        try:
            return await self._resolve(query)
        except Exception:
            log.exception("DNS: answering %s failed", describe(query))
            return _response(query, dns.rcode.SERVFAIL)

    async def _resolve(self, query: dns.message.Message) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return _response(query, dns.rcode.NOTIMP)
        if query.edns > 0:
            return _response(query, dns.rcode.BADVERS)  # RFC 6891 §6.1.3
        if len(query.question) != 1:
            return _response(query, dns.rcode.FORMERR)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            plan = Plan(Route.UPSTREAM, reason="not class IN")
        else:
            plan = self._names.plan(question.name)
            if plan.route in (Route.CLUSTER, Route.CLUSTER_FIRST) and (
                question.rdtype in _TRANSFERS
            ):
                plan = Plan(Route.REFUSE, reason="no zone transfers from the cluster")
        log.debug("DNS %s: %s (%s)", describe(query), plan.route.value, plan.reason)
        if plan.route is Route.REFUSE:
            return _response(query, dns.rcode.REFUSED)
        if plan.route is Route.UPSTREAM:
            if not self._settings.upstreams:
                return _response(query, dns.rcode.REFUSED)
            reply = await self._forward(query)
            return reply if reply is not None else _response(query, dns.rcode.SERVFAIL)
        return await self._from_cluster(query, plan)

    async def _from_cluster(self, query: dns.message.Message, plan: Plan) -> dns.message.Message:
        rdtype = query.question[0].rdtype
        outcome: int = dns.rcode.NXDOMAIN
        for candidate in plan.candidates:
            answer = await self._cluster_answer(candidate, rdtype)
            if answer is None:
                outcome = dns.rcode.SERVFAIL
                break
            if answer.rcode in (dns.rcode.NXDOMAIN, dns.rcode.REFUSED):
                continue
            if answer.rcode == dns.rcode.NOERROR:
                return _cluster_reply(query, answer, candidate)
            outcome = answer.rcode
            break
        if plan.route is Route.CLUSTER or not self._settings.upstreams:
            return _response(query, outcome)
        reply = await self._forward(query)
        if reply is None:
            return _response(query, dns.rcode.SERVFAIL)
        if outcome == dns.rcode.NXDOMAIN or reply.rcode() == dns.rcode.NOERROR:
            return reply
        return _response(query, outcome)

    async def _forward(self, query: dns.message.Message) -> dns.message.Message | None:
        """The upstreams' reply to ``query``: cached, shared with an identical query under
        way, or asked (see :class:`~._dns_cache.ReplyCache`); None: none answered."""
        question = query.question[0]
        key: UpstreamKey = (question.name, question.rdtype, question.rdclass)

        def cached() -> dns.message.Message | None:
            return self._replies.get(key, query.id, self._clock())

        def keep(reply: dns.message.Message) -> None:
            self._replies.put(key, reply, self._clock())

        reply, own = await self._forwarding.run(
            key,
            cached=cached,
            ask=functools.partial(self._upstreams.forward, query),
            store=keep,
        )
        if reply is None or reply.rcode() == dns.rcode.SERVFAIL:
            stale = self._replies.stale(key, query.id, self._clock())
            if own:
                log.warning(
                    "DNS %s: %s; %s",
                    describe(query),
                    "no nameserver answered" if reply is None else "the nameservers said SERVFAIL",
                    "the last answer given again" if stale is not None else "SERVFAIL",
                )
            if stale is not None:
                return stale
        if reply is not None and not own:
            # Another query's reply: a copy of our own, with our id.
            reply = dns.message.from_wire(reply.to_wire())
            reply.id = query.id
        return reply

    async def _cluster_answer(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> ClusterAnswer | None:
        """The cluster's answer for one candidate: cached, shared, or asked; None: failed."""
        key = (name, rdtype)

        def cached() -> ClusterAnswer | None:
            return self._cache.get(key, self._clock())

        def keep(answer: ClusterAnswer) -> None:
            self._cache.put(key, answer, self._clock())

        answer, own = await self._pending.run(
            key,
            cached=cached,
            ask=functools.partial(self._ask_cluster, name, rdtype),
            store=keep,
        )
        if answer is None or answer.rcode == dns.rcode.SERVFAIL:
            stale = self._cache.stale(key, self._clock())
            if stale is not None:
                answer = stale
                if own:
                    log.info("DNS: %s %s: the cluster's last answer given again", name, rdtype.name)
        return answer

    async def _ask_cluster(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> ClusterAnswer | None:
        text = name.canonicalize().to_text()
        type_text = dns.rdatatype.to_text(rdtype)
        try:
            with anyio.fail_after(self._settings.lookup_timeout):
                response = await self._lookup(text, int(rdtype))
            return ClusterAnswer.from_response(response)
        except TimeoutError:
            log.warning(
                "DNS: the cluster did not answer %s %s within %gs",
                text,
                type_text,
                self._settings.lookup_timeout,
            )
        except Exception as error:
            # Whatever the manager's client raises (gRPC status, a broken connection, a bad
            # record) means the same to the laptop: this name cannot be resolved now.
            log.warning("DNS: looking up %s %s in the cluster failed: %s", text, type_text, error)
        return None

    # --- sockets -----------------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer queries on UDP and TCP at ``host`` (an IP address) and ``port`` (0: any
        port free for both) until cancelled.

        Reports ``(host, port)`` as bound through ``task_status`` once both listen.

        Raises:
            OSError: The address or port cannot be bound.
        """
        udp, tcp = _bind(host, port)
        bound = (host, udp.getsockname()[1])
        with udp:
            try:
                listener = await anyio.abc.SocketListener.from_socket(tcp)
            except BaseException:
                tcp.close()
                raise
            async with listener, anyio.create_task_group() as tasks:
                tasks.start_soon(self._serve_udp, udp, name=f"DNS server UDP {host}:{bound[1]}")
                tasks.start_soon(
                    self._serve_tcp, listener, name=f"DNS server TCP {host}:{bound[1]}"
                )
                log.info("DNS server listening on %s port %d (UDP and TCP)", *bound)
                task_status.started(bound)

    async def _serve_udp(self, sock: socket.socket) -> None:
        async with anyio.create_task_group() as queries:
            try:
                while True:
                    await anyio.wait_readable(sock)
                    # Everything that has arrived, before waiting again.
                    while True:
                        try:
                            data, client = sock.recvfrom(MAX_MESSAGE)
                        except BlockingIOError:
                            break
                        except OSError as error:  # e.g. a client's ICMP error, queued
                            log.debug("DNS server: UDP receive: %s", error)
                            break
                        if self._udp_queries >= MAX_UDP_QUERIES:
                            log.debug(
                                "DNS server: too many UDP queries, one from %s dropped", client
                            )
                            continue
                        self._udp_queries += 1
                        queries.start_soon(self._answer_udp, sock, data, client)
            finally:
                anyio.notify_closing(sock)

    async def _answer_udp(self, sock: socket.socket, data: bytes, client: tuple[str, int]) -> None:
        try:
            reply = await self._answer(data, udp=True)
            if reply is not None:
                try:
                    sock.sendto(reply, client)
                except OSError as error:  # a full send buffer included: the client asks again
                    log.debug("DNS server: UDP reply to %s: %s", client, error)
        finally:
            self._udp_queries -= 1

    async def _serve_tcp(self, listener: anyio.abc.SocketListener) -> None:
        async with anyio.create_task_group() as connections:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as error:
                    if error.errno in _ACCEPT_PEER_ERRNOS:
                        continue
                    if error.errno not in _ACCEPT_RESOURCE_ERRNOS:
                        raise
                    log.warning("DNS server: cannot accept a TCP connection now: %s", error)
                    await anyio.sleep(_ACCEPT_BACKOFF)
                    continue
                connections.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        buffered = BufferedByteReceiveStream(stream)
        sending = anyio.Lock()
        async with stream, anyio.create_task_group() as queries:
            while True:
                data = None
                with anyio.move_on_after(TCP_IDLE_TIMEOUT):
                    data = await _read_frame(buffered)
                if data is None:  # idle, closed or broken
                    break
                queries.start_soon(self._answer_tcp, stream, sending, data)

    async def _answer_tcp(
        self, stream: anyio.abc.SocketStream, sending: anyio.Lock, data: bytes
    ) -> None:
        reply = await self._answer(data, udp=False)
        if reply is None:
            return
        async with sending:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(len(reply).to_bytes(2, "big") + reply)

    async def _answer(self, data: bytes, *, udp: bool) -> bytes | None:
        """The reply to one message from a client, in wire format; None: no reply."""
        try:
            query = dns.message.from_wire(data)
        except Exception as error:
            # dnspython raises many kinds of error for many kinds of garbage; all of them mean
            # the client sent something that is no DNS query.
            log.debug("DNS server: a malformed query (%d bytes): %s", len(data), error)
            return _format_error(data)
        if query.flags & dns.flags.QR:
            return None
        response = await self.resolve(query)
        limit = MAX_MESSAGE
        if udp:
            limit = max(query.payload, _CLASSIC_UDP) if query.edns >= 0 else _CLASSIC_UDP
        try:
            return response.to_wire(max_size=limit, prefer_truncation=True)
        except Exception:
            log.exception("DNS: the reply to %s does not render", describe(query))
            return _response(query, dns.rcode.SERVFAIL).to_wire()


# --- messages ----------------------------------------------------------------------------------


def _caches(settings: DNSSettings) -> tuple[AnswerCache, ReplyCache]:
    return (
        AnswerCache(settings.cache_size, settings.negative_ttl, settings.serve_stale),
        ReplyCache(settings.cache_size, settings.negative_ttl, settings.serve_stale),
    )


def _upstreams(settings: DNSSettings) -> Upstreams:
    return Upstreams(
        settings.upstreams, mark=settings.upstream_mark, timeout=settings.upstream_timeout
    )


def _response(query: dns.message.Message, rcode: int) -> dns.message.Message:
    """An empty reply to ``query`` with ``rcode``."""
    response = dns.message.make_response(query, recursion_available=True, our_payload=EDNS_PAYLOAD)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    return response


def _cluster_reply(
    query: dns.message.Message, answer: ClusterAnswer, candidate: dns.name.Name
) -> dns.message.Message:
    """The reply with the cluster's records, those of ``candidate`` relabelled as asked."""
    response = _response(query, answer.rcode)
    asked = query.question[0].name
    for record in answer.records:
        owner = asked if record.name == candidate else record.name
        rrset = response.find_rrset(
            response.answer,
            owner,
            record.rdclass,
            record.rdtype,
            record.rdata.covers(),
            create=True,
        )
        rrset.add(record.rdata, record.ttl)
    return response


def _format_error(data: bytes) -> bytes | None:
    """A FORMERR reply to a query that does not parse, made from its header alone; None
    when there is no whole header, or it is a response's."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    opcode_and_rd = data[2] & 0x79
    return data[:2] + bytes((0x80 | opcode_and_rd, 0x80 | dns.rcode.FORMERR)) + bytes(8)


async def _read_frame(buffered: BufferedByteReceiveStream) -> bytes | None:
    """One length-prefixed message from a TCP client; None at its end or when it broke."""
    try:
        size = int.from_bytes(await buffered.receive_exactly(2), "big")
        return await buffered.receive_exactly(size)
    except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
        return None


def _bind(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets bound to ``host`` and the same port (``port``, or a free one)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    for _attempt in range(_BIND_ATTEMPTS):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.setblocking(False)
            _enlarge_receive_buffer(udp)
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(TCP_BACKLOG)
        except OSError as error:
            udp.close()
            tcp.close()
            # With port 0 the kernel chose a UDP port whose TCP twin is taken: choose again.
            if port == 0 and error.errno == errno.EADDRINUSE:
                continue
            raise
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port is free for both UDP and TCP on {host}")


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for :data:`UDP_RECEIVE_BUFFER`: beyond ``net.core.rmem_max`` with root's
    ``SO_RCVBUFFORCE``, else as far as ``SO_RCVBUF`` goes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, UDP_RECEIVE_BUFFER)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
