"""The data plane's listener: tpmux over TLS, for the clients of live sessions.

Every connection goes through three gates before it carries a byte for anyone:

1. a TLS handshake with the manager's serving certificate (``TLS_DIR``), within
   :data:`HANDSHAKE_TIMEOUT`;
2. the mux handshake, whose credentials must be the id of a live session (from
   ``ArriveAsClient``); anything else is turned away with reason ``policy`` and a message
   that says to arrive again;
3. for each stream the client opens, the destination policy (namespace scope), after the
   name, if the client gave one, was resolved in the cluster.

Then the manager dials the destination within the dial timeout (the chart's
``client.timeouts.endpointDial``) and relays (:mod:`manager.relay`), or resets the stream with
the reason: ``refused``, ``unreachable``, ``timeout`` or ``policy``.

A connection lives as long as its session: when the session departs or expires, the
connection is closed and its streams are reset. :meth:`DataPlane.drain` is the graceful
shutdown: it stops accepting connections and sends GO_AWAY on every connection, so clients
open no new streams while the open ones finish.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import resource
import ssl
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from manager import relay
from manager.dns import OutOfScope
from manager.sessions import Session, UnknownSession
from telepresence.wire import mux, shell
from telepresence.wire.mux import LocalProtocolError, Protocol, ResetReason

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from manager.dns import ClusterDNS
    from manager.inventory import IPAddress
    from manager.policy import DestinationPolicy
    from manager.sessions import SessionRegistry
    from telepresence.wire.mux import Address

log = logging.getLogger(__name__)

#: Seconds a new connection has for its TLS handshake, and again for its mux handshake.
HANDSHAKE_TIMEOUT = 10.0
#: A client's data plane carries every connection its laptop has into the cluster (the VIF
#: proxies each program's connections as streams): ten thousand idle ones are a workload to
#: hold, not an attack. Each costs the manager one socket into the cluster (see
#: :func:`raise_file_limit`) and a few kilobytes.
CLIENT_MUX = mux.Settings(max_concurrent_streams=32768)


def raise_file_limit() -> None:
    """Lift the soft limit on open files to the hard one: every stream a client opens is a
    socket of the manager's, and the usual soft limit (1024) would cap a laptop at that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DataPlane:
    """Serves clients' mux connections.

    Args:
        sessions: The live sessions; a connection's credentials must name one.
        ssl_context: The manager's TLS serving context.
        dns: Resolves the names that clients' streams give as destinations.
        policy: Where streams may go.
        dialer: Connects to destinations.
        dial_timeout: Seconds to resolve and reach a destination (a callable: the
            configuration may say).
        udp_idle_timeout: Seconds a UDP flow may be silent before it is closed.
    """

    def __init__(
        self,
        *,
        sessions: SessionRegistry,
        ssl_context: ssl.SSLContext,
        dns: ClusterDNS,
        policy: DestinationPolicy,
        dialer: relay.Dialer,
        dial_timeout: Callable[[], float],
        udp_idle_timeout: float = relay.UDP_IDLE_TIMEOUT,
    ) -> None:
        self._sessions = sessions
        self._ssl_context = ssl_context
        self._dns = dns
        self._policy = policy
        self._dialer = dialer
        self._dial_timeout = dial_timeout
        self._udp_idle_timeout = udp_idle_timeout
        self._accepting: anyio.CancelScope | None = None
        self._live: set[shell.MuxConnection] = set()
        self._draining = False

    @property
    def connections(self) -> int:
        """How many mux connections are open."""
        return len(self._live)

    async def serve(
        self,
        listener: anyio.abc.Listener[anyio.abc.ByteStream],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listener`` until :meth:`stop_accepting`, then serve the
        open ones until they end (or until cancelled)."""
        raise_file_limit()
        async with listener, anyio.create_task_group() as connections:
            with anyio.CancelScope() as self._accepting:
                task_status.started()
                await listener.serve(self._handle, connections)
            await listener.aclose()
            log.info("data plane: no longer accepting connections")

    def stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()

    async def drain(self) -> None:
        """Stop accepting, send GO_AWAY on every connection and wait until they have all
        ended (the caller bounds the wait)."""
        self.stop_accepting()
        self._draining = True  # connections still in their handshake go away once done
        if self._live:
            log.info("data plane: going away on %d connection(s)", len(self._live))
        async with anyio.create_task_group() as tasks:
            for connection in list(self._live):
                tasks.start_soon(connection.drain, name="drain mux connection")

    # -- connections --------------------------------------------------------------------------

    async def _handle(self, tcp: anyio.abc.ByteStream) -> None:
        peer = _peer(tcp)
        try:
            with anyio.fail_after(HANDSHAKE_TIMEOUT):
                transport = await TLSStream.wrap(
                    tcp,
                    server_side=True,
                    ssl_context=self._ssl_context,
                    standard_compatible=False,
                )
        except (
            TimeoutError,
            ssl.SSLError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            OSError,
        ) as error:
            log.debug(
                "data plane: TLS handshake with %s failed: %s", peer, error or type(error).__name__
            )
            await anyio.aclose_forcefully(tcp)
            return
        arrived: list[Session] = []

        async def authenticate(credentials: bytes) -> None:
            try:
                arrived.append(self._sessions.get(credentials.decode("ascii")))
            except (UnicodeDecodeError, UnknownSession):
                raise shell.CredentialsRefused(
                    "unknown or expired session: arrive again (ArriveAsClient) and connect with"
                    " the new session id"
                ) from None

        # The deadline covers the mux handshake only; it is lifted once the session is known.
        with anyio.CancelScope(deadline=anyio.current_time() + HANDSHAKE_TIMEOUT) as handshake:
            try:
                async with shell.accept(
                    transport, authenticate=authenticate, settings=CLIENT_MUX
                ) as connection:
                    handshake.deadline = math.inf
                    await self._serve(connection, arrived[0], peer)
            except shell.HandshakeError as error:
                log.info("data plane: turned %s away: %s", peer, error.message)
            except anyio.BrokenResourceError as error:
                log.debug("data plane: connection from %s broke: %s", peer, error)
            except Exception:
                # A fault of the manager's costs this connection, never the others.
                log.exception("data plane: the connection from %s failed", peer)
        if handshake.cancelled_caught:
            log.info("data plane: %s did not complete the mux handshake in time", peer)

    async def _serve(self, connection: shell.MuxConnection, session: Session, peer: str) -> None:
        log.info("%s: data plane connected from %s", session.label, peer)
        self._live.add(connection)
        try:
            async with anyio.create_task_group() as streams:
                streams.start_soon(_end_with, session, streams.cancel_scope, name="session end")
                if self._draining:
                    streams.start_soon(connection.drain, name="drain mux connection")
                while True:
                    try:
                        stream = await connection.accept_stream()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    streams.start_soon(
                        self._serve_stream, session, stream, name=f"stream {stream.stream_id}"
                    )
                streams.cancel_scope.cancel()
        finally:
            self._live.discard(connection)
            why = connection.terminated
            log.info(
                "%s: data plane connection from %s ended%s",
                session.label,
                peer,
                f" ({why.reason.label}: {why.message})" if why else "",
            )

    # -- streams ------------------------------------------------------------------------------

    async def _serve_stream(
        self, session: Session, stream: shell.MuxStream | shell.MuxDatagramStream
    ) -> None:
        try:
            await self._relay(session, stream)
        except Exception:
            # A fault of the manager's costs this stream, never its connection or the manager.
            log.exception("%s: stream %s failed", session.label, stream.destination)
            relay.reset(stream, ResetReason.INTERNAL, "the traffic-manager failed on this stream")

    async def _relay(
        self, session: Session, stream: shell.MuxStream | shell.MuxDatagramStream
    ) -> None:
        udp = stream.request.protocol is Protocol.UDP
        what = f"{'udp' if udp else 'tcp'} {stream.destination}"
        try:
            target = await self._reach(udp, stream.destination)
        except relay.DialError as error:
            log.info("%s: %s: %s (%s)", session.label, what, error.message, error.reason.label)
            relay.reset(stream, error.reason, error.message)
            return
        try:
            stream.accept()
        except (LocalProtocolError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await target.aclose()  # the client gave up on the stream meanwhile
            return
        log.debug("%s: %s connected", session.label, what)
        if isinstance(stream, shell.MuxStream):
            assert isinstance(target, anyio.abc.ByteStream)
            await relay.relay_tcp(stream, target)
        else:
            assert not isinstance(target, anyio.abc.ByteStream)
            await relay.relay_udp(stream, target, what=what, idle_timeout=self._udp_idle_timeout)
        log.debug("%s: %s closed", session.label, what)

    async def _reach(
        self, udp: bool, destination: Address
    ) -> anyio.abc.ByteStream | anyio.abc.UnreliableObjectStream[bytes]:
        """Resolve, check and dial ``destination`` within the dial timeout."""
        timeout = self._dial_timeout()
        with anyio.move_on_after(timeout):
            denied: str | None = None
            last: relay.DialError | None = None
            for address in await self._addresses(destination.host):
                denied = self._policy.check(address)
                if denied is not None:
                    continue
                try:
                    return await relay.dial(self._dialer, udp, address, destination.port)
                except relay.DialError as error:
                    last = error
            if last is not None:
                raise last
            raise relay.DialError(ResetReason.POLICY, f"not allowed: {denied}")
        raise relay.DialError(
            ResetReason.TIMEOUT, f"{destination} did not answer within {timeout:g} s"
        )

    async def _addresses(self, host: str) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            addresses = await self._dns.addresses(host)
        except OutOfScope:
            raise relay.DialError(
                ResetReason.POLICY, f"not allowed: {host} is outside the namespaces served"
            ) from None
        if not addresses:
            raise relay.DialError(ResetReason.UNREACHABLE, f"{host} did not resolve in the cluster")
        return addresses


async def _end_with(session: Session, scope: anyio.CancelScope) -> None:
    await session.ended.wait()
    scope.cancel()


def _peer(stream: anyio.abc.ByteStream) -> str:
    address = stream.extra(SocketAttribute.remote_address, None)
    if not isinstance(address, tuple):
        return "?"
    host, port = str(address[0]), address[1]
    with contextlib.suppress(ValueError):
        mapped = ipaddress.ip_address(host)
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            host = str(mapped.ipv4_mapped)  # an IPv4 client of the dual-stack listener
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
