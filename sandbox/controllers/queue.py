"""A work queue as client-go's ``workqueue`` keeps one: keys, not events.

A controller enqueues the *key* of an object that needs a look (``namespace/name``), never
the change itself, so a burst of writes to one object costs one sync. The queue holds a key
at most once; a key added while a worker processes it is marked dirty and queued again when
that worker is done, so no two workers sync one key at the same time and no change is missed.

Keys can also come back later: ``add_after`` for work that is due at a known time (a pod
that becomes available once ``minReadySeconds`` have passed, a progress deadline), and
``add_rate_limited`` after a failure, with a per-key exponential backoff (client-go's
``ItemExponentialFailureRateLimiter``: 5 ms doubling, here capped at 30 s) that ``forget``
resets after a success.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable

import anyio

BASE_DELAY = 0.005
MAX_DELAY = 30.0


class WorkQueue[K: Hashable]:
    """Keys waiting for a worker (see the module docstring)."""

    def __init__(self, *, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._failures: dict[K, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is queued already. Safe to call from a store listener."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # done() queues it again
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` once ``delay`` seconds have passed."""
        if delay <= 0:
            self.add(key)
            return
        heapq.heappush(self._delayed, (anyio.current_time() + delay, next(self._sequence), key))
        self._wakeup.set()  # a waiting worker recomputes how long it may sleep

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` again after a failure, later each time it fails in a row."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, min(self._base_delay * 2**failures, self._max_delay))

    def forget(self, key: K) -> None:
        """``key`` synced: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key; the caller must call :meth:`done` with it when finished."""
        while True:
            self._promote_due()
            if self._queue:
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
                return key
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            timeout = self._delayed[0][0] - anyio.current_time() if self._delayed else float("inf")
            with anyio.move_on_after(timeout):
                await self._wakeup.wait()

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wakeup.set()

    def _promote_due(self) -> None:
        now = anyio.current_time()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self.add(key)
