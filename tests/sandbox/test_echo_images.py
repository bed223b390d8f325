"""The built-in echo images' programs, run as the kubelet runs them, on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import Process

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def echo(protocol: str) -> AsyncIterator[tuple[Process, int]]:
    """Run an echo program on a free loopback port; yields it and the port it announced.
    The program is killed if the test leaves it running."""
    process = await anyio.open_process(
        [
            *(sys.executable, "-m", "sandbox.images.echo", protocol, "--port", "0"),
            *("--address", "127.0.0.1", "--pod", "web-1", "--namespace", "shop"),
        ],
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(10):
            line = b""
            async for data in process.stdout:
                line += data
                if line.endswith(b"\n"):
                    break
        words = line.decode().split()
        assert words[:-1] == [f"{protocol}-echo", "listening", "on", "port"], line
        yield process, int(words[-1])
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def stop(process: Process) -> int:
    """SIGTERM, as the kubelet stops a container; the exit code."""
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(10):
        return await process.wait()


async def read_response(stream: anyio.abc.SocketStream, buffer: bytes) -> tuple[bytes, bytes]:
    """One HTTP response with a Content-Length: (head and body, what follows it)."""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += await stream.receive()
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


async def test_http_echo_answers_with_the_pod_and_the_request_on_one_connection() -> None:
    async with echo("http") as (process, port):
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                buffer = b""
                answers: list[str] = []
                for path in ("/first?x=1", "/second/path"):
                    await stream.send(
                        f"GET {path} HTTP/1.1\r\nHost: web\r\nX-Trace: abc\r\n\r\n".encode()
                    )
                    raw, buffer = await read_response(stream, buffer)
                    answers.append(raw.decode())
        for path, text in zip(("/first?x=1", "/second/path"), answers, strict=True):
            head, _, body = text.partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 200 OK\r\n")
            assert "Content-Type: text/plain" in head
            assert body.splitlines() == [
                "pod: web-1",
                "namespace: shop",
                f"GET {path} HTTP/1.1",
                "Host: web",
                "X-Trace: abc",
            ]
        assert await stop(process) == 0


async def test_tcp_echo_returns_every_byte_then_half_closes() -> None:
    payload = os.urandom(3 * 1024 * 1024)
    async with echo("tcp") as (process, port):
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                received = bytearray()

                async def send() -> None:
                    await stream.send(payload)
                    await stream.send_eof()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(send)
                    with contextlib.suppress(anyio.EndOfStream):
                        while True:
                            received += await stream.receive()
        assert received == payload

        # A connection still open when the container is stopped does not keep it alive.
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"ping")
            assert await stream.receive() == b"ping"
            assert await stop(process) == 0


async def test_udp_echo_returns_each_datagram() -> None:
    async with echo("udp") as (process, port):
        with anyio.fail_after(10):
            async with await anyio.create_connected_udp_socket("127.0.0.1", port) as udp:
                for datagram in (b"one", b"two" * 1000):
                    await udp.send(datagram)
                    assert await udp.receive() == datagram
        assert await stop(process) == 0
