"""What the core tells the application, one small immutable record per happening.

The shell drains these after every input (bytes received, a timer fired) and acts on them.
Stream ids are those of the wire; ``0`` never appears in a stream event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telepresence.wire.mux._errors import ResetReason
    from telepresence.wire.mux._frames import Address, Hello, OpenRequest


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """Server side: the client said hello; accept it with ``accept_hello()`` or go away."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both hellos are exchanged: streams may now be opened."""

    peer: Hello


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream. Answer with ``accept_stream()`` or ``reset_stream()``."""

    stream_id: int
    request: OpenRequest

    @property
    def destination(self) -> Address:
        return self.request.destination


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """The peer accepted a stream this side opened: its destination is reached."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes for a TCP stream. Report them with ``consumed()`` once the app has read them."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """One datagram for a UDP stream. Report it with ``consumed()`` once delivered."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed: it sends no more data on this stream."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone. ``remote`` tells whether the peer reset it or this core did
    (because the peer broke the protocol on that stream)."""

    stream_id: int
    reason: ResetReason
    message: str
    remote: bool


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """Both sides half-closed: the stream ended cleanly and is forgotten by the core."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class SendWindowOpened:
    """The peer granted credit: senders blocked on ``stream_id`` (0: all) may continue."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The ping ``ping_id`` (from ``ping()``) came back after ``rtt`` seconds."""

    ping_id: int
    rtt: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer takes no new streams; streams above ``last_stream_id`` were reset."""

    last_stream_id: int
    reason: ResetReason
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over; the shell closes the transport. Always the last event."""

    reason: ResetReason
    message: str
    remote: bool


Event = (
    HelloReceived
    | HandshakeComplete
    | StreamOpened
    | StreamAccepted
    | DataReceived
    | DatagramReceived
    | StreamEnded
    | StreamReset
    | StreamClosed
    | SendWindowOpened
    | PongReceived
    | GoAwayReceived
    | ConnectionTerminated
)
