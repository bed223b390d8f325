"""Two byte streams joined: what a proxy does with a client's stream and its destination."""

from __future__ import annotations

import anyio
import anyio.abc

__all__ = ["splice"]

#: What ends a direction because a side broke (not because it ended).
BROKEN = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


async def splice(
    one: anyio.abc.ByteStream,
    other: anyio.abc.ByteStream,
    broken: list[BaseException],
    *,
    names: tuple[str, str] = ("one to other", "other to one"),
) -> None:
    """Copy bytes both ways until both directions have ended, each end passed on with
    ``send_eof`` (a half-close), or until either side broke: that error is appended to
    ``broken`` and both directions stop. Closes neither stream: the caller decides how (a
    reset, an abort, a close), from ``broken``, which it keeps also when it is cancelled.

    One direction runs in the calling task and only the other in a task of its own: a proxy
    holds thousands of idle splices, and each task costs memory (some 4 KB on asyncio)."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_pipe, other, one, broken, tasks.cancel_scope, name=names[1])
        await _pipe(one, other, broken, tasks.cancel_scope)


async def _pipe(
    source: anyio.abc.ByteReceiveStream,
    sink: anyio.abc.ByteStream,
    broken: list[BaseException],
    both: anyio.CancelScope,
) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except BROKEN as error:
        broken.append(error)
        both.cancel()
