"""The kubelet's probes: ``GET /healthz`` and ``GET /readyz`` over plain HTTP/1.1.

``/healthz`` answers 200 as long as the process serves at all (the liveness probe); the
kubelet restarts the container when it stops answering. ``/readyz`` answers 200 once the
control API and the data plane listen and the first cluster info is known, and 503 again
from the moment a shutdown begins, so that the pod leaves its Service's endpoints before it
stops serving. Anything else is 404.

The probes need one request per connection and nothing of HTTP beyond the request line, so
this is a few lines over an anyio listener rather than a web framework: every connection
gets :data:`REQUEST_TIMEOUT` seconds and :data:`MAX_REQUEST` bytes to send its request
headers, then the answer, then the connection is closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


async def serve(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    ready: Callable[[], bool],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer the probes on ``listener`` until cancelled; ``ready`` says whether the manager
    is ready."""

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client:
            with anyio.move_on_after(REQUEST_TIMEOUT):
                try:
                    head = await _read_head(client)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, ValueError):
                    return
                status, body = _answer(head, ready)
                try:
                    await client.send(_response(status, body, head_only=head.startswith(b"HEAD ")))
                except (anyio.BrokenResourceError, OSError):
                    return

    async with listener:
        task_status.started()
        await listener.serve(handle)


async def _read_head(client: anyio.abc.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        data += await client.receive()
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return data


def _answer(head: bytes, ready: Callable[[], bool]) -> tuple[int, str]:
    request_line = head.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400, "bad request\n"
    method, target, _ = parts
    path = target.split("?", 1)[0]
    if path not in ("/healthz", "/readyz"):
        return 404, "not found\n"
    if method not in ("GET", "HEAD"):
        return 405, "method not allowed\n"
    if path == "/readyz" and not ready():
        return 503, "not ready\n"
    return 200, "ok\n"


def _response(status: int, body: str, *, head_only: bool) -> bytes:
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload
