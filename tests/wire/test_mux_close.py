"""Closing a mux connection over real TCP on loopback, with and without TLS, on asyncio,
uvloop and trio: the end that closes first must not reset the connection under the other.

A socket closed while the peer still writes to it (or with bytes it never read) answers
with a TCP reset. The peer then fails its next write, and loses whatever it had received and
not read yet: here, the last frames sent before the GO_AWAY. So the closing end half-closes,
reads what still comes, and closes once the peer has closed too.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from time import monotonic
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from telepresence.wire import shell
from tests.wire.loopback_tls import localhost_contexts
from tests.wire.mux_pair import serve_handshake

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

type Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return localhost_contexts("Mux close test CA")


@pytest.fixture(params=["tcp", "tls"])
def secure(
    request: pytest.FixtureRequest, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    return contexts if request.param == "tls" else None


@asynccontextmanager
async def serving(
    handler: Handler, secure: tuple[ssl.SSLContext, ssl.SSLContext] | None
) -> AsyncIterator[Callable[[], Awaitable[anyio.abc.ByteStream]]]:
    """Serve ``handler`` on a loopback port; yield a function that dials it."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        if secure is not None:
            stream = await TLSStream.wrap(
                stream, server_side=True, ssl_context=secure[0], standard_compatible=False
            )
        await handler(stream)

    async def dial() -> anyio.abc.ByteStream:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", port)
        if secure is not None:
            stream = await TLSStream.wrap(
                stream, hostname="localhost", ssl_context=secure[1], standard_compatible=False
            )
        return stream

    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield dial
        tasks.cancel_scope.cancel()


async def test_closing_end_is_not_reset_by_a_peer_that_still_writes() -> None:
    """The peer here is the sans-I/O core on plain TCP. It keeps writing pings while the
    shell's end closes; once it sees the end of the stream it writes twice more, a moment
    apart (the first write into a closed socket draws the reset, the second would fail on
    it). None of its writes may fail, and it sees a clean end. (Over TLS the peer could not
    write after the end at all: OpenSSL ends the session at an EOF without close_notify.)"""
    seen: list[str] = []

    async def peer(stream: anyio.abc.ByteStream) -> None:
        try:
            core = await serve_handshake(stream)

            async def keep_writing() -> None:
                while True:
                    core.ping(monotonic())
                    await stream.send(core.data_to_send())
                    await anyio.sleep(0.001)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keep_writing)
                try:
                    while True:
                        core.receive_data(await stream.receive(), monotonic())
                except anyio.EndOfStream:
                    seen.append("end")
                tasks.cancel_scope.cancel()
            for _ in range(2):
                core.ping(monotonic())
                await stream.send(core.data_to_send())
                await anyio.sleep(0.05)
            seen.append("wrote after the end")
        except (anyio.BrokenResourceError, OSError) as error:
            seen.append(f"failed: {error!r} {error.__cause__!r}")
        finally:
            await stream.aclose()

    async with serving(peer, None) as dial:
        transport = await dial()
        async with shell.connect(transport) as connection:
            await connection.ping()
            await anyio.sleep(0.02)  # pings arrive from the peer meanwhile
        # Leaving the context waits for the peer's close, so its verdict is in.
    assert seen == ["end", "wrote after the end"]


async def test_what_was_sent_before_closing_reaches_a_busy_peer(
    secure: tuple[ssl.SSLContext, ssl.SSLContext] | None,
) -> None:
    """Streams whose far ends keep writing: the opener sends a last message on each and
    leaves the connection without reading. Every far end gets its last message. (The loss
    needs a far end that has not read the bytes yet when the reset comes, which this test
    cannot arrange every time; the wire benchmark's peer, busy at full speed, met it in
    about half of its runs. The test above is the one that fails without the half-close.)"""
    streams = 16
    last: list[bytes] = []
    lost: list[str] = []
    all_ended = anyio.Event()

    async def far_end(stream: shell.MuxStream | shell.MuxDatagramStream) -> None:
        assert isinstance(stream, shell.MuxStream)
        stream.accept()
        received = b""
        try:
            async with anyio.create_task_group() as tasks:

                async def chatter() -> None:
                    while True:
                        await stream.send(b"x" * 1024)
                        await anyio.lowlevel.checkpoint()

                tasks.start_soon(chatter)
                try:
                    while b"bye" not in received:
                        received += await stream.receive()
                finally:
                    tasks.cancel_scope.cancel()
            last.append(received)
        except shell.ConnectionLostError as error:
            lost.append(str(error))
        except anyio.BrokenResourceError:
            last.append(received)  # the opener's reset, after its message
        finally:
            await stream.aclose()
            if len(last) + len(lost) == streams:
                all_ended.set()

    async def server(transport: anyio.abc.ByteStream) -> None:
        async with shell.accept(transport) as connection, anyio.create_task_group() as tasks:
            while True:
                try:
                    tasks.start_soon(far_end, await connection.accept_stream())
                except (anyio.EndOfStream, shell.ConnectionLostError):
                    return

    async with serving(server, secure) as dial:
        transport = await dial()
        async with shell.connect(transport) as connection:
            opened = [await connection.open_stream("127.0.0.1", 7) for _ in range(streams)]
            for stream in opened:
                await stream.receive()  # the far end is writing
            for stream in opened:
                await stream.send(b"bye")
        with anyio.fail_after(10):
            await all_ended.wait()
    assert lost == []
    assert all(received.endswith(b"bye") for received in last)
