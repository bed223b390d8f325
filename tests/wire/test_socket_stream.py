"""The wire shell's TCP socket streams (``shell.SocketByteStream``, ``shell.TransportByteStream``,
``shell.wrap_socket``, ``shell.open_tcp``) and listener (``shell.SocketListener``), on loopback,
on asyncio, uvloop and trio (the root conftest's ``anyio_backend``).

``open_tcp`` gives a ``TransportByteStream`` on asyncio and a ``SocketByteStream`` on trio; the
far side of each test is one kind or the other (``far_kind``), so that both kinds meet both."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from telepresence.wire import shell
from telepresence.wire.shell import _transports

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

type Wrap = Callable[[socket.socket], Awaitable[anyio.abc.ByteStream]]


async def _direct(sock: socket.socket) -> anyio.abc.ByteStream:
    return shell.SocketByteStream(sock)


@pytest.fixture(params=["socket", "wrapped"])
def far_kind(request: pytest.FixtureRequest) -> Wrap:
    """How the far side's accepted socket becomes a stream."""
    return _direct if request.param == "socket" else shell.wrap_socket


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[tuple[int, anyio.abc.ObjectReceiveStream[socket.socket]]]:
    """A listener on loopback; each accepted connection's plain socket is handed over."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    send, receive = anyio.create_memory_object_stream[socket.socket](10)

    async def accept() -> None:
        while True:
            await anyio.wait_readable(listener)
            with contextlib.suppress(BlockingIOError):
                await send.send(listener.accept()[0])

    with listener, send, receive:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(accept)
            yield listener.getsockname()[1], receive
            tasks.cancel_scope.cancel()


async def test_bytes_both_ways_and_each_sides_end(far_kind: Wrap) -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = await far_kind(await accepted.receive())
        async with stream, far:
            assert stream.extra(SocketAttribute.remote_port) == port
            raw = stream.extra(SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert far.extra(SocketAttribute.local_port) == port
            # 8 MiB one way while the far side reads slowly: sends that the kernel takes in
            # part are finished, nothing is lost or reordered.
            payload = os.urandom(8 * 1024 * 1024)
            received = hashlib.sha256()
            count = 0

            async def read_slowly() -> None:
                nonlocal count
                while count < len(payload):
                    chunk = await far.receive(65536)
                    received.update(chunk)
                    count += len(chunk)
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_slowly)
                await stream.send(payload)
            assert received.digest() == hashlib.sha256(payload).digest()
            # Half-close each way: the other side sees the end, and can still answer.
            await stream.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await far.receive()
            await far.send(b"after your end")
            assert await stream.receive() == b"after your end"
            await far.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def test_a_refused_connection_raises_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            await shell.open_tcp("127.0.0.1", port)


async def test_closing_with_reset_breaks_the_far_side(far_kind: Wrap) -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = await far_kind(await accepted.receive())
        async with far:
            await stream.send(b"x")
            assert await far.receive() == b"x"
            stream.close(reset=True)
            with pytest.raises(anyio.BrokenResourceError):
                await far.receive()
            with pytest.raises(anyio.BrokenResourceError):
                await far.send(b"into the void")
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"y")


async def test_closing_wakes_a_task_waiting_to_receive() -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = await accepted.receive()
        with far:
            errors: list[BaseException] = []

            async def wait() -> None:
                try:
                    await stream.receive()
                except anyio.ClosedResourceError as error:
                    errors.append(error)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await stream.aclose()
            assert len(errors) == 1


async def test_a_mark_is_set_before_connecting() -> None:
    async with (
        peer() as (port, accepted),
        await shell.open_tcp("127.0.0.1", port, mark=0x7E1F) as stream,
    ):
        raw = stream.extra(SocketAttribute.raw_socket)
        assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == 0x7E1F
        (await accepted.receive()).close()


async def test_data_that_arrived_before_the_end_is_read_first(far_kind: Wrap) -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = await far_kind(await accepted.receive())
        async with stream, far:
            await stream.send(b"last words")
            await stream.aclose()
            received = b""
            while len(received) < len(b"last words"):
                received += await far.receive(4)
            assert received == b"last words"
            with pytest.raises(anyio.EndOfStream):
                await far.receive()


async def test_a_reader_that_does_not_read_stops_the_sender() -> None:
    """Backpressure: what the wrapped stream buffers for a reader that does not read is
    bounded, and the sender waits; all of it arrives once the reader reads."""
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = await shell.wrap_socket(await accepted.receive())
        async with stream, far:
            payload = os.urandom(32 * 1024 * 1024)
            sent = anyio.Event()

            async def send() -> None:
                await stream.send(payload)
                sent.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                await anyio.sleep(0.3)  # ample time to fill every buffer on the way
                await anyio.wait_all_tasks_blocked()
                assert not sent.is_set()
                if isinstance(far, shell.TransportByteStream):
                    buffered = far._protocol.size
                    # Reading pauses at the high water mark, after the loop's read that
                    # crossed it (256 KiB at most, on asyncio and uvloop).
                    assert buffered <= _transports.READ_HIGH_WATER + 256 * 1024
                received = hashlib.sha256()
                count = 0
                while count < len(payload):
                    chunk = await far.receive()
                    received.update(chunk)
                    count += len(chunk)
            assert sent.is_set()
            assert received.digest() == hashlib.sha256(payload).digest()


async def test_one_reader_at_a_time() -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        with await accepted.receive(), anyio.fail_after(5):
            async with stream, anyio.create_task_group() as tasks:
                tasks.start_soon(stream.receive)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(anyio.BusyResourceError):
                    await stream.receive()
                tasks.cancel_scope.cancel()


async def test_a_listener_serves_each_connection_until_closed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    listener = shell.SocketListener(sock)
    port = listener.extra(SocketAttribute.local_port)

    async def echo(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            assert stream.extra(SocketAttribute.raw_socket).getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            async for chunk in stream:
                await stream.send(chunk)

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, echo)
        for index in range(3):
            async with await shell.open_tcp("127.0.0.1", port) as client:
                await client.send(b"ping %d" % index)
                assert await client.receive() == b"ping %d" % index
        tasks.cancel_scope.cancel()
    assert sock.fileno() < 0
    with pytest.raises(anyio.ClosedResourceError):
        await listener.accept()


async def test_closing_wakes_a_task_waiting_to_send() -> None:
    """A sender held back by a peer that does not read gets ``ClosedResourceError`` when the
    stream is closed under it, and does not wait for the peer."""
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        with await accepted.receive(), anyio.fail_after(10):
            errors: list[BaseException] = []

            async def send() -> None:
                try:
                    while True:
                        await stream.send(b"x" * 1024 * 1024)
                except anyio.ClosedResourceError as error:
                    errors.append(error)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                await anyio.sleep(0.3)  # the kernel's buffers fill up
                await anyio.wait_all_tasks_blocked()
                # Closed, not reset: the transport still holds unsent bytes it would deliver.
                stream.close()
            assert len(errors) == 1


async def test_a_no_wait_sender_keeps_what_the_kernel_did_not_take() -> None:
    # Under the mux's TLS on trio: a send returns at once, and a flush that is cancelled
    # loses nothing, in order, whatever the caller does to its buffer afterwards.
    near, far = socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    kept: list[int] = []
    sender = shell.NoWaitSender(shell.SocketByteStream(near), near, lambda: kept.append(1))
    reader = shell.SocketByteStream(far)
    first = bytearray(os.urandom(1024 * 1024))
    expected = bytes(first) + b"after"
    async with sender, reader:
        await sender.send(first)  # returns at once, the socket being far too small
        assert 0 < sender.unsent < len(first)
        assert kept == [1]
        first[:] = bytes(len(first))  # the caller reuses its buffer: what was kept is a copy
        await sender.send(b"after")  # goes behind what is kept
        before = sender.unsent
        with anyio.move_on_after(0.05):
            await sender.flush()  # nobody reads: the kernel takes nothing more
        assert sender.unsent == before
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(expected):
                received.extend(await reader.receive())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_all)
            await sender.flush()
        assert sender.unsent == 0
        assert bytes(received) == expected
