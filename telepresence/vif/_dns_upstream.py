"""The laptop's original nameservers, as the DNS server asks them for names not the cluster's.

:func:`read_resolv_conf` reads them (and the laptop's search domains) before the daemon
points the laptop's resolver at its own server. :class:`Upstreams` forwards a query to them.

**Forwarding.** A query is sent to each nameserver in turn, as it came but with an id of our
own, from a socket of its own (a fresh source port and id per query, RFC 5452), which
carries ``SO_MARK`` = ``mark`` from before its first packet: the daemon's nftables rule
redirects the laptop's DNS traffic to the daemon's server except for marked packets, so an
unmarked query would come straight back to it. A reply is accepted only with our id and the
same question. UDP first; a truncated reply (TC) is asked again over TCP (RFC 7766). A
nameserver that does not answer within ``timeout``, is unreachable, or answers SERVFAIL,
REFUSED or NOTIMP gives way to the next, as glibc does; the reply goes back with the
client's id.

UDP uses a plain non-blocking socket: connected, it reports a nameserver's ICMP "port
unreachable" as ``ECONNREFUSED`` on ``recv()``, so a nameserver that is down costs nothing,
on every event loop alike (asyncio's datagram transports swallow that error).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import dns.entropy
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from anyio.streams.buffered import BufferedByteReceiveStream

from telepresence.wire.shell import open_tcp

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

__all__ = [
    "DNS_PORT",
    "MAX_MESSAGE",
    "Upstreams",
    "describe",
    "parse_resolv_conf",
    "read_resolv_conf",
]

log = logging.getLogger(__name__)

#: The DNS port of the nameservers in resolv.conf.
DNS_PORT = 53
#: The largest DNS message (its TCP length prefix is 16 bits).
MAX_MESSAGE = 65535

#: Seconds after which a UDP query not answered is sent again (within the timeout).
RETRANSMIT = 0.7
#: Rcodes that send the query on to the next nameserver, as glibc does.
_NEXT_RCODES = frozenset({dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP})
#: Errors of one exchange: the next nameserver is tried.
_EXCHANGE_ERRORS = (
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
)


class Upstreams:
    """Forwards queries to the laptop's original nameservers.

    Args:
        servers: (IP address, port) of each nameserver, in the order to ask them.
        mark: ``SO_MARK`` of every socket that asks them; None: no mark.
        timeout: Seconds one nameserver may take to answer, over UDP and again over TCP.
    """

    def __init__(
        self, servers: Sequence[tuple[str, int]], *, mark: int | None, timeout: float
    ) -> None:
        self.servers = tuple(servers)
        self._mark = mark
        self._timeout = timeout

    async def forward(self, query: dns.message.Message) -> dns.message.Message | None:
        """The nameservers' reply to ``query``, with its id; None: none of them answered.

        When every nameserver that answered said SERVFAIL, REFUSED or NOTIMP, the last of
        those replies.
        """
        qid = dns.entropy.random_16()
        wire = qid.to_bytes(2, "big") + query.to_wire()[2:]
        reply: dns.message.Message | None = None
        for address in self.servers:
            try:
                reply = await self._ask(wire, qid, query.question, address)
            except _EXCHANGE_ERRORS as error:
                # Not allowed to mark sockets (no CAP_NET_ADMIN) is the daemon's fault, not
                # the nameserver's: say so where it is seen.
                level = logging.WARNING if isinstance(error, PermissionError) else logging.DEBUG
                log.log(level, "DNS %s: upstream %s port %d: %r", describe(query), *address, error)
                continue
            if reply.rcode() not in _NEXT_RCODES:
                break
        if reply is not None:
            reply.id = query.id
        return reply

    async def _ask(
        self,
        wire: bytes,
        qid: int,
        question: list[dns.rrset.RRset],
        address: tuple[str, int],
    ) -> dns.message.Message:
        with anyio.fail_after(self._timeout):
            reply = await self._exchange_udp(wire, qid, question, address)
        if reply.flags & dns.flags.TC:
            with anyio.fail_after(self._timeout):
                reply = await self._exchange_tcp(wire, qid, question, address)
        return reply

    def _udp_socket(self, address: tuple[str, int]) -> socket.socket:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self._mark is not None:
                # Before the first packet: see the module docstring.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self._mark)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _exchange_udp(
        self,
        wire: bytes,
        qid: int,
        question: list[dns.rrset.RRset],
        address: tuple[str, int],
    ) -> dns.message.Message:
        with self._udp_socket(address) as sock:
            sock.connect(address)  # no packet: it fixes the peer, and asks for its ICMP errors
            # UDP may lose the query or its reply: sent again every RETRANSMIT seconds until
            # the caller's timeout, as stub resolvers do, rather than failing the first loss
            # (a SERVFAIL makes glibc give up at once, where silence makes it ask again).
            while True:
                while True:
                    try:
                        sock.send(wire)
                        break
                    except BlockingIOError:
                        await anyio.wait_writable(sock)
                with anyio.move_on_after(RETRANSMIT):
                    while True:
                        await anyio.wait_readable(sock)
                        try:
                            data = sock.recv(MAX_MESSAGE)
                        except BlockingIOError:
                            continue
                        reply = _reply_to(data, qid, question)
                        if reply is not None:
                            return reply

    async def _exchange_tcp(
        self,
        wire: bytes,
        qid: int,
        question: list[dns.rrset.RRset],
        address: tuple[str, int],
    ) -> dns.message.Message:
        # Marked before its first packet, the SYN: see the module docstring.
        stream = await open_tcp(*address, mark=self._mark)
        async with stream:
            await stream.send(len(wire).to_bytes(2, "big") + wire)
            buffered = BufferedByteReceiveStream(stream)
            while True:
                size = int.from_bytes(await buffered.receive_exactly(2), "big")
                reply = _reply_to(await buffered.receive_exactly(size), qid, question)
                if reply is not None:
                    return reply


def _reply_to(data: bytes, qid: int, question: list[dns.rrset.RRset]) -> dns.message.Message | None:
    """``data`` parsed, if it is the reply to our query ``qid`` for ``question``."""
    try:
        reply = dns.message.from_wire(data)
    except Exception:  # dnspython raises many kinds of error; none of them is our reply
        return None
    if reply.id != qid or not reply.flags & dns.flags.QR:
        return None
    # An error reply may leave the question out (RFC 1035 leaves it open).
    if reply.question and reply.question != question:
        return None
    return reply


def describe(query: dns.message.Message) -> str:
    """The query's question, for the log."""
    if len(query.question) != 1:
        return f"query {query.id} ({len(query.question)} questions)"
    question = query.question[0]
    return f"{question.name} {dns.rdatatype.to_text(question.rdtype)}"


# --- the laptop's resolv.conf ----------------------------------------------------------------


def parse_resolv_conf(text: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The nameservers (each with port 53) and search domains of a resolv.conf(5) text.

    Comment lines start with ``#`` or ``;``, and so does a comment after the values; a
    nameserver that is no IP address is skipped (glibc ignores it too); ``search`` and
    ``domain`` replace each other, the last one wins; ``options`` and others are ignored.
    Search domains lose their final dot.
    """
    nameservers: list[tuple[str, int]] = []
    search: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        for index, value in enumerate(fields):
            if value.startswith(("#", ";")):
                del fields[index:]
                break
        if not fields:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver" and values:
            try:
                address = ipaddress.ip_address(values[0])
            except ValueError:
                log.debug("resolv.conf: %r is no nameserver address, skipped", values[0])
                continue
            nameservers.append((str(address), DNS_PORT))
        elif keyword == "search":
            search = [domain.rstrip(".") for domain in values if domain.rstrip(".")]
        elif keyword == "domain" and values:
            search = [values[0].rstrip(".")] if values[0].rstrip(".") else []
    return nameservers, search


def read_resolv_conf(
    path: str | os.PathLike[str] = "/etc/resolv.conf",
) -> tuple[list[tuple[str, int]], list[str]]:
    """The nameservers (each with port 53) and search domains of the laptop's resolv.conf
    (see :func:`parse_resolv_conf`).

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, encoding="utf-8", errors="replace") as file:
        return parse_resolv_conf(file.read())
