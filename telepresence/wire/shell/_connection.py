"""The mux core run over an anyio byte stream: three tasks and a dispatcher.

``connect()`` (the dialling side) and ``accept()`` (the listening side) are async context
managers. Inside, one task group owns three tasks:

- the reader feeds transport bytes to the core and dispatches its events to the streams;
- the writer sends whatever the core queued; it is the only task that writes, so the reader
  never blocks on a full transport (two peers blocked writing to each other while neither
  reads is the classic multiplexer deadlock);
- the timer wakes the core at its deadlines (keepalive pings, idle timeout).

Application calls on streams (send, receive, close) go straight to the core and then through
the same dispatcher, so every state change is handled in one place. Leaving the context
manager resets what is still open, flushes the GO_AWAY and closes the transport, even when
the body failed or was cancelled.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import monotonic

import anyio
import anyio.abc
import sniffio

from telepresence.wire import mux
from telepresence.wire.mux import Address, OpenRequest, Protocol, ResetReason, Role
from telepresence.wire.shell._errors import ConnectionLostError, HandshakeError, StreamResetError
from telepresence.wire.shell._streams import MuxDatagramStream, MuxStream, _StreamBase

#: How much the reader asks the transport for at once: several frames per call.
RECEIVE_SIZE = 256 * 1024
#: Seconds ``aclose()`` gives the writer to flush the final frames before it drops the link.
CLOSE_GRACE = 2.0

Authenticator = Callable[[bytes], Awaitable[None]]


class CredentialsRefused(Exception):
    """Raised by an ``authenticate`` callback to refuse a client; the message reaches it."""


class MuxConnection:
    """A running mux connection. Get one from :func:`connect` or :func:`accept`."""

    def __init__(self, transport: anyio.abc.ByteStream, core: mux.Connection) -> None:
        self._transport = transport
        self._core = core
        self._streams: dict[int, _StreamBase] = {}
        # Senders waiting for connection credit, first come first served: a window update is
        # handed to one waiter at a time instead of waking them all to fight over it.
        self._credit_queue: dict[_StreamBase, None] = {}
        self._writing = False  # a task is inside transport.send()
        self._shield_writes = sniffio.current_async_library() != "asyncio"
        self._incoming_send, self._incoming = anyio.create_memory_object_stream[_StreamBase](
            max_buffer_size=math.inf  # bounded by the core's concurrent stream limit
        )
        # Waiting re-creates an event each time (anyio events cannot be cleared). The
        # backend's own class is built directly: ``anyio.Event()`` looks the backend up on
        # every call, which was a tenth of the cost of a small message.
        self._event: Callable[[], anyio.Event] = type(anyio.Event())
        self._output_wakeup = anyio.Event()
        self._output_taken = anyio.Event()
        self._writer_done = anyio.Event()
        self._handshake = anyio.Event()
        self._closed = anyio.Event()
        self._capacity = anyio.Event()
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
        try:
            stream = await self._incoming.receive()
        except anyio.EndOfStream:
            self._raise_if_lost()
            raise
        assert isinstance(stream, MuxStream | MuxDatagramStream)
        return stream

    async def ping(self) -> float:
        """Measure one round trip to the peer, in seconds."""
        ping_id = self._core.ping(monotonic())
        if not ping_id:
            self._raise_if_lost()
            raise anyio.ClosedResourceError
        done = self._pongs[ping_id] = anyio.Event()
        self._pump()
        try:
            await done.wait()
        finally:
            self._pongs.pop(ping_id, None)
        rtt = self._rtts.pop(ping_id, None)
        if rtt is None:
            self._raise_if_lost()
            raise anyio.ClosedResourceError
        return rtt

    async def drain(self) -> None:
        """Go away gracefully: refuse new streams, let open ones finish, then end."""
        self._core.go_away(ResetReason.NO_ERROR, "draining")
        self._pump()
        await self._closed.wait()

    async def wait_closed(self) -> mux.ConnectionTerminated:
        """Wait until the connection has ended; returns why."""
        await self._closed.wait()
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
            await self._capacity.wait()
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
            match event:
                case mux.DataReceived(stream_id, data) | mux.DatagramReceived(stream_id, data):
                    stream = streams.get(stream_id)
                    if stream is not None:
                        stream._on_data(data)
                    else:  # closed here while the data was in flight
                        core.reset_stream(stream_id, ResetReason.CANCELLED, "stream was closed")
                case mux.SendWindowOpened(stream_id):
                    if stream_id and (stream := streams.get(stream_id)) is not None:
                        stream._on_writable()
                case mux.StreamOpened(stream_id, request):
                    kind = MuxStream if request.protocol is Protocol.TCP else MuxDatagramStream
                    incoming = kind(self, stream_id, request, local=False)
                    streams[stream_id] = incoming
                    try:
                        self._incoming_send.send_nowait(incoming)
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        core.reset_stream(stream_id, ResetReason.REFUSED, "not accepting streams")
                        del streams[stream_id]
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

        This saves a task switch per message, which is most of the mux's added latency. The
        writer being idle means the transport is not backed up, so the write completes
        promptly; it is shielded because a write cut short by cancellation would leave half
        a frame on the wire. (On asyncio a write hands every byte to the transport before it
        can be cancelled, so the shield, which costs a tenth of a small write, is only raised
        on trio, whose socket writes are loops.) Returns whether it wrote.
        """
        core = self._core
        if self._writing or not core.outbound_size:
            return False
        self._writing = True
        try:
            if self._shield_writes:
                with anyio.CancelScope(shield=True):
                    await self._send_queued()
            else:
                await self._send_queued()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            core.connection_lost(f"transport failed: {error or type(error).__name__}")
            self._pump()
        finally:
            self._writing = False
            self._output_taken.set()
            if core.outbound_size:  # left over when a write failed
                self._output_wakeup.set()
        return True

    async def _send_queued(self) -> None:
        while data := self._core.data_to_send():
            await self._transport.send(data)

    def _on_terminated(self, error: ConnectionLostError) -> None:
        for stream in list(self._streams.values()):
            stream._on_reset(error)
        self._streams.clear()
        self._incoming_send.close()
        for done in self._pongs.values():
            done.set()
        for event in (self._handshake, self._closed, self._capacity, self._output_taken):
            event.set()
        self._output_wakeup.set()

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
        await self._output_taken.wait()

    # -- the three tasks -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        core = self._core
        receive = self._transport.receive
        try:
            while not core.closed:
                data = await receive(RECEIVE_SIZE)
                core.receive_data(data, monotonic())
                self._pump()
        except anyio.EndOfStream:
            core.connection_lost("peer closed the transport")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            core.connection_lost(f"transport failed: {error or type(error).__name__}")
        self._pump()

    async def _write_loop(self) -> None:
        core = self._core
        send = self._transport.send
        try:
            while True:
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
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            core.connection_lost(f"transport failed: {error or type(error).__name__}")
            self._pump()
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
            core.go_away(ResetReason.NO_ERROR, "closing")
            for stream_id in core.stream_ids():
                core.reset_stream(stream_id, ResetReason.CANCELLED, "connection closing")
            if not core.closed:  # before the handshake completed there is nothing to drain
                core.go_away(ResetReason.CANCELLED, "closing")
            self._pump()
        with anyio.move_on_after(CLOSE_GRACE, shield=True):
            await self._writer_done.wait()


@asynccontextmanager
async def _running(
    transport: anyio.abc.ByteStream, core: mux.Connection
) -> AsyncIterator[MuxConnection]:
    connection = MuxConnection(transport, core)
    # The body's own error is re-raised after the task group, so that callers see it as it
    # is rather than wrapped in an ExceptionGroup by the group it happened to run inside.
    body_error: Exception | None = None
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(connection._read_loop, name=f"mux {core.role.value} reader")
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
        connection._incoming_send.close()
        connection._incoming.close()
        # A broken link can fail its own close (anyio's TLS stream even fails close_notify
        # after a failed read); releasing it with aclose_forcefully is then all that is left.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CLOSE_GRACE),
            contextlib.suppress(anyio.BrokenResourceError, ssl.SSLError, OSError),
        ):
            await transport.aclose()
        await anyio.aclose_forcefully(transport)
    if body_error is not None:
        raise body_error


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
        await connection._handshake.wait()
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
        await connection._handshake.wait()
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
