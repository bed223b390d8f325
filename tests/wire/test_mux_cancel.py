"""Cancelling a send over real TLS on loopback, on asyncio, uvloop and trio: a write cut short
must not leave a hole in the TLS records or the frames, which would end the connection for
every stream on it."""

from __future__ import annotations

import socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from telepresence.wire import shell
from tests.wire.loopback_tls import localhost_contexts

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

MESSAGE = 1024
SEQUENCE = struct.Struct("!Q")
#: Socket buffers small enough that a sender fills them within its stream's credit.
SMALL_BUFFER = 4096


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return localhost_contexts("Mux cancel test CA")


def message(number: int) -> bytes:
    return SEQUENCE.pack(number) + bytes([number % 251]) * (MESSAGE - SEQUENCE.size)


class Gate:
    """A TCP relay between the client and the server whose client-to-server direction can
    be stopped: then the client's socket buffers fill and its writes wait."""

    def __init__(self) -> None:
        self.open = anyio.Event()
        self.open.set()

    def close(self) -> None:
        self.open = anyio.Event()

    async def relay(self, client: anyio.abc.ByteStream, server_port: int) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", server_port) as server:

            async def forward() -> None:
                async for data in client:
                    await self.open.wait()
                    await server.send(data)
                await server.send_eof()

            async def backward() -> None:
                async for data in server:
                    await client.send(data)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(forward)
                tasks.start_soon(backward)


@asynccontextmanager
async def connected(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], received: bytearray, gate: Gate
) -> AsyncIterator[shell.MuxConnection]:
    """A mux client over TLS, through ``gate``, to a server that collects what one stream
    carries into ``received`` until its end."""

    async def collect(stream: shell.MuxStream | shell.MuxDatagramStream) -> None:
        assert isinstance(stream, shell.MuxStream)
        stream.accept()
        async with stream:
            async for data in stream:
                received.extend(data)

    async def serve(transport: anyio.abc.ByteStream) -> None:
        transport = await TLSStream.wrap(
            transport, server_side=True, ssl_context=contexts[0], standard_compatible=False
        )
        async with shell.accept(transport) as connection:
            await collect(await connection.accept_stream())
            await connection.wait_closed()

    server = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    relay = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server_port = server.extra(SocketAttribute.local_port)
    # Accepted sockets take the listener's receive buffer.
    relay.extra(SocketAttribute.raw_socket).setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER
    )
    async with server, relay, anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, serve)
        tasks.start_soon(relay.serve, lambda stream: gate.relay(stream, server_port))
        tcp = await anyio.connect_tcp("127.0.0.1", relay.extra(SocketAttribute.local_port))
        tcp.extra(SocketAttribute.raw_socket).setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER
        )
        transport = await TLSStream.wrap(
            tcp, hostname="localhost", ssl_context=contexts[1], standard_compatible=False
        )
        async with shell.connect(transport) as connection:
            yield connection
        tasks.cancel_scope.cancel()


async def test_a_send_cancelled_before_it_writes_leaves_the_connection_whole(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    received = bytearray()
    with anyio.fail_after(20):
        async with connected(contexts, received, Gate()) as connection:
            stream = await connection.open_stream("10.0.0.1", 80)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await stream.send(message(0))
            await stream.send(message(1))
            await stream.send_eof()
            # The server reads to the end: the connection carried it whole.
            while received[-MESSAGE:] != message(1):
                assert await connection.ping() > 0
            await stream.aclose()
    # The cancelled message went out in full or not at all.
    assert bytes(received) in (message(0) + message(1), message(1))


async def test_a_send_cancelled_while_it_waits_for_the_socket_loses_nothing(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    received = bytearray()
    gate = Gate()
    completed = 0
    with anyio.fail_after(30):
        async with connected(contexts, received, gate) as connection:
            stream = await connection.open_stream("10.0.0.1", 80)
            gate.close()
            async with anyio.create_task_group() as tasks:

                async def send_until_cancelled() -> None:
                    nonlocal completed
                    while True:
                        await stream.send(message(completed))
                        completed += 1

                tasks.start_soon(send_until_cancelled)
                await wait_all_tasks_blocked()
                # The sender waits inside a write: the relay stopped taking the bytes.
                assert connection._writing
                assert completed > 0
                tasks.cancel_scope.cancel()
                # On trio the write ends now, and the writer task sends the rest; on asyncio
                # it is shielded, and ends once the relay takes the bytes again.
                gate.open.set()
            await stream.send(message(completed + 1))
            await stream.send_eof()
            while not received.endswith(message(completed + 1)):
                assert await connection.ping() > 0
            await stream.aclose()
    # Every completed send arrived in order; the cancelled one in full or not at all.
    expected = b"".join(message(number) for number in range(completed))
    assert bytes(received) in (
        expected + message(completed) + message(completed + 1),
        expected + message(completed + 1),
    )


async def test_a_task_that_sends_in_a_loop_can_be_cancelled_and_lets_others_run(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    # Small sends are written at once from the sending task: each must still be a point
    # where the task can be cancelled, and where others get their turn.
    received = bytearray()
    turns = 0
    sent = 0
    with anyio.fail_after(20):
        async with connected(contexts, received, Gate()) as connection:
            stream = await connection.open_stream("10.0.0.1", 80)

            async def count_turns() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(count_turns)
                with anyio.CancelScope() as scope:
                    while True:
                        await stream.send(b"x" * 64)
                        sent += 1
                        if sent == 1000:
                            scope.cancel()
                tasks.cancel_scope.cancel()
            await stream.aclose()
    assert sent == 1000
    assert turns >= 100
