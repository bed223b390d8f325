"""Why a stream or a connection ended, and the two kinds of protocol fault.

A :class:`ProtocolError` is the peer's fault: bytes that break the protocol. The core never
lets one escape; it turns it into a RESET of one stream or a GO_AWAY that ends the connection,
with a reason the peer can read. A :class:`LocalProtocolError` is this side's fault: the
application asked the core for something the protocol does not allow (data on a closed
stream, a stream beyond the peer's limit); it is raised to the caller, as in h11.
"""

from __future__ import annotations

import enum


class ResetReason(enum.IntEnum):
    """Why a stream was reset or a connection went away (one byte on the wire)."""

    NO_ERROR = 0  # a normal end: GO_AWAY when shutting down cleanly
    REFUSED = 1  # the destination refused the connection (TCP RST)
    UNREACHABLE = 2  # no route to the destination, or its name did not resolve
    TIMEOUT = 3  # dialling the destination or the peer itself timed out
    POLICY = 4  # not allowed: credentials refused, destination forbidden
    PROTOCOL = 5  # the peer broke the protocol
    INTERNAL = 6  # the sender failed in a way that is not the peer's fault
    CANCELLED = 7  # the application closed the stream before it ended cleanly
    STREAM_LIMIT = 8  # more concurrent streams than the receiver allows

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class ProtocolError(Exception):
    """The peer sent something the protocol forbids."""

    def __init__(self, reason: ResetReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class LocalProtocolError(Exception):
    """This side asked the core for something the protocol does not allow."""
