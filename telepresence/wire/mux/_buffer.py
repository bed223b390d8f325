"""Received bytes kept as the chunks they arrived in, and read out with one copy.

A transport hands over bytes in pieces that have nothing to do with frame boundaries (a TLS
stream, for one, delivers at most a 16 KiB record per read, while frame payloads run to 64 KiB).
Appending every piece to one growing buffer and then slicing frames out of it copies each
payload byte two or three times; on the receiving side of a bulk transfer those copies are a
large part of the CPU spent. Here pieces are only referenced until a whole frame is present,
and its payload is then joined from them in a single copy (none when a piece is exactly the
payload).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from struct import Struct


class ChunkBuffer:
    __slots__ = ("_chunks", "_offset", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of the first chunk already read
        self.size = 0  # bytes not yet read

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._chunks.append(data if isinstance(data, bytes) else bytes(data))
            self.size += len(data)

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self.size = 0

    def peek(self, count: int) -> bytes:
        """The next ``count`` bytes (at most ``size``), left in the buffer."""
        first = self._chunks[0]
        start = self._offset
        if len(first) - start >= count:
            return first[start : start + count]
        parts = [first[start:]]
        missing = count - len(parts[0])
        for chunk in list(self._chunks)[1:]:
            parts.append(chunk[:missing])
            missing -= len(parts[-1])
            if missing <= 0:
                break
        return b"".join(parts)

    def unpack(self, layout: Struct) -> tuple[Any, ...]:
        """Remove the next ``layout.size`` bytes (at most ``size``) and unpack them; in place
        when they lie in one chunk, as a frame header nearly always does."""
        first = self._chunks[0]
        start = self._offset
        end = start + layout.size
        if end < len(first):
            self._offset = end
            self.size -= layout.size
            return layout.unpack_from(first, start)
        return layout.unpack(self.take(layout.size))

    def take(self, count: int) -> bytes:
        """Remove and return the next ``count`` bytes; ``count`` must not exceed ``size``."""
        chunks = self._chunks
        first = chunks[0]
        start = self._offset
        available = len(first) - start
        self.size -= count
        if available > count:
            self._offset = start + count
            return first[start : start + count]
        chunks.popleft()
        self._offset = 0
        if available == count:
            return first[start:] if start else first
        parts: list[bytes | memoryview] = [memoryview(first)[start:] if start else first]
        missing = count - available
        while missing:
            chunk = chunks[0]
            if len(chunk) <= missing:
                parts.append(chunks.popleft())
                missing -= len(chunk)
            else:
                parts.append(memoryview(chunk)[:missing])
                self._offset = missing
                missing = 0
        return b"".join(parts)
