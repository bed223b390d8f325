"""A mux server in a process of its own, for ``test_mux_processes.py``.

    python -m tests.wire.mux_peer BACKEND MATERIAL_DIR

BACKEND is ``asyncio``, ``uvloop`` or ``trio``. MATERIAL_DIR holds ``server.crt`` and
``server.key`` (saved with ``tls.Identity.save``) and ``ca.crt``, the authority that clients'
certificates must chain to. The peer listens on 127.0.0.1 with mutual TLS (ALPN ``tpmux/1``),
prints ``{"port": N}`` as one line on stdout, and serves mux connections whose credentials are
``good-token``. What a stream gets depends on its destination port:

- 7: TCP echo until the client's EOF, then EOF back;
- 9: a sink that answers ``{"bytes": N, "sha256": HEX}`` for what it received, then EOF;
- 1: refused, as a dial to a closed port would be;
- 53: UDP echo, one datagram back for each one received;
- 5: accepted and never read, a stalled application;
- anything else: unreachable.

It runs until its stdin closes, which is how the test stops it (and how it dies with the test
runner, whatever happens to it), and then exits with status 0 and nothing on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from telepresence.wire import shell, tls
from telepresence.wire.mux import ResetReason

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ALPN = "tpmux/1"
GOOD_TOKEN = b"good-token"
ECHO_PORT = 7
SINK_PORT = 9
REFUSING_PORT = 1
UDP_ECHO_PORT = 53
STALLED_PORT = 5
BACKENDS = ("asyncio", "uvloop", "trio")


async def check_token(credentials: bytes) -> None:
    if credentials != GOOD_TOKEN:
        raise shell.CredentialsRefused("token not accepted")


async def echo(stream: shell.MuxStream) -> None:
    async for chunk in stream:
        await stream.send(chunk)
    await stream.send_eof()


async def sink(stream: shell.MuxStream) -> None:
    digest = hashlib.sha256()
    count = 0
    async for chunk in stream:
        digest.update(chunk)
        count += len(chunk)
    answer = {"bytes": count, "sha256": digest.hexdigest()}
    await stream.send(json.dumps(answer).encode() + b"\n")
    await stream.send_eof()


async def echo_datagrams(flow: shell.MuxDatagramStream) -> None:
    async for datagram in flow:
        await flow.send(datagram)


async def serve_stream(stream: shell.MuxStream | shell.MuxDatagramStream) -> None:
    port = stream.destination.port
    if port == REFUSING_PORT:
        stream.reset(ResetReason.REFUSED, "connection refused")
        return
    serve: Callable[[], Awaitable[None]]
    if isinstance(stream, shell.MuxDatagramStream) and port == UDP_ECHO_PORT:
        serve = partial(echo_datagrams, stream)
    elif isinstance(stream, shell.MuxStream) and port == ECHO_PORT:
        serve = partial(echo, stream)
    elif isinstance(stream, shell.MuxStream) and port == SINK_PORT:
        serve = partial(sink, stream)
    elif isinstance(stream, shell.MuxStream) and port == STALLED_PORT:
        serve = anyio.sleep_forever  # until the connection ends and cancels it
    else:
        stream.reset(ResetReason.UNREACHABLE, "no route to host")
        return
    stream.accept()
    # A stream the client reset, or a connection that went away, leaves nothing to answer.
    async with stream:
        with contextlib.suppress(anyio.BrokenResourceError):
            await serve()


async def serve_connection(context: ssl.SSLContext, tcp: anyio.abc.SocketStream) -> None:
    async with tcp:
        try:
            transport = await TLSStream.wrap(tcp, server_side=True, ssl_context=context)
            async with (
                shell.accept(transport, authenticate=check_token) as connection,
                anyio.create_task_group() as streams,
            ):
                while True:
                    try:
                        stream = await connection.accept_stream()
                    except (anyio.EndOfStream, shell.ConnectionLostError):
                        break
                    streams.start_soon(serve_stream, stream)
                streams.cancel_scope.cancel()
        except shell.HandshakeError:
            pass  # refused credentials: the client was told why
        except (anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError, OSError):
            pass  # the client went away during a handshake


async def serve(material: Path) -> None:
    identity = tls.Identity.load(material / "server.crt", material / "server.key")
    client_ca = tls.certificates_from_pem((material / "ca.crt").read_bytes())
    context = tls.server_context(identity, client_ca=client_ca, alpn=ALPN)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, partial(serve_connection, context), tasks)
        port = listener.extra(SocketAttribute.local_port)
        print(json.dumps({"port": port}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.buffer.read)
        tasks.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    backend, material = argv
    if backend not in BACKENDS:
        raise SystemExit(f"usage: python -m tests.wire.mux_peer {'|'.join(BACKENDS)} DIR")
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(
        serve,
        Path(material),
        backend="trio" if backend == "trio" else "asyncio",
        backend_options=options,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
