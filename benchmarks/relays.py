"""Relays benchmark: what Python processes in a TCP path cost at the least, on this machine.

``python -m benchmarks relays [--json FILE] [--round-trips N] [--connections N]``

Telepresence's outbound path has two Python processes in every connection: the root daemon
(the kernel redirects the program's connection to it) and the traffic-manager (which dials
the destination). This benchmark measures the floor under that design: the same measuring
client, on loopback, to an echo server (uvloop), directly and through one and two *bare*
relays, each a uvloop process that only copies bytes between two sockets (no TLS, no mux, no
redirect, no network namespace), and through two bare relays that talk TLS to each other (the
event loop's own TLS, one TLS connection per client connection: the architecture's TLS link
between the root daemon and the manager, without a mux). Figures, in one run:

- 64-byte round trips on one connection, p50 and p99 (microseconds);
- new connections per second (connect, one byte there and back, close; 8 at a time); not
  through the TLS relays, whose every connection would pay a TLS handshake that a mux pays
  once;
- MB/s through one connection, sent while the echo is read back and checked by hash: the
  connect benchmark's own measuring code (``manager_client.throughput``).

What two bare relays add is the least that any design with two Python hops pays here, and
the TLS relays the least with the TLS link as well; the connect benchmark's targets for
Telepresence's round trip (baseline + 150 µs), new connections (3 x sshuttle) and MB/s (20 x
sshuttle) can be read against them.
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
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from benchmarks._stats import percentile
from benchmarks.manager_client import throughput
from telepresence.wire import tls

if TYPE_CHECKING:
    import ssl

MESSAGE = 64
PARALLEL = 8
PATHS = ("direct", "1_relay", "2_relays", "2_tls_relays")
LABELS = {"direct": "direct", "1_relay": "1 relay", "2_relays": "2 relays", "2_tls_relays": "2 TLS"}

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
        if writer.can_write_eof():  # the loop's TLS transports cannot half-close
            writer.write_eof()
    except OSError:
        writer.transport.abort()


def _relay_to(port: int, context: ssl.SSLContext | None = None) -> Any:
    """A relay to ``port``, over TLS when given a client ``context``."""
    hostname = "localhost" if context is not None else None

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        _relaying.add(task)  # held: asyncio keeps only weak references to tasks
        try:
            target_reader, target_writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname=hostname
            )
            for side in (writer, target_writer):
                raw = side.get_extra_info("socket")
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))
            writer.close()
            target_writer.close()
        finally:
            _relaying.discard(task)

    return relay


def _serve(kind: str, target: int, material: str) -> None:
    """Serve ``kind``: ``echo``, ``relay`` (plain both sides), ``tls-out`` (plain in, TLS to
    the target) or ``tls-in`` (TLS in, plain to the target), with the TLS files in
    ``material``."""
    import uvloop  # the servers' event loop; the parent needs none

    folder = Path(material)
    client = server_context = None
    if kind == "tls-out":
        authority = tls.Identity.load(folder / "ca.crt", folder / "ca.key")
        client = tls.client_context(authority.certificate)
    elif kind == "tls-in":
        identity = tls.Identity.load(folder / "server.crt", folder / "server.key")
        server_context = tls.server_context(identity)

    async def main() -> None:
        handler = _echo if kind == "echo" else _relay_to(target, client)
        server = await asyncio.start_server(
            handler, "127.0.0.1", 0, backlog=1024, ssl=server_context
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        # The parent closes our stdin when it is done (or dies): then we stop, at once (the
        # relays' last connections may still be winding down; nothing here needs closing).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        sys.stdout.flush()
        os._exit(0)

    uvloop.run(main())


class _Server:
    def __init__(self, kind: str, material: Path, target: int = 0) -> None:
        command = [sys.executable, "-m", "benchmarks.relays", "serve", kind, str(target)]
        command.append(str(material))
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


def _throughput(port: int, mib: int) -> float:
    async def open_stream() -> anyio.abc.ByteStream:
        return await anyio.connect_tcp("127.0.0.1", port)

    return anyio.run(throughput, open_stream, mib * 1024 * 1024)


def _make_material(folder: Path) -> None:
    authority = tls.create_ca("relays benchmark CA")
    authority.save(folder / "ca.crt", folder / "ca.key")
    server = tls.issue_certificate(
        authority, "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    server.save(folder / "server.crt", folder / "server.key")


def measure(round_trips: int, connections: int, mib: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relays-bench-") as folder:
        material = Path(folder)
        _make_material(material)
        echo = _Server("echo", material)
        servers = [echo]
        try:
            ports = {"direct": echo.port}
            for hops in ("1_relay", "2_relays"):
                relay = _Server("relay", material, servers[-1].port)
                servers.append(relay)
                ports[hops] = relay.port
            tls_in = _Server("tls-in", material, echo.port)
            tls_out = _Server("tls-out", material, tls_in.port)
            servers += [tls_in, tls_out]
            ports["2_tls_relays"] = tls_out.port
            runs = _measure_paths(ports, round_trips, connections, mib, repeat)
        finally:
            for server in reversed(servers):
                server.stop()
    result: dict[str, Any] = {"round_trips": round_trips, "connections": connections, "mib": mib}
    for path, figures in runs.items():
        for name, values in figures.items():
            result[f"{path}_{name}"] = round(statistics.median(values), 1)
    for path in PATHS[1:]:
        added = result[f"{path}_rtt_p50_us"] - result["direct_rtt_p50_us"]
        result[f"{path}_added_rtt_p50_us"] = round(added, 1)
    return result


def _measure_paths(
    ports: dict[str, int], round_trips: int, connections: int, mib: int, repeat: int
) -> dict[str, dict[str, list[float]]]:
    runs: dict[str, dict[str, list[float]]] = {path: {} for path in ports}
    for _ in range(repeat):  # interleaved, so that the paths meet the machine alike
        for path, port in ports.items():
            samples = _round_trips(port, round_trips)
            figures = runs[path]
            figures.setdefault("rtt_p50_us", []).append(percentile(samples, 0.5) * 1e6)
            figures.setdefault("rtt_p99_us", []).append(percentile(samples, 0.99) * 1e6)
            if path != "2_tls_relays":
                rate = _connections_per_second(port, connections)
                figures.setdefault("conn_per_s", []).append(rate)
            if mib:
                figures.setdefault("MBps", []).append(_throughput(port, mib))
    return runs


def table(result: dict[str, Any]) -> str:
    lines = [
        "bare Python relays on loopback (uvloop), medians",
        f"{'':28}" + "".join(f"{LABELS[path]:>10}" for path in PATHS),
    ]
    for name, label in (
        ("rtt_p50_us", "64 B round trip p50, us"),
        ("rtt_p99_us", "64 B round trip p99, us"),
        ("conn_per_s", "new connections/s"),
        ("MBps", "1 connection MB/s (echoed)"),
    ):
        cells = "".join(
            f"{result[key]:>10,.0f}" if (key := f"{path}_{name}") in result else f"{'-':>10}"
            for path in PATHS
        )
        lines.append(f"{label:28}{cells}")
    added = ", ".join(
        f"{LABELS[path]}: {result[f'{path}_added_rtt_p50_us']:.0f} us" for path in PATHS[1:]
    )
    lines.append(f"added to the round trip p50 by {added}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        _serve(argv[1], int(argv[2]), argv[3])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks relays", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=256, help="MiB per throughput run; 0: none")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median")
    args = parser.parse_args(argv)
    result = measure(args.round_trips, args.connections, args.mib, args.repeat)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
