"""The measuring program of ``python -m benchmarks connect``: one path to the cluster, measured.

    python -m benchmarks.connect_paths tcp --host 10.244.0.5
    python -m benchmarks.connect_paths tcp --host 10.244.0.5 --socks 127.0.0.1:1080
    python -m benchmarks.connect_paths dns --name tcp-echo.default.svc.cluster.local \\
        --expect 10.96.0.2 --fresh 10-244-{}.default.pod.cluster.local
    python -m benchmarks.connect_paths hold --host tcp-echo.default --count 10000

It runs where a program on the laptop runs (the workstation namespace, its
``/etc/resolv.conf``), and does what any program does: ``connect()`` to an address and
``getaddrinfo()`` a name. Which path carries the bytes (a route straight into the cluster
network, sshuttle's nftables redirect, Telepresence's VIF) is decided outside, by the
workstation's routes and firewall, so the same code measures every path. Only ``--socks``
opens its connections differently: through a SOCKS5 proxy.

``tcp`` prints one JSON object, measured against a ``sandbox/tcp-echo`` server with the
functions of ``benchmarks/manager_client.py``:

- ``MBps``: one connection, ``--mib`` MiB sent while the echo is read back (payload MB/s in
  one direction), checked by hash; ``MBps_8``: the same amount split over ``--parallel``
  connections at once, their aggregate (``--mib 0`` skips both); ``MBps_client_cpu`` and
  ``MBps_8_client_cpu``: this program's share of a core meanwhile (hashing both ways and
  anyio's streams cost it about a core at 300 MB/s, so near 1.0 the client is the limit);
- ``conn_per_s``: new connections (connect, one byte there and back, close), 8 at a time;
  with a name for ``--host`` every connection resolves it, as a program would;
- ``rtt_p50_us`` / ``rtt_p99_us``: 64-byte round trips on one connection.

``dns`` prints the p50 and p99 of ``getaddrinfo()`` for ``--name`` (the same name each time,
what a resolver that caches answers has in its cache), and with ``--fresh`` for names never
asked before (``{}`` replaced by a counter's dashed address, for the cluster DNS's
``a-b-c-d.NS.pod`` names, which resolve to that address): each lookup one query through the
whole path. Every answer is checked against the expected address; a lookup that gets none
(``EAI_AGAIN`` after the resolver's retries) is counted in ``dns_failed`` /
``dns_uncached_failed`` and its time kept among the samples.

``hold`` opens ``--count`` connections, 64 at a time (each one byte echoed, so that it
exists at the far end too), prints ``{"held": N, "unanswered": U, "open_s": S, "stalled":
B}``, keeps them open and idle until its standard input closes, then closes them. When no
new connection has been answered for ``--stall`` seconds it stops opening (``stalled``) and
holds what it has: ``held`` answered, ``unanswered`` connected but never echoed.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import sys
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from benchmarks._stats import percentile
from benchmarks.manager_client import (
    ECHO_PORT,
    round_trips,
    socks5_connect,
    streams_per_second,
    throughput,
)

if TYPE_CHECKING:
    from benchmarks.manager_client import Opener

#: Connections opened at once while ``hold`` builds up its set.
HOLD_CONCURRENCY = 64


def _share(cpu: float, wall: float) -> float:
    """This process's share of one core since ``process_time()`` was ``cpu`` and
    ``perf_counter()`` was ``wall``: near 1.0, the measuring client itself is the limit."""
    return round((time.process_time() - cpu) / (time.perf_counter() - wall), 2)


async def _opener(host: str, socks: str | None) -> Opener:
    """Connections to ``host``: a name is resolved once, here (name lookups have figures of
    their own), except through SOCKS, whose proxy resolves it for every connection."""
    if socks is None:
        found = await anyio.getaddrinfo(host, ECHO_PORT, type=socket.SOCK_STREAM)
        address = str(found[0][4][0])

        async def connect() -> anyio.abc.ByteStream:
            return await anyio.connect_tcp(address, ECHO_PORT)

        return connect
    proxy_host, _, proxy_port = socks.rpartition(":")

    async def through_socks() -> anyio.abc.ByteStream:
        return await socks5_connect(proxy_host, int(proxy_port), host, ECHO_PORT)

    return through_socks


async def parallel_throughput(open_stream: Opener, total: int, parallel: int) -> float:
    """Aggregate MB/s of ``parallel`` echoed connections at once, ``total`` bytes in all."""
    share = total // parallel
    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for _ in range(parallel):
            tasks.start_soon(throughput, open_stream, share)
    return share * parallel / (time.perf_counter() - start) / 1e6


async def measure_tcp(arguments: argparse.Namespace) -> dict[str, float]:
    open_stream = await _opener(arguments.host, arguments.socks)
    total = arguments.mib * 1024 * 1024
    result: dict[str, float] = {}
    if total:
        cpu, wall = time.process_time(), time.perf_counter()
        result["MBps"] = round(await throughput(open_stream, total), 1)
        result["MBps_client_cpu"] = _share(cpu, wall)
        cpu, wall = time.process_time(), time.perf_counter()
        result["MBps_8"] = round(
            await parallel_throughput(open_stream, total, arguments.parallel), 1
        )
        result["MBps_8_client_cpu"] = _share(cpu, wall)
    result["conn_per_s"] = round(await streams_per_second(open_stream, arguments.connections), 1)
    samples = await round_trips(open_stream, arguments.round_trips)
    result["rtt_p50_us"] = round(statistics.median(samples), 1)
    result["rtt_p99_us"] = round(percentile(samples, 0.99), 1)
    return result


class Lookups:
    """Timed ``getaddrinfo()`` calls: every one's microseconds, failed ones included (a
    program waited that long too), and how many failed."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.failed = 0

    def lookup(self, name: str, expect: str) -> None:
        """One lookup of ``name``; an answer without ``expect`` is an error, none a failure."""
        start = time.perf_counter_ns()
        try:
            answers = socket.getaddrinfo(name, ECHO_PORT, type=socket.SOCK_STREAM)
        except socket.gaierror:
            answers = []
            self.failed += 1
        self.samples.append((time.perf_counter_ns() - start) / 1000)
        addresses = {str(answer[4][0]) for answer in answers}
        if answers and expect not in addresses:
            raise SystemExit(f"{name} resolved to {sorted(addresses)}, not {expect}")

    def figures(self, prefix: str) -> dict[str, float]:
        if self.failed == len(self.samples):
            raise SystemExit(f"all {self.failed} lookups failed")
        return {
            f"{prefix}_p50_us": round(statistics.median(self.samples), 1),
            f"{prefix}_p99_us": round(percentile(self.samples, 0.99), 1),
            f"{prefix}_failed": self.failed,
        }


def measure_dns(arguments: argparse.Namespace) -> dict[str, float]:
    warm_up = Lookups()  # the resolver's and the path's first queries
    for _ in range(10):
        warm_up.lookup(arguments.name, arguments.expect)
    same = Lookups()
    for _ in range(arguments.count):
        same.lookup(arguments.name, arguments.expect)
    result = same.figures("dns")
    if arguments.fresh:
        fresh = Lookups()
        base = int.from_bytes(socket.inet_aton(arguments.fresh_from), "big")
        for index in range(arguments.count):
            address = socket.inet_ntoa((base + index).to_bytes(4, "big"))
            fresh.lookup(arguments.fresh.replace("{}", address.replace(".", "-")), address)
        result |= fresh.figures("dns_uncached")
    return result


def _raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise SystemExit(f"{wanted} connections need that many files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def hold(arguments: argparse.Namespace) -> None:
    _raise_open_files(arguments.count + 256)
    open_stream = await _opener(arguments.host, None)
    held: list[anyio.abc.ByteStream] = []
    left, answered, stalled = arguments.count, 0, False
    start = last = time.monotonic()
    progress = anyio.Event()  # set by each answered connection

    async def opener() -> None:
        nonlocal left, answered, last
        while left > 0:
            left -= 1
            stream = await open_stream()
            held.append(stream)
            await stream.send(b"x")
            if await stream.receive() != b"x":
                raise SystemExit("a held connection echoed something else")
            answered += 1
            last = time.monotonic()
            progress.set()

    async def openers(tasks: anyio.abc.TaskGroup) -> None:
        async with anyio.create_task_group() as inner:
            for _ in range(HOLD_CONCURRENCY):
                inner.start_soon(opener)
        tasks.cancel_scope.cancel()  # all open: the watchdog is done too

    async def watchdog(tasks: anyio.abc.TaskGroup) -> None:
        nonlocal progress, stalled
        while True:
            with anyio.move_on_after(arguments.stall) as waiting:
                await progress.wait()
            if waiting.cancelled_caught:
                stalled = True  # the path takes no more: hold what it took
                tasks.cancel_scope.cancel()
                return
            progress = anyio.Event()

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(openers, tasks)
            tasks.start_soon(watchdog, tasks)
        report = {
            "held": answered,
            "unanswered": len(held) - answered,
            "open_s": round(last - start, 2),
            "stalled": stalled,
        }
        print(json.dumps(report), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the caller closes it
    finally:
        with anyio.CancelScope(shield=True):
            for stream in held:
                await stream.aclose()


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connect_paths")
    modes = parser.add_subparsers(dest="mode", required=True)
    tcp = modes.add_parser("tcp", help="MB/s, new connections/s, round trips")
    tcp.add_argument("--host", required=True, help="the echo server's address or name")
    tcp.add_argument("--socks", help="open connections through this SOCKS5 proxy, HOST:PORT")
    tcp.add_argument("--mib", type=int, default=64, help="MiB per throughput run (0: skip)")
    tcp.add_argument("--parallel", type=int, default=8, help="connections of the parallel run")
    tcp.add_argument("--connections", type=int, default=400, help="new connections timed")
    tcp.add_argument("--round-trips", type=int, default=2000)
    dns = modes.add_parser("dns", help="getaddrinfo() p50 and p99")
    dns.add_argument("--name", required=True, help="the name asked again and again")
    dns.add_argument("--expect", required=True, help="the address --name must resolve to")
    dns.add_argument("--fresh", help="a name template for fresh names, {} the dashed address")
    dns.add_argument("--fresh-from", default="10.244.100.1", help="the first fresh address")
    dns.add_argument("--count", type=int, default=200, help="lookups of each kind")
    held = modes.add_parser("hold", help="hold idle connections until stdin closes")
    held.add_argument("--host", required=True)
    held.add_argument("--count", type=int, default=10_000)
    held.add_argument("--stall", type=float, default=20.0,
                      help="stop opening after this long without one more answered")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    arguments = _arguments(argv)
    if arguments.mode == "tcp":
        print(json.dumps(anyio.run(measure_tcp, arguments)))
    elif arguments.mode == "dns":
        print(json.dumps(measure_dns(arguments)))
    else:
        anyio.run(hold, arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
