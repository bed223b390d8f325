"""A client's session with the traffic-manager, over one of the transports.

    async with (
        Kube.open(KubeTarget()) as kube,
        transport.port_forward(kube, "ambassador") as way,
        open_session(way, token=kube.bearer_token or "", namespace=kube.namespace) as session,
    ):
        print(session.cluster_info.cluster_domain)
        stream = await session.open_tcp("echo.default", 8080)
        answer = await session.lookup_dns("echo.default.")

:func:`open_session` does what ``telepresence connect`` does before any routing, through the
transport's gRPC channel and streams (:mod:`telepresence.transport`):

1. arrives as a client with a bearer token (the manager checks it with a TokenReview and a
   SubjectAccessReview), reads the cluster info and keeps it current, reads the client
   configuration;
2. opens the data plane: the mux over TLS over a stream to the data port named in the cluster
   info, verifying the manager's certificate against the CA the cluster info carries and the
   name ``traffic-manager.<namespace>``;
3. keeps the session alive (``Remain``) until the block ends, then departs.

A session that ends by itself (the manager's watch ends, the data plane closes, a ``Remain``
fails) raises :class:`SessionLost` (or the :class:`SessionError` of the failed call) out of the
block, cancelling its body: the caller arrives again, as the user daemon does with backoff.

Leaving the block (also by an error or a cancellation) stops the background tasks, closes the
mux and departs (shielded, bounded).

Requires the asyncio backend (grpclib).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from anyio.streams.tls import TLSStream
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from h2.exceptions import StreamClosedError

import telepresence
from telepresence.wire import shell, tls
from telepresence.wire.proto import manager_grpc
from telepresence.wire.proto import manager_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from grpclib.client import Stream

    from telepresence.transport import Transport

__all__ = [
    "ManagerSession",
    "default_client_name",
    "open_data_plane",
    "SessionLost",
    "SessionError",
    "SessionRefused",
    "open_session",
]

log = logging.getLogger(__name__)

#: Seconds between two ``Remain`` calls (the manager forgets a client after
#: ``client.connectionTTL``, 24 h by default: this is only ever far below it).
REMAIN_INTERVAL = 5.0
#: Seconds each control call may take.
CALL_TIMEOUT = 15.0
#: Seconds the data plane's TLS and mux handshakes may take together.
HANDSHAKE_TIMEOUT = 15.0
#: DNS query types by name, for :meth:`ManagerSession.lookup_dns`.
QUERY_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}


class SessionError(Exception):
    """The session could not be opened or was lost; ``str()`` says what happened and what to
    do, in one paragraph."""


class SessionRefused(SessionError):
    """The traffic-manager turned the client away (its token, or its rights)."""


class SessionLost(SessionError):
    """A live session ended without the client asking: the manager went away, the link
    broke, or the manager forgot the session. Arriving again is the remedy."""


@dataclass
class ManagerSession:
    """A live session: the manager's answers, and the ways to reach the cluster through it.

    Attributes:
        session_id: The manager's name for this session (the data plane's credentials).
        manager_namespace: Where the traffic-manager runs.
        manager_pod: The pod the session goes through.
        manager_version: The traffic-manager's version.
        client_config: The chart's ``client`` block, as the manager pushed it.
        mux: The data plane's connection (streams opened here are dialled by the manager).
    """

    session_id: str
    manager_namespace: str
    manager_pod: str
    manager_version: str
    client_config: pb.ClientConfig
    mux: shell.MuxConnection
    _stub: manager_grpc.ManagerStub
    _cluster_info: pb.ClusterInfo
    _cluster_info_changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def cluster_info(self) -> pb.ClusterInfo:
        """The latest cluster info (subnets, DNS, the manager's endpoints)."""
        return self._cluster_info

    async def next_cluster_info(self) -> pb.ClusterInfo:
        """Wait for the manager to send changed cluster info, and return it."""
        await self._cluster_info_changed.wait()
        return self._cluster_info

    def _update_cluster_info(self, info: pb.ClusterInfo) -> None:
        self._cluster_info = info
        self._cluster_info_changed.set()
        self._cluster_info_changed = anyio.Event()

    async def lookup_dns(self, name: str, query_type: str | int = "A") -> pb.DNSResponse:
        """Resolve ``name`` in the cluster, as the manager's pod would (its search path
        applies: ``echo.default.`` finds ``echo.default.svc.cluster.local.``)."""
        number = query_type if isinstance(query_type, int) else QUERY_TYPES[query_type.upper()]
        request = pb.DNSRequest(
            session=pb.SessionInfo(session_id=self.session_id),
            name=name if name.endswith(".") else f"{name}.",
            type=number,
        )
        with _control_errors("look up a name"):
            response: pb.DNSResponse = await self._stub.LookupDNS(request, timeout=CALL_TIMEOUT)
        return response

    async def open_tcp(self, host: str, port: int) -> shell.MuxStream:
        """A TCP stream to ``host:port`` dialled by the manager in the cluster (a name is
        resolved there). Raises :class:`~telepresence.wire.shell.StreamResetError` with the
        manager's reason (``refused``, ``unreachable``, ``timeout``, ``policy``)."""
        return await self.mux.open_stream(host, port)

    async def open_udp(self, host: str, port: int) -> shell.MuxDatagramStream:
        """A UDP flow to ``host:port`` from the manager's pod."""
        return await self.mux.open_datagram_stream(host, port)


@contextlib.asynccontextmanager
async def open_session(
    transport: Transport,
    *,
    token: str,
    name: str | None = None,
    namespace: str = "default",
) -> AsyncIterator[ManagerSession]:
    """Arrive at the traffic-manager that ``transport`` reaches and hold a session until the
    block ends (see the module docstring).

    Args:
        transport: The way to the manager's pod (:mod:`telepresence.transport`).
        token: The bearer token the manager checks: the kubeconfig user's
            (:attr:`telepresence.kube.Kube.bearer_token`), or a service account's.
        name: How the manager lists this client (default: ``user@host``).
        namespace: The client's connected namespace.

    Raises:
        SessionRefused: The manager refused the token or the user's rights.
        SessionError: The manager could not be reached or broke off.
        telepresence.kube.KubeError: The cluster refused a port-forward.
    """
    stub = manager_grpc.ManagerStub(transport.channel)
    try:
        async with contextlib.AsyncExitStack() as stack:
            with _control_errors("arrive"):
                version: pb.VersionInfo = await stub.Version(Empty(), timeout=CALL_TIMEOUT)
                arrived: pb.SessionInfo = await stub.ArriveAsClient(
                    pb.ClientInfo(
                        name=name or default_client_name(),
                        product="telepresence",
                        version=telepresence.__version__,
                        namespace=namespace,
                        bearer_token=token,
                    ),
                    timeout=CALL_TIMEOUT,
                )
            log.debug(
                "arrived at traffic-manager %s: session %s", version.version, arrived.session_id
            )
            stack.push_async_callback(_depart, stub, arrived)
            with _control_errors("read the cluster info"):
                client_config: pb.ClientConfig = await stub.GetClientConfig(
                    Empty(), timeout=CALL_TIMEOUT
                )
                watch = await stack.enter_async_context(_watch_cluster_info(stub, arrived))
                first = await watch.recv_message()
            if first is None:
                raise SessionError("the traffic-manager ended the session as it began; try again")

            log.debug("cluster info: %s", first)
            mux = await stack.enter_async_context(
                open_data_plane(transport, first.data_plane, arrived.session_id)
            )
            log.debug("data plane open through %s", transport.manager_pod)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)  # runs first: stops the background tasks
            session = ManagerSession(
                session_id=arrived.session_id,
                manager_namespace=transport.manager_namespace,
                manager_pod=transport.manager_pod,
                manager_version=version.version,
                client_config=client_config,
                mux=mux,
                _stub=stub,
                _cluster_info=first,
            )

            async def follow_cluster_info() -> None:
                with _control_errors("follow the cluster info"):
                    async for info in watch:
                        session._update_cluster_info(info)
                raise SessionLost("the traffic-manager ended the session (its cluster info watch)")

            async def watch_data_plane() -> None:
                ended = await mux.wait_closed()
                raise SessionLost(f"the data plane to the traffic-manager ended: {ended.message}")

            tasks.start_soon(follow_cluster_info, name="cluster info")
            tasks.start_soon(watch_data_plane, name="data plane")
            tasks.start_soon(_remain, stub, arrived, name="remain")
            yield session
    except* SessionError as failed:
        # One failure of the session, not the task group's wrapping of it.
        raise failed.exceptions[0] from None


@contextlib.asynccontextmanager
async def open_data_plane(
    transport: Transport, endpoint: pb.DataPlaneEndpoint, session_id: str
) -> AsyncIterator[shell.MuxConnection]:
    """A data-plane connection of the session ``session_id``: the mux over TLS over a stream
    that ``transport`` dials to ``endpoint``'s port, the manager verified against the CA the
    endpoint names. (The root daemon opens its own this way, with what the user daemon's
    session learnt.)

    Raises:
        SessionError: The manager's certificate does not check out, the handshakes failed or
            timed out, or the manager refused the session.
    """
    try:
        authorities = tls.certificates_from_pem(
            endpoint.ca_certificate, source="the traffic-manager's CA certificate"
        )
    except tls.TLSMaterialError as error:
        raise SessionError(f"{error}; upgrade the traffic-manager") from error
    context = tls.client_context(authorities, alpn=tls.MUX_ALPN)
    namespace = transport.manager_namespace
    link = await transport.dial(endpoint.mux_port)
    # The deadline covers the TLS and mux handshakes; it is lifted once the mux is open.
    with anyio.CancelScope(deadline=anyio.current_time() + HANDSHAKE_TIMEOUT) as handshake:
        try:
            stream = await TLSStream.wrap(
                link,
                hostname=f"{tls.MANAGER_NAME}.{namespace}",
                ssl_context=context,
                standard_compatible=False,
            )
        except BaseException as error:
            await anyio.aclose_forcefully(link)
            if isinstance(error, ssl.SSLError):
                why = getattr(error, "verify_message", None) or error.reason or error
                raise SessionError(
                    "the traffic-manager's data plane did not prove to be the manager in "
                    f"namespace {namespace} (TLS: {why}); reinstall it with "
                    "telepresence helm upgrade if its certificate was replaced"
                ) from error
            if isinstance(error, (anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
                raise SessionError(
                    f"the traffic-manager's data plane closed the connection: {error}"
                ) from error
            raise
        try:
            async with shell.connect(stream, credentials=session_id.encode()) as connection:
                handshake.deadline = math.inf
                yield connection
        except shell.HandshakeError as error:
            raise SessionError(
                f"the traffic-manager's data plane refused the session: {error}"
            ) from error
    if handshake.cancelled_caught:
        raise SessionError(
            f"the traffic-manager's data plane did not answer within {HANDSHAKE_TIMEOUT:g} s"
        )


@contextlib.asynccontextmanager
async def _watch_cluster_info(
    stub: manager_grpc.ManagerStub, session: pb.SessionInfo
) -> AsyncIterator[Stream[pb.SessionInfo, pb.ClusterInfo]]:
    """The cluster-info watch, cancelled when the block ends: the manager never ends it while
    the session lives, and grpclib's stream would otherwise wait for its end."""
    async with stub.WatchClusterInfo.open() as watch:
        await watch.send_message(session, end=True)
        try:
            yield watch
        finally:
            # (A watch that ended already has nothing to cancel.)
            with (
                anyio.CancelScope(shield=True),
                contextlib.suppress(
                    ProtocolError, StreamTerminatedError, StreamClosedError, OSError
                ),
            ):
                await watch.cancel()


async def _remain(stub: manager_grpc.ManagerStub, session: pb.SessionInfo) -> None:
    request = pb.RemainRequest(session=session)
    while True:
        await anyio.sleep(REMAIN_INTERVAL)
        with _control_errors("keep the session"):
            await stub.Remain(request, timeout=CALL_TIMEOUT)


async def _depart(stub: manager_grpc.ManagerStub, session: pb.SessionInfo) -> None:
    """Tell the manager the session is over; best effort, shielded and bounded (the manager
    forgets it after its TTL anyway)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await stub.Depart(session, timeout=5)
        except (GRPCError, StreamTerminatedError, OSError, TimeoutError) as error:
            log.debug("depart: %s", error)


@contextlib.contextmanager
def _control_errors(doing: str) -> Iterator[None]:
    """Turn the control API's failures into one :class:`SessionError`."""
    try:
        yield
    except GRPCError as error:
        if error.status in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED):
            raise SessionRefused(
                f"the traffic-manager refused to let you {doing}: {error.message}"
            ) from error
        raise SessionError(
            f"the traffic-manager could not {doing}: {error.message or error.status.name}"
        ) from error
    except (StreamTerminatedError, ConnectionError, OSError) as error:
        raise SessionError(
            f"lost the connection to the traffic-manager while trying to {doing}: "
            f"{error or type(error).__name__}"
        ) from error


def default_client_name() -> str:
    """How the manager lists this client unless told otherwise: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
