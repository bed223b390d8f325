"""``pods/portforward`` over WebSocket: a pod's TCP port as an anyio byte stream.

The protocol is ``v4.channel.k8s.io`` (the kubelet's ``portforward/websocket.go``): every
binary message starts with a channel byte; for the one port asked for, channel 0 carries the
data and channel 1 the errors, and each channel opens with the port number (2 bytes,
little-endian). The API server dials the pod when the WebSocket opens; if that fails, or
reading or writing the pod's connection fails later, the reason comes as text on the error
channel ("error forwarding port 8080 to pod web, uid ...: dial tcp ...: connect: connection
refused"), and then the WebSocket closes. A WebSocket that closes without such text is the
pod closing its connection: the end of the stream.

There is no half-close: a client cannot say "no more data" and go on reading (the SPDY
protocol of ``kubectl port-forward`` can, the WebSocket one cannot), so :meth:`send_eof`
refuses, and :func:`serve_port_forward` ends a forwarded connection as soon as either side
ends it, as ``kubectl port-forward`` does.

Each :class:`PortForwardStream` is one WebSocket, so one TCP connection to the API server, as
client-go's WebSocket port-forward has it too.
"""

from __future__ import annotations

import contextlib
import http
import logging
import struct
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import anyio.abc
from aiohttp import WSCloseCode, WSMsgType
from kubernetes_asyncio import client as k8s_client

from telepresence.kube._errors import ClusterUnreachable, KubeError, PortForwardError

if TYPE_CHECKING:
    import asyncio

    from kubernetes_asyncio.stream import WsApiClient

    from telepresence.kube._kube import Kube

__all__ = ["MAX_MESSAGE", "PortForwardStream", "open_port_forward", "serve_port_forward"]

log = logging.getLogger(__name__)

#: The channels of the one port a stream forwards.
DATA_CHANNEL, ERROR_CHANNEL = 0, 1
#: The largest WebSocket message :meth:`PortForwardStream.send` makes; bigger writes are
#: split. A WebSocket message is buffered whole on the way, so this bounds memory, well
#: below the limits WebSocket servers put on a message.
MAX_MESSAGE = 1024 * 1024
_PORT = struct.Struct("<H")


async def open_port_forward(
    ws_api: WsApiClient, namespace: str, pod: str, port: int
) -> PortForwardStream:
    """Open a port-forward to ``port`` of pod ``namespace/pod``, once both channels are
    open.

    Raises:
        PortForwardError: The API server refused (no right to port-forward, no such pod), or
            ended the forward before it began.
        ClusterUnreachable: The API server cannot be reached.
    """
    where = f"pod {namespace}/{pod} port {port}"
    ws = await _connect(ws_api, namespace, pod, port)
    transport = _transport_of(ws)
    try:
        await _read_opening(ws, port, where)
    except BaseException:
        await _close(ws, transport)
        raise
    return PortForwardStream(ws, transport, where)


class PortForwardStream(anyio.abc.ByteStream):
    """One forwarded connection to a pod's port (see the module docstring).

    Reading and writing may happen in two tasks at once, but not two reads or two writes.
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        transport: asyncio.Transport | None,
        where: str,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._where = where
        #: What the last data message brought and no receive has returned yet.
        self._pending = memoryview(b"")
        #: The error channel's text, once it came: every later receive raises it again.
        self._error: str | None = None
        self._closed = False
        self._receiving = anyio.ResourceGuard("reading from")
        self._sending = anyio.ResourceGuard("writing to")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next bytes the pod sent, at most ``max_bytes`` (the rest of a larger message
        is kept for the next call).

        Raises:
            PortForwardError: The error channel reported an error (its text is the message).
            anyio.EndOfStream: The pod closed the connection.
            anyio.BrokenResourceError: The connection to the API server broke.
            anyio.ClosedResourceError: This stream was closed.
        """
        with self._receiving:
            if self._closed:
                raise anyio.ClosedResourceError
            if not self._pending:
                self._pending = await self._next_data()
            chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
            return bytes(chunk)

    async def send(self, item: bytes) -> None:
        """Send bytes to the pod, in messages of at most :data:`MAX_MESSAGE` bytes.

        Raises:
            anyio.BrokenResourceError: The WebSocket is gone (the forward ended, or the
                connection to the API server broke).
            anyio.ClosedResourceError: This stream was closed.
        """
        with self._sending:
            if self._closed:
                raise anyio.ClosedResourceError
            view = memoryview(item)
            for start in range(0, len(view), MAX_MESSAGE):
                await self._send_message(view[start : start + MAX_MESSAGE])

    async def send_eof(self) -> None:
        """Not possible: the port-forward protocol has no half-close."""
        raise NotImplementedError(
            "the Kubernetes port-forward protocol has no half-close: a forwarded connection "
            "can only be closed as a whole"
        )

    async def aclose(self) -> None:
        """Close the WebSocket (the API server then closes the pod's connection). Closing
        twice does nothing; the close is shielded from cancellation, so that a cancelled
        caller does not leave the connection open."""
        if self._closed:
            return
        self._closed = True
        await _close(self._ws, self._transport)

    async def _next_data(self) -> memoryview:
        """The next non-empty data payload, or the exception for how the stream ended."""
        if self._error is not None:
            raise PortForwardError(self._error)
        while True:
            message = await self._ws.receive()
            if message.type is WSMsgType.BINARY:
                data: bytes = message.data
                payload = memoryview(data)[1:]
                if not payload:
                    continue  # an empty message, as some servers send to open a channel
                if data[0] == DATA_CHANNEL:
                    return payload
                if data[0] == ERROR_CHANNEL:
                    self._error = bytes(payload).decode(errors="replace")
                    raise PortForwardError(self._error)
                continue  # a channel of no port of ours
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                raise self._ended()
            if message.type is WSMsgType.ERROR:
                raise anyio.BrokenResourceError(
                    f"the port-forward to {self._where} broke: {message.data}"
                ) from message.data
            # Text messages belong to the base64 variant of the protocol, not asked for.

    def _ended(self) -> Exception:
        """What a closed WebSocket means: our close, the pod's end, or a broken link."""
        if self._closed:
            return anyio.ClosedResourceError()
        code = self._ws.close_code
        if code is None or code == WSCloseCode.OK:
            return anyio.EndOfStream()
        return anyio.BrokenResourceError(
            f"the API server closed the port-forward to {self._where} abnormally (code {code})"
        )

    async def _send_message(self, chunk: memoryview) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._ws.closed:
            raise anyio.BrokenResourceError(f"the port-forward to {self._where} has ended")
        try:
            await self._ws.send_bytes(bytes([DATA_CHANNEL]) + chunk)
        except (aiohttp.ClientError, OSError) as error:
            if self._closed:
                raise anyio.ClosedResourceError from error
            raise anyio.BrokenResourceError(
                f"the port-forward to {self._where} broke: {error}"
            ) from error


async def serve_port_forward(
    listener: anyio.abc.Listener[anyio.abc.ByteStream],
    kube: Kube,
    namespace: str,
    pod: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Forward every connection ``listener`` accepts to ``port`` of pod ``namespace/pod``,
    like ``kubectl port-forward``, until cancelled.

    Each connection gets a port-forward of its own and is relayed both ways until either side
    ends it. A forward that fails (refused, nothing listening in the pod) closes that one
    connection and logs one line; the server goes on. The listener stays the caller's to
    close.
    """

    async def forward(local: anyio.abc.ByteStream) -> None:
        await _forward_connection(local, kube, namespace, pod, port)

    task_status.started()
    await listener.serve(forward)


async def _forward_connection(
    local: anyio.abc.ByteStream, kube: Kube, namespace: str, pod: str, port: int
) -> None:
    where = f"pod {namespace}/{pod} port {port}"
    async with local:
        try:
            remote = await kube.port_forward(namespace, pod, port)
        except KubeError as error:
            log.warning("port-forward to %s failed: %s", where, error)
            return
        async with remote:
            try:
                await _relay(local, remote, where)
            except* PortForwardError as failed:
                log.warning("port-forward to %s failed: %s", where, failed.exceptions[0])


async def _relay(local: anyio.abc.ByteStream, remote: PortForwardStream, where: str) -> None:
    """Copy both ways until one side ends; the other direction ends with it, since the
    protocol cannot carry a half-close."""
    async with anyio.create_task_group() as directions:
        scope = directions.cancel_scope
        directions.start_soon(_pump, local, remote, scope, name=f"to {where}")
        directions.start_soon(_pump, remote, local, scope, name=f"from {where}")


async def _pump(
    source: anyio.abc.ByteReceiveStream, sink: anyio.abc.ByteSendStream, done: anyio.CancelScope
) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for chunk in source:
            await sink.send(chunk)
    done.cancel()


async def _connect(
    ws_api: WsApiClient, namespace: str, pod: str, port: int
) -> aiohttp.ClientWebSocketResponse:
    """The WebSocket of ``pods/NAME/portforward?ports=PORT``, with errors translated."""
    core: Any = k8s_client.CoreV1Api(ws_api)  # its signatures do not know _preload_content
    try:
        # With _preload_content=False the WebSocket client returns aiohttp's ws_connect,
        # not yet awaited: awaiting it makes the request.
        connecting = await core.connect_get_namespaced_pod_portforward(
            pod, namespace, ports=port, _preload_content=False
        )
        ws: aiohttp.ClientWebSocketResponse = await connecting
    except aiohttp.WSServerHandshakeError as error:
        raise _refused(error.status, namespace, pod, port) from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise ClusterUnreachable(
            f"cannot reach the cluster's API server: {error or type(error).__name__}"
        ) from error
    return ws


def _refused(status: int, namespace: str, pod: str, port: int) -> PortForwardError:
    """The API server's refusal to upgrade, in the user's terms. aiohttp does not read the
    body of a refused upgrade, so the status is all there is to go on."""
    if status == http.HTTPStatus.FORBIDDEN:
        return PortForwardError(
            f"the kubeconfig's user may not port-forward to pod {pod} in namespace "
            f"{namespace}: the API server forbids pods/portforward there (403 Forbidden)"
        )
    if status == http.HTTPStatus.UNAUTHORIZED:
        return PortForwardError(
            "the API server did not accept the kubeconfig's credentials (401 Unauthorized)"
        )
    if status == http.HTTPStatus.NOT_FOUND:
        return PortForwardError(f"there is no pod {pod} in namespace {namespace}")
    try:
        reason = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        reason = str(status)
    return PortForwardError(
        f"the API server refused to port-forward to port {port} of pod {pod} in namespace "
        f"{namespace} ({reason}); is the pod running?"
    )


async def _read_opening(ws: aiohttp.ClientWebSocketResponse, port: int, where: str) -> None:
    """Each channel opens with the port number, the data channel first (the kubelet's
    ``websocket.go``); anything else means the forward ended before it began."""
    for channel in (DATA_CHANNEL, ERROR_CHANNEL):
        message = await ws.receive()
        if message.type is not WSMsgType.BINARY:
            raise PortForwardError(
                f"the API server ended the port-forward to {where} before it began"
            )
        data: bytes = message.data
        if len(data) != 1 + _PORT.size or data[0] != channel or _PORT.unpack(data[1:]) != (port,):
            raise PortForwardError(
                f"the port-forward to {where} did not open as the port-forward protocol "
                f"(v4.channel.k8s.io) does: its first messages name another port or channel"
            )


def _transport_of(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport | None:
    """The WebSocket's connection, kept from the start: aiohttp forgets it once either side
    has closed the WebSocket, and :func:`_close` still needs it then."""
    # aiohttp has no public way to the transport of a WebSocket; its response has.
    connection = ws._response.connection
    return connection.transport if connection is not None else None


async def _close(ws: aiohttp.ClientWebSocketResponse, transport: asyncio.Transport | None) -> None:
    """Close a WebSocket (shielded), then drop its connection.

    The WebSocket's closing handshake is what the API server needs to end the forward;
    aiohttp stops waiting for the server's answer after its own close timeout (or at once
    when a read was cancelled), so this always ends. What is left then is TLS's close_notify
    exchange, which tells the server nothing more: waiting for it would keep the socket until
    the server answers, which it may never get to do before the event loop is gone, and
    Python < 3.12.8 then never closes that socket (CPython gh-118960). So it is aborted.
    """
    with anyio.CancelScope(shield=True), contextlib.suppress(aiohttp.ClientError, OSError):
        await ws.close()
    if transport is not None:
        transport.abort()
