"""The mux core run over an anyio byte stream: the dispatcher, the readers, the writer.

``connect()`` (the dialling side) and ``accept()`` (the listening side) are async context
managers; inside, a task group owns the connection's background tasks.

Reading: there is no dedicated reader task. Whoever waits for something from the network
(a stream's next bytes, credit to send, an incoming stream, a pong) reads the transport
itself if no other task is reading, and dispatches everything that arrives to everyone; the
other waiters wait for their own events, and when the reading task has what it wanted it
wakes the next waiter to take over. So a task waiting for its stream's next message usually
reads it itself, without the task switch a reader task would add to every message (that
switch was a third of the mux's added round-trip time). An idle reader task reads when no
other task has for a while, so that an idle connection still answers pings.

What the reading task waits for can also come from another task: its stream closed or the
connection ended here (its read is cancelled at once), connection credit handed on by a
sender or output taken by the writer (the idle reader cancels the read if the peer's next
frames have not ended it within IDLE_READ_DELAY: those are frequent, and cancelling at once
cost a tenth of trio's throughput). Transport reads are cancel-safe, nothing read is lost;
and without the cancellation, a peer that is itself waiting for us sends nothing to end it.

Writing: senders write inline when no write is in progress; otherwise the writer task sends
what they queued. Bulk sends (a TLS record's worth or more) are the exception: their frames
wait for the sends that follow, so that a transport write carries up to 256 KiB (TLS costs
far less per byte in large writes), and the writer sends them as soon as the sender yields.
The writer is also the only task that sends control frames (window updates, pongs), so a
reader never blocks on a full transport (two peers blocked writing to each other while
neither reads is the classic multiplexer deadlock).

A timer task wakes the core at its deadlines (keepalive pings, idle timeout). Leaving the
context manager resets what is still open, flushes the GO_AWAY and closes the transport, even
when the body failed or was cancelled.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import typing
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import monotonic

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from telepresence.wire import mux
from telepresence.wire.mux import Address, OpenRequest, Protocol, ResetReason, Role
from telepresence.wire.shell._errors import ConnectionLostError, HandshakeError, StreamResetError
from telepresence.wire.shell._sockets import NoWaitSender, SocketByteStream
from telepresence.wire.shell._streams import MuxDatagramStream, MuxStream, _StreamBase

if typing.TYPE_CHECKING:
    from types import TracebackType

#: How much the reader asks the transport for at once: several frames per call.
RECEIVE_SIZE = 256 * 1024
#: ...except from TLS, which hands over one record per read, 16 KiB at most: CPython's ssl
#: allocates what is asked for and then shrinks it, and 256 KiB allocations cost page faults.
TLS_RECEIVE_SIZE = 16 * 1024
#: Frames a task whose wait is fulfilled goes on to read, at most, while each next one has
#: begun to arrive (see ``_read``).
MID_FRAME_READS = 16
#: Seconds without a read after which the idle reader task starts reading.
IDLE_READ_DELAY = 0.005
#: Seconds ``aclose()`` gives the writer to flush the final frames before it drops the link.
CLOSE_GRACE = 2.0

Authenticator = Callable[[bytes], Awaitable[None]]


class _Scope(typing.Protocol):
    """What the shell uses of a cancel scope: anyio's, or on trio trio's own."""

    def __enter__(self) -> typing.Any: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...
    def cancel(self) -> None: ...


def _trio_scope() -> Callable[..., _Scope]:
    import trio  # noqa: PLC0415 (only where trio runs, and so is installed)

    return trio.CancelScope


def _anyio_scope() -> Callable[..., _Scope]:
    # The backend's own class, built directly: ``anyio.CancelScope()`` looks it up each time.
    return type(anyio.CancelScope())


def _no_wait_sender(
    transport: anyio.abc.ByteStream, on_unsent: Callable[[], None]
) -> NoWaitSender | None:
    """Put a NoWaitSender under ``transport``'s TLS (or around it, without TLS) when what
    carries it is a TCP socket stream; None when it is something else."""
    under = transport.transport_stream if isinstance(transport, TLSStream) else transport
    if not isinstance(under, anyio.abc.SocketStream | SocketByteStream):
        return None
    sock = under.extra(SocketAttribute.raw_socket, None)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None
    sender = NoWaitSender(under, sock, on_unsent)
    if isinstance(transport, TLSStream):
        # The TLS stream sends and receives through its transport_stream: from here on,
        # through the sender, for as long as the connection (which owns the stream) runs.
        transport.transport_stream = sender
    return sender


class CredentialsRefused(Exception):
    """Raised by an ``authenticate`` callback to refuse a client; the message reaches it."""


class MuxConnection:
    """A running mux connection. Get one from :func:`connect` or :func:`accept`."""

    def __init__(self, transport: anyio.abc.ByteStream, core: mux.Connection) -> None:
        on_trio = sniffio.current_async_library() == "trio"
        # On trio, sends to the socket under the connection never wait (see _flush_inline).
        self._sender = _no_wait_sender(transport, self._wake_writer) if on_trio else None
        if self._sender is not None and not isinstance(transport, TLSStream):
            transport = self._sender
        self._transport = transport
        self._receive_size = TLS_RECEIVE_SIZE if isinstance(transport, TLSStream) else RECEIVE_SIZE
        self._core = core
        self._streams: dict[int, _StreamBase] = {}
        # Senders waiting for connection credit, first come first served: a window update is
        # handed to one waiter at a time instead of waking them all to fight over it.
        self._credit_queue: dict[_StreamBase, None] = {}
        self._writing = False  # a task is inside transport.send()
        self._shield_writes = self._sender is None  # see _flush_inline
        self._incoming: deque[_StreamBase] = deque()  # bounded by the core's stream limit
        self._incoming_closed = False
        self._reading = False  # a task is inside transport.receive()
        # The reading task's condition and the scope that ends its read when another task
        # fulfils it (None while the idle reader reads: it stops on its own).
        self._read_done: Callable[[], bool] | None = None
        self._read_scope: _Scope | None = None
        self._reads = 0  # reads that completed frames: the idle reader watches it change
        self._transport_done = False  # EOF or error: nothing more will be read
        # Tasks waiting while another reads, first come first served. Waking one (to read in
        # turn) sets its event; so every waiter re-checks its own condition when it wakes.
        self._waiting: dict[object, anyio.Event] = {}
        # Waiting re-creates an event each time (anyio events cannot be cleared). The
        # backend's own class is built directly: ``anyio.Event()`` looks the backend up on
        # every call, which was a tenth of the cost of a small message.
        self._event: Callable[[], anyio.Event] = type(anyio.Event())
        # The same for cancel scopes: the reading task enters one per read, and a shielded
        # inline write one more. On trio, trio's own scope: anyio's wraps it, which cost a
        # sixth more per scope (made, entered and left: 6.7 against 5.8 us).
        self._cancel_scope = _trio_scope() if on_trio else _anyio_scope()
        self._next_shield = self._cancel_scope(shield=True)
        self._set_event = self._event()  # set for good: see _StreamBase.__init__
        self._set_event.set()
        self._output_wakeup = anyio.Event()
        self._output_taken = anyio.Event()
        self._writer_done = anyio.Event()
        self._handshake = anyio.Event()
        self._closed = anyio.Event()
        self._capacity = anyio.Event()
        self._incoming_event = anyio.Event()
        self._timer_rearm = anyio.Event()
        self._pongs: dict[int, anyio.Event] = {}
        self._rtts: dict[int, float] = {}
        self.peer_credentials = b""

    # -- public API ----------------------------------------------------------------------------

    @property
    def rtt(self) -> float | None:
        """Smoothed round-trip time from keepalive pings, in seconds."""
        return self._core.rtt

    @property
    def terminated(self) -> mux.ConnectionTerminated | None:
        """Why the connection ended, once it has."""
        return self._core.terminated

    async def open_stream(
        self,
        host: str,
        port: int,
        *,
        origin: Address | None = None,
        wait_accepted: bool = True,
    ) -> MuxStream:
        """Open a TCP stream to ``host:port`` as seen from the peer.

        With ``wait_accepted`` (the default) this returns once the peer has reached the
        destination, and raises :class:`StreamResetError` with its reason when it could not.
        Otherwise it returns at once and bytes may be sent right away.
        """
        stream = await self._open(Protocol.TCP, Address(host, port), origin, wait_accepted)
        assert isinstance(stream, MuxStream)
        return stream

    async def open_datagram_stream(
        self, host: str, port: int, *, origin: Address | None = None, wait_accepted: bool = True
    ) -> MuxDatagramStream:
        """Open a UDP flow to ``host:port`` as seen from the peer."""
        stream = await self._open(Protocol.UDP, Address(host, port), origin, wait_accepted)
        assert isinstance(stream, MuxDatagramStream)
        return stream

    async def accept_stream(self) -> MuxStream | MuxDatagramStream:
        """The next stream the peer opened. Answer it with ``accept()`` (or by sending) once
        its destination is reached, or ``reset(reason)`` when it cannot be.

        Raises :class:`anyio.EndOfStream` when the connection ended cleanly, and
        :class:`ConnectionLostError` when it broke.
        """
        while not self._incoming:
            if self._incoming_closed:
                self._raise_if_lost()
                raise anyio.EndOfStream
            if self._incoming_event.is_set():
                self._incoming_event = self._event()
            # A passive wait: it does not read (see _wait_on).
            await self._incoming_event.wait()
        stream = self._incoming.popleft()
        assert isinstance(stream, MuxStream | MuxDatagramStream)
        return stream

    async def ping(self) -> float:
        """Measure one round trip to the peer, in seconds."""
        ping_id = self._core.ping(monotonic())
        if not ping_id:
            self._raise_if_lost()
            raise anyio.ClosedResourceError
        self._pump()
        try:
            while ping_id not in self._rtts:
                if self._core.closed:
                    self._raise_if_lost()
                    raise anyio.ClosedResourceError
                self._pongs[ping_id] = done = self._event()
                await self._wait_on(done)
        finally:
            self._pongs.pop(ping_id, None)
        return self._rtts.pop(ping_id)

    async def drain(self) -> None:
        """Go away gracefully: refuse new streams, let open ones finish, then end."""
        self._core.go_away(ResetReason.NO_ERROR, "draining")
        self._pump()
        await self.wait_closed()

    async def wait_closed(self) -> mux.ConnectionTerminated:
        """Wait until the connection has ended; returns why."""
        await self._closed.wait()  # a passive wait: it does not read (see _wait_on)
        terminated = self._core.terminated
        assert terminated is not None
        return terminated

    # -- streams -------------------------------------------------------------------------------

    async def _open(
        self, protocol: Protocol, destination: Address, origin: Address | None, wait: bool
    ) -> _StreamBase:
        core = self._core
        while not core.can_open_stream():
            self._raise_if_lost()
            if not core.is_open or core.going_away:
                raise anyio.ClosedResourceError("mux connection is closed or going away")
            # At the peer's limit of concurrent streams: wait until one of ours ends.
            if self._capacity.is_set():
                self._capacity = self._event()
            await self._wait_on(self._capacity)
        request = OpenRequest(protocol, destination, origin)
        stream_id = core.open_stream(request)
        kind = MuxStream if protocol is Protocol.TCP else MuxDatagramStream
        stream = kind(self, stream_id, request, local=True)
        self._streams[stream_id] = stream
        self._pump()
        if wait:
            try:
                await stream.wait_accepted()
            except BaseException:
                stream.reset(ResetReason.CANCELLED, "open cancelled")
                raise
        return stream

    def _reset(self, stream_id: int, reason: ResetReason, message: str) -> None:
        self._core.reset_stream(stream_id, reason, message)
        self._pump()

    def _close_stream(self, stream_id: int, *, sent_eof: bool) -> None:
        core = self._core
        if core.is_open and stream_id in self._streams:
            if not sent_eof:
                core.half_close(stream_id)
            # Still in the core: the peer may still send. Tell it to stop.
            core.reset_stream(stream_id, ResetReason.CANCELLED, "closed by the application")
        self._pump()

    def _forget(self, stream: _StreamBase) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._credit_queue.pop(stream, None)

    # -- the dispatcher ------------------------------------------------------------------------

    def _pump(self, *, wake_writer: bool = True) -> None:
        """Hand every pending core event to its stream, and wake the writer if needed.

        Senders pass ``wake_writer=False``: they write inline next (``_flush_inline``), or the
        task already writing picks their frames up when its current write completes.
        """
        core = self._core
        streams = self._streams
        while (event := core.next_event()) is not None:
            # Data is most events: dispatched before the match, which tries each pattern.
            if type(event) is mux.DataReceived and (stream := streams.get(event.stream_id)):
                stream._on_data(event.data)
                continue
            match event:
                case mux.DataReceived(stream_id, data) | mux.DatagramReceived(stream_id, data):
                    stream = streams.get(stream_id)
                    if stream is not None:
                        stream._on_data(data)
                    else:  # closed here while the data was in flight (TCP would send RST)
                        core.reset_stream(stream_id, ResetReason.CANCELLED, "stream was closed")
                case mux.SendWindowOpened(stream_id):
                    if stream_id and (stream := streams.get(stream_id)) is not None:
                        stream._on_writable()
                case mux.StreamOpened(stream_id, request):
                    kind = MuxStream if request.protocol is Protocol.TCP else MuxDatagramStream
                    incoming = kind(self, stream_id, request, local=False)
                    streams[stream_id] = incoming
                    if self._incoming_closed:
                        core.reset_stream(stream_id, ResetReason.REFUSED, "not accepting streams")
                        del streams[stream_id]
                    else:
                        self._incoming.append(incoming)
                        self._incoming_event.set()
                case mux.StreamAccepted(stream_id):
                    if (stream := streams.get(stream_id)) is not None:
                        stream._on_accepted()
                case mux.StreamEnded(stream_id):
                    if (stream := streams.get(stream_id)) is not None:
                        stream._on_eof()
                case mux.StreamClosed(stream_id):
                    streams.pop(stream_id, None)
                    self._capacity.set()
                case mux.StreamReset(stream_id, reason, message, remote):
                    if (stream := streams.pop(stream_id, None)) is not None:
                        stream._on_reset(StreamResetError(reason, message, remote=remote))
                    self._capacity.set()
                case mux.PongReceived(ping_id, rtt):
                    if (done := self._pongs.get(ping_id)) is not None:
                        self._rtts[ping_id] = rtt
                        done.set()
                case mux.HandshakeComplete() | mux.HelloReceived():
                    self._handshake.set()
                    self._timer_rearm.set()  # keepalives start: an earlier deadline
                case mux.GoAwayReceived():
                    self._capacity.set()
                case mux.ConnectionTerminated(reason, message, remote):
                    self._on_terminated(ConnectionLostError(reason, message, remote=remote))
        if self._credit_queue and core.connection_credit > 0:
            waiter = next(iter(self._credit_queue))
            del self._credit_queue[waiter]
            waiter._on_writable()
        if wake_writer and core.outbound_size:
            self._output_wakeup.set()

    async def _flush_inline(self) -> bool:
        """Write what the core queued from the calling task, if the writer is idle.

        This saves the writer task's switch on every message. The writer being idle means
        the transport is not backed up, so the write completes promptly. But a write must not
        be cut short: that would leave half a frame on the wire, and anyio's TLS stream breaks
        for good when a send under it is interrupted, even after the bytes were handed over.
        So the write is shielded from cancellation, except on trio over a socket, where it
        goes to a NoWaitSender that never waits (the writer task flushes what the kernel did
        not take): there a shield cost 15 µs of a 170 µs round trip of small messages, while
        on asyncio its cost is lost in the noise. Returns whether it wrote.
        """
        core = self._core
        if self._writing or not core.outbound_size:
            return False
        self._writing = True
        send = self._transport.send
        try:
            if self._shield_writes:
                try:
                    with self._next_shield:
                        while core.outbound_size:
                            await send(core.data_to_send())
                finally:
                    # Made ahead for the next inline write: on trio, making a scope costs
                    # about as much as entering it, and the next write may be a reply that
                    # someone waits for.
                    self._next_shield = self._cancel_scope(shield=True)
            else:
                while core.outbound_size:
                    await send(core.data_to_send())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            self._lose_transport(f"transport failed: {error or type(error).__name__}")
        finally:
            self._writing = False
            self._output_taken.set()
            # Left over when a write failed. (What the sender kept, it woke the writer for.)
            if core.outbound_size:
                self._output_wakeup.set()
        return True

    def _wake_writer(self) -> None:
        self._output_wakeup.set()

    def _on_terminated(self, error: ConnectionLostError) -> None:
        for stream in list(self._streams.values()):
            stream._on_reset(error)
        self._streams.clear()
        self._incoming_closed = True
        for done in (*self._pongs.values(), *self._waiting.values()):
            done.set()
        for event in (
            self._handshake,
            self._closed,
            self._capacity,
            self._output_taken,
            self._incoming_event,
        ):
            event.set()
        self._output_wakeup.set()
        if self._read_scope is not None:
            self._read_scope.cancel()  # the peer may never send what would end that read

    async def _wait_for_handshake(self) -> None:
        core = self._core
        while core.state in (mux.State.AWAIT_PREFACE, mux.State.AWAIT_HELLO):
            if self._handshake.is_set():
                self._handshake = self._event()
            await self._wait_on(self._handshake)

    def _raise_if_lost(self) -> None:
        terminated = self._core.terminated
        if terminated is not None and terminated.reason is not ResetReason.NO_ERROR:
            raise ConnectionLostError(
                terminated.reason, terminated.message, remote=terminated.remote
            )

    async def _wait_output_taken(self) -> None:
        if self._output_taken.is_set():
            self._output_taken = self._event()
        self._output_wakeup.set()
        # While the writer is stuck, read: a peer whose writer is stuck on us too is
        # unblocked only by someone reading.
        await self._wait_on(self._output_taken)

    # -- reading ---------------------------------------------------------------------------------

    async def _wait_on(self, event: anyio.Event, *, fresh: bool = False) -> None:
        """Wait until ``event`` is set, reading the transport meanwhile if no task is.

        For waits that expect an answer soon (a stream's data, credit, a pong). Long, passive
        waits (``accept_stream``, ``wait_closed``) wait on their events without reading:
        if they read, the task that does expect the next message would have to wait for
        them to hand it over, which is the task switch this design avoids. ``fresh``: the
        caller has just made the event, so it is not set yet.
        """
        if not fresh and event.is_set():
            return
        if self._reading or self._transport_done or self._core.closed:
            token = object()
            self._waiting[token] = event
            try:
                await event.wait()
            finally:
                del self._waiting[token]
                self._hand_over()
            return
        await self._read(event.is_set)

    async def _read(self, done: Callable[[], bool], *, idle: bool = False) -> None:
        """Read and dispatch until ``done()``; then let the next waiter read."""
        core = self._core
        receive = self._transport.receive
        size = self._receive_size
        self._reading = True
        try:
            with self._cancel_scope() as scope:
                if not idle:
                    self._read_done = done
                    self._read_scope = scope
                try:
                    extra = 0
                    while not core.closed:
                        if done():
                            # Fulfilled, but the next frame has begun to arrive: its rest was
                            # written with it and is on its way, so finish it while this task
                            # holds the read (a bulk transfer then takes several frames per
                            # wait instead of one; each wait costs a cancel scope). Should the
                            # rest be late (a lost segment), the idle reader ends this read
                            # within IDLE_READ_DELAY, as it ends any fulfilled read.
                            if not core.mid_frame or extra >= MID_FRAME_READS:
                                break
                            extra += 1
                        data = await receive(size)
                        # A read that completes no frame changes nothing here (what other
                        # tasks change ends this read through its scope): read on.
                        while not core.receive_data(data, monotonic()):
                            data = await receive(size)
                        self._reads += 1
                        self._pump()
                finally:
                    self._read_done = self._read_scope = None
        except anyio.EndOfStream:
            self._lose_transport("peer closed the transport")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            self._lose_transport(f"transport failed: {error or type(error).__name__}")
        finally:
            self._reading = False
            self._hand_over()

    def _hand_over(self) -> None:
        """Nobody is reading: wake the first waiter so that it reads (or passes it on)."""
        if not self._reading and self._waiting:
            next(iter(self._waiting.values())).set()

    def _end_fulfilled_read(self) -> None:
        """End the read of a task whose wait another task fulfilled, rather than leave it
        until the peer sends something: a peer waiting for us sends nothing."""
        if (scope := self._read_scope) is not None:
            done = self._read_done
            if done is not None and done():
                scope.cancel()

    def _lose_transport(self, message: str) -> None:
        """The transport failed or ended: nobody reads it again, and the connection is over."""
        self._transport_done = True
        self._core.connection_lost(message)
        self._pump()

    async def _idle_reader(self) -> None:
        """Read when no task has for a while, and until one waits to: an idle connection
        must still answer the peer's pings, take its control frames and its new streams."""
        core = self._core
        seen = -1
        while not core.closed and not self._transport_done:
            await anyio.sleep(IDLE_READ_DELAY)
            # Credit handed on by a sender, or output taken by the writer, can fulfil what
            # the reading task waits for. Ending its read at once would cost a cancellation
            # each time; usually the peer's next frames end it first, so it is done here.
            # (So is the read of a task that has what it waited for and finishes a frame
            # whose rest is late.)
            self._end_fulfilled_read()
            if self._reading or self._reads != seen:
                seen = self._reads
                continue
            await self._read(lambda: bool(self._waiting), idle=True)
            seen = self._reads

    # -- the writer and the timer ----------------------------------------------------------------

    async def _write_loop(self) -> None:
        core = self._core
        send = self._transport.send
        sender = self._sender
        try:
            while True:
                if sender is not None and sender.unsent and not self._writing:
                    # What the kernel did not take goes out before anything more is taken
                    # from the core: that is where senders wait when the link is backed up.
                    self._writing = True
                    try:
                        await sender.flush()
                    finally:
                        self._writing = False
                    continue
                data = b"" if self._writing else core.data_to_send()
                if data:
                    self._output_taken.set()
                    self._writing = True
                    try:
                        await send(data)
                    finally:
                        self._writing = False
                    continue
                if not self._writing:
                    self._output_taken.set()
                    if core.closed:
                        break
                if self._output_wakeup.is_set():
                    self._output_wakeup = self._event()
                    if core.outbound_size and not self._writing:
                        continue
                await self._output_wakeup.wait()
                # Let the tasks that are ready run first: readers of many streams each
                # queue a window update, and one write then carries them all.
                await anyio.lowlevel.cancel_shielded_checkpoint()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            self._lose_transport(f"transport failed: {error or type(error).__name__}")
        finally:
            self._writer_done.set()

    async def _timer_loop(self) -> None:
        # The core's deadlines only move later, except when the handshake completes and
        # keepalives begin; the dispatcher sets _timer_rearm then.
        core = self._core
        while (deadline := core.next_deadline()) is not None:
            with anyio.move_on_after(max(0.0, deadline - monotonic())):
                await self._timer_rearm.wait()
            if self._timer_rearm.is_set():
                self._timer_rearm = self._event()
            core.handle_timer(monotonic())
            self._pump()

    async def _shutdown(self) -> None:
        """Reset what is still open, flush the last frames, stop the tasks."""
        core = self._core
        if not core.closed:
            # Before the handshake this refuses the peer and ends the connection; after it,
            # the connection ends as the last stream is reset (or at once, with none open).
            core.go_away(ResetReason.NO_ERROR, "closing")
            for stream_id in core.stream_ids():
                core.reset_stream(stream_id, ResetReason.CANCELLED, "connection closing")
            self._pump()
        with anyio.move_on_after(CLOSE_GRACE, shield=True):
            await self._writer_done.wait()


@asynccontextmanager
async def _running(
    transport: anyio.abc.ByteStream, core: mux.Connection
) -> AsyncIterator[MuxConnection]:
    connection = MuxConnection(transport, core)
    transport = connection._transport  # with a NoWaitSender around it, that
    # The body's own error is re-raised after the task group, so that callers see it as it
    # is rather than wrapped in an ExceptionGroup by the group it happened to run inside.
    body_error: Exception | None = None
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(connection._idle_reader, name=f"mux {core.role.value} idle reader")
            tasks.start_soon(connection._write_loop, name=f"mux {core.role.value} writer")
            tasks.start_soon(connection._timer_loop, name=f"mux {core.role.value} timer")
            connection._pump()
            try:
                yield connection
            except Exception as error:
                body_error = error
            finally:
                await connection._shutdown()
                tasks.cancel_scope.cancel()
    finally:
        connection._incoming_closed = True
        # A broken link can fail its own close (anyio's TLS stream even fails close_notify
        # after a failed read); releasing it with aclose_forcefully is then all that is left.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CLOSE_GRACE),
            contextlib.suppress(anyio.BrokenResourceError, ssl.SSLError, OSError),
        ):
            if not connection._transport_done:
                await _linger(transport, connection._receive_size)
            await transport.aclose()
        await anyio.aclose_forcefully(transport)
    if body_error is not None:
        raise body_error


async def _linger(transport: anyio.abc.ByteStream, receive_size: int) -> None:
    """Tell the peer that nothing more comes, then read (and drop) what it still sends until
    it closes too. Closing a socket that has unread bytes, or that the peer still writes to,
    resets the connection; and a peer that meets the reset while writing (a window update,
    a pong) loses what it had received and not yet read, such as the frames sent just before
    our GO_AWAY. Both ends do this, so neither waits for the other; CLOSE_GRACE bounds it.
    """
    if not await _half_close(transport):
        return  # the peer cannot be told, and would wait for us as we for it
    try:
        while True:
            await transport.receive(receive_size)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


async def _half_close(stream: anyio.abc.AnyByteStream) -> bool:
    """Send the end of ``stream``; False if it cannot end one direction only."""
    try:
        await stream.send_eof()
    except NotImplementedError:
        # TLS cannot half-close (anyio's TLS stream refuses), the stream under it may; both
        # ends of a mux take the end of what carries the TLS for the end of the TLS stream.
        if isinstance(stream, TLSStream):
            return await _half_close(stream.transport_stream)
        return False
    return True


@asynccontextmanager
async def connect(
    transport: anyio.abc.ByteStream,
    *,
    credentials: bytes = b"",
    settings: mux.Settings | None = None,
) -> AsyncIterator[MuxConnection]:
    """Run the client side of a mux connection over ``transport`` (usually TLS).

    Returns once the server accepted the credentials; raises :class:`HandshakeError` when it
    refused them or does not speak the protocol. The caller bounds the wait with a scope.
    """
    core = mux.Connection(Role.CLIENT, now=monotonic(), settings=settings, credentials=credentials)
    async with _running(transport, core) as connection:
        await connection._wait_for_handshake()
        if not core.is_open:
            raise _handshake_error(core)
        yield connection


@asynccontextmanager
async def accept(
    transport: anyio.abc.ByteStream,
    *,
    authenticate: Authenticator | None = None,
    settings: mux.Settings | None = None,
) -> AsyncIterator[MuxConnection]:
    """Run the server side of a mux connection over ``transport``.

    ``authenticate`` gets the client's credentials and raises :class:`CredentialsRefused` to
    turn it away (the client sees the message, reason ``policy``).
    """
    core = mux.Connection(Role.SERVER, now=monotonic(), settings=settings)
    async with _running(transport, core) as connection:
        await connection._wait_for_handshake()
        if core.state is not mux.State.AWAIT_ACCEPT or core.peer_hello is None:
            raise _handshake_error(core)
        connection.peer_credentials = core.peer_hello.credentials
        if authenticate is not None:
            try:
                await authenticate(core.peer_hello.credentials)
            except CredentialsRefused as refusal:
                core.go_away(ResetReason.POLICY, str(refusal) or "credentials refused")
                connection._pump()
                raise HandshakeError(ResetReason.POLICY, str(refusal)) from refusal
        core.accept_hello(monotonic())
        connection._timer_rearm.set()  # keepalives start: an earlier deadline
        connection._pump()
        yield connection


def _handshake_error(core: mux.Connection) -> HandshakeError:
    terminated = core.terminated
    if terminated is None:
        return HandshakeError(ResetReason.PROTOCOL, f"unexpected state {core.state.value}")
    return HandshakeError(terminated.reason, terminated.message)
