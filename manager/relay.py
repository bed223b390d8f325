"""Reaching a client's destination, and moving the bytes between it and the client's stream.

**Dialling.** A :class:`Dialer` connects TCP, or a connected UDP socket, to one address. The
errors of dialling become the reset reasons a client sees (:func:`dial_error`): ``refused``
(nothing listens), ``unreachable`` (no route, or the name did not resolve), ``timeout`` (no
answer in time). Tests give a dialer of their own, e.g. one that never answers.

**Relaying TCP** (:func:`relay_tcp`) runs one copy loop per direction. Backpressure is the
loops themselves: a loop reads the next chunk only once the previous one was sent, and a mux
stream's window opens only when its bytes are read. A FIN goes through as a FIN (each side
half-closes independently, as TCP does). When either side breaks, the other is aborted: a
client's reset becomes a TCP RST to the destination (``SO_LINGER`` 0), and a destination's RST
becomes a reset of the client's stream.

**Relaying UDP** (:func:`relay_udp`) forwards datagrams both ways until the client ends the
stream or the flow is idle for a while (UDP has no end of its own). The socket is connected,
so an ICMP port-unreachable from the destination surfaces as ``ECONNREFUSED`` on the next
receive, and the client's stream is reset with ``refused``, as a connected UDP socket of its
own would report it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from telepresence.wire import shell
from telepresence.wire.mux import LocalProtocolError, ResetReason

if TYPE_CHECKING:
    from manager.inventory import IPAddress

log = logging.getLogger(__name__)

#: Seconds a UDP flow may carry no datagram before it is closed.
UDP_IDLE_TIMEOUT = 60.0
#: The largest datagram read from a destination.
MAX_DATAGRAM = 65535


class DialError(Exception):
    """A destination could not be reached; ``reason`` is what the client's stream is reset
    with."""

    def __init__(self, reason: ResetReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Dialer(Protocol):
    """Connects to destinations. Raises ``OSError`` (or anyio's errors) when it cannot."""

    async def connect_tcp(self, address: IPAddress, port: int) -> anyio.abc.ByteStream: ...

    async def connect_udp(
        self, address: IPAddress, port: int
    ) -> anyio.abc.UnreliableObjectStream[bytes]: ...


class SocketDialer:
    """The real :class:`Dialer`: the manager pod's own sockets."""

    async def connect_tcp(self, address: IPAddress, port: int) -> anyio.abc.ByteStream:
        # Not anyio.connect_tcp: its task group (happy eyeballs, for one address) and its
        # socket stream (which re-registers with the poller on every receive) cost more than
        # the rest of a short connection's relaying.
        return await shell.open_tcp(str(address), port)

    async def connect_udp(
        self, address: IPAddress, port: int
    ) -> anyio.abc.UnreliableObjectStream[bytes]:
        return UDPFlow.connect(address, port)


class UDPFlow(anyio.abc.UnreliableObjectStream[bytes]):
    """A connected, non-blocking UDP socket, read and written directly so that the kernel's
    ICMP errors (``ECONNREFUSED``) reach the caller; anyio's own UDP sockets drop them."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._closed = False

    @classmethod
    def connect(cls, address: IPAddress, port: int) -> UDPFlow:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((str(address), port))  # no packet: it only fixes the peer
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def receive(self) -> bytes:
        while True:
            self._check()
            try:
                return self._socket.recv(MAX_DATAGRAM)
            except BlockingIOError:
                await anyio.wait_readable(self._socket)

    async def send(self, item: bytes) -> None:
        while True:
            self._check()
            try:
                self._socket.send(item)
            except BlockingIOError:
                await anyio.wait_writable(self._socket)
            else:
                await anyio.lowlevel.checkpoint()
                return

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._socket)
            self._socket.close()
        await anyio.lowlevel.checkpoint()

    def _check(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError


async def dial(
    dialer: Dialer, udp: bool, address: IPAddress, port: int
) -> anyio.abc.ByteStream | anyio.abc.UnreliableObjectStream[bytes]:
    """Connect to one address; failures become :class:`DialError`."""
    try:
        if udp:
            return await dialer.connect_udp(address, port)
        return await dialer.connect_tcp(address, port)
    except OSError as error:
        raise dial_error(error, f"{'udp' if udp else 'tcp'} {_endpoint(address, port)}") from error


def dial_error(error: OSError, what: str) -> DialError:
    """The reset reason and message for a failed dial."""
    cause = _root_cause(error)
    if isinstance(cause, ConnectionRefusedError):
        return DialError(ResetReason.REFUSED, f"{what}: connection refused")
    if isinstance(cause, TimeoutError):
        return DialError(ResetReason.TIMEOUT, f"{what}: timed out")
    # No route (EHOSTUNREACH, ENETUNREACH...) and whatever else the kernel says: unreachable.
    detail = cause.strerror or str(cause) or type(cause).__name__
    return DialError(ResetReason.UNREACHABLE, f"{what}: {detail}")


async def relay_tcp(stream: shell.MuxStream, target: anyio.abc.ByteStream) -> None:
    """Move bytes both ways between the client's ``stream`` and ``target`` until both ends
    have finished, or either breaks; closes both."""
    broken: list[BaseException] = []
    finished = False
    try:
        await shell.splice(
            stream, target, broken, names=("client to destination", "destination to client")
        )
        finished = not broken
    finally:
        with anyio.CancelScope(shield=True):
            if broken and not any(_from_client(error) for error in broken):
                reset(stream, ResetReason.CANCELLED, "the destination reset the connection")
            elif not finished:
                # The client's reset, or the end of its session or connection: a TCP RST.
                _abort(target)
            await stream.aclose()
            await target.aclose()


async def relay_udp(
    stream: shell.MuxDatagramStream,
    target: anyio.abc.UnreliableObjectStream[bytes],
    *,
    what: str,
    idle_timeout: float = UDP_IDLE_TIMEOUT,
) -> None:
    """Forward datagrams both ways until the client ends the stream, the flow idles for
    ``idle_timeout`` seconds, or the destination refuses; closes both."""
    refused = False
    # The flow ends when this scope's deadline passes; every datagram pushes it back.
    with anyio.CancelScope(deadline=anyio.current_time() + idle_timeout) as idle:

        def active() -> None:
            idle.deadline = anyio.current_time() + idle_timeout

        async def to_target(scope: anyio.CancelScope) -> None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                async for datagram in stream:
                    active()
                    await target.send(datagram)
            scope.cancel()

        async def to_client(scope: anyio.CancelScope) -> None:
            nonlocal refused
            try:
                while True:
                    datagram = await target.receive()
                    active()
                    await stream.send(datagram)
            except ConnectionRefusedError:
                refused = True
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            scope.cancel()

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(to_target, tasks.cancel_scope, name="client to destination")
                tasks.start_soon(to_client, tasks.cancel_scope, name="destination to client")
        finally:
            with anyio.CancelScope(shield=True):
                if refused:
                    reset(stream, ResetReason.REFUSED, f"{what}: port unreachable")
                await stream.aclose()
                await target.aclose()
    if idle.cancelled_caught:
        log.debug("%s: no datagram for %g s, closed", what, idle_timeout)


def reset(
    stream: shell.MuxStream | shell.MuxDatagramStream, reason: ResetReason, message: str
) -> None:
    """Reset a client's stream, unless it has ended already."""
    with contextlib.suppress(
        LocalProtocolError, anyio.ClosedResourceError, anyio.BrokenResourceError
    ):
        stream.reset(reason, message)


def _abort(target: anyio.abc.ByteStream) -> None:
    """Make closing ``target`` send a RST rather than a FIN."""
    raw = target.extra(SocketAttribute.raw_socket, None)
    if raw is not None:
        shell.reset_on_close(raw)


def _from_client(error: BaseException) -> bool:
    return isinstance(error, shell.StreamResetError | shell.ConnectionLostError)


def _root_cause(error: OSError) -> OSError:
    # anyio.connect_tcp wraps the attempt's error: OSError("All connection attempts failed").
    while error.errno is None and isinstance(error.__cause__, OSError):
        error = error.__cause__
    return error


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
