"""Relays benchmark: what Python processes in a TCP path cost at the least, on this machine.

``python -m benchmarks relays [--json FILE] [--round-trips N] [--connections N]``

Telepresence's outbound path has two Python processes in every connection: the root daemon
(the kernel redirects the program's connection to it) and the traffic-manager (which dials
the destination). This benchmark measures the floor under that design: the same measuring
client, on loopback, to an echo server (uvloop), directly and through one and two *bare*
relays, each a uvloop process that only copies bytes between two sockets (no TLS, no mux, no
redirect, no network namespace). Figures, in one run:

- 64-byte round trips on one connection, p50 and p99 (microseconds);
- new connections per second (connect, one byte there and back, close; 8 at a time).

What two bare relays add is the least that any design with two Python hops pays here; the
connect benchmark's targets for Telepresence's round trip (baseline + 150 µs) and new
connections (3 x sshuttle) can be read against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._stats import percentile

MESSAGE = 64
PARALLEL = 8

_relaying: set[asyncio.Task[Any] | None] = set()


# -- the servers: echo and relay, each a process of its own ---------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(262144):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except OSError:
        writer.transport.abort()


def _relay_to(port: int) -> Any:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        _relaying.add(task)  # held: asyncio keeps only weak references to tasks
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", port)
            for side in (writer, target_writer):
                raw = side.get_extra_info("socket")
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))
            writer.close()
            target_writer.close()
        finally:
            _relaying.discard(task)

    return relay


def _serve(kind: str, target: int) -> None:
    import uvloop  # the servers' event loop; the parent needs none

    async def main() -> None:
        handler = _echo if kind == "echo" else _relay_to(target)
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        # The parent closes our stdin when it is done (or dies): then we stop, at once (the
        # relays' last connections may still be winding down; nothing here needs closing).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        sys.stdout.flush()
        os._exit(0)

    uvloop.run(main())


class _Server:
    def __init__(self, kind: str, target: int = 0) -> None:
        command = [sys.executable, "-m", "benchmarks.relays", "serve", kind, str(target)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the client -------------------------------------------------------------------------------


def _round_trips(port: int, count: int) -> list[float]:
    message = os.urandom(MESSAGE)
    samples = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(message)
            echoed = b""
            while len(echoed) < MESSAGE:
                echoed += sock.recv(MESSAGE - len(echoed))
            samples.append(time.perf_counter() - start)
            assert echoed == message
    return samples


def _connections_per_second(port: int, count: int) -> float:
    async def worker(share: int) -> None:
        for _ in range(share):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            writer.close()
            await writer.wait_closed()

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(worker(count // PARALLEL) for _ in range(PARALLEL)))
        return count // PARALLEL * PARALLEL / (time.perf_counter() - start)

    return asyncio.run(main())


def measure(round_trips: int, connections: int, repeat: int) -> dict[str, Any]:
    echo = _Server("echo")
    servers = [echo]
    try:
        ports = {"direct": echo.port}
        for hops in ("1_relay", "2_relays"):
            relay = _Server("relay", servers[-1].port)
            servers.append(relay)
            ports[hops] = relay.port
        runs: dict[str, dict[str, list[float]]] = {path: {} for path in ports}
        for _ in range(repeat):  # interleaved, so that the paths meet the machine alike
            for path, port in ports.items():
                samples = _round_trips(port, round_trips)
                figures = runs[path]
                figures.setdefault("rtt_p50_us", []).append(percentile(samples, 0.5) * 1e6)
                figures.setdefault("rtt_p99_us", []).append(percentile(samples, 0.99) * 1e6)
                rate = _connections_per_second(port, connections)
                figures.setdefault("conn_per_s", []).append(rate)
    finally:
        for server in reversed(servers):
            server.stop()
    result: dict[str, Any] = {"round_trips": round_trips, "connections": connections}
    for path, figures in runs.items():
        for name, values in figures.items():
            result[f"{path}_{name}"] = round(statistics.median(values), 1)
    for path in ("1_relay", "2_relays"):
        added = result[f"{path}_rtt_p50_us"] - result["direct_rtt_p50_us"]
        result[f"{path}_added_rtt_p50_us"] = round(added, 1)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "bare Python relays on loopback (uvloop), medians",
        f"{'':28}{'direct':>10}{'1 relay':>10}{'2 relays':>10}",
    ]
    for name, label in (
        ("rtt_p50_us", "64 B round trip p50, us"),
        ("rtt_p99_us", "64 B round trip p99, us"),
        ("conn_per_s", "new connections/s"),
    ):
        cells = "".join(
            f"{result[f'{path}_{name}']:>10,.0f}" for path in ("direct", "1_relay", "2_relays")
        )
        lines.append(f"{label:28}{cells}")
    lines.append(
        f"added to the round trip p50 by 1 relay: {result['1_relay_added_rtt_p50_us']:.0f} us, "
        f"by 2 relays: {result['2_relays_added_rtt_p50_us']:.0f} us"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        _serve(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks relays", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median")
    args = parser.parse_args(argv)
    result = measure(args.round_trips, args.connections, args.repeat)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
