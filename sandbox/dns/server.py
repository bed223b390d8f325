"""The cluster DNS server's sockets: one UDP socket and one TCP listener on the same port.

:func:`serve` follows the cluster view into an index, binds, reports the port, and answers
until cancelled. Answers from the cluster are computed at once by the
:class:`~sandbox.dns.answer.Responder`; only forwarded questions wait, each in a task of its
own for UDP (bounded by ``max_forwarded``) and in turn on a TCP connection (RFC 7766 allows
in-order replies). A message that makes the responder fail is logged and dropped: one bad
packet or object never stops the server. Neither does a UDP reply that cannot be sent: it is
dropped, as UDP may drop it anyway.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import dns.asyncquery
import dns.exception
import dns.message
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from sandbox.dns.answer import Forward, Responder
from sandbox.dns.cluster import ClusterIndex
from sandbox.dns.settings import DNSSettings

if TYPE_CHECKING:
    from anyio.abc import SocketStream, TaskGroup, TaskStatus, UDPSocket
    from anyio.streams.stapled import MultiListener

    from sandbox.dns.cluster import ClusterView

log = logging.getLogger("sandbox.dns")
#: Tries at finding a port free for both UDP and TCP when any port will do.
BIND_ATTEMPTS = 20


async def serve(
    view: ClusterView,
    host: str = "127.0.0.1",
    port: int = 53,
    *,
    settings: DNSSettings | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer DNS over UDP and TCP on ``host``:``port`` until cancelled.

    Args:
        view: The cluster's objects; the server follows their changes.
        host: The address to listen on.
        port: The port for both UDP and TCP; 0 picks one free for both.
        settings: The domain, TTL and upstream resolver (defaults: ``cluster.local``, 5 s,
            none).
        task_status: Gets the bound port once both sockets listen.
    """
    server = _Server(view, settings or DNSSettings())
    try:
        udp, tcp = await _bind(host, port)
        async with udp, tcp, anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve_udp, udp, tasks, name="dns udp")
            tasks.start_soon(tcp.serve, server.serve_tcp_client, name="dns tcp")
            bound = udp.extra(SocketAttribute.local_port)
            log.info("cluster DNS on %s port %d (UDP and TCP)", host, bound)
            task_status.started(bound)
    finally:
        server.close()


class _Server:
    def __init__(self, view: ClusterView, settings: DNSSettings) -> None:
        self.settings = settings
        self.index = ClusterIndex()
        self.responder = Responder(self.index, settings)
        self._forwarding = 0  # UDP questions waiting for the upstream
        # anyio lets one task at a time send on a socket (another raises BusyResourceError):
        # the UDP loop and the tasks relaying forwarded answers take turns.
        self._udp_sending = anyio.Lock()
        self._unfollow = self.index.follow(view)

    def close(self) -> None:
        self._unfollow()

    def _respond(self, wire: bytes, *, over_udp: bool) -> bytes | Forward | None:
        try:
            return self.responder.respond(wire, over_udp=over_udp)
        except Exception:
            log.exception("no answer to a query of %d bytes: %s", len(wire), wire.hex())
            return None

    async def serve_udp(self, udp: UDPSocket, tasks: TaskGroup) -> None:
        async for wire, (client, port) in udp:
            reply = self._respond(wire, over_udp=True)
            if isinstance(reply, Forward):
                if self._forwarding >= self.settings.max_forwarded:
                    reply = self.responder.relay(reply, None)
                else:
                    self._forwarding += 1
                    tasks.start_soon(self._forward_udp, udp, reply, client, port)
                    continue
            if reply is not None:
                await self._send_udp(udp, reply, client, port)

    async def _forward_udp(self, udp: UDPSocket, forward: Forward, client: str, port: int) -> None:
        try:
            answer = await self._ask_upstream(forward)
        finally:
            self._forwarding -= 1
        await self._send_udp(udp, self.responder.relay(forward, answer), client, port)

    async def _send_udp(self, udp: UDPSocket, reply: bytes, client: str, port: int) -> None:
        async with self._udp_sending:
            try:
                await udp.sendto(reply, client, port)
            except (OSError, anyio.BrokenResourceError) as error:
                # The client is unreachable, say (trio's backend raises BrokenResourceError
                # from the OSError); if the socket itself is broken, receiving fails next.
                log.debug("reply to %s port %d dropped: %r", client, port, error)

    async def serve_tcp_client(self, stream: SocketStream) -> None:
        async with stream:
            receiver = BufferedByteReceiveStream(stream)
            try:
                while True:
                    wire = b""
                    with anyio.move_on_after(self.settings.tcp_idle_timeout):
                        length = int.from_bytes(await receiver.receive_exactly(2))
                        wire = await receiver.receive_exactly(length)
                    if not wire:
                        return  # idle, or an empty message: close (RFC 7766 6.2.3)
                    reply = self._respond(wire, over_udp=False)
                    if isinstance(reply, Forward):
                        reply = self.responder.relay(reply, await self._ask_upstream(reply))
                    if reply is None:
                        return  # a message we drop ends the connection: the stream is suspect
                    await stream.send(len(reply).to_bytes(2) + reply)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return

    async def _ask_upstream(self, forward: Forward) -> dns.message.Message | None:
        if self.settings.upstream is None:
            return None  # the responder forwards only when there is one
        host, port = self.settings.upstream
        with anyio.move_on_after(self.settings.upstream_timeout):
            try:
                answer, _ = await dns.asyncquery.udp_with_fallback(
                    forward.upstream_query, host, port=port
                )
            except (dns.exception.DNSException, OSError) as error:
                log.info("upstream %s:%d failed: %s", host, port, error)
                return None
            return answer
        log.info("upstream %s:%d did not answer in time", host, port)
        return None


async def _bind(host: str, port: int) -> tuple[UDPSocket, MultiListener[SocketStream]]:
    """A UDP socket and a TCP listener on one port (any free one for port 0)."""
    for attempt in range(BIND_ATTEMPTS):
        udp = await anyio.create_udp_socket(local_host=host, local_port=port)
        try:
            bound = udp.extra(SocketAttribute.local_port)
            tcp = await anyio.create_tcp_listener(local_host=host, local_port=bound)
        except OSError:
            await udp.aclose()
            if port or attempt == BIND_ATTEMPTS - 1:
                raise
            continue  # the port UDP got is taken for TCP: try another
        return udp, tcp
    raise AssertionError("unreachable")
