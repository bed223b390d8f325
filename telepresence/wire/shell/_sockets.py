"""A TCP socket as an anyio byte stream, read and written directly.

anyio's own socket streams go through the event loop's transport and protocol: on asyncio,
every ``receive()`` resumes and pauses reading (a poller registration each time), data
arrives in chunks of the transport's choosing, and opening one with
:func:`anyio.connect_tcp` runs a task group for happy eyeballs even for an address. Where a
relay moves a connection's bytes between a socket and a mux stream (the root daemon's
forwarder, the traffic-manager's dial into the cluster), those costs are most of what it
spends per message and per connection. :class:`SocketByteStream` tries each ``recv`` and
``send`` first and waits (:func:`anyio.wait_readable`, :func:`anyio.wait_writable`) only when
the kernel says it would block, which on asyncio (uvloop included) and trio alike costs one
system call per chunk in a busy transfer. It is what :func:`~telepresence.wire.shell.wrap_socket`
gives on trio; on asyncio, where every wait on a socket registers with the poller,
:class:`~telepresence.wire.shell.TransportByteStream` is cheaper.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "READ_SIZE",
    "NoWaitSender",
    "SocketByteStream",
    "reset_on_close",
    "socket_attributes",
]

#: Bytes asked of the kernel per ``receive()`` by default.
READ_SIZE = 256 * 1024


class SocketByteStream(anyio.abc.ByteStream):
    """A connected TCP socket (made non-blocking here) as an anyio byte stream.

    Errors of the socket are ``BrokenResourceError`` (``ClosedResourceError`` once closed);
    the end of the peer's data is ``EndOfStream``.
    """

    __slots__ = ("_socket",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socket = sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return socket_attributes(self._socket)

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        # Waits happen outside the except clauses: an idle connection would otherwise keep
        # its BlockingIOError, with traceback, alive for as long as it waits.
        sock = self._socket
        waited = False
        while True:
            try:
                data = sock.recv(max_bytes)
                break
            except BlockingIOError:
                pass
            except OSError as error:
                raise self._failure(error) from error
            await anyio.wait_readable(sock)
            waited = True
        if not waited:
            await anyio.lowlevel.checkpoint()  # give other tasks their turn
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        sock = self._socket
        try:
            sent = sock.send(item)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise self._failure(error) from error
        if sent == len(item):
            await anyio.lowlevel.checkpoint_if_cancelled()
            return
        view = memoryview(item)[sent:]
        while view:
            await anyio.wait_writable(sock)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                pass
            except OSError as error:
                raise self._failure(error) from error

    async def send_eof(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as error:
            raise self._failure(error) from error
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def close(self, *, reset: bool = False) -> None:
        """Close now (a task waiting on the socket gets ``ClosedResourceError``); with
        ``reset``, with a RST (``SO_LINGER`` 0) rather than a FIN."""
        sock = self._socket
        if sock.fileno() < 0:
            return
        if reset:
            reset_on_close(sock)
        anyio.notify_closing(sock)
        sock.close()

    def _failure(self, error: OSError) -> Exception:
        if self._socket.fileno() < 0:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(f"the connection failed: {error}")


class NoWaitSender(anyio.abc.ByteStream):
    """A TCP socket stream whose ``send()`` never waits: it writes what the kernel takes at
    once and keeps the rest, in order, for the next send or :meth:`flush`, which waits for
    the socket and which a cancellation interrupts without losing anything. Receiving is the
    wrapped stream's. ``on_unsent`` is called when bytes are kept, so that someone flushes.

    This is the stream under a mux connection's TLS on trio. anyio's TLS stream breaks for
    good when a send to the stream under it raises, a cancellation included (the record's
    sequence number is spent), and on trio a socket send can be cancelled whenever the
    kernel's buffer is full. So a task that writes through TLS had to shield the write from
    cancellation, which cost 15 µs of a 170 µs round trip of small messages on trio. Under
    this stream the write cannot be interrupted, and only the flush waits, outside TLS. Nor
    does a send give up the loop: the caller does that once its bytes are on their way.

    For backends whose socket streams write the socket directly (trio's): on asyncio a
    stream's transport has a buffer of its own, which writing past it would overtake.
    """

    __slots__ = ("_on_unsent", "_socket", "_stream", "_unsent")

    def __init__(
        self, stream: anyio.abc.ByteStream, sock: socket.socket, on_unsent: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._socket = sock
        self._on_unsent = on_unsent
        self._unsent: bytes | memoryview = b""

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes

    @property
    def unsent(self) -> int:
        """Bytes sent here that the kernel has not taken yet."""
        return len(self._unsent)

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        if self._unsent:
            # Behind what is kept (rare: a flush is due, and waits for the socket).
            self._unsent = b"".join((self._unsent, item))
            self._on_unsent()
            return
        try:
            sent = self._socket.send(item)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise self._failure(error) from error
        if sent < len(item):
            # Kept unchanged by the caller: a view of bytes, or a copy of anything else.
            rest = memoryview(item)[sent:]
            self._unsent = rest if isinstance(item, bytes) else bytes(rest)
            self._on_unsent()

    async def flush(self) -> None:
        """Wait until the kernel has taken everything sent; cancelled, it keeps the rest."""
        sock = self._socket
        while self._unsent:
            await anyio.wait_writable(sock)
            try:
                self._unsent = self._unsent[sock.send(self._unsent) :]
            except BlockingIOError:
                pass
            except OSError as error:
                raise self._failure(error) from error

    async def send_eof(self) -> None:
        await self.flush()
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._unsent = b""
        await self._stream.aclose()

    def _failure(self, error: OSError) -> Exception:
        if self._socket.fileno() < 0:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(f"the connection failed: {error}")


def socket_attributes(sock: Any, *, connected: bool = True) -> dict[Any, Callable[[], Any]]:
    """anyio's ``SocketAttribute``s of ``sock`` (a socket, or an event loop's stand-in for
    one), the remote ones only when ``connected``."""
    attributes: dict[Any, Callable[[], Any]] = {
        SocketAttribute.family: lambda: sock.family,
        SocketAttribute.raw_socket: lambda: sock,
        SocketAttribute.local_address: sock.getsockname,
        SocketAttribute.local_port: lambda: sock.getsockname()[1],
    }
    if connected:
        attributes[SocketAttribute.remote_address] = sock.getpeername
        attributes[SocketAttribute.remote_port] = lambda: sock.getpeername()[1]
    return attributes


def reset_on_close(sock: socket.socket) -> None:
    """Make closing ``sock`` send a RST rather than a FIN (``SO_LINGER`` 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
