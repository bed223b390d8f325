"""The wire shell's TCP socket stream (``shell.SocketByteStream``, ``shell.open_tcp``), on
loopback, on asyncio, uvloop and trio (the root conftest's ``anyio_backend``)."""

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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


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


async def test_bytes_both_ways_and_each_sides_end() -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = shell.SocketByteStream(await accepted.receive())
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


async def test_closing_with_reset_breaks_the_far_side() -> None:
    async with peer() as (port, accepted):
        stream = await shell.open_tcp("127.0.0.1", port)
        far = shell.SocketByteStream(await accepted.receive())
        async with far:
            await stream.send(b"x")
            assert await far.receive() == b"x"
            stream.close(reset=True)
            with pytest.raises(anyio.BrokenResourceError):
                await far.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()


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
