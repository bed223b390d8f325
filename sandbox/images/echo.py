"""The built-in echo images' programs: ``python -m sandbox.images.echo {http,tcp,udp}``.

What the sandbox's demo workloads run (``sandbox/http-echo``, ``sandbox/tcp-echo``,
``sandbox/udp-echo``), and what intercepts and port-forwards are tested against:

- ``http`` (port 8080): HTTP/1.1 with keep-alive; every method and path answers ``200``
  ``text/plain`` with ``pod: NAME``, ``namespace: NS``, the request line and each request
  header as it arrived (``Name: value``), so a test sees which pod answered and what the
  request looked like when it got there (after a proxy, an intercept, a header rewrite).
- ``tcp`` (port 7000): every byte back until the peer's EOF, then a half-close, so a client
  can tell "all echoed" from "connection dropped".
- ``udp`` (port 7001): each datagram back to its sender.

Each prints one line to stdout once it listens (the pod's log, and how a test knows it is
ready; ``--port 0`` takes a free port and the line names it) and exits 0 on SIGTERM, which is
how the kubelet stops a container. Start-up time counts (the kubelet waits for it on every
pod start), so aiohttp is imported only by the HTTP server, and the TCP and UDP servers use
asyncio alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

DEFAULT_PORTS = {"http": 8080, "tcp": 7000, "udp": 7001}
#: How much a TCP echo reads at once.
READ_SIZE = 256 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.images.echo", description=__doc__)
    parser.add_argument("protocol", choices=sorted(DEFAULT_PORTS))
    parser.add_argument("--port", type=int, help="port to listen on (default: per protocol)")
    parser.add_argument(
        "--address", default=None, help="address to listen on (default: every address)"
    )
    parser.add_argument("--pod", default="", help="the pod's name, as the answers report it")
    parser.add_argument("--namespace", default="", help="the pod's namespace")
    args = parser.parse_args(argv)
    if args.port is None:
        args.port = DEFAULT_PORTS[args.protocol]
    return args


def announce(protocol: str, port: int) -> None:
    print(f"{protocol}-echo listening on port {port}", flush=True)


# -- HTTP ---------------------------------------------------------------------------------------


def http_answer(request: web.BaseRequest, pod: str, namespace: str) -> str:
    """The body of the answer: who answered, then the request as it arrived."""
    version = request.version
    lines = [
        f"pod: {pod}",
        f"namespace: {namespace}",
        f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}",
    ]
    lines += [
        f"{name.decode('latin-1')}: {value.decode('latin-1')}"
        for name, value in request.raw_headers
    ]
    return "\n".join(lines) + "\n"


async def serve_http(args: argparse.Namespace, stopped: asyncio.Event) -> None:
    from aiohttp import web  # noqa: PLC0415 (only this server pays for the import)

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()  # the body, if any, is consumed so that the connection is reused
        return web.Response(text=http_answer(request, args.pod, args.namespace))

    runner = web.ServerRunner(web.Server(handle), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.address, args.port, reuse_address=True)
    await site.start()
    try:
        announce("http", runner.addresses[0][1])
        await stopped.wait()
    finally:
        await runner.cleanup()


# -- TCP ----------------------------------------------------------------------------------------


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close; a reset just ends the connection."""
    with contextlib.suppress(ConnectionError):
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
        finally:
            writer.close()


async def serve_tcp(args: argparse.Namespace, stopped: asyncio.Event) -> None:
    connections: set[asyncio.StreamWriter] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        try:
            await echo_stream(reader, writer)
        finally:
            connections.discard(writer)

    server = await asyncio.start_server(
        connected, args.address, args.port, reuse_address=True, limit=READ_SIZE
    )
    try:
        announce("tcp", server.sockets[0].getsockname()[1])
        await stopped.wait()
    finally:
        server.close()
        # Python 3.12's wait_closed waits for every connection: a stopping container drops
        # them, as the kernel would when the process exits.
        for writer in list(connections):
            writer.transport.abort()
        await server.wait_closed()


# -- UDP ----------------------------------------------------------------------------------------


class DatagramEcho(asyncio.DatagramProtocol):
    """Each datagram back to where it came from.

    Answers go out through the socket itself: asyncio's transport drops empty datagrams
    (before Python 3.13), and an echo returns those too.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        with contextlib.suppress(OSError):  # a full buffer drops it, as UDP may
            self.sock.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier answer: nothing to do, the sender is gone


def udp_socket(address: str | None, port: int) -> socket.socket:
    """A socket for every address: IPv6 with IPv4 mapped in, or IPv4 where IPv6 is off."""
    if address is not None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((address, port))
        return sock
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
    return sock


async def serve_udp(args: argparse.Namespace, stopped: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    sock = udp_socket(args.address, args.port)
    transport, _ = await loop.create_datagram_endpoint(lambda: DatagramEcho(sock), sock=sock)
    try:
        announce("udp", sock.getsockname()[1])
        await stopped.wait()
    finally:
        transport.close()


SERVERS: dict[str, Callable[[argparse.Namespace, asyncio.Event], Awaitable[None]]] = {
    "http": serve_http,
    "tcp": serve_tcp,
    "udp": serve_udp,
}


async def run(args: argparse.Namespace) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await SERVERS[args.protocol](args, stopped)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(run(args))
    except OSError as error:
        print(f"{args.protocol}-echo: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
