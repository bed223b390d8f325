"""The mux shell between two processes over mutual TLS on loopback, on asyncio, uvloop and trio.

The far side is ``tests/wire/mux_peer.py`` in a process of its own, run on the same backend
as the test (and, for echo, on every backend against every other). What it does with a
stream depends on the destination port; see that module.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

from telepresence.wire import mux, shell, tls
from tests.wire import mux_peer
from tests.wire.mux_peer import (
    ECHO_PORT,
    GOOD_TOKEN,
    REFUSING_PORT,
    SINK_PORT,
    STALLED_PORT,
    UDP_ECHO_PORT,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Sequence

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB
ROOT = Path(__file__).resolve().parents[2]
#: Seconds a test may take before it fails instead of hanging; each takes about half a second.
#: It is below the mux's keepalive interval (10 s), so a transfer that stalls on a lost
#: wake-up fails here instead of being rescued by the next PING.
DEADLINE = 8
#: Seconds the peer gets to start, and to exit once its stdin closes.
PEER_DEADLINE = 10


@dataclass(frozen=True)
class Material:
    directory: Path
    client_context: ssl.SSLContext


@dataclass
class Peer:
    process: anyio.abc.Process
    port: int
    killed: bool = False

    def kill(self) -> None:
        """SIGKILL: the process vanishes without closing anything itself."""
        self.process.kill()
        self.killed = True


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    directory = tmp_path_factory.mktemp("mux-peer-tls")
    ca = tls.create_ca("Mux process test CA")
    server = tls.issue_certificate(
        ca, "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    client = tls.issue_certificate(ca, "mux-test-client", client=True)
    server.save(directory / "server.crt", directory / "server.key")
    (directory / "ca.crt").write_bytes(ca.certificate_pem)
    context = tls.client_context(ca.certificate, identity=client, alpn=mux_peer.ALPN)
    return Material(directory, context)


@pytest.fixture
def peer_backend(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    """The peer runs on the test's own backend unless a test parametrizes this."""
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else name


@pytest.fixture
async def peer(peer_backend: str, material: Material, tmp_path: Path) -> AsyncIterator[Peer]:
    async with running_peer(peer_backend, material.directory, tmp_path / "peer.stderr") as ran:
        yield ran


@asynccontextmanager
async def running_peer(backend: str, material: Path, stderr_path: Path) -> AsyncIterator[Peer]:
    """Start the peer, yield it once it listens, and always stop it. A peer that was not
    killed must exit with status 0 and write nothing to stderr (no traceback, no warning)."""
    command = [sys.executable, "-W", "error", "-m", "tests.wire.mux_peer", backend, str(material)]
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT
        )
    peer: Peer | None = None
    try:
        assert process.stdout is not None
        try:
            with anyio.fail_after(PEER_DEADLINE):
                line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1024)
        except anyio.IncompleteRead:
            pass  # it exited: reported below, with its stderr
        else:
            peer = Peer(process, json.loads(line)["port"])
            yield peer
    finally:
        with anyio.CancelScope(shield=True):
            await stop(process)
    errors = await anyio.Path(stderr_path).read_text()
    if peer is None:
        pytest.fail(f"the peer exited with {process.returncode} before listening:\n{errors}")
    if not peer.killed:
        assert (process.returncode, errors) == (0, "")


async def stop(process: anyio.abc.Process) -> None:
    """Close the peer's stdin, which tells it to exit; kill it if it does not."""
    if process.stdin is not None:
        await process.stdin.aclose()
    with anyio.move_on_after(PEER_DEADLINE):
        await process.wait()
    if process.returncode is None:
        process.kill()
    await process.aclose()


@asynccontextmanager
async def mux_connection(
    peer: Peer, material: Material, *, credentials: bytes = GOOD_TOKEN
) -> AsyncIterator[shell.MuxConnection]:
    tcp = await anyio.connect_tcp("127.0.0.1", peer.port)
    try:
        transport = await TLSStream.wrap(
            tcp, hostname="localhost", ssl_context=material.client_context
        )
    except BaseException:
        await anyio.aclose_forcefully(tcp)
        raise
    async with shell.connect(transport, credentials=credentials) as connection:
        yield connection


async def receive_all(stream: shell.MuxStream) -> bytes:
    received = bytearray()
    async for chunk in stream:
        received += chunk
    return bytes(received)


async def exchange(stream: shell.MuxStream, chunks: Sequence[bytes]) -> bytes:
    """Send the chunks and EOF while reading what comes back, up to the peer's EOF."""

    async def write() -> None:
        for chunk in chunks:
            await stream.send(chunk)
        await stream.send_eof()

    received = bytearray()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write)
        async for chunk in stream:
            received += chunk
    return bytes(received)


async def send_random(stream: shell.MuxStream, size: int, seed: int) -> str:
    """Send ``size`` random bytes (in 1 MiB writes) and EOF; returns their sha256."""
    source = random.Random(seed)
    digest = hashlib.sha256()
    for _ in range(size // MIB):
        chunk = source.randbytes(MIB)
        digest.update(chunk)
        await stream.send(chunk)
    await stream.send_eof()
    return digest.hexdigest()


@pytest.mark.parametrize("peer_backend", mux_peer.BACKENDS, ids=lambda name: f"peer-{name}")
async def test_concurrent_streams_echo_their_own_bytes(peer: Peer, material: Material) -> None:
    async def one(connection: shell.MuxConnection, index: int) -> None:
        stream = await connection.open_stream("127.0.0.1", ECHO_PORT)
        chunks = [hashlib.sha256(f"{index}/{part}".encode()).digest() * 2048 for part in range(4)]
        assert await exchange(stream, chunks) == b"".join(chunks)  # 256 KiB, then the EOF
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.aclose()

    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection, anyio.create_task_group() as tg:
            for index in range(32):
                tg.start_soon(one, connection, index)


async def test_bulk_transfer_arrives_whole(peer: Peer, material: Material) -> None:
    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection:
            stream = await connection.open_stream("127.0.0.1", SINK_PORT)
            digest = await send_random(stream, 64 * MIB, seed=64)
            report = json.loads(await receive_all(stream))
            assert report == {"bytes": 64 * MIB, "sha256": digest}
            await stream.aclose()


async def test_refused_destination_raises_with_the_reason(peer: Peer, material: Material) -> None:
    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection:
            with pytest.raises(shell.StreamResetError) as caught:
                await connection.open_stream("127.0.0.1", REFUSING_PORT)
            assert caught.value.reason is mux.ResetReason.REFUSED
            assert caught.value.message == "connection refused"
            assert caught.value.remote
            # The connection is unharmed.
            stream = await connection.open_stream("127.0.0.1", ECHO_PORT)
            assert await exchange(stream, [b"still here"]) == b"still here"
            await stream.aclose()


async def test_udp_datagrams_keep_their_boundaries(peer: Peer, material: Material) -> None:
    datagrams = [b"a", b"", b"query" * 240, bytes(range(256)) * 255 + b"x" * 227]  # 65507
    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection:
            flow = await connection.open_datagram_stream("10.96.0.10", UDP_ECHO_PORT)
            for datagram in datagrams:
                await flow.send(datagram)
            assert [await flow.receive() for _ in datagrams] == datagrams
            assert flow.dropped == 0
            await flow.aclose()


async def test_stalled_reader_does_not_stop_another_stream(peer: Peer, material: Material) -> None:
    window = mux.FlowSettings().initial_window
    stalled_sent = 0
    window_full = anyio.Event()

    async def flood(stalled: shell.MuxStream) -> None:
        nonlocal stalled_sent
        while True:
            await stalled.send(b"s" * (64 * KIB))
            stalled_sent += 64 * KIB
            if stalled_sent >= window:
                window_full.set()

    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection, anyio.create_task_group() as tg:
            tg.start_soon(flood, await connection.open_stream("127.0.0.1", STALLED_PORT))
            await window_full.wait()  # the stalled stream holds all its credit, unread
            busy = await connection.open_stream("127.0.0.1", SINK_PORT)
            digest = await send_random(busy, 16 * MIB, seed=16)
            report = json.loads(await receive_all(busy))
            assert report == {"bytes": 16 * MIB, "sha256": digest}
            # The stalled stream's sender was held to its window the whole time.
            assert stalled_sent == window
            tg.cancel_scope.cancel()


async def test_wrong_credentials_fail_the_handshake(peer: Peer, material: Material) -> None:
    with anyio.fail_after(DEADLINE):
        with pytest.raises(shell.HandshakeError) as caught:
            async with mux_connection(peer, material, credentials=b"stolen-token"):
                pytest.fail("the handshake should have failed")
        assert caught.value.reason is mux.ResetReason.POLICY
        assert caught.value.message == "token not accepted"
        # The peer turned one client away and serves the next.
        async with mux_connection(peer, material) as connection:
            stream = await connection.open_stream("127.0.0.1", ECHO_PORT)
            assert await exchange(stream, [b"let me in"]) == b"let me in"
            await stream.aclose()


async def test_killed_peer_breaks_open_streams(peer: Peer, material: Material) -> None:
    flowing = anyio.Event()
    flood_errors: list[Exception] = []

    async def flood(stream: shell.MuxStream) -> None:
        sent = 0
        try:
            while True:
                await stream.send(b"f" * (64 * KIB))
                sent += 64 * KIB
                if sent >= 4 * MIB:
                    flowing.set()
        except anyio.BrokenResourceError as error:
            flood_errors.append(error)

    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection:
            echo = await connection.open_stream("127.0.0.1", ECHO_PORT)
            await echo.send(b"ping")
            assert await echo.receive() == b"ping"
            async with anyio.create_task_group() as tg:
                tg.start_soon(flood, await connection.open_stream("127.0.0.1", SINK_PORT))
                await flowing.wait()
                peer.kill()
                with pytest.raises(shell.ConnectionLostError):
                    await echo.receive()
            assert len(flood_errors) == 1
            assert isinstance(flood_errors[0], shell.ConnectionLostError)
            with pytest.raises(shell.ConnectionLostError):
                await echo.send(b"anyone there?")
            with pytest.raises(shell.ConnectionLostError):
                await connection.open_stream("127.0.0.1", ECHO_PORT)
    assert await peer.process.wait() == -signal.SIGKILL


async def test_peer_serves_on_after_a_client_left_with_streams_open(
    peer: Peer, material: Material
) -> None:
    with anyio.fail_after(DEADLINE):
        async with mux_connection(peer, material) as connection:
            echo = await connection.open_stream("127.0.0.1", ECHO_PORT)
            await echo.send(b"half a conversation")
            assert await echo.receive() == b"half a conversation"
            stalled = await connection.open_stream("127.0.0.1", STALLED_PORT)
            await stalled.send(b"never read")
            sink = await connection.open_stream("127.0.0.1", SINK_PORT)
            await sink.send(b"z" * MIB)
            flow = await connection.open_datagram_stream("10.96.0.10", UDP_ECHO_PORT)
            await flow.send(b"query")
        for stream in (echo, stalled, sink):
            with pytest.raises(anyio.BrokenResourceError):
                await stream.send(b"after the connection ended")
        async with mux_connection(peer, material) as again:
            stream = await again.open_stream("127.0.0.1", ECHO_PORT)
            assert await exchange(stream, [b"hello again"]) == b"hello again"
            await stream.aclose()
