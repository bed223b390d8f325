"""What exec and port-forward share: a WebSocket whose binary messages travel on channels.

Both subresources speak a ``*.channel.k8s.io`` subprotocol: every binary message starts with
a channel byte, and the rest is that channel's data. exec's channels are fixed (0 stdin,
1 stdout, 2 stderr, 3 the final status, 4 terminal resizes; v5 adds ``[255, 0]``, "stdin is
closed"); port-forward gives each port a data and an error channel. Upstream serves both over
SPDY too; the sandbox serves the WebSocket protocols only (kubectl speaks them for exec since
1.30), and a request that does not upgrade to one gets an error that says so. Until the
WebSocket is open, errors are ``APIError``\\ s that the API server answers as ``Status``;
after, they travel on the stream's error channel, and the WebSocket is closed however the
stream ends.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
from aiohttp import web

from sandbox.apiserver import errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

#: The remote-command (exec) channels.
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
#: v5: a client message ``[CLOSE, channel]`` closes that channel (stdin's EOF).
CLOSE = 255
#: The largest WebSocket message a client may send (a port-forward client's writes).
MAX_MESSAGE = 16 * 1024 * 1024
WEBSOCKET_ONLY = (
    "the sandbox serves pods/{sub} over WebSocket only (subprotocols {protocols}): "
    "use kubectl 1.30 or later, or a client that speaks them"
)


@contextlib.asynccontextmanager
async def channel_websocket(
    http: web.Request, sub: str, protocols: Mapping[str, int] | Sequence[str]
) -> AsyncIterator[web.WebSocketResponse]:
    """The open WebSocket of a ``pods/{sub}`` request in one of ``protocols``; closed on the
    way out, also when cancelled."""
    ws = web.WebSocketResponse(protocols=tuple(protocols), compress=False, max_msg_size=MAX_MESSAGE)
    if not ws.can_prepare(http).ok:
        raise errors.bad_request(WEBSOCKET_ONLY.format(sub=sub, protocols=", ".join(protocols)))
    await ws.prepare(http)
    try:
        yield ws
    finally:
        with anyio.CancelScope(shield=True):
            await ws.close()


async def send_error(ws: web.WebSocketResponse, channel: int, payload: bytes) -> None:
    """Send ``payload`` on an error channel, unless the client has gone."""
    with contextlib.suppress(ConnectionResetError):
        await ws.send_bytes(bytes([channel]) + payload)
