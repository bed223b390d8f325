"""The root daemon's forwarders: kernel-redirected connections become streams into the cluster.

The nftables table (:mod:`telepresence.vif._nft`) hands the daemon two sockets' worth of
traffic: locally originated TCP to the cluster arrives as connections on the listener of
:func:`tcp_listener` (``redirect``), and UDP as datagrams on the ``IP_TRANSPARENT`` socket of
:func:`udp_socket` (``tproxy``). :func:`serve_tcp` and :func:`serve_udp` recover where each
was going and open that destination through a :class:`~telepresence.socks.ClusterDialer` (the
traffic-manager session), then move bytes. Only IPv4, like the table.

**Raw sockets, driven by anyio.** Both functions take plain non-blocking ``socket.socket``
objects and drive them with :func:`anyio.wait_readable` / :func:`anyio.wait_writable`, so
they run on asyncio (uvloop included) and on trio alike. A program's connection, once its
destination is dialled, becomes :func:`~telepresence.wire.shell.wrap_socket`'s stream: on
asyncio the event loop's transport with reading left on (a wait for the next message costs
no poller registration, which a request and response exchange would pay on every message),
on trio the socket read and written directly. Reads are of up to 256 KiB. anyio's own socket
streams pause and resume reading around every ``receive()`` and read 64 KiB at a time:
through them the forwarder moved a third to half as many bytes per second on asyncio and
uvloop. A connection is its stream and three tasks (its own and
:func:`~telepresence.wire.shell.splice`'s two); no thread. The tasks and the transport are
most of its memory: about 16 KB an idle connection on asyncio with anyio 4.16.

**TCP.** The listener's connections keep their original destination in conntrack; it is
read with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (:func:`original_destination`). A
connection made to the listener itself, not redirected, has no other destination and is
refused, so that the listener is no way into the traffic-manager's own loopback. Each
connection dials its destination, then :func:`~telepresence.wire.shell.splice` copies both
ways, a FIN passed on as a FIN. Closing follows what the program would have seen on a
direct connection: when both directions ended cleanly both sides are closed; when anything
else happened (a dial that failed, either side reset, the daemon stopping) the program's
connection is closed with ``SO_LINGER`` 0, a RST, so that it sees ``ECONNRESET`` instead of
a clean end of data it did not get, and the cluster side is reset too (a mux stream with
``reset()``, a socket with a RST). Failures cost their own connection and one debug line;
an accept error (``EMFILE`` when out of descriptors) is logged once and retried after
:data:`ACCEPT_BACKOFF` seconds, with connections waiting in the listen backlog meanwhile.

**UDP.** A flow is one (client address, original destination) pair, the destination read
from the ``IP_ORIGDSTADDR`` ancillary data of the flow's first datagram. Each flow gets a
socket of its own, with ``IP_TRANSPARENT`` bound to the destination (``SO_REUSEADDR``, as
every client of that destination has one) and connected to the client: replies sent on it
come from the address the client wrote to, and, because ``tproxy`` looks for a connected
transparent socket for a datagram's exact addresses before it falls back to the listener,
the client's next datagrams are delivered straight to it. The listener therefore sees a
flow's first datagrams only (those that arrived before the flow's socket was connected go
to the flow's small :data:`FLOW_BACKLOG`), and the flow's own task moves the rest: one
``recv`` and one ``send`` a datagram. The flow's datagram stream is opened with
:meth:`~telepresence.socks.ClusterDialer.open_udp`; datagrams that arrive while it opens
wait in the kernel. A flow whose destination cannot be dialled (refused, unreachable, no
session) stays behind for :data:`UDP_RETRY_AFTER` seconds without a socket: the client's
datagrams to that destination are dropped meanwhile, rather than each one asking the
traffic-manager again. Flows are kept in least-recently-active order: one task closes those
idle for ``idle_timeout`` seconds (no datagram either way), and opening one more than
``max_flows`` closes the least recently active first, so neither descriptors nor memory
grow without bound. A datagram the client's socket has no room for is dropped, as UDP may.

The replies reach the client only if they are not themselves redirected: a client's source
address (the VIF's, when the kernel picks it) must not be inside a cluster subnet, or must be
in never-proxy, as the DNS server's address on the VIF is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from telepresence.socks import DialError
from telepresence.wire.mux import LocalProtocolError, ResetReason
from telepresence.wire.shell import (
    MuxStream,
    SocketByteStream,
    TransportByteStream,
    reset_on_close,
    splice,
    wrap_socket,
)

if TYPE_CHECKING:
    from telepresence.socks import ClusterDialer

__all__ = [
    "ACCEPT_BACKOFF",
    "FLOW_BACKLOG",
    "MAX_FLOWS",
    "UDP_IDLE_TIMEOUT",
    "UDP_RETRY_AFTER",
    "original_destination",
    "serve_tcp",
    "serve_udp",
    "tcp_listener",
    "udp_socket",
]

log = logging.getLogger(__name__)

#: ``getsockopt(SOL_IP, SO_ORIGINAL_DST)``: a redirected connection's destination
#: (linux/netfilter_ipv4.h); Python does not name it.
SO_ORIGINAL_DST = 80
#: ``setsockopt(SOL_IP, IP_RECVORIGDSTADDR)``, and the type of the ancillary message it
#: brings (``IP_ORIGDSTADDR``): a tproxied datagram's destination (linux/in.h).
IP_RECVORIGDSTADDR = IP_ORIGDSTADDR = 20
_ANCILLARY_SIZE = socket.CMSG_SPACE(16)  # one struct sockaddr_in

#: The largest datagram read (the largest UDP payload over IPv4 is 65,507 bytes).
MAX_DATAGRAM = 65535
#: Connections the kernel may hold for the listener before it accepts them.
LISTEN_BACKLOG = 4096
#: Seconds between attempts when ``accept()`` (or the UDP socket's receive) fails, e.g. for
#: want of descriptors.
ACCEPT_BACKOFF = 0.1
#: Seconds a UDP flow may carry no datagram before it is closed.
UDP_IDLE_TIMEOUT = 60.0
#: Seconds after a UDP destination could not be dialled before a datagram dials it again.
UDP_RETRY_AFTER = 5.0
#: UDP flows open at once; one more closes the least recently active.
MAX_FLOWS = 4096
#: Datagrams a flow keeps from the listener while its stream opens; more are dropped.
FLOW_BACKLOG = 64
#: Seconds that closing a stream into the cluster may take.
CLOSE_TIMEOUT = 2.0

#: What dialling raises when the destination cannot be reached or the session is gone.
_DIAL_ERRORS = (DialError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
#: What ends a UDP flow's stream: the session's or the stream's end.
_STREAM_ENDED = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
#: ``accept()`` errors that mean the listener itself is unusable: a bug, not a condition.
_LISTENER_BROKEN = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EOPNOTSUPP})

type Address = tuple[str, int]


# --- Sockets ---------------------------------------------------------------------------------


def tcp_listener(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """The listening socket that the ``redirect`` rule sends TCP to.

    Returns:
        A plain non-blocking ``socket.socket``, listening; ``getsockname()[1]`` is the port
        for :attr:`Redirection.tcp_port <telepresence.vif._nft.Redirection.tcp_port>`. The
        caller owns it: close it once :func:`serve_tcp` has returned.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def udp_socket(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """The ``IP_TRANSPARENT`` socket that the ``tproxy`` rule hands UDP to (needs root, or
    ``CAP_NET_ADMIN``), with ``IP_RECVORIGDSTADDR`` so each datagram says where it was going.

    Returns:
        A plain non-blocking ``socket.socket``, bound; the caller owns it, as with
        :func:`tcp_listener`.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def original_destination(sock: socket.socket) -> Address:
    """Where a redirected TCP connection was going, from conntrack.

    Raises:
        OSError: the connection has no conntrack entry (``ENOENT``), or is gone.
    """
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # a struct sockaddr_in
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def _datagram_destination(ancillary: list[tuple[int, int, bytes]]) -> Address | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_IP and kind == IP_ORIGDSTADDR and len(data) >= 8:
            port, packed = struct.unpack_from("!2xH4s", data)
            return socket.inet_ntoa(packed), port
    return None


def _flow_socket(destination: Address, client: Address) -> socket.socket:
    """A socket that sends as ``destination`` to ``client``, and receives the client's next
    datagrams to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)  # bind a non-local address
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # one per client
        sock.bind(destination)
        sock.connect(client)
    except BaseException:
        sock.close()
        raise
    return sock


async def _close_quietly(resource: anyio.abc.AsyncResource) -> None:
    """Close a stream into the cluster, shielded and for a bounded time; a failure to close
    cleanly is the stream's end, not the forwarder's."""
    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
        try:
            await resource.aclose()
        except Exception as error:
            log.debug("closing %r: %r", resource, error)


# --- TCP -------------------------------------------------------------------------------------


async def serve_tcp(
    listener: socket.socket,
    dialer: ClusterDialer,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Forward every connection ``listener`` accepts to its original destination, until
    cancelled (which resets the connections still open).

    Args:
        listener: from :func:`tcp_listener` (any listening IPv4 socket will do).
        dialer: opens each destination in the cluster.
        task_status: told once connections are being accepted.

    Raises:
        OSError: the listener itself is unusable (closed, or not listening).
    """
    listener.setblocking(False)
    async with anyio.create_task_group() as connections:
        task_status.started()
        failing = False
        while True:
            # (The waits are outside the except clauses, which would keep each exception
            # alive while waiting.)
            back_off = False
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                sock = None
            except ConnectionAbortedError:
                continue  # reset while it waited in the backlog
            except OSError as error:
                if error.errno in _LISTENER_BROKEN:
                    raise
                if not failing:
                    log.warning(
                        "TCP forwarder: cannot accept connections (%s); retrying every %g s",
                        error.strerror or error,
                        ACCEPT_BACKOFF,
                    )
                sock = None
                failing = back_off = True
            if sock is None:
                if back_off:
                    await anyio.sleep(ACCEPT_BACKOFF)
                else:
                    await anyio.wait_readable(listener)
                continue
            if failing:
                log.info("TCP forwarder: accepting connections again")
                failing = False
            connections.start_soon(_forward_connection, sock, peer, dialer, name="TCP forward")
            await anyio.lowlevel.checkpoint()


async def _forward_connection(sock: socket.socket, peer: Address, dialer: ClusterDialer) -> None:
    """One program's connection, from its original destination to the end; whatever happens
    ends here."""
    client: TransportByteStream | SocketByteStream | None = None
    finished = False
    try:
        # The program made its own choice about Nagle on its socket; ours would only add a
        # delay to what comes back from the cluster.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = destination = original_destination(sock)
        if destination == sock.getsockname():
            log.debug("TCP from %s:%d: made to the forwarder itself, refused", *peer)
            return
        try:
            target = await dialer.open_tcp(host, port)
        except _DIAL_ERRORS as error:
            log.debug("TCP %s:%d -> %s:%d: cannot dial: %s", *peer, host, port, error)
            return
        log.debug("TCP %s:%d -> %s:%d: open", *peer, host, port)
        broken: list[BaseException] = []
        try:
            client = await wrap_socket(sock)
            await splice(client, target, broken, names=("to the cluster", "from the cluster"))
            finished = not broken
        finally:
            if not finished:
                _abort(target)
            await _close_quietly(target)
        if broken:
            log.debug("TCP %s:%d -> %s:%d: broken: %r", *peer, host, port, broken[0])
        else:
            log.debug("TCP %s:%d -> %s:%d: closed", *peer, host, port)
    except OSError as error:  # the connection was reset before it was served, or not redirected
        log.debug("TCP from %s:%d: %s", *peer, error)
    except Exception:
        log.exception("TCP from %s:%d: unexpected error", *peer)
    finally:
        if client is not None:
            client.close(reset=not finished)
        else:  # never wrapped: the socket is still ours
            if not finished:
                reset_on_close(sock)
            sock.close()


def _abort(stream: anyio.abc.ByteStream) -> None:
    """Make the cluster side see a reset rather than an end of data."""
    if isinstance(stream, MuxStream):
        with contextlib.suppress(
            LocalProtocolError, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            stream.reset(ResetReason.CANCELLED, "the connection was aborted on the laptop")
        return
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if raw is not None:
        reset_on_close(raw)


# --- UDP -------------------------------------------------------------------------------------


async def serve_udp(
    sock: socket.socket,
    dialer: ClusterDialer,
    *,
    idle_timeout: float = UDP_IDLE_TIMEOUT,
    max_flows: int = MAX_FLOWS,
    retry_after: float = UDP_RETRY_AFTER,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Forward the datagrams that ``tproxy`` delivers to ``sock``, one flow per client and
    original destination, until cancelled (which closes every flow).

    Args:
        sock: from :func:`udp_socket`.
        dialer: opens each flow's destination in the cluster.
        idle_timeout: seconds without a datagram either way after which a flow is closed.
        max_flows: flows open at once; one more closes the least recently active.
        retry_after: seconds after a failed dial before the destination is dialled again.
        task_status: told once datagrams are being received.
    """
    if max_flows < 1:
        raise ValueError("max_flows must be at least 1")
    forwarder = _UDPForwarder(sock, dialer, idle_timeout, max_flows, retry_after)
    sock.setblocking(False)
    async with anyio.create_task_group() as flows:
        flows.start_soon(forwarder.close_idle_flows, name="UDP forwarder: idle flows")
        task_status.started()
        await forwarder.receive(flows)


class _Flow:
    """One client's datagrams to one destination, and the replies."""

    __slots__ = (
        "client",
        "destination",
        "failed_until",
        "last_active",
        "pending",
        "scope",
        "socket",
        "wake",
    )

    def __init__(self, client: Address, destination: Address, sock: socket.socket) -> None:
        self.client = client
        self.destination = destination
        self.socket = sock
        self.scope = anyio.CancelScope()
        #: The client's datagrams that reached the listener, not yet sent on.
        self.pending: deque[bytes] = deque()
        #: Set while the flow waits for its socket: cancelled when ``pending`` grows.
        self.wake: anyio.CancelScope | None = None
        self.last_active = time.monotonic()
        #: Set when the destination could not be dialled: until then, datagrams are dropped.
        self.failed_until: float | None = None

    def offer(self, data: bytes) -> None:
        if len(self.pending) < FLOW_BACKLOG:
            self.pending.append(data)
        if self.wake is not None:
            self.wake.cancel()


class _UDPForwarder:
    def __init__(
        self,
        sock: socket.socket,
        dialer: ClusterDialer,
        idle_timeout: float,
        max_flows: int,
        retry_after: float,
    ) -> None:
        self._socket = sock
        self._own_address: Address = sock.getsockname()
        self._dialer = dialer
        self._idle_timeout = idle_timeout
        self._max_flows = max_flows
        self._retry_after = retry_after
        #: Least recently active first.
        self._flows: OrderedDict[tuple[Address, Address], _Flow] = OrderedDict()

    async def receive(self, flows: anyio.abc.TaskGroup) -> None:
        """Take datagrams from the listener: each one opens a flow, or joins its own."""
        sock = self._socket
        while True:
            back_off = False
            try:
                data, ancillary, _, client = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY_SIZE)
            except BlockingIOError:
                data = None
            except OSError as error:  # e.g. ENOMEM, or ENOBUFS
                if error.errno in _LISTENER_BROKEN:
                    raise
                log.debug("UDP forwarder: receive failed: %s", error)
                data = None
                back_off = True
            if data is None:
                if back_off:
                    await anyio.sleep(ACCEPT_BACKOFF)
                else:
                    await anyio.wait_readable(sock)
                continue
            destination = _datagram_destination(ancillary)
            if destination is None or destination == self._own_address:
                log.debug("UDP from %s:%d: sent to the forwarder itself, dropped", *client)
            else:
                key = (client, destination)
                flow = self._flows.get(key)
                if flow is not None and flow.failed_until is not None:
                    if time.monotonic() >= flow.failed_until:
                        del self._flows[key]  # dialled again below
                    flow = None  # else dropped: it could not be dialled a moment ago
                if key not in self._flows:
                    flow = self._open(client, destination, flows)
                if flow is not None:
                    flow.offer(data)
                    self._active(flow)
            await anyio.lowlevel.checkpoint()

    def _open(
        self, client: Address, destination: Address, flows: anyio.abc.TaskGroup
    ) -> _Flow | None:
        try:
            sock = _flow_socket(destination, client)
        except OSError as error:
            log.debug("UDP %s:%d -> %s:%d: no socket: %s", *client, *destination, error)
            return None
        while len(self._flows) >= self._max_flows:
            self._close(next(iter(self._flows.values())))
        flow = self._flows[client, destination] = _Flow(client, destination, sock)
        flows.start_soon(self._run, flow, name="UDP flow")
        return flow

    def _close(self, flow: _Flow) -> None:
        """Forget ``flow`` and stop its task (which closes its socket)."""
        key = (flow.client, flow.destination)
        if self._flows.get(key) is flow:
            del self._flows[key]
        flow.scope.cancel()

    def _active(self, flow: _Flow) -> None:
        flow.last_active = time.monotonic()
        with contextlib.suppress(KeyError):
            self._flows.move_to_end((flow.client, flow.destination))

    async def close_idle_flows(self) -> None:
        """Close each flow that has been idle for the timeout (within a quarter of it, or a
        second)."""
        flows = self._flows
        while True:
            await anyio.sleep(min(self._idle_timeout / 4, 1.0))
            idle_since = time.monotonic() - self._idle_timeout
            while flows:
                oldest = next(iter(flows.values()))
                if oldest.last_active > idle_since:
                    break
                log.debug("UDP %s:%d -> %s:%d: idle, closed", *oldest.client, *oldest.destination)
                self._close(oldest)

    async def _run(self, flow: _Flow) -> None:
        where = (*flow.client, *flow.destination)
        stream: anyio.abc.UnreliableObjectStream[bytes] | None = None
        failed = False
        try:
            with flow.scope:
                stream = await self._dialer.open_udp(*flow.destination)
                log.debug("UDP %s:%d -> %s:%d: open", *where)
                async with anyio.create_task_group() as directions:
                    directions.start_soon(
                        self._to_client, flow, stream, directions.cancel_scope, name="UDP in"
                    )
                    await self._to_cluster(flow, stream)
                    directions.cancel_scope.cancel()
        except _DIAL_ERRORS as error:
            log.debug("UDP %s:%d -> %s:%d: cannot dial: %s", *where, error)
            failed = stream is None
        except Exception:
            log.exception("UDP %s:%d -> %s:%d: unexpected error", *where)
        finally:
            # The socket first: the client's next datagram then goes to the listener, and
            # opens a new flow (or, after a failed dial, is dropped there for a while),
            # instead of waiting here for nobody.
            if failed and self._flows.get((flow.client, flow.destination)) is flow:
                flow.failed_until = time.monotonic() + self._retry_after
                flow.pending.clear()
            else:
                self._close(flow)
            flow.socket.close()
            if stream is not None:
                await _close_quietly(stream)

    async def _to_cluster(
        self, flow: _Flow, stream: anyio.abc.UnreliableObjectSendStream[bytes]
    ) -> None:
        sock = flow.socket
        pending = flow.pending
        try:
            while True:
                while pending:
                    await stream.send(pending.popleft())
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except BlockingIOError:
                    data = None
                if data is None:
                    with anyio.CancelScope() as flow.wake:
                        await anyio.wait_readable(sock)
                    flow.wake = None
                    continue
                self._active(flow)
                await anyio.lowlevel.checkpoint()  # no wait: give other tasks their turn
                await stream.send(data)
        except (*_STREAM_ENDED, OSError) as error:
            log.debug("UDP to %s:%d: ended: %r", *flow.destination, error)

    async def _to_client(
        self,
        flow: _Flow,
        stream: anyio.abc.UnreliableObjectReceiveStream[bytes],
        directions: anyio.CancelScope,
    ) -> None:
        sock = flow.socket
        try:
            async for data in stream:
                self._active(flow)
                try:
                    sock.send(data)
                except (BlockingIOError, InterruptedError):
                    pass  # no room: dropped, as UDP may
                except OSError as error:
                    if error.errno != errno.EMSGSIZE:
                        raise
        except (*_STREAM_ENDED, OSError) as error:
            log.debug("UDP from %s:%d: ended: %r", *flow.destination, error)
        directions.cancel()
