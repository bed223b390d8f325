"""Small statistics the benchmarks share."""

from __future__ import annotations

__all__ = ["percentile"]


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` (0.5: the median, 0.99: p99) of the sorted ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
