"""Wire benchmark: the mux against raw TLS, between two processes over loopback.

The parent process is the client; it starts a peer process (this module with ``peer``) that
serves both a raw TLS port and a mux-over-TLS port, on the same event loop backend. In one
run it measures:

- bulk throughput, client to peer: raw TLS (the baseline), one mux stream, 64 mux streams;
- 64-byte request/response round trips: raw TLS and one mux stream.

The contenders' connections are opened once and take turns in short rounds, so that the
machine's slow spells (loopback TCP alone moves between 1.3 and 3 GB/s from one moment to
the next on the development VM) fall on all of them alike. Every transfer is checked: the
peer answers each round with the byte count it received, and the echo must return exactly
what was sent. Figures are MB/s (10^6 bytes per second) and microseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener, TLSStream

from benchmarks._stats import percentile
from telepresence.wire import shell, tls

if TYPE_CHECKING:
    import ssl

SINK_PORT = 1  # mux destination ports: what the peer does with a stream
ECHO_PORT = 2
CHUNK = 64 * 1024
#: What a sink asks for at once. Raw TLS hands over a record per read, 16 KiB at most (asking
#: more only makes CPython's ssl allocate a larger buffer and shrink it; the mux reads TLS the
#: same way); a mux stream hands over a frame's payload, 64 KiB at most.
RAW_READ = 16 * 1024
MUX_READ = 256 * 1024
MESSAGE = 64
COUNT = struct.Struct("!Q")
BACKENDS = ("asyncio", "uvloop", "trio")


def _run(backend: str, func: Any, *args: Any) -> Any:
    if backend == "trio":
        return anyio.run(func, *args, backend="trio")
    options = {"use_uvloop": backend == "uvloop"}
    return anyio.run(func, *args, backend="asyncio", backend_options=options)


# -- the peer process ------------------------------------------------------------------------


async def _receive_exactly(stream: anyio.abc.ByteReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return bytes(data)


async def _sink(stream: anyio.abc.ByteStream, read_size: int) -> None:
    """Rounds of bulk data: a length, that many bytes, answered with the count received. A
    length of 0 (or the end of the stream) ends them."""
    while True:
        try:
            header = await _receive_exactly(stream, COUNT.size)
        except anyio.EndOfStream:
            return
        (length,) = COUNT.unpack(header)
        if not length:
            return
        received = 0
        while received < length:
            received += len(await stream.receive(min(read_size, length - received)))
        await stream.send(COUNT.pack(received))


async def _echo(stream: anyio.abc.ByteStream) -> None:
    try:
        while True:
            await stream.send(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass


async def _raw_session(stream: anyio.abc.ByteStream) -> None:
    """Raw TLS: 'S' for rounds of bulk data (``_sink``), 'E' to echo until the client closes."""
    mode = await _receive_exactly(stream, 1)
    await (_sink(stream, RAW_READ) if mode == b"S" else _echo(stream))
    await stream.aclose()


async def _mux_stream(stream: shell.MuxStream | shell.MuxDatagramStream) -> None:
    assert isinstance(stream, shell.MuxStream)
    stream.accept()
    async with stream:
        await (_sink(stream, MUX_READ) if stream.destination.port == SINK_PORT else _echo(stream))


async def _mux_session(transport: anyio.abc.ByteStream) -> None:
    async with shell.accept(transport) as connection, anyio.create_task_group() as tasks:
        while True:
            try:
                stream = await connection.accept_stream()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            tasks.start_soon(_mux_stream, stream)


async def _peer(directory: str) -> None:
    material = Path(directory)
    identity = tls.Identity.load(material / "server.crt", material / "server.key")
    context = tls.server_context(identity)
    raw = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    mux = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    ports = {
        "raw": raw.extra(anyio.abc.SocketAttribute.local_port),
        "mux": mux.extra(anyio.abc.SocketAttribute.local_port),
    }
    print(json.dumps(ports), flush=True)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(TLSListener(raw, context, standard_compatible=False).serve, _raw_session)
        tasks.start_soon(TLSListener(mux, context, standard_compatible=False).serve, _mux_session)
        # The parent closes our stdin when it is done (or dies): then we stop.
        await anyio.to_thread.run_sync(sys.stdin.read)
        tasks.cancel_scope.cancel()


# -- the client: measurements ----------------------------------------------------------------


@dataclass
class Peer:
    raw_port: int
    mux_port: int
    context: ssl.SSLContext


async def _connect_tls(peer: Peer, port: int) -> TLSStream:
    tcp = await anyio.connect_tcp("127.0.0.1", port)
    return await TLSStream.wrap(
        tcp, hostname="localhost", ssl_context=peer.context, standard_compatible=False
    )


async def _send_round(streams: list[anyio.abc.ByteStream], size: int, chunk: bytes) -> int:
    """Send ``size`` bytes split over ``streams`` at once; returns the bytes the peer counted."""
    per_stream = max(CHUNK, size // len(streams) // CHUNK * CHUNK)  # 0 would end the sink
    counted = 0

    async def one(stream: anyio.abc.ByteStream) -> None:
        nonlocal counted
        await stream.send(COUNT.pack(per_stream))
        for _ in range(per_stream // CHUNK):
            await stream.send(chunk)
        (received,) = COUNT.unpack(await _receive_exactly(stream, COUNT.size))
        assert received == per_stream, f"peer received {received} of {per_stream} bytes"
        counted += received

    if len(streams) == 1:
        await one(streams[0])  # no task group: raw TLS and one mux stream are run alike
    else:
        async with anyio.create_task_group() as tasks:
            for stream in streams:
                tasks.start_soon(one, stream)
    return counted


async def _round_trips(stream: anyio.abc.ByteStream, count: int) -> list[float]:
    message = os.urandom(MESSAGE)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await stream.send(message)
        echoed = await _receive_exactly(stream, MESSAGE)
        samples.append(time.perf_counter() - start)
        assert echoed == message
    return samples


THROUGHPUT = ("raw", "mux_1", "mux_64")


async def _throughput(peer: Peer, size: int, rounds: int) -> dict[str, list[float]]:
    """Each contender's rate in every round, MB/s."""
    async with contextlib.AsyncExitStack() as stack:
        raw = await _connect_tls(peer, peer.raw_port)
        stack.push_async_callback(raw.aclose)
        await raw.send(b"S")
        streams: dict[str, list[anyio.abc.ByteStream]] = {"raw": [raw]}
        for name, count in (("mux_1", 1), ("mux_64", 64)):
            transport = await _connect_tls(peer, peer.mux_port)
            connection = await stack.enter_async_context(shell.connect(transport))
            streams[name] = [
                await connection.open_stream("127.0.0.1", SINK_PORT) for _ in range(count)
            ]
        # Warm up every path (TCP's buffers and the mux's windows grow on the first
        # megabytes). Then the contenders take turns, each round in a rotated order, so
        # that none always follows the same one.
        chunk = os.urandom(CHUNK)
        for name in THROUGHPUT:
            await _send_round(streams[name], size, chunk)
        rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT}
        for turn in range(rounds):
            first = turn % len(THROUGHPUT)
            for name in THROUGHPUT[first:] + THROUGHPUT[:first]:
                start = time.perf_counter()
                sent = await _send_round(streams[name], size, chunk)
                rates[name].append(sent / (time.perf_counter() - start) / 1e6)
        for stream in (stream for group in streams.values() for stream in group):
            await stream.send(COUNT.pack(0))
    return rates


async def _latency(peer: Peer, round_trips: int) -> tuple[list[float], list[float]]:
    """Round trips on raw TLS and on one mux stream, in alternating blocks, seconds."""
    async with contextlib.AsyncExitStack() as stack:
        raw = await _connect_tls(peer, peer.raw_port)
        stack.push_async_callback(raw.aclose)
        await raw.send(b"E")
        transport = await _connect_tls(peer, peer.mux_port)
        connection = await stack.enter_async_context(shell.connect(transport))
        mux = await connection.open_stream("127.0.0.1", ECHO_PORT)
        stack.push_async_callback(mux.aclose)
        raw_samples: list[float] = []
        mux_samples: list[float] = []
        block = max(1, round_trips // 10)
        for start in range(0, round_trips, block):
            count = min(block, round_trips - start)
            raw_samples += await _round_trips(raw, count)
            mux_samples += await _round_trips(mux, count)
    return raw_samples, mux_samples


async def _measure(peer: Peer, size: int, round_trips: int, rounds: int) -> dict[str, float]:
    rates = await _throughput(peer, size, rounds)
    raw_samples, mux_samples = await _latency(peer, round_trips)
    return {
        "raw_tls_MBps": statistics.median(rates["raw"]),
        "mux_1_MBps": statistics.median(rates["mux_1"]),
        "mux_64_MBps": statistics.median(rates["mux_64"]),
        "raw_rtt_p50_us": percentile(raw_samples, 0.5) * 1e6,
        "raw_rtt_p99_us": percentile(raw_samples, 0.99) * 1e6,
        "mux_rtt_p50_us": percentile(mux_samples, 0.5) * 1e6,
        "mux_rtt_p99_us": percentile(mux_samples, 0.99) * 1e6,
        "raw_tls_MBps_best": max(rates["raw"]),
        "mux_1_MBps_best": max(rates["mux_1"]),
        "mux_64_MBps_best": max(rates["mux_64"]),
    }


def _make_material(directory: Path) -> ssl.SSLContext:
    authority = tls.create_ca("tpmux benchmark CA")
    server = tls.issue_certificate(
        authority, "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    server.save(directory / "server.crt", directory / "server.key")
    return tls.client_context(authority.certificate)


def _pin(pid: int, cpu: int) -> None:
    """Keep a process on one core: left to the scheduler, the two processes trade places
    between cores and raw TLS alone varied by half between runs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(pid, {cpus[cpu]})


def run(backend: str, size: int, round_trips: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tpmux-bench-") as directory:
        context = _make_material(Path(directory))
        command = [sys.executable, "-m", "benchmarks.wire", "peer", backend, directory]
        allowed = os.sched_getaffinity(0)
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
            try:
                _pin(child.pid, 1)
                _pin(0, 0)
                assert child.stdout is not None
                ports = json.loads(child.stdout.readline())
                peer = Peer(ports["raw"], ports["mux"], context)
                figures = _run(backend, _measure, peer, size, round_trips, rounds)
            finally:
                os.sched_setaffinity(0, allowed)
                assert child.stdin is not None
                child.stdin.close()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    return {"backend": backend, "bytes": size, "round_trips": round_trips, **figures}


def _targets(figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    raw = figures["raw_tls_MBps"]
    one, many = figures["mux_1_MBps"], figures["mux_64_MBps"]
    added = figures["mux_rtt_p50_us"] - figures["raw_rtt_p50_us"]
    return [
        ("mux_1_MBps >= 0.6 x raw_tls_MBps", f"{one / raw:.2f} x", one >= 0.6 * raw),
        ("mux_64_MBps >= 0.6 x raw_tls_MBps", f"{many / raw:.2f} x", many >= 0.6 * raw),
        ("mux_rtt_p50_us <= raw_rtt_p50_us + 60", f"+{added:.0f} us", added <= 60),
    ]


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tpmux over loopback TLS, two processes")
    table.add_column("backend")
    table.add_column("raw TLS MB/s", justify="right")
    table.add_column("mux 1 stream MB/s", justify="right")
    table.add_column("mux 64 streams MB/s", justify="right")
    table.add_column("raw RTT p50/p99 us", justify="right")
    table.add_column("mux RTT p50/p99 us", justify="right")
    for figures in results:
        table.add_row(
            figures["backend"],
            f"{figures['raw_tls_MBps']:.0f}",
            f"{figures['mux_1_MBps']:.0f}",
            f"{figures['mux_64_MBps']:.0f}",
            f"{figures['raw_rtt_p50_us']:.0f} / {figures['raw_rtt_p99_us']:.0f}",
            f"{figures['mux_rtt_p50_us']:.0f} / {figures['mux_rtt_p99_us']:.0f}",
        )
    console = Console()
    console.print(table)
    targets = Table(title="targets (issue 2)")
    targets.add_column("backend")
    targets.add_column("target")
    targets.add_column("measured", justify="right")
    targets.add_column("met")
    for figures in results:
        for name, measured, met in _targets(figures):
            targets.add_row(figures["backend"], name, measured, "yes" if met else "NO")
    console.print(targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks wire", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "all"),
        default="all",
        help="event loop for both processes (default: each in turn)",
    )
    parser.add_argument(
        "--mib", type=int, default=64, help="MiB each throughput contender sends per round"
    )
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument(
        "--rounds", type=int, default=12, help="turns of each contender; the median is reported"
    )
    args = parser.parse_args(argv)
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    results = [run(b, args.mib * 1024 * 1024, args.round_trips, args.rounds) for b in backends]
    print_table(results)
    if args.json:
        # The headline keys are those of the first backend (asyncio, the daemons' default
        # loop family); every backend's figures are kept under "backends".
        document = {**results[0], "backends": results}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "peer":
        _run(sys.argv[2], _peer, sys.argv[3])
    else:
        sys.exit(main())
