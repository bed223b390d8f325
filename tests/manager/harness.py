"""Helpers for the manager tests: the cluster as an admin shapes it, and a manager to talk to.

- :class:`Cluster` makes objects in the sandbox API server (namespaces, nodes, Services,
  service accounts with tokens, RBAC) through the manager's own Kubernetes adapter, and
  service-account tokens through kubernetes-asyncio's TokenRequest.
- :func:`start_manager` runs :func:`manager.app.run` in a task group with a configuration
  directory, a resolv.conf and collaborators of the test's choosing, and yields a
  :class:`ManagerClient`: the grpclib stub, a way to open mux connections over TLS, and the
  probes.
- Echo servers (TCP and UDP) on loopback, and dialers that stall or redirect.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import yaml
from anyio.abc import SocketAttribute
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from manager import app, kube
from manager.config import load
from manager.dns import AresResolver
from manager.relay import SocketDialer
from manager.settings import Settings
from telepresence.wire import shell, tls
from telepresence.wire.proto import manager_grpc
from telepresence.wire.proto import manager_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from manager.inventory import IPAddress
    from sandbox.apiserver.run import Running

MANAGER_NAMESPACE = "ambassador"
RBAC = "rbac.authorization.k8s.io"
ROLES = kube.Kind(RBAC, "v1", "roles", namespaced=True)
ROLE_BINDINGS = kube.Kind(RBAC, "v1", "rolebindings", namespaced=True)
SERVICE_ACCOUNTS = kube.Kind("", "v1", "serviceaccounts", namespaced=True)
RESOLV_CONF = f"""\
nameserver 10.96.0.10
search {MANAGER_NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
"""


@dataclass
class Cluster:
    """The sandbox cluster, as its admin."""

    apiserver: Running
    kubernetes: kube.Kubernetes
    dns_port: int

    async def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        await self.kubernetes.create(
            kube.NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            },
        )

    async def create_node(self, name: str, *pod_cidrs: str) -> None:
        spec: dict[str, Any] = {}
        if pod_cidrs:
            spec = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)}
        await self.kubernetes.create(
            kube.NODES,
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec},
        )

    async def create_service(
        self, name: str, namespace: str, *, cluster_ip: str | None = None, port: int = 80
    ) -> str:
        """A ClusterIP Service; returns its ClusterIP."""
        spec: dict[str, Any] = {"ports": [{"name": "tcp", "port": port, "protocol": "TCP"}]}
        if cluster_ip:
            spec["clusterIP"] = cluster_ip
        created = await self.kubernetes.create(
            kube.SERVICES,
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec},
            namespace,
        )
        return str(created["spec"]["clusterIP"])

    async def create_pod(self, name: str, namespace: str, ip: str) -> None:
        """A pod with ``ip`` in its status, as a kubelet would report it."""
        await self.kubernetes.create(
            kube.PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "sandbox/tcp-echo"}]},
            },
            namespace,
        )
        async with self.api() as api:
            await k8s_client.CoreV1Api(api).patch_namespaced_pod_status(
                name,
                namespace,
                {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}},
            )

    async def service_account_token(
        self, name: str, namespace: str = MANAGER_NAMESPACE, *, may_port_forward: bool
    ) -> str:
        """A service account's token (TokenRequest); with ``may_port_forward``, a Role and
        RoleBinding let it ``create pods/portforward`` in ``namespace``."""
        await self.kubernetes.create(
            SERVICE_ACCOUNTS,
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            namespace,
        )
        if may_port_forward:
            await self.grant_port_forward(f"system:serviceaccount:{namespace}:{name}", namespace)
        async with self.api() as api:
            request = await k8s_client.CoreV1Api(api).create_namespaced_service_account_token(
                name,
                namespace,
                k8s_client.AuthenticationV1TokenRequest(
                    spec=k8s_client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
                ),
            )
        return str(request.status.token)

    async def grant_port_forward(self, user: str, namespace: str = MANAGER_NAMESPACE) -> None:
        role = f"port-forward-{abs(hash(user)) % 10**8}"
        await self.kubernetes.create(
            ROLES,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "Role",
                "metadata": {"name": role},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}
                ],
            },
            namespace,
        )
        await self.kubernetes.create(
            ROLE_BINDINGS,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": role},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
            },
            namespace,
        )

    @contextlib.asynccontextmanager
    async def api(self) -> AsyncIterator[k8s_client.ApiClient]:
        """kubernetes-asyncio as the admin (for what the manager's adapter does not do)."""
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(self.apiserver.kubeconfig),
            client_configuration=configuration,
            persist_config=False,
        )
        async with k8s_client.ApiClient(configuration) as api:
            yield api

    @contextlib.asynccontextmanager
    async def as_token(self, token: str) -> AsyncIterator[kube.Kubernetes]:
        """The manager's adapter with a bearer token instead of the admin's certificate."""
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(self.apiserver.kubeconfig),
            client_configuration=configuration,
            persist_config=False,
        )
        configuration.cert_file = configuration.key_file = None
        configuration.api_key = {"BearerToken": f"Bearer {token}"}
        async with k8s_client.ApiClient(configuration) as api:
            yield kube.Kubernetes(api)


@dataclass
class ManagerClient:
    """A running manager, and what a client uses to talk to it."""

    running: app.Running
    stub: manager_grpc.ManagerStub
    ca: tls.Identity
    config_dir: Path

    async def arrive(self, token: str, name: str = "alice@laptop") -> pb.SessionInfo:
        info = pb.ClientInfo(
            name=name,
            install_id="install-1",
            product="telepresence",
            version="0.1.0",
            bearer_token=token,
        )
        session: pb.SessionInfo = await self.stub.ArriveAsClient(info, timeout=10)
        return session

    async def version(self) -> pb.VersionInfo:
        version: pb.VersionInfo = await self.stub.Version(Empty(), timeout=10)
        return version

    async def dial_data_plane(self) -> anyio.abc.ByteStream:
        """TLS to the data plane, verifying the manager's name as a client does."""
        return await anyio.connect_tcp(
            "127.0.0.1",
            self.running.data_port,
            ssl_context=tls.client_context(self.ca.certificate, alpn=tls.MUX_ALPN),
            tls_hostname=f"traffic-manager.{MANAGER_NAMESPACE}",
            tls_standard_compatible=False,
        )

    @contextlib.asynccontextmanager
    async def mux(self, session: pb.SessionInfo | bytes) -> AsyncIterator[shell.MuxConnection]:
        credentials = session if isinstance(session, bytes) else session.session_id.encode()
        async with shell.connect(
            await self.dial_data_plane(), credentials=credentials
        ) as connection:
            yield connection

    async def probe(self, path: str) -> int:
        """The status code of ``GET path`` on the probes' port."""
        async with await anyio.connect_tcp("127.0.0.1", self.running.health_port) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: manager\r\n\r\n".encode())
            response = b""
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    response += await stream.receive()
        return int(response.split()[1])


@contextlib.asynccontextmanager
async def start_manager(
    cluster: Cluster,
    directory: Path,
    identity: tls.Identity,
    ca: tls.Identity,
    *,
    files: Mapping[str, Any] | None = None,
    collaborators: app.Collaborators | None = None,
    shutdown_grace: float = 5.0,
    trust_port_forward: bool = False,
) -> AsyncIterator[ManagerClient]:
    """Run a manager until the block ends (then shut it down gracefully, and wait).

    Args:
        files: Configuration files by name (``client.yaml``...), as YAML-able documents.
        collaborators: Replacements; the resolver defaults to one that asks the cluster's
            DNS server on loopback, and the resolv.conf to :data:`RESOLV_CONF`.
    """
    config_dir = directory / "config"
    config_dir.mkdir(exist_ok=True)
    for name, document in (files or {}).items():
        (config_dir / name).write_text(yaml.safe_dump(document))
    resolv_conf = directory / "resolv.conf"
    resolv_conf.write_text(RESOLV_CONF)
    extras = collaborators or app.Collaborators()
    extras.identity = identity
    extras.ca_certificate = ca.certificate_pem
    if extras.resolv_conf == app.RESOLV_CONF:
        extras.resolv_conf = resolv_conf
    settings = Settings(
        namespace=MANAGER_NAMESPACE,
        pod_ip=ipaddress.ip_address("127.0.0.1"),
        api_port=0,
        data_port=0,
        health_port=0,
        config_dir=config_dir,
        bind_host="127.0.0.1",
        shutdown_grace=shutdown_grace,
        trust_port_forward=trust_port_forward,
    )
    async with contextlib.AsyncExitStack() as stack:
        if extras.resolver is None:
            resolver = AresResolver([f"127.0.0.1:{cluster.dns_port}"])
            stack.push_async_callback(resolver.aclose)
            extras.resolver = resolver
        tasks = await stack.enter_async_context(anyio.create_task_group())
        running: app.Running = await tasks.start(
            lambda task_status: app.run(
                settings,
                load(config_dir),
                cluster.kubernetes,
                collaborators=extras,
                task_status=task_status,
            )
        )
        channel = Channel("127.0.0.1", running.api_port)
        stack.callback(channel.close)
        try:
            yield ManagerClient(running, manager_grpc.ManagerStub(channel), ca, config_dir)
        finally:
            channel.close()
            running.shutdown()
            with anyio.fail_after(shutdown_grace + 10):
                await running.stopped.wait()


# -- destinations -----------------------------------------------------------------------------


@dataclass
class EchoServers:
    """A TCP and a UDP echo server on 127.0.0.1."""

    tcp_port: int
    udp_port: int
    tcp_connections: int = 0
    received: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def echo_servers() -> AsyncIterator[EchoServers]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    udp = await anyio.create_udp_socket(local_host="127.0.0.1")
    servers = EchoServers(
        listener.extra(SocketAttribute.local_port), udp.extra(SocketAttribute.local_port)
    )

    async def echo_tcp(stream: anyio.abc.SocketStream) -> None:
        servers.tcp_connections += 1
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError):
                async for chunk in stream:
                    servers.received.append(chunk)
                    await stream.send(chunk)
                await stream.send_eof()

    async def echo_udp() -> None:
        async for datagram, address in udp:
            await udp.sendto(datagram, *address[:2])

    async with listener, udp, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, echo_tcp)
        tasks.start_soon(echo_udp)
        yield servers
        tasks.cancel_scope.cancel()


def closed_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class StallingDialer(SocketDialer):
    """Connects as usual, except to ``black_hole``, which never answers (a SYN dropped)."""

    def __init__(self, black_hole: IPAddress) -> None:
        self.black_hole = black_hole

    async def connect_tcp(self, address: IPAddress, port: int) -> anyio.abc.ByteStream:
        if address == self.black_hole:
            await anyio.sleep_forever()
        return await super().connect_tcp(address, port)


class RedirectingDialer(SocketDialer):
    """Dials cluster addresses (which do not exist on this machine) on loopback instead, and
    remembers what was dialled."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dialled: list[tuple[IPAddress, int]] = []

    async def connect_tcp(self, address: IPAddress, port: int) -> anyio.abc.ByteStream:
        self.dialled.append((address, port))
        return await super().connect_tcp(ipaddress.ip_address("127.0.0.1"), self.port)
