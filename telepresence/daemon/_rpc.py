"""The daemons' gRPC over unix sockets: serving, calling, and errors on both sides.

A daemon's handler is a coroutine from request to reply, wrapped by :func:`unary`: a
:class:`~telepresence.errors.TelepresenceError` it raises becomes a gRPC status with the
message, and the error's kind in the trailing metadata (``telepresence-error``). :func:`call`
is the other end: it raises the same error class from a failed call, and a
:class:`~telepresence.errors.DaemonError` when the daemon does not answer at all.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from telepresence import errors
from telepresence.daemon import _process
from telepresence.wire.proto import daemon_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from grpclib.client import UnaryUnaryMethod
    from grpclib.server import Stream

__all__ = ["call", "call_root_daemon", "unary"]

log = logging.getLogger(__name__)

#: The gRPC status each kind of error travels with (only for tools that look at statuses).
_STATUSES = {
    errors.ConfigError.kind: Status.INVALID_ARGUMENT,
    errors.ClusterUnreachable.kind: Status.UNAVAILABLE,
    errors.ManagerNotFound.kind: Status.NOT_FOUND,
    errors.ManagerRefused.kind: Status.PERMISSION_DENIED,
    errors.NotConnected.kind: Status.FAILED_PRECONDITION,
    errors.SessionConflict.kind: Status.FAILED_PRECONDITION,
}


def unary[Request, Reply](
    handler: Callable[[Any, Request], Awaitable[Reply]],
) -> Callable[[Any, Stream[Request, Reply]], Coroutine[Any, Any, None]]:
    """A grpclib unary handler from ``handler(self, request) -> reply``, with expected
    failures sent as statuses that :func:`call` turns back into the same errors."""

    @functools.wraps(handler)
    async def serve(owner: Any, stream: Stream[Request, Reply]) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends the call before a handler on no request
        log.debug("%s", handler.__name__)
        try:
            reply = await handler(owner, request)
        except errors.TelepresenceError as error:
            log.info("%s: %s", handler.__name__, error)
            await stream.send_trailing_metadata(
                status=_STATUSES.get(error.kind, Status.UNKNOWN),
                status_message=str(error),
                metadata={errors.ERROR_KIND_KEY: error.kind},
            )
            return
        await stream.send_message(reply)

    return serve


async def call[Request, Reply](
    method: UnaryUnaryMethod[Request, Reply],
    request: Request,
    *,
    within: float | None,
    daemon: str,
) -> Reply:
    """Call a daemon. Raises the error the daemon raised, or
    :class:`~telepresence.errors.DaemonError` when ``daemon`` cannot be reached."""
    try:
        async with method.open(timeout=within) as stream:
            await stream.send_message(request, end=True)
            try:
                reply = await stream.recv_message()
            except GRPCError as error:
                if error.status is Status.DEADLINE_EXCEEDED:
                    raise errors.DaemonError(
                        f"the {daemon} did not answer within {within:g} s; see its log, or "
                        "stop it with telepresence quit -s"
                    ) from None
                raise errors.from_status(error.message, stream.trailing_metadata) from None
    except (ConnectionError, OSError, StreamTerminatedError) as error:
        raise errors.DaemonError(
            f"the {daemon} stopped answering ({error or type(error).__name__}); see its log, or "
            "start over with telepresence quit -s"
        ) from error
    if reply is None:
        raise errors.DaemonError(f"the {daemon} ended the call without an answer")
    return reply


async def call_root_daemon(method: str, request: Any, *, within: float) -> object:
    """Call ``method`` of the root daemon if one answers (None when none runs): the user
    daemon and the client both reach it this way, each with a channel of its own per call."""
    if not await _process.is_answering(_process.ROOT_DAEMON):
        return None
    channel = Channel(path=str(_process.ROOT_DAEMON.socket))
    try:
        stub = daemon_grpc.DaemonStub(channel)
        reply: object = await call(getattr(stub, method), request, within=within,
                                   daemon="root daemon")  # fmt: skip
        return reply
    finally:
        channel.close()
