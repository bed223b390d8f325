"""``telepresence.Client``: connect to a cluster from a script, as the CLI does.

    import anyio
    from telepresence import Client

    async def main() -> None:
        async with Client() as client:
            status = await client.connect(namespace="default", socks="1080")
            print(status.state, status.manager_version, status.pod_subnets)
            ...  # curl --socks5-hostname 127.0.0.1:1080 http://echo:8080
            await client.quit()

    anyio.run(main)

The client talks to the user daemon (starting it when needed), which holds the connection;
the connection outlives the client (as it outlives a ``telepresence connect`` command) until
:meth:`Client.quit`. When the program runs as root, :meth:`Client.connect` starts the root
daemon as well. Every expected failure is a :class:`telepresence.errors.TelepresenceError`
whose message says what to do; the CLI's exit codes come from the same classes.

Requires the asyncio backend (grpclib).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Self

import anyio
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel

import telepresence
from telepresence import errors
from telepresence.daemon import _process
from telepresence.daemon._rpc import call, call_root_daemon
from telepresence.wire.proto import daemon_grpc
from telepresence.wire.proto import daemon_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

__all__ = ["Client", "ConnectionStatus", "DaemonInfo", "VIFInfo"]

#: Seconds a Connect may take (it waits for the first arrival), and any other call.
CONNECT_TIMEOUT, CALL_TIMEOUT = 120.0, 30.0
#: Seconds ``quit(stop_daemons=True)`` waits for the daemons to be gone.
STOP_TIMEOUT = 20.0
_STATES = {
    pb.ConnectInfo.DISCONNECTED: "disconnected",
    pb.ConnectInfo.CONNECTING: "connecting",
    pb.ConnectInfo.CONNECTED: "connected",
    pb.ConnectInfo.RECONNECTING: "reconnecting",
}


@dataclass(frozen=True, slots=True)
class VIFInfo:
    """The root daemon's VIF: its device, what it routes, and its DNS.

    Attributes:
        device: The TUN device's name, e.g. ``tel0``.
        routed: The subnets routed to the cluster.
        never_proxied: The never-proxy subnets.
        conflicts: Cluster subnets not routed because a local route overlaps them, each
            saying which.
        dns_address: The DNS server's ``IP:53``.
        dns_mode: ``systemd-resolved`` or ``redirect``.
    """

    device: str
    routed: list[str]
    never_proxied: list[str]
    conflicts: list[str]
    dns_address: str
    dns_mode: str

    @classmethod
    def from_message(cls, vif: pb.VIFStatus) -> Self:
        return cls(
            device=vif.device,
            routed=list(vif.routed),
            never_proxied=list(vif.never_proxied),
            conflicts=list(vif.conflicts),
            dns_address=vif.dns_address,
            dns_mode=vif.dns_mode,
        )


@dataclass(frozen=True)
class DaemonInfo:
    """A running daemon."""

    name: str
    version: str
    pid: int
    log_file: str


@dataclass(frozen=True)
class ConnectionStatus:
    """The connection as the user daemon sees it (``telepresence status``).

    ``state`` is ``disconnected``, ``connecting``, ``connected`` or ``reconnecting`` (the
    session was lost and the daemon arrives again by itself; ``error`` says why).
    """

    state: str
    error: str = ""
    context: str = ""
    cluster_server: str = ""
    namespace: str = ""
    manager_namespace: str = ""
    manager_namespace_source: str = ""
    manager_version: str = ""
    session_id: str = ""
    transport: str = ""
    pod_subnets: list[str] = field(default_factory=list)
    service_subnet: str = ""
    cluster_dns: str = ""
    cluster_domain: str = ""
    mapped_namespaces: list[str] = field(default_factory=list)
    also_proxy: list[str] = field(default_factory=list)
    never_proxy: list[str] = field(default_factory=list)
    socks_address: str = ""
    arrivals: int = 0
    user_daemon: DaemonInfo | None = None
    root_daemon: DaemonInfo | None = None
    root_data_plane: str = ""
    vif: VIFInfo | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def to_dict(self) -> dict[str, Any]:
        """As plain data, for ``--output json|yaml``."""
        return asdict(self)

    @classmethod
    def from_message(cls, info: pb.ConnectInfo) -> Self:
        cluster = info.cluster_info
        root = info.root_daemon if info.HasField("root_daemon") else None
        return cls(
            state=_STATES.get(info.state, "unknown"),
            error=info.error,
            context=info.context,
            cluster_server=info.cluster_server,
            namespace=info.namespace,
            manager_namespace=info.manager_namespace,
            manager_namespace_source=info.manager_namespace_source,
            manager_version=info.manager_version,
            session_id=info.session_id,
            transport=info.transport,
            pod_subnets=[_subnet(net) for net in cluster.pod_subnets],
            service_subnet=_subnet(cluster.service_subnet)
            if cluster.HasField("service_subnet")
            else "",
            cluster_dns=str(ipaddress.ip_address(cluster.cluster_dns_ip))
            if cluster.cluster_dns_ip
            else "",
            cluster_domain=cluster.cluster_domain,
            mapped_namespaces=list(info.mapped_namespaces),
            also_proxy=list(info.also_proxy),
            never_proxy=list(info.never_proxy),
            socks_address=info.socks_address,
            arrivals=info.arrivals,
            user_daemon=_daemon(info.user_daemon) if info.HasField("user_daemon") else None,
            root_daemon=_daemon(root.version) if root is not None else None,
            root_data_plane=root.data_plane if root is not None else "",
            vif=VIFInfo.from_message(root.vif)
            if root is not None and root.HasField("vif")
            else None,
            warnings=list(info.warnings),
        )


class Client:
    """A connection to the user daemon (see the module docstring).

    Args:
        kubeconfig: The kubeconfig file(s); None: ``KUBECONFIG`` or ``~/.kube/config``.
        context: The kubeconfig context; None: the current one.
    """

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._channel: Channel | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close_channel()

    async def connect(
        self,
        *,
        namespace: str | None = None,
        manager_namespace: str | None = None,
        mapped_namespaces: Iterable[str] = (),
        also_proxy: Iterable[str] = (),
        never_proxy: Iterable[str] = (),
        transport: str = "portforward",
        manager_address: str | None = None,
        socks: str | int | None = None,
        root_daemon: bool | None = None,
    ) -> ConnectionStatus:
        """Connect (or return the matching connection that exists), starting the daemons.

        Args:
            namespace: The connected namespace (default: the context's).
            manager_namespace: Where the traffic-manager is (default: the kubeconfig's
                ``telepresence.io`` extension, config.yml, then ``ambassador``).
            socks: ``[ADDR:]PORT`` to serve SOCKS5 and HTTP CONNECT on.
            root_daemon: Start the root daemon too (default: when running as root).
        """
        if root_daemon is None:
            root_daemon = os.geteuid() == 0
        try:
            async with anyio.create_task_group() as starting:  # both at once: each takes a while
                if root_daemon:
                    starting.start_soon(_process.ensure_running, _process.ROOT_DAEMON)
                starting.start_soon(_process.ensure_running, _process.CONNECTOR)
        except* errors.DaemonError as failed:
            raise failed.exceptions[0] from None
        stub = self._stub()
        request = pb.ConnectRequest(
            kubeconfig=self.kubeconfig or "",
            context=self.context or "",
            namespace=namespace or "",
            manager_namespace=manager_namespace or "",
            mapped_namespaces=list(mapped_namespaces),
            also_proxy=list(also_proxy),
            never_proxy=list(never_proxy),
            transport=transport,
            manager_address=manager_address or "",
            socks=str(socks) if socks is not None else "",
            environment=_environment(),
        )
        info = await call(stub.Connect, request, within=CONNECT_TIMEOUT, daemon="user daemon")
        return ConnectionStatus.from_message(info)

    async def status(self) -> ConnectionStatus:
        """The connection; ``disconnected`` (with no daemon info) when no user daemon runs."""
        stub = await self._connector()
        if stub is None:
            info = pb.ConnectInfo(state=pb.ConnectInfo.DISCONNECTED)
            root = await _root_call("Status", Empty())
            if isinstance(root, pb.RootStatus):
                info.root_daemon.CopyFrom(root)
            return ConnectionStatus.from_message(info)
        info = await call(stub.Status, Empty(), within=CALL_TIMEOUT, daemon="user daemon")
        return ConnectionStatus.from_message(info)

    async def quit(self, *, stop_daemons: bool = False) -> None:
        """End the connection (depart from the manager); with ``stop_daemons``, also stop
        both daemons and wait until they are gone."""
        stub = await self._connector()
        if stub is not None:
            method = stub.Quit if stop_daemons else stub.Disconnect
            await _quietly(call(method, Empty(), within=CALL_TIMEOUT, daemon="user daemon"))
        if stop_daemons:
            await _stop_root_daemon()
            self._close_channel()
            await _wait_gone(_process.CONNECTOR)

    async def versions(self) -> dict[str, DaemonInfo | None]:
        """The client's, the daemons' (None when not running) and the manager's versions."""
        versions: dict[str, DaemonInfo | None] = {
            "client": DaemonInfo("client", telepresence.__version__, os.getpid(), "")
        }
        status = await self.status()
        versions["user-daemon"] = status.user_daemon
        versions["root-daemon"] = status.root_daemon
        if status.manager_version:
            versions["traffic-manager"] = DaemonInfo(
                "traffic-manager", status.manager_version, 0, ""
            )
        return versions

    async def set_log_level(self, level: str, *, duration: float = 0) -> None:
        """Change both daemons' log level (for ``duration`` seconds, or until they stop)."""
        request = pb.LogLevelRequest(level=level, duration_seconds=duration)
        stub = await self._connector()
        if stub is None:
            raise errors.NotConnected("no user daemon runs: connect first")
        await call(stub.SetLogLevel, request, within=CALL_TIMEOUT, daemon="user daemon")
        await _root_call("SetLogLevel", request)

    async def _connector(self) -> daemon_grpc.ConnectorStub | None:
        """The user daemon; None when it does not run."""
        if not await _process.is_answering(_process.CONNECTOR):
            return None
        return self._stub()

    def _stub(self) -> daemon_grpc.ConnectorStub:
        if self._channel is None:
            self._channel = Channel(path=str(_process.CONNECTOR.socket))
        return daemon_grpc.ConnectorStub(self._channel)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _subnet(net: Any) -> str:
    return f"{ipaddress.ip_address(net.ip)}/{net.mask}"


def _daemon(version: pb.DaemonVersion) -> DaemonInfo:
    return DaemonInfo(version.name, version.version, version.pid, version.log_file)


def _environment() -> dict[str, str]:
    """What kubeconfig credential plugins and paths may rely on."""
    names = ("KUBECONFIG", "HOME", "PATH")
    return {name: os.environ[name] for name in names if name in os.environ}


async def _quietly(call_: Any) -> None:
    """A stop request: the daemon may close the connection before its answer arrives."""
    with contextlib.suppress(errors.DaemonError):
        await call_


async def _root_call(method: str, request: Any) -> object:
    """Call the root daemon; None when it does not run."""
    return await call_root_daemon(method, request, within=CALL_TIMEOUT)


async def _stop_root_daemon() -> None:
    if not await _process.is_answering(_process.ROOT_DAEMON):
        return
    await _quietly(_root_call("Quit", Empty()))
    await _wait_gone(_process.ROOT_DAEMON)


async def _wait_gone(kind: _process.DaemonKind) -> None:
    """Wait until the daemon has stopped: its instance lock free and its socket gone (it
    removes the socket itself; one left by a daemon that was killed is removed here)."""
    with anyio.move_on_after(STOP_TIMEOUT):
        # Another process's lock: there is no event to wait on.
        while _process.is_running(kind):  # noqa: ASYNC110
            await anyio.sleep(0.02)
        kind.socket.unlink(missing_ok=True)
        return
    raise errors.DaemonError(
        f"the {kind.title} did not stop within {STOP_TIMEOUT:g} s; see {kind.log_file}"
    )
