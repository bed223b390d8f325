"""Credit-based flow control with receive windows that grow to fit the path.

The receiver of a stream (and of the connection as a whole) grants its peer credit; the peer
may send only that many payload bytes. As the application reads, the receiver returns credit
in WINDOW_UPDATE frames, batched: nothing is returned until half a window has been consumed,
which keeps updates to a couple per window's worth of data (the same threshold most HTTP/2
stacks use).

Auto-tuning: a window of ``W`` bytes carries at most ``W / RTT`` bytes per second. When half a
window is consumed in less than two round trips since the last update, the sender is being
held back by the window rather than by the application, so the window doubles (up to its
maximum, and for streams only while the connection's memory budget allows it). The RTT
comes from the connection's PING/PONG samples. This is the rule QUIC stacks apply
(quic-go's ``flowcontrol``), restated here.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """How much this side buffers for its peer."""

    #: Window each stream starts with, and the connection's own starting window.
    initial_window: int = 256 * KIB
    #: Largest window auto-tuning grows a stream or the connection to.
    max_window: int = 16 * MIB
    #: Upper bound on the sum of all stream windows of one connection: with every reader
    #: stalled, this is the most memory the peer can make this side hold.
    stream_budget: int = 64 * MIB


class ReceiveWindow:
    """The credit this side has granted for one stream, or for the connection."""

    __slots__ = ("available", "epoch", "pending", "size")

    def __init__(self, size: int) -> None:
        self.size = size  # the window as last advertised
        self.available = size  # credit the peer still holds
        self.pending = 0  # consumed bytes whose credit has not been returned yet
        self.epoch: float | None = None  # when credit was last returned

    def take(self, count: int) -> bool:
        """Account for ``count`` received bytes; False if the peer overran its credit."""
        if count > self.available:
            return False
        self.available -= count
        return True

    def consume(self, count: int) -> bool:
        """The application consumed ``count`` bytes; whether credit is now due (``grant``).

        Split from ``grant`` because this runs for every read and is nearly always False.
        """
        self.pending += count
        return self.pending >= self.size // 2

    def grant(self, now: float, rtt: float | None, limit: int) -> int:
        """The credit to return for what was consumed, growing the window when it limits
        throughput; ``limit`` is the largest size the window may grow to right now."""
        growth = 0
        if rtt is not None and self.epoch is not None and now - self.epoch < 2 * rtt:
            growth = max(0, min(self.size, limit - self.size))
        self.epoch = now
        self.size += growth
        increment = self.pending + growth
        self.pending = 0
        self.available += increment
        return increment
