"""The user daemon (``connector``): the unprivileged half of ``telepresence connect``.

It holds the one connection of this user to a cluster, behind the ``Connector`` API that the
CLI and :class:`telepresence.Client` call:

- ``Connect`` resolves what the request leaves open (the kubeconfig context, the connected
  namespace, the manager namespace: flag, kubeconfig extension, config.yml, ``ambassador``),
  arrives at the traffic-manager (:mod:`telepresence.session`) over the requested transport,
  and answers once connected, or with the first attempt's error. A second ``Connect`` for the
  same cluster, namespace and manager returns the same connection; one for another is refused.
- While connected it keeps the session; when the session is lost (the manager restarted, the
  link dropped) it arrives again by itself, with backoff, and ``Status`` says ``RECONNECTING``
  with the reason meanwhile. The daemon, the SOCKS port and the root daemon stay as they are.
- ``--socks [ADDR:]PORT`` serves SOCKS5 and HTTP CONNECT (:mod:`telepresence.socks`) on that
  port for as long as the connection lasts: streams go through the current session's data
  plane; names resolve in the cluster with the connected namespace as the search path
  (:class:`ClusterResolver`). A stream asked for while reconnecting waits for the session, up
  to ``timeouts.proxyDial``.
- After each arrival, when a root daemon runs, it is handed what it needs to open its own data
  plane (``Daemon.Connect``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from google.protobuf.empty_pb2 import Empty

import telepresence
from telepresence import config as client_config
from telepresence import errors, transport
from telepresence.daemon import _process
from telepresence.daemon._rpc import call_root_daemon, unary
from telepresence.kube import Forbidden, Kube, KubeError, KubeTarget, PortForwardError
from telepresence.session import (
    ManagerSession,
    SessionError,
    SessionRefused,
    default_client_name,
    open_session,
)
from telepresence.socks import DialError, serve_socks
from telepresence.transport import ManagerNotFound, TransportError
from telepresence.wire.proto import daemon_grpc
from telepresence.wire.proto import daemon_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from telepresence.wire import shell

__all__ = ["ClusterResolver", "Connector"]

log = logging.getLogger(__name__)

#: Seconds between attempts to arrive again: doubling from the first to the last.
BACKOFF_FIRST, BACKOFF_LAST = 0.25, 8.0
#: Seconds a call of the root daemon may take (Connect opens its data plane).
ROOT_CALL_TIMEOUT = 30.0
#: DNS query types whose answers are addresses.
_A, _AAAA = 1, 28
_TRANSPORTS = ("portforward", "direct")


class Connector(daemon_grpc.ConnectorBase):
    """The ``Connector`` service: at most one :class:`Connection` at a time."""

    def __init__(self, tasks: anyio.abc.TaskGroup, stop: anyio.Event) -> None:
        self._tasks = tasks
        self._stop = stop
        self._lock = anyio.Lock()
        self._log_level = _process.LogLevel(tasks)
        self.connection: Connection | None = None

    def version(self) -> pb.DaemonVersion:
        return pb.DaemonVersion(
            name="user-daemon",
            version=telepresence.__version__,
            pid=os.getpid(),
            log_file=str(_process.CONNECTOR.log_file),
        )

    @unary
    async def Version(self, request: Empty) -> pb.DaemonVersion:
        return self.version()

    @unary
    async def Connect(self, request: pb.ConnectRequest) -> pb.ConnectInfo:
        plan = _plan(request)
        async with self._lock:
            if self.connection is not None:
                if self.connection.plan.same_target(plan):
                    # A root daemon started since (the last one was killed) gets the session.
                    await self.connection.hand_over_again()
                    return await self.status()
                raise errors.SessionConflict(
                    f"connected to {self.connection.plan.describe()} already: run "
                    "telepresence quit first to connect to "
                    f"{plan.describe()}"
                )
            connection = Connection(plan, self.version())
            await self._tasks.start(connection.run)
            self.connection = connection
            log.info("connected to %s", plan.describe())
            return await self.status()

    @unary
    async def Status(self, request: Empty) -> pb.ConnectInfo:
        return await self.status()

    @unary
    async def Disconnect(self, request: Empty) -> Empty:
        async with self._lock:
            await self.disconnect()
        return Empty()

    @unary
    async def Quit(self, request: Empty) -> Empty:
        async with self._lock:
            await self.disconnect()
        self._stop.set()
        return Empty()

    @unary
    async def SetLogLevel(self, request: pb.LogLevelRequest) -> Empty:
        self._log_level.change(request.level, request.duration_seconds)
        return Empty()

    async def status(self) -> pb.ConnectInfo:
        if self.connection is None:
            info = pb.ConnectInfo(state=pb.ConnectInfo.DISCONNECTED, user_daemon=self.version())
        else:
            info = self.connection.info()
        root = await _root_status()
        if root is not None:
            info.root_daemon.CopyFrom(root)
        return info

    async def disconnect(self) -> None:
        """End the connection, if any: depart, stop SOCKS, release the root daemon."""
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()
            log.info("disconnected from %s", connection.plan.describe())


@dataclasses.dataclass(frozen=True)
class Plan:
    """A Connect request with what it left open resolved."""

    kubeconfig: str | None
    context: str
    server: str
    namespace: str
    manager_namespace: str
    manager_namespace_source: str
    mapped_namespaces: tuple[str, ...]
    also_proxy: tuple[str, ...]
    never_proxy: tuple[str, ...]
    transport: str
    manager_address: str
    socks: str
    config: client_config.Config
    warnings: tuple[str, ...]

    def same_target(self, other: Plan) -> bool:
        """Whether ``other`` asks for this same connection (a repeated connect)."""
        fields = ("context", "server", "namespace", "manager_namespace", "transport")
        return all(getattr(self, name) == getattr(other, name) for name in fields) and (
            not other.socks or other.socks == self.socks
        )

    def describe(self) -> str:
        return (
            f"context {self.context} (namespace {self.namespace}, traffic-manager in "
            f"{self.manager_namespace})"
        )


def _plan(request: pb.ConnectRequest) -> Plan:
    """Resolve a request (see the module docstring).

    Raises:
        ConfigError: config.yml, the kubeconfig or a flag is malformed.
    """
    try:
        config, warnings = client_config.load_config()
        context = client_config.read_kubeconfig(request.kubeconfig or None, request.context or None)
        manager_namespace, source = client_config.manager_namespace(
            request.manager_namespace or None, context.extensions, config
        )
    except (client_config.ConfigError, client_config.KubeconfigError) as error:
        raise errors.ConfigError(str(error)) from error
    transport_name = request.transport or "portforward"
    if transport_name not in _TRANSPORTS:
        raise errors.ConfigError(f"--transport {transport_name}: use portforward or direct")
    if transport_name == "direct":
        if not request.manager_address:
            raise errors.ConfigError(
                "--transport direct needs the traffic-manager's address (--manager-address)"
            )
        try:
            transport.parse_address(request.manager_address)
        except ValueError as error:
            raise errors.ConfigError(f"--manager-address: {error}") from None
    for flag, values in (
        ("--also-proxy", request.also_proxy),
        ("--never-proxy", request.never_proxy),
    ):
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError as error:
                raise errors.ConfigError(f"{flag} {value}: {error}") from None
    return Plan(
        kubeconfig=request.kubeconfig or None,
        context=context.name,
        server=context.server,
        namespace=request.namespace or context.namespace,
        manager_namespace=manager_namespace,
        manager_namespace_source=source,
        mapped_namespaces=tuple(request.mapped_namespaces or config.cluster.mapped_namespaces),
        also_proxy=tuple(request.also_proxy),
        never_proxy=tuple(request.never_proxy),
        transport=transport_name,
        manager_address=request.manager_address,
        socks=request.socks,
        config=config,
        warnings=tuple(warnings),
    )


class Connection:
    """One connection: the session (arrived again whenever lost) and what serves through it."""

    def __init__(self, plan: Plan, daemon: pb.DaemonVersion) -> None:
        self.plan = plan
        self._daemon = daemon
        self._state = pb.ConnectInfo.CONNECTING
        self._error = ""
        self._arrivals = 0
        self._session: ManagerSession | None = None
        self._session_changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self._socks_address = ""
        self._warnings = list(plan.warnings)
        self._way = (plan.transport, "")
        #: config.yml with what the manager pushes filled in (config.yml wins).
        self.effective = plan.config

    # -- what it serves ------------------------------------------------------------------------

    async def current_session(self, wait: float) -> ManagerSession:
        """The live session, waiting up to ``wait`` seconds while reconnecting.

        Raises:
            DialError: There is none in time.
        """
        with anyio.move_on_after(wait):
            while self._session is None:
                await self._session_changed.wait()
            return self._session
        raise DialError(f"not connected to the cluster ({self._error or 'reconnecting'})")

    def info(self) -> pb.ConnectInfo:
        plan, session = self.plan, self._session
        info = pb.ConnectInfo(
            state=self._state,
            error=self._error,
            context=plan.context,
            cluster_server=plan.server,
            namespace=plan.namespace,
            manager_namespace=plan.manager_namespace,
            manager_namespace_source=plan.manager_namespace_source,
            transport=plan.transport,
            mapped_namespaces=plan.mapped_namespaces,
            also_proxy=plan.also_proxy,
            never_proxy=plan.never_proxy,
            socks_address=self._socks_address,
            arrivals=self._arrivals,
            user_daemon=self._daemon,
            warnings=self._warnings,
        )
        if session is not None:
            info.manager_version = session.manager_version
            info.session_id = session.session_id
            info.cluster_info.CopyFrom(session.cluster_info)
        return info

    # -- its life ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Arrive, report started (or raise the first attempt's error), then keep a session
        until :meth:`close`, arriving again with backoff whenever one is lost."""
        with anyio.CancelScope() as self._scope:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    tasks = await stack.enter_async_context(anyio.create_task_group())
                    stack.callback(tasks.cancel_scope.cancel)
                    await self._hold(tasks, task_status)
            except* errors.TelepresenceError as group:
                # The first attempt's failure, for Connect to report: not the task group's.
                raise _first(group) from None
            finally:
                self._set_session(None)
                self._done.set()

    async def close(self) -> None:
        """Depart and stop everything this connection runs; returns once done."""
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()
        await _root_call("Disconnect")

    async def _hold(
        self, tasks: anyio.abc.TaskGroup, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        started = False
        delay = BACKOFF_FIRST
        while True:
            lost: list[Exception] = []
            try:
                async with self._arrive() as session:
                    self._arrivals += 1
                    self._state, self._error = pb.ConnectInfo.CONNECTED, ""
                    self.effective = client_config.effective(
                        self.plan.config, session.client_config
                    )
                    self._set_session(session)
                    await self._hand_to_root_daemon(session)
                    if not started:
                        if self.plan.socks:
                            self._socks_address = await tasks.start(self._serve_socks)
                        task_status.started()
                        started = True
                    delay = BACKOFF_FIRST
                    await anyio.sleep_forever()
            except* (SessionError, KubeError, TransportError, errors.TelepresenceError) as group:
                # Task groups on the way (the port-forward's, the session's) wrap it.
                lost.append(_first(group))
            if not lost:  # the session's block cannot end otherwise; but be sure
                lost.append(errors.TelepresenceError("the session ended"))
            failure = _translated(lost[0], self.plan)
            if not started:
                raise failure from lost[0]
            self._set_session(None)
            self._state, self._error = pb.ConnectInfo.RECONNECTING, str(failure)
            log.warning("the session was lost (%s); arriving again in %g s", failure, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, BACKOFF_LAST)

    @contextlib.asynccontextmanager
    async def _arrive(self) -> AsyncIterator[ManagerSession]:
        plan = self.plan
        target = KubeTarget(kubeconfig=plan.kubeconfig, context=plan.context)
        name = default_client_name()
        async with Kube.open(target) as kube:
            token = kube.bearer_token
            if token is None and plan.transport == "direct":
                raise errors.ManagerRefused(
                    f"the kubeconfig's user for context {plan.context} has no bearer token "
                    "(it authenticates with a client certificate or a password), and over "
                    "--transport direct the traffic-manager checks a token: use the "
                    "portforward transport, or a context whose user has a token"
                )
            # Without a token (a client certificate), the port-forward is the credential:
            # the API server authorized it, and the manager lets its loopback in.
            way_cm = (
                transport.direct(plan.manager_address, plan.manager_namespace)
                if plan.transport == "direct"
                else transport.port_forward(kube, plan.manager_namespace)
            )
            async with (
                way_cm as way,
                open_session(
                    way, token=token or "", name=name, namespace=plan.namespace
                ) as session,
            ):
                self._way = (plan.transport, way.manager_pod)
                yield session

    def _set_session(self, session: ManagerSession | None) -> None:
        self._session = session
        self._session_changed.set()
        self._session_changed = anyio.Event()

    async def hand_over_again(self) -> None:
        """Hand the session to a root daemon that does not have it (one started since)."""
        session = self._session
        if session is None:
            return
        root = await _root_status()
        if root is not None and root.session_id != session.session_id:
            await self._hand_to_root_daemon(session)

    async def _hand_to_root_daemon(self, session: ManagerSession) -> None:
        """Tell a running root daemon to open its own data plane for this session."""
        plan = self.plan
        transport_name, pod = self._way
        request = pb.DataPlaneRequest(
            session_id=session.session_id,
            manager_namespace=plan.manager_namespace,
            transport=transport_name,
            manager_pod=pod if transport_name == "portforward" else "",
            manager_address=plan.manager_address,
            kubeconfig=plan.kubeconfig or "",
            context=plan.context,
            mux_port=session.cluster_info.data_plane.mux_port,
            ca_certificate=session.cluster_info.data_plane.ca_certificate,
            vif=self._vif_config(),
            cluster_info=session.cluster_info,
        )
        try:
            await _root_call("Connect", request)
        except errors.TelepresenceError as error:
            log.warning("the root daemon could not open its data plane: %s", error)
            self._warnings.append(f"the root daemon could not open its data plane: {error}")

    def _vif_config(self) -> pb.VIFConfig:
        """The user's part of the VIF's settings: the flags, then the effective config."""
        plan, dns, routing = self.plan, self.effective.dns, self.effective.routing
        excluded = dns.exclude_suffixes
        return pb.VIFConfig(
            namespace=plan.namespace,
            mapped_namespaces=plan.mapped_namespaces,
            also_proxy=[*plan.also_proxy, *map(str, routing.also_proxy_subnets)],
            never_proxy=[*plan.never_proxy, *map(str, routing.never_proxy_subnets)],
            allow_conflicting=[str(subnet) for subnet in routing.allow_conflicting_subnets],
            include_suffixes=dns.include_suffixes,
            exclude_suffixes=client_config.DEFAULT_EXCLUDE_SUFFIXES
            if excluded is None
            else excluded,
            lookup_timeout_seconds=dns.lookup_timeout,
        )

    async def _serve_socks(self, *, task_status: anyio.abc.TaskStatus[str]) -> None:
        host, port = _socks_address(self.plan.socks)
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as error:
            raise errors.ConfigError(
                f"--socks {self.plan.socks}: cannot listen there ({error.strerror or error})"
            ) from error
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_address)
            await serve_socks(
                listener,
                SessionDialer(self),
                task_status=_Relay(task_status, f"{bound[0]}:{bound[1]}"),
            )


class _Relay:
    """A task status that reports a value of our choosing when the server reports started."""

    def __init__(self, status: anyio.abc.TaskStatus[str], value: str) -> None:
        self._status, self._value = status, value

    def started(self, value: object = None) -> None:
        self._status.started(self._value)


class SessionDialer:
    """The SOCKS server's way into the cluster: the connection's current session."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def open_tcp(self, host: str, port: int) -> anyio.abc.ByteStream:
        session, address = await self._route(host)
        stream: shell.MuxStream = await session.open_tcp(address, port)
        return stream

    async def open_udp(self, host: str, port: int) -> anyio.abc.UnreliableObjectStream[bytes]:
        session, address = await self._route(host)
        flow: shell.MuxDatagramStream = await session.open_udp(address, port)
        return flow

    async def _route(self, host: str) -> tuple[ManagerSession, str]:
        connection = self._connection
        session = await connection.current_session(connection.effective.timeouts.proxy_dial)
        resolver = ClusterResolver(session, connection.plan.namespace)
        return session, await resolver.resolve(host)


class ClusterResolver:
    """Names resolved in the cluster as a pod of the connected namespace resolves them: the
    search path ``<namespace>.svc.<domain>``, ``svc.<domain>``, ``<domain>`` and ``ndots:5``
    (so ``echo``, ``echo.default`` and the full name all work), through the manager."""

    NDOTS = 5

    def __init__(self, session: ManagerSession, namespace: str) -> None:
        self._session = session
        self._namespace = namespace

    def candidates(self, name: str) -> list[str]:
        """The fully qualified names to try, in order."""
        if name.endswith("."):
            return [name]
        domain = self._session.cluster_info.cluster_domain.rstrip(".") or "cluster.local"
        if name == domain or name.endswith(f".{domain}"):
            return [f"{name}."]
        search = [f"{name}.{self._namespace}.svc.{domain}.", f"{name}.svc.{domain}.",
                  f"{name}.{domain}."]  # fmt: skip
        if name.count(".") >= self.NDOTS:
            return [f"{name}.", *search]
        return [*search, f"{name}."]

    async def resolve(self, host: str) -> str:
        """An address for ``host`` (returned as it is when it is one).

        Raises:
            DialError: No candidate name has an address.
        """
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host.strip("[]")))
        for query_type in (_A, _AAAA):
            for candidate in self.candidates(host):
                try:
                    answer = await self._session.lookup_dns(candidate, query_type)
                except SessionError as error:
                    raise DialError(f"cannot resolve {host} in the cluster: {error}") from error
                for record in answer.answers:
                    if record.type == query_type:
                        return str(ipaddress.ip_address(record.rdata))
        raise DialError(f"{host}: no such host in the cluster")


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first failure in a (nested) exception group."""
    first: Exception | BaseExceptionGroup[Exception] = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _socks_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise errors.ConfigError(
            f"--socks {text}: expected [ADDR:]PORT, e.g. 1080 or 127.0.0.1:1080"
        )
    return host.strip("[]") or "127.0.0.1", number


def _translated(error: Exception, plan: Plan) -> errors.TelepresenceError:
    """An error of an attempt to arrive, as the user reads it."""
    if isinstance(error, errors.TelepresenceError):
        return error
    if isinstance(error, ManagerNotFound):
        return errors.ManagerNotFound(str(error))
    if isinstance(error, SessionRefused):
        return errors.ManagerRefused(
            f"{error} (context {plan.context}): ask your cluster administrator for the "
            "Telepresence client role (the Helm chart's clientRbac)"
            if "clientRbac" not in str(error)
            else str(error)
        )
    if isinstance(error, Forbidden) or (
        isinstance(error, PortForwardError) and "may not" in str(error)
    ):
        return errors.ManagerRefused(
            f"{error} (context {plan.context}); ask your cluster administrator for the "
            "Telepresence client role (the Helm chart's clientRbac)"
        )
    if isinstance(error, KubeError):
        return errors.ClusterUnreachable(f"{error} (context {plan.context}, {plan.server})")
    return errors.TelepresenceError(str(error))


async def _root_status() -> pb.RootStatus | None:
    with contextlib.suppress(errors.TelepresenceError):
        status = await _root_call("Status")
        return status if isinstance(status, pb.RootStatus) else None
    return None


async def _root_call(method: str, request: object = None) -> object:
    """Call the root daemon if one answers; None when none runs."""
    return await call_root_daemon(
        method, request if request is not None else Empty(), within=ROOT_CALL_TIMEOUT
    )
