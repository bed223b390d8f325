"""Mux streams as anyio streams: a TCP kind is a ``ByteStream``, a UDP kind a datagram stream.

A stream holds what the connection's reader delivered for it until the application reads it,
and only then reports the bytes consumed to the core, which returns credit to the peer. So
the peer can never put more than one window into a reader that does not read, and a sender
waits for credit instead of queueing without bound: backpressure from the far application
reaches the near one.

Closing follows TCP. ``send_eof()`` is a FIN. ``aclose()`` sends a FIN if none was sent and,
if the peer may still send, a RESET so that it stops (its unread data would otherwise arrive
for nobody). A peer's RESET that follows its FIN does not take back what it sent: the data
and the end of stream are still delivered, and only sending fails.
"""

from __future__ import annotations

from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel

from telepresence.wire.mux import Address, OpenRequest, ResetReason

if TYPE_CHECKING:
    from telepresence.wire.shell._connection import MuxConnection

#: Bytes a sender may queue ahead of the transport before it waits for the writer.
OUTPUT_HIGH_WATER = 1024 * 1024
#: Sends of at least this many bytes are bulk: they are batched into larger transport
#: writes. Smaller ones (one TLS record at most) are messages and go out at once.
BULK_SEND = 16 * 1024
#: A sender writes queued bulk frames itself once this many bytes are queued.
WRITE_BATCH = 256 * 1024
#: ``receive()`` joins buffered chunks into one result only up to this size.
JOIN_LIMIT = 16 * 1024


class _StreamBase:
    """State and life cycle shared by both kinds of stream."""

    def __init__(
        self, connection: MuxConnection, stream_id: int, request: OpenRequest, *, local: bool
    ) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.request = request
        self.local = local  # this side opened it
        self._chunks: deque[bytes] = deque()
        self._eof = False  # the peer half-closed
        self._sent_eof = False
        self._closed = False  # aclose() or reset() was called here
        self._error: anyio.BrokenResourceError | None = None
        self._accepted = not local  # an incoming stream needs no answer to be usable here
        # Wake-ups for the waits on reading, credit and the answer to the OPEN. A wait makes
        # its own event when the one it finds is set, so until then all three are the
        # connection's one event that is always set: an idle stream holds none of its own
        # (three events were 2.7 KB of each idle stream on asyncio).
        self._readable = self._writable = self._accepted_event = connection._set_event
        self.dropped = 0  # datagrams dropped for want of credit (UDP kind)

    @property
    def destination(self) -> Address:
        return self.request.destination

    @property
    def origin(self) -> Address | None:
        return self.request.origin

    # -- called by the connection's dispatcher --------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        # (A stream closed here is forgotten by the connection, whose dispatcher answers
        # data that still arrives for it with a RESET, as TCP answers with RST.)
        self._chunks.append(data)
        self._readable.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_accepted(self) -> None:
        self._accepted = True
        self._accepted_event.set()

    def _on_reset(self, error: anyio.BrokenResourceError) -> None:
        if self._error is None:
            self._error = error
        self._readable.set()
        self._writable.set()
        self._accepted_event.set()

    def _on_writable(self) -> None:
        self._writable.set()

    # -- shared behaviour ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._error is not None:
            raise self._error

    def _check_receivable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._eof:
            raise anyio.EndOfStream
        if self._error is not None:
            raise self._error

    async def _wait_for_chunk(self) -> None:
        """Return once a chunk is buffered; raise when none will come. (Closing clears the
        buffer, so a chunk here means the stream is not closed.)

        The receivers call this only when nothing is buffered. When data is there they only
        check for cancellation, without giving up the loop: a full checkpoint would cost a
        loop iteration per read, and what a reader can take without yielding is bounded by
        the stream's window.
        """
        connection = self._connection
        while not self._chunks:
            if self._closed or self._eof or self._error is not None:
                self._check_receivable()
            # There is nothing to read and no reason to stop, so the event (nearly always set
            # by the last chunk's arrival) is stale: wait on a new one.
            self._readable = readable = connection._event()
            await connection._wait_on(readable, fresh=True)

    async def _wait_writable(self) -> None:
        """Wait for credit: the stream's own, or else a turn at the connection's.

        Credit can arrive while the caller was writing (the write lets the reader run), so
        the condition is checked again here, after the old wake-up was discarded.
        """
        connection = self._connection
        core = connection._core
        if self._writable.is_set():
            self._writable = connection._event()
        if core.stream_credit(self.stream_id) <= 0:
            # Only this stream's WINDOW_UPDATE can help.
            await connection._wait_on(self._writable)
            return
        if core.connection_credit > 0:
            return
        connection._credit_queue[self] = None
        try:
            await connection._wait_on(self._writable)
        finally:
            connection._credit_queue.pop(self, None)

    async def wait_accepted(self) -> None:
        """Wait until the peer answers the OPEN: raises :class:`StreamResetError` with the
        reason (``refused``, ``unreachable``, ...) when the destination cannot be reached."""
        while not self._accepted:
            self._check_open()
            # Still set from a wake-up that only handed this task the reading (a finished
            # reader wakes the first waiter so that it reads next): waiting on it again
            # would return at once, forever, and starve every other task.
            if self._accepted_event.is_set():
                self._accepted_event = self._connection._event()
            await self._connection._wait_on(self._accepted_event)
        self._check_open()

    def accept(self) -> None:
        """Incoming stream: tell the peer its destination is reached. Sending data or EOF
        does this implicitly."""
        self._check_open()
        self._connection._core.accept_stream(self.stream_id)
        self._connection._pump()

    def reset(self, reason: ResetReason = ResetReason.CANCELLED, message: str = "") -> None:
        """Abort the stream both ways, telling the peer why (e.g. ``refused`` when dialling
        the destination failed)."""
        if self._closed:
            return
        self._closed = True
        self._connection._reset(self.stream_id, reason, message)
        self._release()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._error is None:
                self._connection._close_stream(self.stream_id, sent_eof=self._sent_eof)
            self._release()
        await anyio.lowlevel.checkpoint()

    def _release(self) -> None:
        self._chunks.clear()
        self._connection._forget(self)
        self._readable.set()
        self._writable.set()
        self._accepted_event.set()
        self._connection._end_fulfilled_read()

    def _report_consumed(self, count: int) -> None:
        connection = self._connection
        core = connection._core
        core.consumed(self.stream_id, count, monotonic())
        # consumed() makes no events, at most a WINDOW_UPDATE for the writer.
        if core.outbound_size:
            connection._output_wakeup.set()


class MuxStream(_StreamBase, anyio.abc.ByteStream):
    """A TCP stream through the mux: bytes both ways, half-close, reset with a reason."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        chunks = self._chunks
        if chunks:
            await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            await self._wait_for_chunk()
        first = chunks[0]
        if len(first) > max_bytes:
            chunks[0] = first[max_bytes:]
            data = first[:max_bytes]
        elif len(chunks) == 1 or len(first) + len(chunks[1]) > (
            join_limit := min(max_bytes, JOIN_LIMIT)
        ):
            data = chunks.popleft()
        else:
            # Join small chunks (an interactive protocol's messages) into one read; large
            # ones go out as they are, since copying them costs more than another call.
            parts = []
            size = 0
            while chunks and size + len(chunks[0]) <= join_limit:
                part = chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self._report_consumed(len(data))
        return data

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        connection = self._connection
        core = connection._core
        # The core frames memoryviews of the data without copying; a mutable buffer could
        # change before the writer copies it out, so take a snapshot of those.
        data = item if isinstance(item, bytes) else bytes(item)
        size = len(data)
        position = 0
        waited = False  # in a wait that is a checkpoint
        wrote = False  # inline
        while True:
            self._check_open()
            if self._sent_eof:
                raise anyio.ClosedResourceError("stream was half-closed with send_eof()")
            if position < size:
                rest = memoryview(data)[position:] if position else data
                position += core.send_data(self.stream_id, rest)
                # send_data() makes frames, no events; what may need handing on is the
                # connection credit this send left over, to the next sender waiting for it.
                if connection._credit_queue:
                    connection._pump(wake_writer=False)
                if size < BULK_SEND or core.outbound_size >= WRITE_BATCH:
                    wrote = await connection._flush_inline() or wrote
                else:
                    # Bulk: leave the frames queued, so that the sends that follow join them
                    # in one transport write of up to WRITE_BATCH bytes (TLS costs far less
                    # per byte in large writes: raw TLS moved 25-30% more in 256 KiB writes
                    # than in 64 KiB ones). If this task waits for anything first, the
                    # writer sends them as soon as it does.
                    connection._output_wakeup.set()
            if core.outbound_size > OUTPUT_HIGH_WATER:
                await connection._wait_output_taken()
                waited = True
            elif position < size:
                await self._wait_writable()
                waited = True
            else:
                break
        if waited:
            return
        if wrote and connection._sender is not None:
            # Written to a socket whose sends never give up the loop: give it up here, as a
            # socket send does, so that a task sending message after message does not hold
            # the loop until its credit runs out. (A reply is on its way by now.)
            await anyio.lowlevel.checkpoint()
        else:
            # Queued without waiting, or written through a shield (which gave up the loop
            # but checked for no cancellation): check for cancellation but keep the loop, as
            # receive() does. A sender of bulk then puts out a run of frames (up to
            # OUTPUT_HIGH_WATER, where it waits for the writer) rather than one frame per loop
            # pass interleaved with every other sender's, and the reader of each run on the
            # far side wakes once, not per frame: +7% for 64 streams on asyncio.
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def send_eof(self) -> None:
        if not self._sent_eof:
            self._check_open()
            self._sent_eof = True
            self._connection._core.half_close(self.stream_id)
            self._connection._pump()
        await anyio.lowlevel.checkpoint()


class MuxDatagramStream(_StreamBase, anyio.abc.UnreliableObjectStream[bytes]):
    """A UDP flow through the mux: each ``send()`` is one datagram, each ``receive()`` one.

    Like UDP it may drop: a datagram that the peer's window has no room for is not sent
    (``dropped`` counts them) rather than queued or split.
    """

    async def receive(self) -> bytes:
        if self._chunks:
            await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            await self._wait_for_chunk()
        datagram = self._chunks.popleft()
        self._report_consumed(len(datagram))
        return datagram

    async def send(self, item: bytes) -> None:
        self._check_open()
        connection = self._connection
        if not connection._core.send_datagram(self.stream_id, bytes(item)):
            self.dropped += 1
        connection._pump(wake_writer=False)
        if await connection._flush_inline() and connection._sender is None:
            await anyio.lowlevel.checkpoint_if_cancelled()  # the shielded write gave up the loop
        else:
            await anyio.lowlevel.checkpoint()
