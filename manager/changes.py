"""Values that change, and the tasks that follow them.

The manager's facts (the managed namespaces, the pods' addresses, the cluster's subnets) are
kept by watchers and read by many followers: every ``WatchClusterInfo`` stream, the data
plane's policy, the readiness probe. Two small primitives connect them without queues:

- :class:`Signal` says "something changed": many notifications before the follower wakes
  coalesce into one, so a burst of watch events costs one recomputation.
- :class:`Latest` holds the current value of a fact; a follower sees the newest value when it
  gets to it and skips the ones it was too slow for. A slow gRPC client therefore never holds
  memory for values it will not need.

Both make their anyio events lazily, so they can be built before the event loop runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Signal:
    """A level-triggered "something changed" flag that one follower waits on."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._pending = False

    def notify(self) -> None:
        """Mark a change; wakes the follower if it waits."""
        self._pending = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once a change was notified since the previous ``wait()`` returned."""
        while not self._pending:
            self._event = anyio.Event()
            await self._event.wait()
        self._pending = False


class Latest[T]:
    """The current value of a fact, with followers that see each new value (newest first)."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._version = 0
        self._changed: anyio.Event | None = None

    @property
    def value(self) -> T | None:
        """The current value; None until the first one is set."""
        return self._value

    def set(self, value: T) -> bool:
        """Publish ``value``; a value equal to the current one is not a change. Returns whether
        it was one."""
        if self._version and value == self._value:
            return False
        self._value = value
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return True

    async def get(self) -> T:
        """The current value, waiting for the first one if none was set yet."""
        while self._value is None:
            await self._wait_after(self._version)
        return self._value

    def follow(self) -> AsyncIterator[T]:
        """The current value, then every newer one (skipping those set while the follower was
        busy). Never ends by itself: the follower's scope ends it."""
        return _Follower(self)

    async def _wait_after(self, version: int) -> None:
        if self._version != version:
            return
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


class _Follower[T]:
    """An iterator over a :class:`Latest`'s values. (A class rather than an async generator,
    so that a follower cancelled mid-wait leaves no generator to finalize.)"""

    def __init__(self, latest: Latest[T]) -> None:
        self._latest = latest
        self._seen = 0

    def __aiter__(self) -> _Follower[T]:
        return self

    async def __anext__(self) -> T:
        latest = self._latest
        while latest._version == self._seen or latest._value is None:
            await latest._wait_after(self._seen)
        self._seen = latest._version
        return latest._value
