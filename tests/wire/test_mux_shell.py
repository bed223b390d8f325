"""The async shell over in-memory byte streams, on asyncio, uvloop and trio."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager
from time import monotonic
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest
from anyio import wait_all_tasks_blocked

from telepresence.wire import mux, shell
from tests.wire.memory_transport import MemoryByteStream, memory_stream_pair
from tests.wire.mux_pair import serve_handshake

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB
REFUSING_PORT = 81


async def serve_echo(connection: shell.MuxConnection) -> None:
    """Accept streams: echo TCP to EOF and UDP datagrams; refuse port 81."""

    async def echo(stream: shell.MuxStream | shell.MuxDatagramStream) -> None:
        if stream.destination.port == REFUSING_PORT:
            stream.reset(mux.ResetReason.REFUSED, "connect: connection refused")
            return
        stream.accept()
        async with stream:
            try:
                if isinstance(stream, shell.MuxStream):
                    async for chunk in stream:
                        await stream.send(chunk)
                    await stream.send_eof()
                else:
                    async for datagram in stream:
                        await stream.send(b"echo:" + datagram)
            except anyio.BrokenResourceError:
                pass

    async with anyio.create_task_group() as tasks:
        while True:
            try:
                stream = await connection.accept_stream()
            except (anyio.EndOfStream, shell.ConnectionLostError):
                return
            tasks.start_soon(echo, stream)


@asynccontextmanager
async def connected(
    *,
    server: bool = True,
    client_settings: mux.Settings | None = None,
    server_settings: mux.Settings | None = None,
    chunks: int = 16,
) -> AsyncIterator[tuple[shell.MuxConnection, shell.MuxConnection, MemoryByteStream]]:
    """A client and a server connection over memory; the server echoes unless told not to."""
    client_transport, server_transport = memory_stream_pair(chunks)
    ready = anyio.Event()
    done = anyio.Event()
    box: list[shell.MuxConnection] = []

    async def run_server() -> None:
        async with shell.accept(server_transport, settings=server_settings) as connection:
            box.append(connection)
            ready.set()
            async with anyio.create_task_group() as tasks:
                if server:
                    tasks.start_soon(serve_echo, connection)
                await done.wait()
                tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_server)
        async with shell.connect(
            client_transport, credentials=b"token", settings=client_settings
        ) as client:
            await ready.wait()
            try:
                yield client, box[0], client_transport
            finally:
                done.set()


async def test_tcp_stream_echoes_and_half_closes() -> None:
    async with connected() as (client, _, _):
        stream = await client.open_stream("echo.default", 8080)
        assert stream.destination == mux.Address("echo.default", 8080)
        await stream.send(b"hello, ")
        await stream.send(bytearray(b"world"))
        await stream.send_eof()
        received = b""
        async for chunk in stream:
            received += chunk
        assert received == b"hello, world"
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"after eof")
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()


async def test_server_half_closes_first_and_client_keeps_sending() -> None:
    async with connected(server=False) as (client, server, _):
        async with anyio.create_task_group() as tasks:

            async def serve_one() -> None:
                incoming = await server.accept_stream()
                assert isinstance(incoming, shell.MuxStream)
                await incoming.send(b"banner\n")
                await incoming.send_eof()
                got = b""
                async for chunk in incoming:
                    got += chunk
                assert got == b"request after the server's FIN"
                await incoming.aclose()

            tasks.start_soon(serve_one)
            stream = await client.open_stream("10.0.0.1", 25)
            assert await stream.receive() == b"banner\n"
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
            await stream.send(b"request after the server's FIN")
            await stream.send_eof()
        await stream.aclose()


async def test_bulk_send_goes_out_while_the_sender_waits_elsewhere() -> None:
    # A bulk-sized send leaves its frames queued for the next sends to join in one write;
    # a sender that waits for something else instead must not hold them back.
    payload = bytes(range(256)) * (48 * KIB // 256)
    async with connected(server=False) as (client, server, _):
        received = anyio.Event()

        async def serve_one() -> None:
            incoming = await server.accept_stream()
            assert isinstance(incoming, shell.MuxStream)
            incoming.accept()
            got = b""
            while len(got) < len(payload):
                got += await incoming.receive()
            assert got == payload
            received.set()
            await incoming.aclose()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve_one)
            stream = await client.open_stream("10.0.0.1", 9000)
            await stream.send(payload)
            with anyio.fail_after(5):
                await received.wait()  # not a wait on the mux: the writer sends the frames
        await stream.aclose()


async def test_refused_destination_raises_with_the_reason() -> None:
    async with connected() as (client, _, _):
        with pytest.raises(shell.StreamResetError) as caught:
            await client.open_stream("10.96.0.12", REFUSING_PORT)
        assert caught.value.reason is mux.ResetReason.REFUSED
        assert caught.value.remote
        assert "connection refused" in str(caught.value)
        assert isinstance(caught.value, anyio.BrokenResourceError)


async def test_udp_flow_keeps_datagram_boundaries() -> None:
    async with connected() as (client, _, _):
        flow = await client.open_datagram_stream("10.96.0.10", 53)
        for query in (b"a", b"", b"q" * 60000):
            await flow.send(query)
            assert await flow.receive() == b"echo:" + query
        await flow.aclose()


async def test_many_concurrent_streams_each_get_their_own_bytes() -> None:
    async with connected() as (client, _, _):

        async def one(index: int) -> None:
            stream = await client.open_stream("10.96.0.12", 8080)
            payload = hashlib.sha256(str(index).encode()).digest() * (40 * KIB // 32)
            async with anyio.create_task_group() as tasks:

                async def write() -> None:
                    await stream.send(payload)
                    await stream.send_eof()

                tasks.start_soon(write)
                received = bytearray()
                async for chunk in stream:
                    received += chunk
            assert received == payload
            await stream.aclose()

        async with anyio.create_task_group() as tasks:
            for index in range(200):
                tasks.start_soon(one, index)


async def test_an_opener_handed_the_reading_before_its_accept_waits_on() -> None:
    # A task reads the transport for its stream's data while another waits for its OPEN to
    # be answered. The data ends the read, and the reading passes to the opener before the
    # peer has accepted its stream: it must read on until the accept, not spin (a spinning
    # task never yields, so this test would hang).
    async with connected(server=False) as (client, server, _), anyio.create_task_group() as tasks:
        accepted: list[shell.MuxStream] = []

        async def accept_first() -> None:
            incoming = await server.accept_stream()
            assert isinstance(incoming, shell.MuxStream)
            incoming.accept()
            accepted.append(incoming)

        tasks.start_soon(accept_first)
        reading = await client.open_stream("10.0.0.1", 1)
        (first,) = accepted
        received: list[bytes] = []
        opened: list[shell.MuxStream] = []

        async def receive() -> None:
            received.append(await reading.receive())

        async def open_second() -> None:
            stream = await client.open_stream("10.0.0.2", 2)
            assert isinstance(stream, shell.MuxStream)
            opened.append(stream)

        tasks.start_soon(receive)
        await wait_all_tasks_blocked()  # the receiver reads the transport
        tasks.start_soon(open_second)
        await wait_all_tasks_blocked()  # the opener waits behind it
        second = await server.accept_stream()
        assert isinstance(second, shell.MuxStream)
        await first.send(b"ends the read")  # the reading passes to the opener
        await wait_all_tasks_blocked()
        assert received == [b"ends the read"]
        assert opened == []
        second.accept()
        with anyio.fail_after(5):
            while not opened:
                await wait_all_tasks_blocked()
        assert opened[0].destination.port == 2
        tasks.cancel_scope.cancel()


async def test_stalled_reader_does_not_stop_other_streams() -> None:
    async with connected(server=False) as (client, server, _):
        streams: dict[int, shell.MuxStream] = {}
        delivered = 0

        async def sink_busy() -> None:
            nonlocal delivered
            incoming = await server.accept_stream()
            assert isinstance(incoming, shell.MuxStream)
            streams[incoming.destination.port] = incoming
            incoming.accept()
            async for chunk in incoming:
                delivered += len(chunk)

        async def accept_stalled() -> None:
            incoming = await server.accept_stream()
            assert isinstance(incoming, shell.MuxStream)
            incoming.accept()  # ...and never reads it
            streams[incoming.destination.port] = incoming

        stalled_sent = 0
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(accept_stalled)
            stalled = await client.open_stream("10.0.0.1", 1)
            tasks.start_soon(sink_busy)
            busy = await client.open_stream("10.0.0.2", 2)

            async def flood_stalled() -> None:
                nonlocal stalled_sent
                chunk = b"s" * (64 * KIB)
                while True:
                    await stalled.send(chunk)
                    stalled_sent += len(chunk)

            tasks.start_soon(flood_stalled)
            chunk = b"b" * (64 * KIB)
            for _ in range(320):  # 20 MiB through the busy stream
                await busy.send(chunk)
            await busy.send_eof()
            while delivered < 20 * MIB:
                await wait_all_tasks_blocked()
            assert delivered == 20 * MIB
            # The stalled stream's sender is held to its window, not the other way round.
            assert stalled_sent <= 256 * KIB + 64 * KIB
            tasks.cancel_scope.cancel()


async def _connected(
    transport: anyio.abc.ByteStream,
    *,
    task_status: anyio.abc.TaskStatus[shell.MuxConnection] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with shell.connect(transport) as connection:
        task_status.started(connection)
        await anyio.sleep_forever()


async def test_a_frame_whose_rest_does_not_come_does_not_hold_back_the_one_before() -> None:
    """A reader whose data has come goes on reading while the next frame is half there (its
    rest was written with it), but only for a moment: here the rest never comes, as when a
    segment is lost, and the complete frame before it is still delivered."""
    transport, far = memory_stream_pair()
    cores: list[mux.Connection] = []
    opened: list[int] = []

    async def far_end() -> None:
        core = await serve_handshake(far)
        cores.append(core)
        while True:
            while (event := core.next_event()) is not None:
                if isinstance(event, mux.StreamOpened):
                    core.accept_stream(event.stream_id)
                    await far.send(core.data_to_send())
                    opened.append(event.stream_id)
                    return
            core.receive_data(await far.receive(), monotonic())

    async with far, anyio.create_task_group() as tasks:
        tasks.start_soon(far_end)
        connection = await tasks.start(_connected, transport)
        stream = await connection.open_stream("10.0.0.1", 80)
        core = cores[0]
        assert core.send_data(opened[0], b"first") == 5
        assert core.send_data(opened[0], b"x" * 1000) == 1000
        frames = core.data_to_send()
        cut = 2 * mux.HEADER_SIZE + 5 + 500  # the first frame and half of the second
        await far.send(frames[:cut])
        with anyio.fail_after(5):
            assert await stream.receive() == b"first"
        await far.send(frames[cut:])
        with anyio.fail_after(5):
            assert await stream.receive() == b"x" * 1000
        await far.aclose()
        tasks.cancel_scope.cancel()


async def test_close_from_another_task_ends_a_receive_while_the_peer_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The receiving task reads the transport itself (the idle readers are held off, so it is
    # the only one); the peer sends nothing, so only the close can end that read, well
    # before a keepalive would.
    monkeypatch.setattr(shell._connection, "IDLE_READ_DELAY", 3600.0)
    async with connected(server=False) as (client, _, _):
        stream = await client.open_stream("10.0.0.1", 1, wait_accepted=False)
        failures: list[BaseException] = []

        async def receive() -> None:
            try:
                await stream.receive()
            except anyio.ClosedResourceError as error:
                failures.append(error)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(receive)
                await wait_all_tasks_blocked()
                assert client._reading
                await stream.aclose()
        assert len(failures) == 1


async def test_backpressure_reaches_the_sender() -> None:
    async with connected(server=False, chunks=4) as (client, server, transport):
        sent = 0

        async def flood() -> None:
            nonlocal sent
            chunk = b"p" * (64 * KIB)
            stream = await client.open_stream("10.0.0.1", 9, wait_accepted=False)
            while True:
                await stream.send(chunk)
                sent += len(chunk)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(flood)
            incoming = await server.accept_stream()
            assert isinstance(incoming, shell.MuxStream)
            await wait_all_tasks_blocked()
            before = sent
            assert 0 < before <= 256 * KIB  # one stream window, nothing more
            assert transport.bytes_sent <= 256 * KIB + 4 * KIB
            # Reading frees credit and the sender moves on.
            got = 0
            while got < 512 * KIB:
                got += len(await incoming.receive())
            await wait_all_tasks_blocked()
            assert sent > before
            tasks.cancel_scope.cancel()


async def test_stream_limit_makes_openers_wait_for_a_slot() -> None:
    settings = mux.Settings(max_concurrent_streams=2)
    async with connected(server_settings=settings) as (client, _, _):
        first = await client.open_stream("10.0.0.1", 7)
        second = await client.open_stream("10.0.0.1", 7)
        third: list[shell.MuxStream] = []

        async def open_third() -> None:
            third.append(await client.open_stream("10.0.0.1", 7))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(open_third)
            await wait_all_tasks_blocked()
            assert third == []
            await first.send_eof()
            async for _ in first:
                pass
            await first.aclose()
        assert len(third) == 1
        await second.aclose()
        await third[0].aclose()


async def test_ping_measures_a_round_trip() -> None:
    async with connected() as (client, server, _):
        assert await client.ping() >= 0
        assert await server.ping() >= 0
        assert client.rtt is not None


async def test_refused_credentials_fail_the_handshake() -> None:
    client_transport, server_transport = memory_stream_pair()

    async def refuse(credentials: bytes) -> None:
        raise shell.CredentialsRefused(f"token {credentials.decode()!r} is not valid")

    async def run_server() -> None:
        with pytest.raises(shell.HandshakeError):
            async with shell.accept(server_transport, authenticate=refuse):
                pytest.fail("the handshake should have failed")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_server)
        with pytest.raises(shell.HandshakeError) as caught:
            async with shell.connect(client_transport, credentials=b"stolen"):
                pytest.fail("the handshake should have failed")
    assert caught.value.reason is mux.ResetReason.POLICY
    assert "'stolen' is not valid" in str(caught.value)


async def test_drain_lets_open_streams_finish() -> None:
    async with connected() as (client, server, _):
        stream = await client.open_stream("10.0.0.1", 7)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.drain)
            await wait_all_tasks_blocked()
            # Refused by the draining server, or by the client if it has read the GO_AWAY.
            with pytest.raises(
                (anyio.ClosedResourceError, shell.StreamResetError), match="going away"
            ):
                await client.open_stream("10.0.0.1", 7)
            await stream.send(b"still served")
            assert await stream.receive() == b"still served"
            await stream.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
            await stream.aclose()
        ended = await client.wait_closed()
        assert ended.reason is mux.ResetReason.NO_ERROR


async def test_lost_transport_breaks_streams_with_the_cause() -> None:
    async with connected() as (client, _, transport):
        stream = await client.open_stream("10.0.0.1", 7)
        await transport._receive.aclose()  # the network drops the link under us
        with pytest.raises(shell.ConnectionLostError):
            await stream.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"x")
        with pytest.raises(shell.ConnectionLostError):
            await client.open_stream("10.0.0.1", 7)


async def test_leaving_the_context_releases_everything() -> None:
    client_transport, server_transport = memory_stream_pair()
    server_saw: list[BaseException] = []

    async def run_server() -> None:
        async with shell.accept(server_transport) as server:
            incoming = await server.accept_stream()
            incoming.accept()
            assert isinstance(incoming, shell.MuxStream)
            try:
                await incoming.receive()
            except anyio.BrokenResourceError as error:
                server_saw.append(error)
            await server.wait_closed()

    streams: list[shell.MuxStream] = []

    async def fail_with_a_stream_open() -> None:
        async with shell.connect(client_transport) as client:
            streams.append(await client.open_stream("10.0.0.1", 7))
            raise RuntimeError("the body failed")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_server)
        with pytest.raises(RuntimeError, match="the body failed"):
            await fail_with_a_stream_open()
    with pytest.raises(anyio.BrokenResourceError):
        await streams[0].send(b"the connection is gone")
    assert len(server_saw) == 1
    assert isinstance(server_saw[0], shell.StreamResetError)
    with pytest.raises(anyio.ClosedResourceError):
        await client_transport.send(b"transport is closed")


async def test_cancelled_open_leaves_nothing_behind() -> None:
    async with connected(server=False) as (client, server, _):
        with anyio.move_on_after(0):
            await client.open_stream("10.0.0.1", 7)  # the server never answers
        incoming = await server.accept_stream()
        with pytest.raises(shell.StreamResetError):
            await incoming.receive()
        assert client._core.stream_ids() == []


async def test_idle_connection_is_kept_alive_by_pings() -> None:
    # Regression: the timer slept until the pre-handshake idle deadline and sent no
    # keepalives, so an idle connection timed out after idle_timeout.
    settings = mux.Settings(keepalive_interval=0.1, idle_timeout=0.5)
    async with connected(client_settings=settings, server_settings=settings) as (client, server, _):
        await anyio.sleep(1.2)  # idle for more than twice the idle timeout
        assert client.terminated is None
        assert server.terminated is None
        stream = await client.open_stream("10.0.0.1", 7)
        await stream.send(b"still here")
        assert await stream.receive() == b"still here"
        await stream.aclose()
