"""``pods/portforward``: TCP to the pod's ports over the WebSocket port-forward protocol.

The protocol is ``v4.channel.k8s.io``: port *i* of the ``ports`` query has data channel ``2i``
and error channel ``2i+1``, each opened with the port number (2 bytes, little-endian), as the
kubelet's ``websocket.go`` does. The connection is dialled to the pod's IP, which the API
server's process can route to; a dial, read or write that fails is told on the port's error
channel, worded as the kubelet words it. This is the project's default transport, so it is
built for throughput: 256 KiB reads straight into the buffer that becomes the WebSocket
message (the channel byte in front, no other copy), and backpressure both ways (the pod's
socket is read only when the WebSocket has drained, and the WebSocket only when the pod's
socket took the last message).

The pod's side uses the asyncio loop's socket calls directly (aiohttp ties this module to
asyncio anyway): ``recv_into`` needs no stream buffer in between, and a forward waits for data
without holding a buffer. ``kubectl port-forward`` speaks SPDY (tunnelled in a WebSocket since
1.31), which is not served: it gets an error that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import WSMsgType

from sandbox.apiserver import errors
from sandbox.node.runtime._channels import channel_websocket, send_error
from sandbox.node.runtime._pods import READ_SIZE, pod_ip, pod_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aiohttp import web


#: The port-forward subprotocols (all binary): the channel protocol v4, and the bare names
#: older clients send.
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io")
SPDY_PORTFORWARD = (
    "kubectl port-forward speaks SPDY (also when tunnelled in a WebSocket), which the sandbox "
    "does not serve: forward with a client of the WebSocket port-forward protocol "
    "(v4.channel.k8s.io), as kubernetes-asyncio and Telepresence are"
)


async def serve_portforward(
    http: web.Request, pod: dict[str, Any], netns: str | None = None
) -> web.StreamResponse:
    """Answer a ``pods/portforward`` request: forward each port until every pod connection
    has ended or the client goes away.

    As containerd does, each connection is dialled to ``127.0.0.1:PORT`` inside the pod's
    network namespace ``netns`` (so the pod sees it come from its loopback, and a port bound
    to the loopback only is reachable); without one, to the pod's IP.
    """
    if speaks_spdy(http):
        raise errors.bad_request(SPDY_PORTFORWARD)
    ports = parse_ports(http.query.getall("ports", []))
    if not pod_ip(pod):
        name, namespace = pod_name(pod), pod.get("metadata", {}).get("namespace", "")
        raise errors.bad_request(f'pod not found ("{name}_{namespace}"): it has no IP yet')
    async with channel_websocket(http, "portforward", PORTFORWARD_PROTOCOLS) as ws:
        forwards = [PortForward(ws, index, port, pod, netns) for index, port in enumerate(ports)]
        try:
            for forward in forwards:
                await forward.open_channels()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_forward_from_client, ws, forwards, tasks.cancel_scope)
                async with anyio.create_task_group() as pods:
                    for forward in forwards:
                        pods.start_soon(forward.run)
                tasks.cancel_scope.cancel()  # every pod connection has ended
        except ConnectionResetError:
            pass  # the client went away
        finally:
            for forward in forwards:
                forward.close()
    return ws


def speaks_spdy(http: web.Request) -> bool:
    """Whether the client wants SPDY: plain (``Upgrade: SPDY/3.1``), or tunnelled in a
    WebSocket as kubectl 1.31 and later do for port-forward."""
    offered = http.headers.get("Sec-WebSocket-Protocol", "")
    return http.headers.get("Upgrade", "").lower().startswith("spdy/") or "SPDY/" in offered


def parse_ports(values: Sequence[str]) -> list[int]:
    """The ``ports`` query parameters (repeated or comma-separated), as the kubelet reads
    them."""
    if not values:
        raise errors.bad_request('query parameter "ports" is required')
    ports = []
    for value in values:
        if not value:
            raise errors.bad_request('query parameter "ports" cannot be empty')
        for part in value.split(","):
            if not part.isdigit() or int(part) > 65535:
                raise errors.bad_request(
                    f'unable to parse "{value}" as a port: strconv.ParseUint: parsing "{part}": '
                    + ("invalid syntax" if not part.isdigit() else "value out of range")
                )
            if int(part) < 1:
                raise errors.bad_request(f'port "{value}" must be > 0')
            ports.append(int(part))
    return ports


class PortForward:
    """One forwarded port: a connection to the pod and its two channels on the WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        index: int,
        port: int,
        pod: Mapping[str, Any],
        netns: str | None = None,
    ):
        self.ws = ws
        self.netns = netns
        self.port = port
        self.data_channel = 2 * index
        self.error_channel = 2 * index + 1
        self.pod = pod
        self.socket: socket.socket | None = None
        self.dialled = anyio.Event()

    async def open_channels(self) -> None:
        """Open both channels with the port number, as kubectl and client-go expect."""
        number = struct.pack("<H", self.port)
        await self.ws.send_bytes(bytes([self.data_channel]) + number)
        await self.ws.send_bytes(bytes([self.error_channel]) + number)

    async def run(self) -> None:
        """Dial the pod, then copy what the pod sends to the client until the pod's EOF."""
        try:
            sock = await self._dial()
        except OSError as error:
            await self.report(f"dial tcp {self._address()}: connect: {_strerror(error)}")
            return
        finally:
            self.dialled.set()
        while True:
            # A fresh buffer for each message (the transport may still hold the last one),
            # and none while the pod is silent: an idle forward holds no memory.
            buffer = bytearray(READ_SIZE + 1)
            buffer[0] = self.data_channel
            view = memoryview(buffer)
            try:
                received = sock.recv_into(view[1:])
            except BlockingIOError:
                del view, buffer
                await anyio.wait_readable(sock)
                continue
            except OSError as error:
                await self.report(f"read tcp {self._address()}: {_strerror(error)}")
                return
            if not received:
                return
            try:
                # aiohttp takes any bytes-like object (it checks for memoryview), typed bytes.
                await self.ws.send_bytes(view[: received + 1])  # type: ignore[arg-type]
            except ConnectionResetError:
                return  # the client is gone: its side ends the forward

    async def deliver(self, payload: memoryview) -> None:
        """Write what the client sent to the pod (waits until the pod's socket took it)."""
        await self.dialled.wait()
        if self.socket is None:
            return  # the dial failed: the client was told on the error channel
        try:
            await asyncio.get_running_loop().sock_sendall(self.socket, payload)
        except OSError as error:
            await self.report(f"write tcp {self._address()}: {_strerror(error)}")
            # Ends the read in run() too; the socket is closed once nothing waits on it.
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)

    async def report(self, why: str) -> None:
        """Tell the client on this port's error channel, as the kubelet words it."""
        name = pod_name(self.pod)
        uid = self.pod.get("metadata", {}).get("uid", "")
        message = f"error forwarding port {self.port} to pod {name}, uid {uid}: {why}"
        await send_error(self.ws, self.error_channel, message.encode())

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def _ip(self) -> str:
        return "127.0.0.1" if self.netns else pod_ip(self.pod)

    def _address(self) -> str:
        ip = self._ip()
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"

    async def _dial(self) -> socket.socket:
        ip = self._ip()
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        if self.netns:
            sock = await anyio.to_thread.run_sync(_socket_in, self.netns, family)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.get_running_loop().sock_connect(sock, (ip, self.port))
        except BaseException:
            sock.close()
            raise
        self.socket = sock
        return sock


def _strerror(error: OSError) -> str:
    """An errno's text as Go prints it (lower case: "connection refused")."""
    # asyncio's connect errors carry their own text: the errno's is what Go would print.
    text = os.strerror(error.errno) if error.errno else str(error)
    return text[:1].lower() + text[1:]


async def _forward_from_client(
    ws: web.WebSocketResponse, forwards: Sequence[PortForward], scope: anyio.CancelScope
) -> None:
    """Demultiplex the client's messages to the ports; when the client closes, stop all."""
    async for message in ws:
        data = message.data
        if message.type is not WSMsgType.BINARY or len(data) < 2:
            continue
        index, is_error_channel = divmod(data[0], 2)
        if not is_error_channel and index < len(forwards):
            await forwards[index].deliver(memoryview(data)[1:])
    scope.cancel()


def _socket_in(netns: str, family: socket.AddressFamily) -> socket.socket:
    """A TCP socket of the network namespace ``netns`` (a socket stays in the namespace it was
    made in): made by this worker thread after it entered the namespace, which it leaves
    again before it returns."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.setns(target, os.CLONE_NEWNET)
            try:
                return socket.socket(family, socket.SOCK_STREAM)
            finally:
                os.setns(own, os.CLONE_NEWNET)
        finally:
            os.close(target)
    finally:
        os.close(own)
