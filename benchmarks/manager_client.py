"""The measuring client of ``python -m benchmarks manager``, run where each path starts.

    python benchmarks/manager_client.py tcp --host 10.244.0.5
    python benchmarks/manager_client.py direct --host 10.244.0.5 --manager 10.244.0.2 --token T
    python benchmarks/manager_client.py portforward --host 10.244.0.5 --context sandbox-developer

Every mode measures the same three things with the same code, against a ``sandbox/tcp-echo``
server (port 7000), and only differs in how a stream to it is opened: a TCP connection of its
own (``tcp``, the baseline, from a pod), or a mux stream that the traffic-manager dials, over
a direct TLS connection to the manager's pod (``direct``) or over the port-forward transport
(``portforward``, from the workstation). It prints one JSON object:

- ``MBps``: one stream, ``--mib`` MiB sent while the echo is read back at the same time
  (payload MB per second in one direction), checked by hash;
- ``streams_per_s``: new streams (open, one byte there and back, close) with 8 at a time;
- ``rtt_p50_us`` / ``rtt_p99_us``: 64-byte round trips on one stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from telepresence import transport
from telepresence.kube import Kube, KubeTarget
from telepresence.session import open_session

ECHO_PORT = 7000
CHUNK = bytes(range(256)) * 256  # 64 KiB
WORKERS = 8

type Opener = Callable[[], Awaitable[anyio.abc.ByteStream]]


async def throughput(open_stream: Opener, total: int) -> float:
    """MB/s of payload through one echoed stream, sending and reading back at once."""
    sent, received = hashlib.sha256(), hashlib.sha256()
    async with await open_stream() as stream:
        start = time.perf_counter()

        async def send() -> None:
            for _ in range(total // len(CHUNK)):
                await stream.send(CHUNK)
                sent.update(CHUNK)

        got = 0
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send)
            while got < total:
                data = await stream.receive(1 << 20)
                received.update(data)
                got += len(data)
        elapsed = time.perf_counter() - start
    if sent.digest() != received.digest():
        raise SystemExit("the echo came back corrupted")
    return total / elapsed / 1e6


async def streams_per_second(open_stream: Opener, count: int) -> float:
    """New streams per second: each opened, one byte echoed, closed; WORKERS at a time."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with await open_stream() as stream:
                await stream.send(b"x")
                if await stream.receive() != b"x":
                    raise SystemExit("a new stream echoed something else")

    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for _ in range(WORKERS):
            tasks.start_soon(worker)
    return count / (time.perf_counter() - start)


async def round_trips(open_stream: Opener, count: int) -> list[float]:
    """Microseconds per 64-byte round trip on one stream (after 100 to warm up)."""
    message = b"r" * 64
    samples: list[float] = []
    async with await open_stream() as stream:
        for index in range(count + 100):
            start = time.perf_counter_ns()
            await stream.send(message)
            got = 0
            while got < len(message):
                got += len(await stream.receive(len(message) - got))
            if index >= 100:
                samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


@asynccontextmanager
async def opener(arguments: argparse.Namespace) -> AsyncIterator[Opener]:
    """How this mode opens a stream to the echo server."""
    host = arguments.host
    if arguments.mode == "tcp":

        async def connect() -> anyio.abc.ByteStream:
            return await anyio.connect_tcp(host, ECHO_PORT)

        yield connect
    elif arguments.mode == "socks":
        proxy_host, _, proxy_port = arguments.proxy.rpartition(":")

        async def through_socks() -> anyio.abc.ByteStream:
            return await socks5_connect(proxy_host, int(proxy_port), host, ECHO_PORT)

        yield through_socks
    elif arguments.mode == "direct":
        async with (
            transport.direct(arguments.manager, "ambassador") as way,
            _through_manager(way, arguments.token, host) as open_stream,
        ):
            yield open_stream
    else:
        async with (
            Kube.open(KubeTarget(context=arguments.context)) as kube,
            transport.port_forward(kube, "ambassador") as way,
            _through_manager(way, kube.bearer_token or "", host) as open_stream,
        ):
            yield open_stream


async def socks5_connect(
    proxy_host: str, proxy_port: int, host: str, port: int
) -> anyio.abc.ByteStream:
    """A stream to ``host:port`` through a SOCKS5 proxy (no authentication, CONNECT)."""
    stream = await anyio.connect_tcp(proxy_host, proxy_port)
    name = host.encode()
    await stream.send(b"\x05\x01\x00")
    await stream.send(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    answer = b""
    while len(answer) < 2 + 10:  # method choice, then a reply with an IPv4 BND.ADDR
        answer += await stream.receive(12 - len(answer))
    if answer[:2] != b"\x05\x00" or answer[3] != 0:
        await stream.aclose()
        raise SystemExit(f"the SOCKS proxy refused: {answer.hex()}")
    return stream


@asynccontextmanager
async def _through_manager(
    way: transport.Transport, token: str, host: str
) -> AsyncIterator[Opener]:
    async with open_session(way, token=token, name="benchmark") as session:

        async def open_stream() -> anyio.abc.ByteStream:
            return await session.open_tcp(host, ECHO_PORT)

        yield open_stream


async def main(arguments: argparse.Namespace) -> dict[str, float]:
    async with opener(arguments) as open_stream:
        megabytes = await throughput(open_stream, arguments.mib * 1024 * 1024)
        rate = await streams_per_second(open_stream, arguments.streams)
        samples = await round_trips(open_stream, arguments.round_trips)
    ordered = sorted(samples)
    return {
        "MBps": round(megabytes, 1),
        "streams_per_s": round(rate, 1),
        "rtt_p50_us": round(statistics.median(ordered), 1),
        "rtt_p99_us": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["tcp", "direct", "portforward", "socks"])
    parser.add_argument("--host", required=True, help="the echo pod's IP")
    parser.add_argument("--manager", help="direct: the manager pod's IP")
    parser.add_argument("--token", help="direct: the bearer token to arrive with")
    parser.add_argument("--context", help="portforward: the kubeconfig context")
    parser.add_argument("--proxy", help="socks: the proxy's HOST:PORT")
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--round-trips", type=int, default=2000)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, _arguments())))
    sys.exit(0)
