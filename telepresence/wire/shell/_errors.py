"""Errors of the async shell, in anyio's vocabulary.

A stream or connection that the *peer* or the network ended raises a subclass of
:class:`anyio.BrokenResourceError` that says why (the reset reason and message from the wire);
one this side closed raises :class:`anyio.ClosedResourceError`; a clean end of the peer's data
raises :class:`anyio.EndOfStream`. Code written against plain anyio streams therefore handles
mux streams correctly without knowing about them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from telepresence.wire.mux import ResetReason


class StreamResetError(anyio.BrokenResourceError):
    """The stream was reset: by the peer (``remote``), or by this side's core because the peer
    broke the protocol on it. Opening a stream raises this when the destination cannot be
    reached (reason ``refused``, ``unreachable``, ``timeout`` or ``policy``)."""

    def __init__(self, reason: ResetReason, message: str, *, remote: bool) -> None:
        text = f"stream reset ({reason.label})"
        super().__init__(f"{text}: {message}" if message else text)
        self.reason = reason
        self.message = message
        self.remote = remote


class ConnectionLostError(anyio.BrokenResourceError):
    """The mux connection ended under its streams: transport lost, protocol error, timeout,
    or the peer went away."""

    def __init__(self, reason: ResetReason, message: str, *, remote: bool) -> None:
        origin = "peer" if remote else "this side"
        super().__init__(f"mux connection ended by {origin} ({reason.label}): {message}")
        self.reason = reason
        self.message = message
        self.remote = remote


class HandshakeError(Exception):
    """The connection never opened: the server refused the credentials, or the peer does
    not speak the protocol."""

    def __init__(self, reason: ResetReason, message: str) -> None:
        super().__init__(f"mux handshake failed ({reason.label}): {message}")
        self.reason = reason
        self.message = message
