"""How the client reaches the traffic-manager's pod: the pluggable transports.

A transport gives a session two things: a gRPC channel to the manager's control API, and a
byte stream to any other port of the manager's pod (the data plane's). Both are open while
the transport's block runs.

- :func:`port_forward` (``--transport portforward``, the default): the Kubernetes
  ``pods/portforward`` subresource to a Ready traffic-manager pod, through the API server,
  which authenticates and encrypts it. gRPC dials a unix socket in a private temporary
  directory that forwards each connection, as ``kubectl port-forward`` does.
- :func:`direct` (``--transport direct``): TCP to an address of the manager's pod (its pod IP
  from inside the cluster, a NodePort, a load balancer), for CI runners that can reach it.
  The data plane is TLS either way; the control API is plain HTTP/2, which is fine inside a
  port-forward but not on an open network: until it has TLS of its own, use ``direct`` only
  where the path to the pod is private (inside the cluster).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
from grpclib.client import Channel

from telepresence.kube import Kube, serve_port_forward
from telepresence.wire import shell

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "DEFAULT_API_PORT",
    "MANAGER_SELECTOR",
    "ManagerNotFound",
    "Transport",
    "TransportError",
    "direct",
    "parse_address",
    "port_forward",
    "port_forward_to",
]

#: The traffic-manager pod's labels, as the chart's selector sets them.
MANAGER_SELECTOR = "app=traffic-manager,telepresence=manager"
#: The manager container's control API port: its name in the pod spec, and the chart's default.
API_PORT_NAME, DEFAULT_API_PORT = "api", 8081


class TransportError(Exception):
    """The way to the traffic-manager cannot be opened; ``str()`` says why and what to do."""


class ManagerNotFound(TransportError):
    """No Ready traffic-manager pod in the manager namespace."""


class Transport(Protocol):
    """An open way to the traffic-manager's pod."""

    @property
    def manager_namespace(self) -> str:
        """Where the traffic-manager runs."""
        ...

    @property
    def manager_pod(self) -> str:
        """The pod's name, or the address dialled (for messages)."""
        ...

    @property
    def channel(self) -> Channel:
        """A gRPC channel to the control API."""
        ...

    async def dial(self, port: int) -> anyio.abc.ByteStream:
        """A new byte stream to ``port`` of the manager's pod."""
        ...


@dataclass(frozen=True, slots=True)
class _PortForward:
    kube: Kube
    manager_namespace: str
    manager_pod: str
    channel: Channel

    async def dial(self, port: int) -> anyio.abc.ByteStream:
        return await self.kube.port_forward(self.manager_namespace, self.manager_pod, port)


@dataclass(frozen=True, slots=True)
class _Direct:
    host: str
    manager_namespace: str
    channel: Channel

    @property
    def manager_pod(self) -> str:
        return self.host

    async def dial(self, port: int) -> anyio.abc.ByteStream:
        # The wire shell's socket stream: the cheapest per message under the data plane's TLS.
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            return await shell.open_tcp(self.host, port)
        failure: OSError | None = None
        for *_, address in await anyio.getaddrinfo(self.host, port, type=socket.SOCK_STREAM):
            try:
                return await shell.open_tcp(str(address[0]), port)
            except OSError as error:
                failure = failure or error
        raise failure or OSError(f"{self.host} has no address")


@contextlib.asynccontextmanager
async def port_forward(kube: Kube, manager_namespace: str) -> AsyncIterator[Transport]:
    """The ``portforward`` transport to a Ready traffic-manager pod in ``manager_namespace``.

    Raises:
        ManagerNotFound: There is no Ready traffic-manager pod there.
        telepresence.kube.KubeError: The cluster cannot be reached or refuses to list pods.
    """
    found = await kube.ready_pod(manager_namespace, MANAGER_SELECTOR)
    if found is None:
        raise ManagerNotFound(
            f"traffic manager not found in namespace {manager_namespace}: "
            "install it with telepresence helm install"
        )
    pod, ports = found
    async with port_forward_to(
        kube, manager_namespace, pod, ports.get(API_PORT_NAME, DEFAULT_API_PORT)
    ) as way:
        yield way


@contextlib.asynccontextmanager
async def port_forward_to(
    kube: Kube, manager_namespace: str, pod: str, api_port: int
) -> AsyncIterator[Transport]:
    """The ``portforward`` transport to a known manager pod, its control API on ``api_port``:
    the root daemon's, given the pod of the user daemon's session."""
    with tempfile.TemporaryDirectory(prefix="telepresence-") as private:
        socket_path = Path(private) / "manager.sock"
        listener = await anyio.create_unix_listener(socket_path)
        async with listener, anyio.create_task_group() as tasks:
            await tasks.start(serve_port_forward, listener, kube, manager_namespace, pod, api_port)
            channel = Channel(path=str(socket_path))
            try:
                yield _PortForward(kube, manager_namespace, pod, channel)
            finally:
                channel.close()
                tasks.cancel_scope.cancel()


def parse_address(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` as (host, control API port).

    Raises:
        ValueError: Not an address.
    """
    host, number = text, str(DEFAULT_API_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        number = rest.removeprefix(":") or number
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
    port = int(number) if number.isdigit() else 0
    if not host or not 0 < port < 65536:
        raise ValueError(f"{text!r} is not HOST[:PORT], e.g. traffic-manager.ambassador:8081")
    return host, port


@contextlib.asynccontextmanager
async def direct(
    address: str, manager_namespace: str, *, api_port: int | None = None
) -> AsyncIterator[Transport]:
    """The ``direct`` transport to the manager's pod at ``address`` (``HOST[:PORT]``, the port
    of its control API; see the module docstring).

    Raises:
        ValueError: ``address`` is not an address.
    """
    host, port = parse_address(address)
    channel = Channel(host, api_port or port)
    try:
        yield _Direct(host, manager_namespace, channel)
    finally:
        channel.close()
