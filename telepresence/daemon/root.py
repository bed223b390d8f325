"""The root daemon: the privileged half of ``telepresence connect``.

It owns what needs root: the VIF (:mod:`telepresence.vif`: the TUN device, routes, nftables
redirection and DNS), through which every program on the laptop reaches the cluster. For that
it needs the cluster's data plane, and it has its own connection to it, so that bytes never
hop through the user daemon: the user daemon hands it what its session learnt (``Connect``:
the session id, the manager's pod and ports, the CA, how to reach the pod, the cluster info
and the user's VIF settings), and the root daemon opens the mux over TLS itself, and a
control channel beside it for DNS lookups and the cluster info's changes.

**Two lifetimes.** The *plane* (mux + control channel) belongs to one session: a plane that
ends (the manager went away) is reported as ``lost`` in ``Status``; the user daemon, which
notices the same and arrives again, then hands over the new session, and a new plane replaces
the old one. The *VIF* outlives planes: it stays up while the session is replaced, its
connections and lookups waiting briefly for the new plane (so a manager restart does not
tear down the laptop's routes and DNS), and goes only with ``Disconnect``/``Quit``, or when a
``Connect`` asks for different settings.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from google.protobuf.empty_pb2 import Empty

import telepresence
from telepresence import errors, transport
from telepresence.daemon import _process
from telepresence.daemon._rpc import unary
from telepresence.kube import Kube, KubeError, KubeTarget
from telepresence.session import SessionError, open_data_plane
from telepresence.socks import DialError
from telepresence.transport import TransportError
from telepresence.wire.proto import daemon_grpc, manager_grpc, manager_pb2
from telepresence.wire.proto import daemon_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from telepresence.vif._vif import VIF, VIFSettings
    from telepresence.wire import shell

__all__ = ["RootDaemon"]

log = logging.getLogger(__name__)

#: How long a new connection or lookup waits for a plane while the session is replaced.
PLANE_WAIT = 10.0
#: The control API's calls (DNS lookups have their own, shorter, deadline).
CALL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Plane:
    """One session's data plane and control channel."""

    session: manager_pb2.SessionInfo
    mux: shell.MuxConnection
    stub: manager_grpc.ManagerStub


class RootDaemon(daemon_grpc.DaemonBase):
    """The ``Daemon`` service: one plane at a time, and the VIF."""

    def __init__(self, tasks: anyio.abc.TaskGroup, stop: anyio.Event) -> None:
        self._tasks = tasks
        self._stop = stop
        self._state = ""
        self._session_id = ""
        self._plane: Plane | None = None
        self._plane_changed = anyio.Event()
        self._plane_scope: anyio.CancelScope | None = None
        self._vif: VIF | None = None
        self._vif_request: pb.VIFConfig | None = None
        self._vif_scope: anyio.CancelScope | None = None
        self._vif_done = anyio.Event()
        self._lock = anyio.Lock()
        self._log_level = _process.LogLevel(tasks)
        tasks.start_soon(self._remove_leftovers, name="leftovers")

    # -- the API -------------------------------------------------------------------------------

    def version(self) -> pb.DaemonVersion:
        return pb.DaemonVersion(
            name="root-daemon",
            version=telepresence.__version__,
            pid=os.getpid(),
            log_file=str(_process.ROOT_DAEMON.log_file),
        )

    def status(self) -> pb.RootStatus:
        status = pb.RootStatus(
            version=self.version(), data_plane=self._state, session_id=self._session_id
        )
        if (vif := self._vif) is not None:
            status.vif.CopyFrom(_vif_status(vif))
        return status

    @unary
    async def Version(self, request: Empty) -> pb.DaemonVersion:
        return self.version()

    @unary
    async def Status(self, request: Empty) -> pb.RootStatus:
        return self.status()

    @unary
    async def Connect(self, request: pb.DataPlaneRequest) -> pb.RootStatus:
        async with self._lock:
            self._drop_plane()
            self._state, self._session_id = "connecting", request.session_id
            self._plane_scope = await self._tasks.start(self._hold_plane, request)
            if not request.HasField("vif"):
                await self._drop_vif()
            elif self._vif_request != request.vif or self._vif is None:
                await self._drop_vif()
                await self._start_vif(request)
            return self.status()

    @unary
    async def Disconnect(self, request: Empty) -> Empty:
        await self.disconnect()
        return Empty()

    @unary
    async def Quit(self, request: Empty) -> Empty:
        await self.disconnect()
        self._stop.set()
        return Empty()

    @unary
    async def SetLogLevel(self, request: pb.LogLevelRequest) -> Empty:
        self._log_level.change(request.level, request.duration_seconds)
        return Empty()

    async def disconnect(self) -> None:
        """Close the plane and take the VIF down (also when the daemon stops)."""
        async with self._lock:
            self._drop_plane()
            self._state, self._session_id = "", ""
            await self._drop_vif()

    # -- the plane -----------------------------------------------------------------------------

    def _set_plane(self, plane: Plane | None) -> None:
        self._plane = plane
        self._plane_changed.set()
        self._plane_changed = anyio.Event()

    def _drop_plane(self) -> None:
        if self._plane_scope is not None:
            self._plane_scope.cancel()
            self._plane_scope = None
        self._set_plane(None)

    async def current_plane(self) -> Plane:
        """The live plane, waiting up to :data:`PLANE_WAIT` while the session is replaced.

        Raises:
            DialError: There is none in time.
        """
        with anyio.move_on_after(PLANE_WAIT):
            while self._plane is None:
                await self._plane_changed.wait()
            return self._plane
        raise DialError(f"not connected to the cluster ({self._state or 'disconnected'})")

    async def _hold_plane(
        self,
        request: pb.DataPlaneRequest,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope],
    ) -> None:
        """Open the plane, report it started, and keep it (following the cluster info) until
        it ends or is dropped; a failure to open it is the Connect call's error."""
        started = False
        with anyio.CancelScope() as scope:
            try:
                async with _open_plane(request) as (plane, watch):
                    self._set_plane(plane)
                    self._state = "connected"
                    log.info("data plane of session %s connected", request.session_id)
                    task_status.started(scope)
                    started = True
                    async with anyio.create_task_group() as tasks:
                        tasks.start_soon(self._follow_cluster_info, request, watch)
                        ended = await plane.mux.wait_closed()
                        tasks.cancel_scope.cancel()
                    self._state = f"lost: {ended.message or ended.reason.name.lower()}"
            except (SessionError, KubeError, TransportError) as error:
                self._state = f"lost: {error}"
                if not started:
                    raise _translated(error) from error
            finally:
                if self._plane is not None and self._plane.session.session_id == (
                    request.session_id
                ):
                    self._set_plane(None)
            log.warning("data plane of session %s %s", request.session_id, self._state)

    async def _follow_cluster_info(self, request: pb.DataPlaneRequest, watch: Any) -> None:
        """Apply the cluster's changes (a node's new pod subnet) to the VIF."""
        try:
            async for info in watch:
                if self._vif is not None and self._vif_request == request.vif:
                    await self._vif.update(_settings(request, info))
        except Exception as error:  # the plane's end is noticed by its mux
            log.warning("stopped following the cluster info: %s", error)

    # -- the VIF -------------------------------------------------------------------------------

    async def _start_vif(self, request: pb.DataPlaneRequest) -> None:
        self._vif_done = anyio.Event()
        self._vif_scope = await self._tasks.start(self._hold_vif, request)
        self._vif_request = request.vif

    async def _drop_vif(self) -> None:
        if self._vif_scope is not None:
            self._vif_scope.cancel()
            self._vif_scope = None
            await self._vif_done.wait()
        self._vif_request = None

    async def _hold_vif(
        self,
        request: pb.DataPlaneRequest,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope],
    ) -> None:
        from telepresence.vif._vif import open_vif  # noqa: PLC0415  # only when connecting

        started = False
        try:
            with anyio.CancelScope() as scope:
                settings = _settings(request, request.cluster_info)
                async with open_vif(settings, _PlaneDialer(self), self._lookup) as vif:
                    self._vif = vif
                    task_status.started(scope)
                    started = True
                    await anyio.sleep_forever()
        except Exception as error:
            if not started:
                raise errors.DaemonError(
                    f"the root daemon cannot set up the VIF: {error}"
                ) from error
            # Not the daemon's end: it serves on, and status shows the VIF gone.
            log.exception("the VIF failed and was taken down")
        finally:
            self._vif = None
            self._vif_done.set()

    async def _lookup(self, name: str, query_type: int) -> manager_pb2.DNSResponse:
        """A cluster DNS lookup through the current plane's control channel."""
        plane = await self.current_plane()
        request = manager_pb2.DNSRequest(session=plane.session, name=name, type=query_type)
        response: manager_pb2.DNSResponse = await plane.stub.LookupDNS(
            request, timeout=CALL_TIMEOUT
        )
        return response

    async def _remove_leftovers(self) -> None:
        """At start: what a killed root daemon left (its nftables table, its policy rule).
        The VIF's modules are imported in the worker thread too (pyroute2 alone takes a third
        of a second): the event loop serves the API meanwhile."""
        async with self._lock:
            try:
                if await anyio.to_thread.run_sync(_remove_leftovers):
                    log.info("removed the nftables table and policy routing a killed daemon left")
            except Exception as error:  # the daemon serves on regardless
                log.warning("could not check for a killed daemon's leftovers: %s", error)


def _remove_leftovers() -> bool:
    from telepresence.vif._vif import remove_leftovers  # noqa: PLC0415  # see the caller

    return remove_leftovers()


class _PlaneDialer:
    """The VIF's way into the cluster: streams on the current plane's mux."""

    def __init__(self, daemon: RootDaemon) -> None:
        self._daemon = daemon

    async def open_tcp(self, host: str, port: int) -> anyio.abc.ByteStream:
        plane = await self._daemon.current_plane()
        stream: shell.MuxStream = await plane.mux.open_stream(host, port)
        return stream

    async def open_udp(self, host: str, port: int) -> anyio.abc.UnreliableObjectStream[bytes]:
        plane = await self._daemon.current_plane()
        flow: shell.MuxDatagramStream = await plane.mux.open_datagram_stream(host, port)
        return flow


@contextlib.asynccontextmanager
async def _open_plane(request: pb.DataPlaneRequest) -> AsyncIterator[tuple[Plane, Any]]:
    """The plane for ``request``'s session, and its cluster-info watch."""
    endpoint = manager_pb2.DataPlaneEndpoint(
        mux_port=request.mux_port, ca_certificate=request.ca_certificate
    )
    session = manager_pb2.SessionInfo(session_id=request.session_id)
    async with contextlib.AsyncExitStack() as stack:
        if request.transport == "direct":
            way = await stack.enter_async_context(
                transport.direct(request.manager_address, request.manager_namespace)
            )
        else:
            target = KubeTarget(
                kubeconfig=request.kubeconfig or None, context=request.context or None
            )
            kube = await stack.enter_async_context(Kube.open(target))
            api_port = request.cluster_info.manager_port or transport.DEFAULT_API_PORT
            way = await stack.enter_async_context(
                transport.port_forward_to(
                    kube, request.manager_namespace, request.manager_pod, api_port
                )
            )
        mux = await stack.enter_async_context(open_data_plane(way, endpoint, request.session_id))
        stub = manager_grpc.ManagerStub(way.channel)
        watch = await stack.enter_async_context(stub.WatchClusterInfo.open())
        await watch.send_message(session, end=True)
        stack.push_async_callback(_cancel, watch)
        yield Plane(session, mux, stub), watch


async def _cancel(watch: Any) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await watch.cancel()


def _settings(request: pb.DataPlaneRequest, info: manager_pb2.ClusterInfo) -> VIFSettings:
    """The VIF's settings: the cluster's part from ``info``, the user's from the request."""
    from telepresence.vif._vif import VIFSettings  # noqa: PLC0415

    def networks(texts: Any) -> tuple[ipaddress.IPv4Network, ...]:
        return tuple(
            network
            for text in texts
            if isinstance(
                network := ipaddress.ip_network(text, strict=False), ipaddress.IPv4Network
            )
        )

    def ipnet(value: manager_pb2.IPNet) -> ipaddress.IPv4Network | None:
        if len(value.ip) != 4:
            return None
        return ipaddress.IPv4Network((bytes(value.ip), value.mask), strict=False)

    cluster = [ipnet(subnet) for subnet in (*info.pod_subnets, info.service_subnet)]
    dns_ip = ipaddress.IPv4Address(info.cluster_dns_ip) if len(info.cluster_dns_ip) == 4 else None
    config = request.vif
    exclude: tuple[ipaddress.IPv4Network, ...] = ()
    if request.transport == "direct":
        host, _ = transport.parse_address(request.manager_address)
        with contextlib.suppress(ValueError):
            exclude = (ipaddress.IPv4Network(host),)
        if len(info.manager_pod_ip) == 4:
            exclude += (ipaddress.IPv4Network(ipaddress.IPv4Address(info.manager_pod_ip)),)
    return VIFSettings(
        cluster_subnets=tuple(subnet for subnet in cluster if subnet is not None),
        dns_ip=dns_ip,
        cluster_domain=info.cluster_domain or "cluster.local.",
        namespace=config.namespace or "default",
        mapped_namespaces=tuple(config.mapped_namespaces),
        also_proxy=networks(config.also_proxy),
        never_proxy=networks(config.never_proxy),
        allow_conflicting=networks(config.allow_conflicting),
        include_suffixes=tuple(config.include_suffixes),
        exclude_suffixes=tuple(config.exclude_suffixes),
        lookup_timeout=config.lookup_timeout_seconds or 4.0,
        exclude=exclude,
    )


def _vif_status(vif: VIF) -> pb.VIFStatus:
    settings = vif.settings
    return pb.VIFStatus(
        device=vif.tun.name,
        routed=[str(subnet) for subnet in vif.routed],
        never_proxied=[str(subnet) for subnet in settings.never_proxy],
        conflicts=[str(conflict) for conflict in vif.conflicts],
        dns_address=f"{settings.dns_ip}:53" if settings.dns_ip is not None else "",
        dns_mode=vif.dns_mode,
    )


def _translated(error: Exception) -> errors.TelepresenceError:
    if isinstance(error, KubeError):
        return errors.ClusterUnreachable(f"the root daemon cannot reach the manager: {error}")
    return errors.TelepresenceError(f"the root daemon's data plane failed: {error}")
