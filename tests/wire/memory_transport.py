"""An in-memory byte stream pair with bounded buffers, so backpressure is real."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class MemoryByteStream(anyio.abc.ByteStream):
    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._pending = b""
        self.bytes_sent = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._pending:
            self._pending = await self._receive.receive()
        else:
            await anyio.lowlevel.checkpoint()
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        await self._send.send(bytes(item))
        self.bytes_sent += len(item)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair(chunks: int = 16) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected byte streams; each direction buffers at most ``chunks`` writes."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](chunks)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](chunks)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)
