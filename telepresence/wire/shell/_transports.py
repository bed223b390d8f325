"""A TCP socket as an anyio byte stream on asyncio's own transport, with reading left on.

On asyncio (uvloop included) the cheapest way to wait for a socket is the event loop's
transport: the socket stays registered with the poller for as long as it is open, and what
arrives is read into a buffer by the loop, without a system call to register and another to
unregister for every wait. anyio's socket streams use transports too, but pause reading
whenever no task is in ``receive()`` and resume it for every call (those two poller calls
again), and give up the loop after every ``send()``; :class:`SocketByteStream`, which reads
and writes the socket directly, registers for every wait on a quiet socket, which in a
request and response exchange is every message. A relay that carries a round trip through
two sockets of each kind paid for those waits on every message.

:class:`TransportByteStream` keeps reading on, and pauses it only when more than
``READ_HIGH_WATER`` bytes wait for the application (backpressure: the peer's sends then fill
the kernel's buffers and stop). Sends go to the transport, which writes at once and keeps
what the kernel did not take; a sender waits only while that is above the transport's high
water mark. :func:`wrap_socket` gives one on asyncio, and on trio, which has no transports,
a :class:`SocketByteStream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio

from telepresence.wire.shell._sockets import (
    READ_SIZE,
    SocketByteStream,
    reset_on_close,
    socket_attributes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["SocketListener", "TransportByteStream", "open_tcp", "wrap_socket"]

#: Seconds a listener waits before accepting again when the process or the system is out of
#: file descriptors or memory (the connection waits in the backlog meanwhile).
ACCEPT_BACKOFF = 0.1
#: What ``accept()`` fails with while descriptors or memory run out.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: What ``accept()`` fails with when the connection in line was aborted: take the next one.
_ABORTED = frozenset({errno.ECONNABORTED, errno.EPROTO})

#: Bytes received and not yet read by the application at which reading pauses.
READ_HIGH_WATER = 512 * 1024
#: ... and at which it resumes.
READ_LOW_WATER = 128 * 1024


class _Protocol(asyncio.Protocol):
    """What the loop calls; what a :class:`TransportByteStream` reads and waits on."""

    # Slots and a list (rather than a deque, 600 bytes even empty): a relay holds thousands
    # of these idle, and a chunk list rarely holds more than one.
    __slots__ = (
        "chunks",
        "eof",
        "error",
        "lost",
        "read_waiter",
        "reading_paused",
        "size",
        "transport",
        "write_waiter",
        "writing_paused",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.size = 0  # bytes in chunks
        self.eof = False  # the peer half-closed
        self.lost = False  # the connection is over (error or closed)
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= READ_HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # our direction stays open until we end it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self.write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TransportByteStream(anyio.abc.ByteStream):
    """A connected TCP socket on an asyncio transport. Make one with :func:`wrap_socket`.

    Errors of the socket are ``BrokenResourceError`` (``ClosedResourceError`` once closed
    here); the end of the peer's data is ``EndOfStream``.
    """

    __slots__ = ("_closed", "_eof_sent", "_loop", "_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._eof_sent = False

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return socket_attributes(self._transport.get_extra_info("socket"))

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        protocol = self._protocol
        chunks = protocol.chunks
        if chunks:
            await anyio.lowlevel.checkpoint_if_cancelled()
        while not chunks:
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.error is not None:
                raise self._broken()
            if protocol.eof or protocol.lost:
                raise anyio.EndOfStream
            if protocol.read_waiter is not None:
                raise anyio.BusyResourceError("reading from")
            protocol.read_waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                protocol.read_waiter = None
        chunk = chunks[0]
        if len(chunk) > max_bytes:
            chunks[0] = chunk[max_bytes:]
            chunk = chunk[:max_bytes]
        else:
            del chunks[0]
        protocol.size -= len(chunk)
        if protocol.reading_paused and protocol.size <= READ_LOW_WATER and not protocol.lost:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        protocol = self._protocol
        self._check_sendable()
        # The transport may keep what the kernel did not take: a snapshot of a buffer that
        # the caller could change.
        self._transport.write(item if isinstance(item, bytes) else bytes(item))
        if not protocol.writing_paused:
            if protocol.lost:
                self._check_sendable()
            await anyio.lowlevel.checkpoint_if_cancelled()
            return
        while protocol.writing_paused and not protocol.lost and not self._closed:
            if protocol.write_waiter is not None:
                raise anyio.BusyResourceError("writing to")
            protocol.write_waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                protocol.write_waiter = None
        self._check_sendable()

    async def send_eof(self) -> None:
        if not self._eof_sent:
            self._check_sendable()
            self._eof_sent = True
            self._transport.write_eof()
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def close(self, *, reset: bool = False) -> None:
        """Close now: what was sent is still delivered, unless ``reset``, which sends a RST
        (``SO_LINGER`` 0) and drops it. A task waiting on the stream gets
        ``ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        protocol.chunks.clear()
        protocol.size = 0
        if reset:
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                reset_on_close(sock)
            self._transport.abort()
        else:
            self._transport.close()
        protocol._wake_reader()
        protocol._wake_writer()

    def _check_sendable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._eof_sent:
            raise anyio.ClosedResourceError("the stream was half-closed with send_eof()")
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise self._broken()

    def _broken(self) -> anyio.BrokenResourceError:
        error = self._protocol.error
        return anyio.BrokenResourceError(f"the connection failed: {error or 'closed'}")


async def wrap_socket(sock: socket.socket) -> TransportByteStream | SocketByteStream:
    """A connected TCP socket as the cheapest byte stream of the running backend. The stream
    owns the socket from here on (on asyncio, the event loop's transport does)."""
    if sniffio.current_async_library() != "asyncio":
        stream = SocketByteStream(sock)
        await anyio.lowlevel.checkpoint()
        return stream
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.connect_accepted_socket(_Protocol, sock)
    except BaseException:
        sock.close()
        raise
    return TransportByteStream(transport, protocol)


async def open_tcp(
    host: str, port: int, *, mark: int | None = None
) -> TransportByteStream | SocketByteStream:
    """Connect to ``host`` (an IPv4 or IPv6 address, not a name) and ``port``, without a
    thread or a task; the stream is :func:`wrap_socket`'s.

    Args:
        mark: ``SO_MARK`` for the socket, set before its first packet; None: none.

    Raises:
        OSError: The connection failed; the subclass says how (``ConnectionRefusedError``,
            ``TimeoutError``, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        code = sock.connect_ex((host, port))
        if code == errno.EINPROGRESS:
            await anyio.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))  # the errno's own subclass of OSError
    except BaseException:
        sock.close()
        raise
    return await wrap_socket(sock)


class SocketListener(anyio.abc.Listener[anyio.abc.ByteStream]):
    """A listening TCP socket whose connections are :func:`wrap_socket`'s streams (with
    ``TCP_NODELAY``). It owns the socket; ``aclose()`` closes it."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socket = sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return socket_attributes(self._socket, connected=False)

    async def accept(self) -> anyio.abc.ByteStream:
        """The next connection. Running out of descriptors or memory is waited out (the
        connection stays in the backlog); other errors of the socket are raised."""
        listener = self._socket
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await anyio.wait_readable(listener)
                continue
            except OSError as error:
                if listener.fileno() < 0:
                    raise anyio.ClosedResourceError from None
                if error.errno in _EXHAUSTED:
                    await anyio.sleep(ACCEPT_BACKOFF)
                elif error.errno in _ABORTED:
                    await anyio.lowlevel.checkpoint()
                else:
                    raise
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # reset by the client already: the next one
                sock.close()
                continue
            return await wrap_socket(sock)

    async def serve(
        self,
        handler: Callable[[anyio.abc.ByteStream], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        """Accept connections and run ``handler`` on each in ``task_group`` (or a group of
        its own) until cancelled or closed."""
        async with contextlib.AsyncExitStack() as stack:
            if task_group is None:
                task_group = await stack.enter_async_context(anyio.create_task_group())
            while True:
                stream = await self.accept()
                task_group.start_soon(handler, stream)

    async def aclose(self) -> None:
        if self._socket.fileno() >= 0:
            anyio.notify_closing(self._socket)
            self._socket.close()
        await anyio.lowlevel.checkpoint()
