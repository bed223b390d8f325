"""The data-plane multiplexer, sans-I/O: many TCP streams and UDP flows over one byte stream.

This package holds the protocol and nothing else: no sockets, no event loop, no clock. Feed it
bytes and the time, read back events and bytes to send. ``telepresence.wire.shell`` runs it
over an anyio byte stream; ``docs/reference/wire-protocol.md`` specifies the bytes.
"""

from __future__ import annotations

from telepresence.wire.mux._connection import (
    ALLOWED_FRAMES,
    MAX_CONTROL_BACKLOG,
    Connection,
    Role,
    Settings,
    State,
)
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
from telepresence.wire.mux._frames import (
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME,
    MAX_PAYLOAD,
    VERSION,
    Address,
    FrameType,
    Hello,
    OpenRequest,
    Protocol,
)

__all__ = [
    "ALLOWED_FRAMES",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_CONTROL_BACKLOG",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "VERSION",
    "Address",
    "Connection",
    "ConnectionTerminated",
    "DataReceived",
    "DatagramReceived",
    "Event",
    "FlowSettings",
    "FrameType",
    "GoAwayReceived",
    "HandshakeComplete",
    "Hello",
    "HelloReceived",
    "LocalProtocolError",
    "OpenRequest",
    "PongReceived",
    "Protocol",
    "ProtocolError",
    "ReceiveWindow",
    "ResetReason",
    "Role",
    "SendWindowOpened",
    "Settings",
    "State",
    "StreamAccepted",
    "StreamClosed",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
]
