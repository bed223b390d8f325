"""The mux connection as a sans-I/O state machine: bytes in, events out, bytes to send.

A :class:`Connection` never touches a socket or a clock. Its inputs are ``receive_data()``
(bytes from the transport), ``handle_timer()`` and the application's commands
(``open_stream()``, ``send_data()``, ...), each given the current time where time matters.
Its outputs are events (``next_event()``) and bytes for the transport (``data_to_send()``).
The async shell in ``telepresence.wire.shell`` is the only thing that moves those bytes.

Faults are split as in h11: bytes from the peer that break the protocol never raise; they
reset one stream (RESET with a reason) or end the connection (GO_AWAY with a reason and a
``ConnectionTerminated`` event). Commands the protocol does not allow raise
:class:`LocalProtocolError` to the caller.

Stream ids: the client opens odd ids (1, 3, ...), the server even ids (2, 4, ...), each side
strictly increasing, so the two never collide and a closed id is never reused. A frame for an
id the peer opened earlier but that is now closed is dropped silently: it was in flight when
the stream ended.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from dataclasses import dataclass, field

from telepresence.wire.mux import _frames as wire
from telepresence.wire.mux._buffer import ChunkBuffer
from telepresence.wire.mux._errors import LocalProtocolError, ProtocolError, ResetReason
from telepresence.wire.mux._events import (
    ConnectionTerminated,
    DatagramReceived,
    DataReceived,
    Event,
    GoAwayReceived,
    HandshakeComplete,
    HelloReceived,
    PongReceived,
    SendWindowOpened,
    StreamAccepted,
    StreamClosed,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from telepresence.wire.mux._flow import FlowSettings, ReceiveWindow
from telepresence.wire.mux._frames import FrameType, OpenRequest, Protocol


class Role(enum.Enum):
    CLIENT = "client"  # dials the transport, sends the preface, opens odd stream ids
    SERVER = "server"  # accepts the transport, checks the client's hello, opens even ids


class State(enum.Enum):
    # Members are singletons: hash them by identity, in C, not by name in Python as Enum
    # does; states are looked up on every frame.
    __hash__ = object.__hash__

    AWAIT_PREFACE = "await-preface"  # server: the 8 magic bytes first
    AWAIT_HELLO = "await-hello"  # the peer's HELLO is the only acceptable frame
    AWAIT_ACCEPT = "await-accept"  # server: the application is checking the credentials
    OPEN = "open"
    CLOSED = "closed"


#: Which frames the peer may send in each connection state; anything else ends the
#: connection with a PROTOCOL reason. The client sends nothing after its HELLO until the
#: server answers, and a server may refuse a client with GO_AWAY before saying hello.
ALLOWED_FRAMES: dict[State, frozenset[FrameType]] = {
    State.AWAIT_PREFACE: frozenset(),
    State.AWAIT_HELLO: frozenset({FrameType.HELLO, FrameType.GO_AWAY}),
    State.AWAIT_ACCEPT: frozenset(),
    State.OPEN: frozenset(FrameType) - {FrameType.HELLO},
    State.CLOSED: frozenset(),
}


_FRAME_TYPES: dict[int, FrameType] = {int(kind): kind for kind in FrameType}
_DATA = int(FrameType.DATA)
_HEADER_SIZE = wire.HEADER_SIZE

#: States in which received frames are parsed; in AWAIT_ACCEPT they wait in the buffer.
_PARSING = frozenset({State.AWAIT_HELLO, State.OPEN})


@dataclass(frozen=True, slots=True)
class Settings:
    """What this side allows its peer, and how it keeps the connection alive."""

    #: Streams the peer may have open towards this side at once; more are reset.
    max_concurrent_streams: int = 1024
    flow: FlowSettings = field(default_factory=FlowSettings)
    #: Seconds between keepalive pings (which also refresh the RTT estimate).
    keepalive_interval: float = 10.0
    #: Seconds without any frame from the peer after which the connection is dead.
    idle_timeout: float = 30.0


#: Pings this side may have outstanding; older ones are forgotten (their pong is ignored).
MAX_OUTSTANDING_PINGS = 8
#: Control frames (pongs, window updates, resets) this side will queue for a peer that does
#: not read them. A peer that makes us queue more is flooding: the connection ends.
MAX_CONTROL_BACKLOG = 16384


class _Stream:
    __slots__ = (
        "accepted",
        "local_open",
        "local_origin",
        "protocol",
        "receive",
        "remote_open",
        "send_credit",
        "stream_id",
    )

    def __init__(
        self, stream_id: int, protocol: Protocol, local_origin: bool, receive: int, send: int
    ) -> None:
        self.stream_id = stream_id
        self.protocol = protocol
        self.local_origin = local_origin  # this side opened it
        self.accepted = False  # the acceptor answered OPEN|ACK
        self.local_open = True  # this side may still send
        self.remote_open = True  # the peer may still send
        self.receive = ReceiveWindow(receive)
        self.send_credit = send


class _StreamError(Exception):
    """The peer broke the protocol on one stream: reset it, keep the connection."""

    def __init__(self, reason: ResetReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Connection:
    """One end of a mux connection."""

    def __init__(
        self,
        role: Role,
        *,
        now: float,
        settings: Settings | None = None,
        credentials: bytes = b"",
    ) -> None:
        self.role = role
        self.settings = settings or Settings()
        if len(credentials) > wire.MAX_CREDENTIALS:
            raise LocalProtocolError("credentials longer than 4096 bytes")
        self._credentials = credentials
        self.state = State.AWAIT_PREFACE if role is Role.SERVER else State.AWAIT_HELLO
        self.peer_hello: wire.Hello | None = None

        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._peer_parity = 0 if role is Role.CLIENT else 1
        self._highest_peer_stream = 0
        self._local_streams = 0  # open streams this side started
        self._remote_streams = 0  # open streams the peer started

        flow = self.settings.flow
        self._receive = ReceiveWindow(flow.initial_window)  # the connection's window
        self._received_unreleased = 0
        self._stream_windows = 0  # sum of the stream windows this side has granted
        self._send_credit = 0  # connection credit the peer granted; set by its HELLO
        self._stream_send_window = 0  # what each new stream starts with, from its HELLO

        self._go_away_sent = False
        self._go_away_received = False
        self.terminated: ConnectionTerminated | None = None

        self._inbound = ChunkBuffer()
        # The header of a frame whose payload has not all arrived: kind, flags, id, length.
        self._partial_frame: tuple[int, int, int, int] | None = None
        self._outbound: list[bytes | memoryview] = []
        #: Bytes queued for the transport that ``data_to_send()`` has not handed out yet.
        #: Read-only for callers; an attribute rather than a property because the shell
        #: checks it several times per message.
        self.outbound_size = 0
        self._control_backlog = 0
        self._events: deque[Event] = deque()

        self.rtt: float | None = None  # smoothed round-trip time, seconds
        self._pings: dict[int, float] = {}
        self._ping_counter = 0
        self._last_received = now
        self._next_keepalive = now + self.settings.keepalive_interval

        if role is Role.CLIENT:
            self._write(wire.MAGIC)
            self._send_frame(FrameType.HELLO, 0, wire.encode_hello(self._hello()))

    # -- queries -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def going_away(self) -> bool:
        """A GO_AWAY was sent or received: no new streams on this connection."""
        return self._go_away_sent or self._go_away_received

    @property
    def mid_frame(self) -> bool:
        """Part of a frame has arrived and the rest has not: the peer wrote it whole, so the
        rest is on its way. (Never while the server checks credentials: what the client
        sent early then waits in the buffer, and nothing more comes.)"""
        return self.state is State.OPEN and (
            self._partial_frame is not None or self._inbound.size > 0
        )

    def can_open_stream(self) -> bool:
        """Whether ``open_stream()`` would succeed now (handshake done, under the peer's limit,
        nobody going away)."""
        return (
            self.state is State.OPEN
            and not self.going_away
            and self.peer_hello is not None
            and self._local_streams < self.peer_hello.max_concurrent_streams
            and self._next_stream_id <= wire.MAX_STREAM_ID
        )

    def send_credit(self, stream_id: int) -> int:
        """Payload bytes that may be sent on the stream now (0 if it cannot send)."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open or self.state is not State.OPEN:
            return 0
        return max(0, min(stream.send_credit, self._send_credit))

    @property
    def connection_credit(self) -> int:
        """Connection-level credit the peer has granted and this side has not used."""
        return self._send_credit

    def stream_credit(self, stream_id: int) -> int:
        """The stream's own credit, regardless of the connection's."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.send_credit

    def stream_ids(self) -> list[int]:
        return list(self._streams)

    # -- output ----------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the transport, in order; empty when nothing is."""
        if not self._outbound:
            return b""
        data = b"".join(self._outbound)
        self._outbound.clear()
        self.outbound_size = 0
        self._control_backlog = 0
        return data

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _write(self, data: bytes | memoryview) -> None:
        self._outbound.append(data)
        self.outbound_size += len(data)

    def _send_frame(
        self, frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0
    ) -> None:
        self._write(wire.frame(frame_type, stream_id, payload, flags))

    def _send_control(
        self, frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0
    ) -> None:
        self._control_backlog += 1
        if self._control_backlog > MAX_CONTROL_BACKLOG:
            raise ProtocolError(
                ResetReason.PROTOCOL, "peer floods control frames without reading the answers"
            )
        self._send_frame(frame_type, stream_id, payload, flags)

    # -- handshake -------------------------------------------------------------------------------

    def _hello(self) -> wire.Hello:
        return wire.Hello(
            max_concurrent_streams=self.settings.max_concurrent_streams,
            initial_stream_window=self.settings.flow.initial_window,
            initial_connection_window=self.settings.flow.initial_window,
            credentials=self._credentials,
        )

    def accept_hello(self, now: float) -> None:
        """Server: the client's credentials are good; answer HELLO and open the connection."""
        if self.role is not Role.SERVER or self.state is not State.AWAIT_ACCEPT:
            raise LocalProtocolError(f"accept_hello() in state {self.state.value}")
        self._send_frame(FrameType.HELLO, 0, wire.encode_hello(self._hello()))
        self.state = State.OPEN
        self.ping(now)
        if self._inbound.size:
            self._process(now)

    def _on_hello(self, hello: wire.Hello, now: float) -> None:
        self.peer_hello = hello
        self._send_credit = hello.initial_connection_window
        self._stream_send_window = hello.initial_stream_window
        if self.role is Role.SERVER:
            self.state = State.AWAIT_ACCEPT
            self._events.append(HelloReceived(hello))
        else:
            self.state = State.OPEN
            self._events.append(HandshakeComplete(hello))
            self.ping(now)

    # -- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Feed bytes from the transport; events and answers queue up as frames complete.

        Returns False when the bytes only extended a frame that is still incomplete: then
        there is nothing new to collect, and a caller may go straight back to reading.
        """
        if self.state is State.CLOSED or not data:
            return True
        self._last_received = now
        buffer = self._inbound
        frame = self._partial_frame
        if (
            frame is None
            and not buffer.size
            and self.state is State.OPEN
            and type(data) is bytes
            and len(data) > _HEADER_SIZE
            and data[1] == _DATA
        ):
            # An interactive exchange writes a message at a time, so a read often holds
            # exactly one DATA frame and nothing before it: take that straight from ``data``.
            # Anything else, including any fault, goes the general way below.
            version, _, flags, reserved, stream_id, length = wire.HEADER.unpack_from(data)
            if (
                len(data) == _HEADER_SIZE + length
                and version == wire.VERSION
                and not (flags or reserved)
                and stream_id
                and length <= wire.MAX_PAYLOAD
            ):
                try:
                    self._on_data(stream_id, data[_HEADER_SIZE:])
                except ProtocolError as error:
                    self._fail(error.reason, error.message)
                if self.state is State.OPEN:
                    self._release_connection_credit(now)
                return True
        buffer.append(data)
        # Most reads of a bulk transfer bring the middle of a frame's payload (TLS hands over
        # at most a 16 KiB record per read, a frame carries up to 64 KiB): nothing to do
        # until the frame is complete.
        if frame is not None and buffer.size < frame[3]:
            return False
        self._process(now)
        return True

    def _process(self, now: float) -> None:
        buffer = self._inbound
        if self.state is State.AWAIT_ACCEPT:
            # The application is still checking the client's credentials. A client sends
            # nothing before the server's HELLO, but bytes can arrive in the same read as the
            # HELLO after the timeline collapsed (a proxy, a replay): keep them, within reason.
            if buffer.size > wire.MAX_FRAME:
                self._fail(ResetReason.PROTOCOL, "client sent frames before the handshake")
                buffer.clear()
            return
        try:
            self._parse(buffer, now)
        except ProtocolError as error:
            self._fail(error.reason, error.message)
        if self.state is State.CLOSED:
            buffer.clear()
        elif self._received_unreleased and self.state is State.OPEN:
            self._release_connection_credit(now)

    def _parse(self, buffer: ChunkBuffer, now: float) -> None:
        """Handle every complete frame in ``buffer``, leaving a partial one in it."""
        if self.state is State.AWAIT_PREFACE:
            preface = buffer.peek(min(buffer.size, len(wire.MAGIC)))
            if not wire.MAGIC.startswith(preface):
                raise ProtocolError(ResetReason.PROTOCOL, "peer does not speak tpmux")
            if len(preface) < len(wire.MAGIC):
                return
            buffer.take(len(wire.MAGIC))
            self.state = State.AWAIT_HELLO
        # A frame's header is read (and checked) as soon as it is complete; its payload
        # usually arrives over several reads, which then only compare sizes.
        header = wire.HEADER
        header_size = wire.HEADER_SIZE
        max_payload = wire.MAX_PAYLOAD
        frame = self._partial_frame
        while self.state in _PARSING:
            if frame is None:
                if buffer.size < header_size:
                    break
                version, kind, flags, reserved, stream_id, length = buffer.unpack(header)
                if version != wire.VERSION:
                    raise ProtocolError(
                        ResetReason.PROTOCOL,
                        f"frame version {version} not supported (this side speaks {wire.VERSION})",
                    )
                if length > max_payload:
                    raise ProtocolError(
                        ResetReason.PROTOCOL, f"frame length {length} over {wire.MAX_PAYLOAD}"
                    )
                if reserved:
                    raise ProtocolError(ResetReason.PROTOCOL, "reserved header byte is not 0")
                if buffer.size < length:
                    frame = (kind, flags, stream_id, length)
                    break
            else:
                kind, flags, stream_id, length = frame
                if buffer.size < length:
                    break
                frame = None
            payload = buffer.take(length) if length else b""
            if kind == _DATA and not flags and stream_id and self.state is State.OPEN:
                self._on_data(stream_id, payload)
            else:
                self._on_frame(kind, flags, stream_id, payload, now)
        self._partial_frame = frame

    def _on_data(self, stream_id: int, payload: bytes) -> None:
        """DATA, most frames by far, without the table lookups of ``_on_frame`` (whose checks
        it passes, with the caller's): an open TCP stream within its credit takes the
        payload here; anything else goes the general way."""
        count = len(payload)
        stream = self._streams.get(stream_id)
        if (
            stream is not None
            and stream.remote_open
            and stream.protocol is Protocol.TCP
            and count <= stream.receive.available
            and self._receive.take(count)
        ):
            self._received_unreleased += count
            stream.receive.available -= count
            if count:
                self._events.append(DataReceived(stream_id, payload))
        else:
            self._on_stream_frame(FrameType.DATA, 0, stream_id, payload)

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        # A dict lookup, not FrameType(kind): this runs for every frame, and the enum's
        # constructor costs ten times more.
        if kind not in ALLOWED_FRAMES[self.state]:
            if kind not in _FRAME_TYPES:
                raise ProtocolError(ResetReason.PROTOCOL, f"frame type {kind} unknown")
            raise ProtocolError(
                ResetReason.PROTOCOL,
                f"{_FRAME_TYPES[kind].name} not allowed in state {self.state.value}",
            )
        frame_type = _FRAME_TYPES[kind]
        if flags & ~wire.ALLOWED_FLAGS[frame_type]:
            raise ProtocolError(ResetReason.PROTOCOL, f"{frame_type.name} has unknown flags")
        if kind in wire.CONNECTION_FRAMES:
            if stream_id != 0:
                raise ProtocolError(ResetReason.PROTOCOL, f"{frame_type.name} on a stream")
            if kind == FrameType.HELLO:
                self._on_hello(wire.decode_hello(payload), now)
            elif kind == FrameType.PING:
                self._on_ping(flags, wire.decode_u64(payload, "PING"), now)
            else:
                self._on_go_away(*wire.decode_go_away(payload))
        elif stream_id == 0:
            if kind != FrameType.WINDOW_UPDATE:
                raise ProtocolError(ResetReason.PROTOCOL, f"{frame_type.name} on stream 0")
            self._on_connection_window_update(wire.decode_u32(payload, "WINDOW_UPDATE"))
        else:
            self._on_stream_frame(frame_type, flags, stream_id, payload)

    # -- stream frames ---------------------------------------------------------------------------

    def _on_stream_frame(
        self, frame_type: FrameType, flags: int, stream_id: int, payload: bytes
    ) -> None:
        if frame_type in (FrameType.DATA, FrameType.DATAGRAM):
            # Connection credit is spent by every data frame, even one for a stream that has
            # just closed, or the two sides' accounts would drift apart.
            if not self._receive.take(len(payload)):
                raise ProtocolError(ResetReason.PROTOCOL, "connection flow-control window exceeded")
            self._received_unreleased += len(payload)

        stream = self._streams.get(stream_id)
        if stream is None:
            self._on_unknown_stream(frame_type, flags, stream_id, payload)
            return
        try:
            self._stream_frame(stream, frame_type, flags, payload)
        except _StreamError as error:
            self._refuse(stream_id, error.reason, error.message)
            self._end(stream, StreamReset(stream_id, error.reason, error.message, remote=False))

    def _on_unknown_stream(
        self, frame_type: FrameType, flags: int, stream_id: int, payload: bytes
    ) -> None:
        peers = stream_id % 2 == self._peer_parity
        if peers and stream_id > self._highest_peer_stream:
            if frame_type is FrameType.OPEN and not flags:
                self._on_open(stream_id, payload)
                return
            never_opened = True
        else:
            never_opened = not peers and stream_id >= self._next_stream_id
        if never_opened:
            raise ProtocolError(
                ResetReason.PROTOCOL, f"{frame_type.name} on stream {stream_id} never opened"
            )
        # Otherwise the stream existed and is closed: the frame crossed our RESET or
        # HALF_CLOSE on the wire. Drop it (its connection credit is already accounted for).

    def _on_open(self, stream_id: int, payload: bytes) -> None:
        self._highest_peer_stream = stream_id
        try:
            request = wire.decode_open(payload)
        except ProtocolError as error:
            # A malformed OPEN costs the peer that one stream, not the connection.
            self._refuse(stream_id, error.reason, error.message)
            return
        if self._go_away_sent:
            self._refuse(stream_id, ResetReason.REFUSED, "connection is going away")
            return
        if self._remote_streams >= self.settings.max_concurrent_streams:
            message = f"more than {self.settings.max_concurrent_streams} concurrent streams"
            self._refuse(stream_id, ResetReason.STREAM_LIMIT, message)
            return
        self._add_stream(stream_id, request.protocol, local_origin=False)
        self._events.append(StreamOpened(stream_id, request))

    #: Per-stream rules, by frame type: (the peer must still be sending, the protocol it
    #: needs or None for any). DATA belongs to TCP streams and DATAGRAM to UDP streams;
    #: nothing but RESET and WINDOW_UPDATE may follow the peer's HALF_CLOSE.
    STREAM_RULES: dict[FrameType, tuple[bool, Protocol | None]] = {  # noqa: RUF012
        FrameType.OPEN: (False, None),
        FrameType.DATA: (True, Protocol.TCP),
        FrameType.DATAGRAM: (True, Protocol.UDP),
        FrameType.WINDOW_UPDATE: (False, None),
        FrameType.HALF_CLOSE: (True, None),
        FrameType.RESET: (False, None),
    }

    def _stream_frame(
        self, stream: _Stream, frame_type: FrameType, flags: int, payload: bytes
    ) -> None:
        needs_remote_open, protocol = self.STREAM_RULES[frame_type]
        if needs_remote_open and not stream.remote_open:
            raise _StreamError(ResetReason.PROTOCOL, f"{frame_type.name} after HALF_CLOSE")
        if protocol is not None and stream.protocol is not protocol:
            raise _StreamError(
                ResetReason.PROTOCOL, f"{frame_type.name} on a {stream.protocol.name} stream"
            )
        sid = stream.stream_id
        if frame_type is FrameType.DATA or frame_type is FrameType.DATAGRAM:
            if not stream.receive.take(len(payload)):
                raise _StreamError(ResetReason.PROTOCOL, "stream flow-control window exceeded")
            if frame_type is FrameType.DATA:
                if payload:
                    self._events.append(DataReceived(sid, payload))
            else:
                self._events.append(DatagramReceived(sid, payload))
        elif frame_type is FrameType.WINDOW_UPDATE:
            increment = wire.decode_u32(payload, "WINDOW_UPDATE")
            if increment == 0 or stream.send_credit + increment > wire.MAX_WINDOW:
                raise _StreamError(ResetReason.PROTOCOL, "WINDOW_UPDATE increment invalid")
            stream.send_credit += increment
            self._events.append(SendWindowOpened(sid))
        elif frame_type is FrameType.HALF_CLOSE:
            if payload:
                raise _StreamError(ResetReason.PROTOCOL, "HALF_CLOSE carries a payload")
            stream.remote_open = False
            self._events.append(StreamEnded(sid))
            if not stream.local_open:
                self._end(stream, StreamClosed(sid))
        elif frame_type is FrameType.RESET:
            reason, message = wire.decode_reason(payload)
            self._end(stream, StreamReset(sid, reason, message, remote=True))
        else:  # OPEN on a live stream: only the acceptor's answer is allowed
            if flags != wire.FLAG_ACK or payload:
                raise ProtocolError(ResetReason.PROTOCOL, f"stream {sid} opened twice")
            if not stream.local_origin or stream.accepted:
                raise _StreamError(ResetReason.PROTOCOL, "unexpected OPEN acknowledgement")
            stream.accepted = True
            self._events.append(StreamAccepted(sid))

    # -- connection frames -----------------------------------------------------------------------

    def _on_connection_window_update(self, increment: int) -> None:
        if increment == 0 or self._send_credit + increment > wire.MAX_WINDOW:
            raise ProtocolError(ResetReason.PROTOCOL, "connection WINDOW_UPDATE increment invalid")
        self._send_credit += increment
        self._events.append(SendWindowOpened(0))

    def _on_ping(self, flags: int, opaque: int, now: float) -> None:
        if not flags & wire.FLAG_ACK:
            self._send_control(FrameType.PING, 0, wire.encode_u64(opaque), wire.FLAG_ACK)
            return
        sent = self._pings.pop(opaque, None)
        if sent is None:
            return  # a pong for a ping already forgotten
        sample = max(now - sent, 0.0)
        # RFC 6298 smoothing, so that one delayed pong does not swing the windows.
        self.rtt = sample if self.rtt is None else 0.875 * self.rtt + 0.125 * sample
        self._events.append(PongReceived(opaque, sample))

    def _on_go_away(self, last_stream_id: int, reason: ResetReason, message: str) -> None:
        if self.state is State.AWAIT_HELLO:  # refused before the handshake completed
            self._terminate(reason, message, remote=True)
            return
        self._go_away_received = True
        self._events.append(GoAwayReceived(last_stream_id, reason, message))
        for stream in list(self._streams.values()):
            if stream.local_origin and stream.stream_id > last_stream_id:
                self._forget(stream)
                note = f"peer is going away: {message}" if message else "peer is going away"
                self._events.append(
                    StreamReset(stream.stream_id, ResetReason.REFUSED, note, remote=True)
                )
        if reason is not ResetReason.NO_ERROR:
            self._terminate(reason, message, remote=True)
        else:
            self._maybe_drained()

    # -- commands ------------------------------------------------------------------------------

    def open_stream(self, request: OpenRequest) -> int:
        """Open a stream to ``request.destination``; returns its id. Data may follow at once."""
        if not self.can_open_stream():
            raise LocalProtocolError(self._why_cannot_open())
        _check_request(request)
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        self._add_stream(stream_id, request.protocol, local_origin=True)
        self._send_frame(FrameType.OPEN, stream_id, wire.encode_open(request))
        return stream_id

    def _why_cannot_open(self) -> str:
        if self.state is not State.OPEN:
            return f"connection is {self.state.value}"
        if self.going_away:
            return "connection is going away"
        if self._next_stream_id > wire.MAX_STREAM_ID:
            return "stream ids exhausted: open a new connection"
        return "peer's concurrent stream limit reached"

    def accept_stream(self, stream_id: int) -> None:
        """Tell the peer that the destination of a stream it opened is reached."""
        stream = self._live_stream(stream_id)
        if stream.local_origin:
            raise LocalProtocolError(f"stream {stream_id} was opened by this side")
        self._ensure_accepted(stream)

    def _ensure_accepted(self, stream: _Stream) -> None:
        if not stream.accepted and not stream.local_origin:
            stream.accepted = True
            self._send_frame(FrameType.OPEN, stream.stream_id, flags=wire.FLAG_ACK)

    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as credit allows; returns how many bytes were taken.

        ``data`` must not change until ``data_to_send()`` has handed it out.
        """
        stream = self._streams.get(stream_id)
        if (
            stream is None
            or not stream.local_open
            or stream.protocol is not Protocol.TCP
            or self.state is not State.OPEN
            or not (stream.accepted or stream.local_origin)
        ):
            # Not the usual open stream: the checks that raise, and the implied OPEN|ACK.
            stream = self._sending_stream(stream_id, Protocol.TCP)
        count = min(len(data), stream.send_credit, self._send_credit)
        if count <= 0:
            return 0
        stream.send_credit -= count
        self._send_credit -= count
        header = wire.HEADER
        step = wire.MAX_PAYLOAD
        outbound = self._outbound
        if count == len(data) and count <= step:  # all of it in one frame: nothing to cut
            outbound.append(header.pack(wire.VERSION, _DATA, 0, 0, stream_id, count))
            outbound.append(data)
            self.outbound_size += count + wire.HEADER_SIZE
            return count
        view = memoryview(data)
        for offset in range(0, count, step):
            chunk = view[offset : min(offset + step, count)]
            outbound.append(header.pack(wire.VERSION, _DATA, 0, 0, stream_id, len(chunk)))
            outbound.append(chunk)
        self.outbound_size += count + (count + step - 1) // step * wire.HEADER_SIZE
        return count

    def send_datagram(self, stream_id: int, data: bytes) -> bool:
        """Queue one datagram; False (and nothing sent) when credit does not cover it, since a
        datagram is never split and UDP may drop."""
        stream = self._sending_stream(stream_id, Protocol.UDP)
        if len(data) > wire.MAX_PAYLOAD:
            raise LocalProtocolError(f"datagram of {len(data)} bytes exceeds {wire.MAX_PAYLOAD}")
        if len(data) > min(stream.send_credit, self._send_credit):
            return False
        stream.send_credit -= len(data)
        self._send_credit -= len(data)
        self._send_frame(FrameType.DATAGRAM, stream_id, bytes(data))
        return True

    def half_close(self, stream_id: int) -> None:
        """This side sends no more on the stream (TCP FIN)."""
        stream = self._live_stream(stream_id)
        if not stream.local_open:
            return
        self._ensure_accepted(stream)
        stream.local_open = False
        self._send_frame(FrameType.HALF_CLOSE, stream_id)
        if not stream.remote_open:
            self._end(stream, StreamClosed(stream_id))

    def reset_stream(self, stream_id: int, reason: ResetReason, message: str = "") -> None:
        """Abort the stream in both directions; unknown or closed streams are ignored."""
        stream = self._streams.get(stream_id)
        if stream is None or self.state is State.CLOSED:
            return
        self._forget(stream)
        self._send_frame(FrameType.RESET, stream_id, wire.encode_reason(reason, message))
        self._maybe_drained()

    def consumed(self, stream_id: int, count: int, now: float) -> None:
        """The application has read ``count`` bytes of the stream: return credit as due."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open or self.state is not State.OPEN:
            return
        window = stream.receive
        if not window.consume(count):
            return
        flow = self.settings.flow
        limit = min(flow.max_window, window.size + flow.stream_budget - self._stream_windows)
        before = window.size
        increment = window.grant(now, self.rtt, limit)
        self._stream_windows += window.size - before
        self._send_frame(FrameType.WINDOW_UPDATE, stream_id, wire.encode_u32(increment))

    def _release_connection_credit(self, now: float) -> None:
        # The connection's credit comes back as soon as data reaches a stream's buffer, not
        # when the application reads it: the stream windows bound what a stalled reader
        # holds, so one stalled stream can never starve the others of connection credit.
        count, self._received_unreleased = self._received_unreleased, 0
        if self._receive.consume(count):
            increment = self._receive.grant(now, self.rtt, self.settings.flow.max_window)
            self._send_frame(FrameType.WINDOW_UPDATE, 0, wire.encode_u32(increment))

    def ping(self, now: float) -> int:
        """Send a PING; its PONG refreshes ``rtt`` and yields ``PongReceived`` with the id
        returned here (0: not sent, the connection is not open)."""
        if self.state is not State.OPEN:
            return 0
        self._ping_counter += 1
        self._pings[self._ping_counter] = now
        while len(self._pings) > MAX_OUTSTANDING_PINGS:
            del self._pings[next(iter(self._pings))]
        self._send_frame(FrameType.PING, 0, wire.encode_u64(self._ping_counter))
        return self._ping_counter

    def go_away(self, reason: ResetReason = ResetReason.NO_ERROR, message: str = "") -> None:
        """Take no new streams. With NO_ERROR, streams already open finish first and
        ``ConnectionTerminated`` follows when the last one ends; any other reason ends the
        connection now. Before the handshake completes, this refuses the peer."""
        if self.state is State.CLOSED:
            return
        if self.state is not State.OPEN or reason is not ResetReason.NO_ERROR:
            self._fail(reason, message)
            return
        if not self._go_away_sent:
            self._go_away_sent = True
            self._send_frame(
                FrameType.GO_AWAY,
                0,
                wire.encode_go_away(self._highest_peer_stream, reason, message),
            )
        self._maybe_drained()

    def connection_lost(self, message: str = "transport closed") -> None:
        """The transport ended under the connection (the shell saw EOF or an error)."""
        if self.state is not State.CLOSED:
            self._terminate(ResetReason.PROTOCOL, message, remote=True)

    # -- timers --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timer()`` must next be called, or None."""
        if self.state is State.CLOSED:
            return None
        idle = self._last_received + self.settings.idle_timeout
        if self.state is not State.OPEN:
            return idle
        return min(idle, self._next_keepalive)

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if now >= self._last_received + self.settings.idle_timeout:
            self._fail(
                ResetReason.TIMEOUT,
                f"nothing received from the peer for {self.settings.idle_timeout:g} s",
            )
            return
        if self.state is State.OPEN and now >= self._next_keepalive:
            self._next_keepalive = now + self.settings.keepalive_interval
            self.ping(now)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _add_stream(self, stream_id: int, protocol: Protocol, *, local_origin: bool) -> None:
        window = self.settings.flow.initial_window
        stream = _Stream(stream_id, protocol, local_origin, window, self._stream_send_window)
        self._streams[stream_id] = stream
        self._stream_windows += window
        if local_origin:
            self._local_streams += 1
        else:
            self._remote_streams += 1

    def _forget(self, stream: _Stream) -> None:
        del self._streams[stream.stream_id]
        self._stream_windows -= stream.receive.size
        if stream.local_origin:
            self._local_streams -= 1
        else:
            self._remote_streams -= 1

    def _end(self, stream: _Stream, event: StreamClosed | StreamReset) -> None:
        """The stream is over: forget it, say so, and end a connection that was draining."""
        self._forget(stream)
        self._events.append(event)
        self._maybe_drained()

    def _refuse(self, stream_id: int, reason: ResetReason, message: str) -> None:
        """Answer a peer's frame with a RESET of its stream, counted against flooding."""
        self._send_control(FrameType.RESET, stream_id, wire.encode_reason(reason, message))

    def _maybe_drained(self) -> None:
        if self.going_away and not self._streams and self.state is State.OPEN:
            self._terminate(ResetReason.NO_ERROR, "all streams done", remote=False)

    def _live_stream(self, stream_id: int) -> _Stream:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"connection is {self.state.value}")
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return stream

    def _sending_stream(self, stream_id: int, protocol: Protocol) -> _Stream:
        stream = self._live_stream(stream_id)
        if stream.protocol is not protocol:
            raise LocalProtocolError(f"stream {stream_id} carries {stream.protocol.name}")
        if not stream.local_open:
            raise LocalProtocolError(f"stream {stream_id} is half-closed for sending")
        self._ensure_accepted(stream)
        return stream

    def _fail(self, reason: ResetReason, message: str) -> None:
        """End the connection because of this side's verdict, telling the peer why."""
        self._send_frame(
            FrameType.GO_AWAY, 0, wire.encode_go_away(self._highest_peer_stream, reason, message)
        )
        self._terminate(reason, message, remote=False)

    def _terminate(self, reason: ResetReason, message: str, *, remote: bool) -> None:
        self.state = State.CLOSED
        self._streams.clear()
        self._local_streams = self._remote_streams = self._stream_windows = 0
        self.terminated = ConnectionTerminated(reason, message, remote)
        self._events.append(self.terminated)


def _check_request(request: OpenRequest) -> None:
    for address, what in ((request.destination, "destination"), (request.origin, "origin")):
        if address is None:
            continue
        if not 0 <= address.port <= 65535 or (what == "destination" and address.port == 0):
            raise LocalProtocolError(f"{what} port {address.port} out of range")
        if _is_ip(address.host):
            continue
        if what == "origin":
            raise LocalProtocolError("origin must be an IP address")
        try:
            name = address.host.encode("idna")
        except UnicodeError:
            name = b""
        if not 1 <= len(name) <= wire.MAX_NAME:
            raise LocalProtocolError(f"destination {address.host!r} is not a valid name")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
