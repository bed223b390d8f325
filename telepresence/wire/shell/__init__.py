"""The mux over any anyio byte stream, on asyncio (with or without uvloop) and on trio.

    async with shell.connect(tls_stream, credentials=token) as connection:
        stream = await connection.open_stream("echo.default", 8080)
        await stream.send(b"hello")
        reply = await stream.receive()

    async with shell.accept(tls_stream, authenticate=check_token) as connection:
        stream = await connection.accept_stream()
        ...

Streams are anyio streams (``ByteStream`` for TCP, ``UnreliableObjectStream[bytes]`` for
UDP), so anything written for anyio streams works over the mux.
"""

from __future__ import annotations

from telepresence.wire.shell._connection import (
    CredentialsRefused,
    MuxConnection,
    accept,
    connect,
)
from telepresence.wire.shell._errors import ConnectionLostError, HandshakeError, StreamResetError
from telepresence.wire.shell._sockets import NoWaitSender, SocketByteStream, reset_on_close
from telepresence.wire.shell._splice import splice
from telepresence.wire.shell._streams import MuxDatagramStream, MuxStream
from telepresence.wire.shell._transports import (
    SocketListener,
    TransportByteStream,
    open_tcp,
    wrap_socket,
)

__all__ = [
    "ConnectionLostError",
    "CredentialsRefused",
    "HandshakeError",
    "MuxConnection",
    "MuxDatagramStream",
    "MuxStream",
    "NoWaitSender",
    "SocketByteStream",
    "SocketListener",
    "StreamResetError",
    "TransportByteStream",
    "accept",
    "connect",
    "open_tcp",
    "reset_on_close",
    "splice",
    "wrap_socket",
]
