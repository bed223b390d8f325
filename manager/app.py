"""The traffic-manager as one structured-concurrency program: :func:`run`.

Start-up, in order, each step started in the root task group and awaited until ready:

1. the listeners are bound (so their ports are known, also when a test asks for port 0) and
   the health probes answer (``/healthz`` 200, ``/readyz`` 503);
2. the session expiry loop;
3. the cluster watchers: the nodes' subnets (cluster-wide managers that may read nodes), the
   managed namespaces' pods and Services (:mod:`manager.inventory`), then the cluster info,
   whose first facts are computed;
4. the gRPC control API (grpclib, h2c) and the data plane (tpmux over TLS);
5. ready: ``/readyz`` answers 200, and ``task_status.started()`` hands the caller a
   :class:`Running` handle.

Shutdown (SIGTERM, through :meth:`Running.shutdown`): ``/readyz`` answers 503 at once, both
listeners stop accepting, the gRPC calls in progress end, every mux connection gets GO_AWAY,
and the open streams have ``shutdown_grace`` seconds to finish; then the sessions end, and
everything still running is cancelled (the tasks still running then are logged by name).

What tests replace is passed in :class:`Collaborators`: the DNS resolver, the dialer, the
destination policy, the clock, the resolv.conf path and the TLS identity.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from grpclib.server import Server

from manager import health
from manager.auth import Authenticator
from manager.changes import Signal
from manager.cluster_info import ClusterInfo, Endpoints, NodeSubnets
from manager.dataplane import DataPlane
from manager.dns import AresResolver, ClusterDNS, Resolver
from manager.inventory import Inventory
from manager.policy import DestinationPolicy, ScopePolicy
from manager.relay import UDP_IDLE_TIMEOUT, Dialer, SocketDialer
from manager.resolv import ResolvConf
from manager.service import ManagerService
from manager.sessions import SessionRegistry
from telepresence.wire import shell, tls

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from manager.config import ManagerConfig
    from manager.kube import Kubernetes
    from manager.settings import Settings

log = logging.getLogger("manager")

RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass
class Collaborators:
    """What :func:`run` uses from outside, replaceable by tests.

    Attributes:
        resolver: Asks the cluster DNS (default: c-ares with the resolv.conf nameservers).
        dialer: Connects to clients' destinations (default: this pod's sockets).
        policy: Where clients' streams and names may go (default: the namespace scope).
        clock: Monotonic seconds for session expiry.
        resolv_conf: The pod's resolv.conf (search path, nameserver, cluster domain).
        identity: The data plane's TLS identity (default: ``TLS_DIR``'s tls.crt and tls.key).
        ca_certificate: The PEM of the CA that issued it, handed to clients in the cluster
            info (default: ``TLS_DIR``'s ca.crt).
        udp_idle_timeout: Seconds a silent UDP flow lives.
    """

    resolver: Resolver | None = None
    dialer: Dialer = field(default_factory=SocketDialer)
    policy: DestinationPolicy | None = None
    clock: Callable[[], float] = time.monotonic
    resolv_conf: Path = RESOLV_CONF
    identity: tls.Identity | None = None
    ca_certificate: bytes | None = None
    udp_idle_timeout: float = UDP_IDLE_TIMEOUT


@dataclass
class Running:
    """A started manager.

    Attributes:
        api_port: The bound port of the control API.
        data_port: The bound port of the data plane.
        health_port: The bound port of the probes.
        sessions: The session registry.
        stopped: Set once :func:`run` has finished its graceful shutdown.
    """

    api_port: int
    data_port: int
    health_port: int
    sessions: SessionRegistry
    stopped: anyio.Event
    _stopping: anyio.Event
    _ready: Callable[[], bool]

    @property
    def ready(self) -> bool:
        return self._ready()

    def shutdown(self) -> None:
        """Begin the graceful shutdown (what SIGTERM does)."""
        self._stopping.set()


def load_identity(tls_dir: Path) -> tls.Identity:
    """The serving identity the chart mounts (``tls.crt`` and ``tls.key``).

    Raises:
        tls.TLSMaterialError: The files are malformed, mismatched or expired (named).
        OSError: A file cannot be read.
    """
    return tls.Identity.load(tls_dir / "tls.crt", tls_dir / "tls.key")


def load_ca(tls_dir: Path) -> bytes:
    """The CA certificate the chart mounts (``ca.crt``), as PEM: clients get it with the cluster
    info to verify the data plane (and agents will, for mutual TLS).

    Raises:
        tls.TLSMaterialError: The file holds no valid certificate (named).
        OSError: It cannot be read.
    """
    path = tls_dir / "ca.crt"
    pem = path.read_bytes()
    tls.certificates_from_pem(pem, source=str(path))
    return pem


async def run(
    settings: Settings,
    config: ManagerConfig,
    kubernetes: Kubernetes,
    *,
    collaborators: Collaborators | None = None,
    task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the traffic-manager until its graceful shutdown is over (see the module
    docstring)."""
    extras = collaborators or Collaborators()
    identity = extras.identity or load_identity(settings.tls_dir)
    ssl_context = tls.server_context(identity, alpn=tls.MUX_ALPN)
    ca_certificate = extras.ca_certificate or load_ca(settings.tls_dir)
    resolv = ResolvConf.load(extras.resolv_conf)
    sessions = SessionRegistry(client_ttl=config.client.connection_ttl, clock=extras.clock)
    stopping = anyio.Event()
    stopped = anyio.Event()
    ready = False
    try:
        async with contextlib.AsyncExitStack() as resources:
            health_listener = await anyio.create_tcp_listener(
                local_host=settings.bind_host, local_port=settings.health_port
            )
            resources.push_async_callback(health_listener.aclose)
            # The wire shell's listener: its connections' streams cost the data plane's TLS
            # the least per message.
            data_listener = shell.SocketListener(_bind(settings.bind_host, settings.data_port))
            resources.push_async_callback(data_listener.aclose)
            api_socket = _bind(settings.bind_host, settings.api_port)
            resources.callback(api_socket.close)
            resolver = extras.resolver
            if resolver is None:
                owned = AresResolver()
                resources.push_async_callback(owned.aclose)
                resolver = owned
            endpoints = Endpoints(
                settings.pod_ip, api_socket.getsockname()[1], _port(data_listener), ca_certificate
            )

            async with anyio.create_task_group() as tasks:
                await tasks.start(health.serve, health_listener, lambda: ready, name="probes")
                tasks.start_soon(sessions.run, name="session expiry")
                inventory, cluster = await _watch_cluster(
                    tasks,
                    settings=settings,
                    config=config,
                    kubernetes=kubernetes,
                    resolv=resolv,
                    endpoints=endpoints,
                )
                policy = extras.policy or ScopePolicy(
                    inventory, cluster.domain, config.client.routing.also_proxy_subnets
                )
                dns = ClusterDNS(resolver, resolv, policy.allows_name)
                server = Server(
                    [
                        ManagerService(
                            sessions=sessions,
                            authenticator=Authenticator(kubernetes, settings.namespace),
                            cluster=cluster.latest,
                            client_config=config.client,
                            dns=dns,
                            trust_port_forward=settings.trust_port_forward,
                        )
                    ]
                )
                await server.start(sock=api_socket)
                resources.callback(server.close)  # also when cancelled before the shutdown
                dataplane = DataPlane(
                    sessions=sessions,
                    ssl_context=ssl_context,
                    dns=dns,
                    policy=policy,
                    dialer=extras.dialer,
                    dial_timeout=lambda: config.client.endpoint_dial,
                    udp_idle_timeout=extras.udp_idle_timeout,
                )
                await tasks.start(dataplane.serve, data_listener, name="data plane")

                ready = True
                health_port = _port(health_listener)
                log.info(
                    "ready in namespace %s: control API on port %d, data plane on %d, probes on %d",
                    settings.namespace,
                    endpoints.api_port,
                    endpoints.mux_port,
                    health_port,
                )
                task_status.started(
                    Running(
                        api_port=endpoints.api_port,
                        data_port=endpoints.mux_port,
                        health_port=health_port,
                        sessions=sessions,
                        stopped=stopped,
                        _stopping=stopping,
                        _ready=lambda: ready,
                    )
                )
                await stopping.wait()
                ready = False
                await _shut_down(settings.shutdown_grace, server, dataplane, sessions)
                tasks.cancel_scope.cancel()
    finally:
        stopped.set()
    log.info("traffic-manager stopped")


async def _watch_cluster(
    tasks: anyio.abc.TaskGroup,
    *,
    settings: Settings,
    config: ManagerConfig,
    kubernetes: Kubernetes,
    resolv: ResolvConf,
    endpoints: Endpoints,
) -> tuple[Inventory, ClusterInfo]:
    """Start the cluster watchers in ``tasks``; returns once the first facts are known."""
    changed = Signal()
    nodes: NodeSubnets | None = None
    if config.namespaces.everything:
        nodes = NodeSubnets(kubernetes, changed)
        if not await tasks.start(nodes.run, name="node subnets"):
            nodes = None
    inventory = Inventory(kubernetes, config.namespaces, changed, watch_pods=nodes is None)
    await tasks.start(inventory.run, name="inventory")
    cluster = ClusterInfo(
        kubernetes,
        namespace=settings.namespace,
        inventory=inventory,
        nodes=nodes,
        resolv=resolv,
        endpoints=endpoints,
        kubernetes_service_host=settings.kubernetes_service_host,
        changed=changed,
    )
    await tasks.start(cluster.run, name="cluster info")
    return inventory, cluster


async def _shut_down(
    grace: float, server: Server, dataplane: DataPlane, sessions: SessionRegistry
) -> None:
    """Stop accepting, go away on every mux connection, give open streams ``grace`` seconds.

    grpclib's ``Server.close()`` stops listening and cancels the calls in progress (the
    clients' watches end; unary calls are short); its connections are not waited for, since
    an idle client keeps its channel open for as long as it likes.
    """
    log.info(
        "stopping: %d session(s), %d data-plane connection(s); %g s to finish",
        len(sessions),
        dataplane.connections,
        grace,
    )
    server.close()
    with anyio.move_on_after(grace) as waited:
        await dataplane.drain()
    if waited.cancelled_caught:
        log.warning(
            "the grace period is over: cutting %d data-plane connection(s); still running: %s",
            dataplane.connections,
            ", ".join(sorted({task.name or "?" for task in anyio.get_running_tasks()})),
        )
    sessions.end_all()


def _bind(host: str | None, port: int) -> socket.socket:
    """A listening socket (the control API's, which grpclib takes as it is, and the data
    plane's). Without a host: every address, through one dual-stack socket, or IPv4 only where
    the kernel has no IPv6."""
    if host is None:
        try:
            return _listen(socket.AF_INET6, "::", port)
        except OSError as error:
            if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            return _listen(socket.AF_INET, "0.0.0.0", port)
    return _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 as well
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _port(listener: anyio.abc.Listener[Any]) -> int:
    port: int = listener.extra(SocketAttribute.local_port)
    return port
