"""The root daemon: the privileged half of ``telepresence connect``.

It owns what needs root: the VIF (TUN device, routes, nftables redirection, DNS; the next
milestone). For all of that it needs the cluster's data plane, and it has its own connection
to it, so that bytes never hop through the user daemon: the user daemon hands it what its
session learnt (``Connect``: the session id, the manager's pod and data port, the CA, and how
to reach the pod), and the root daemon opens the mux over TLS itself. A data plane that ends
(the manager went away) is reported as ``lost`` in ``Status``; the user daemon, which notices
the same and arrives again, then hands over the new session.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import anyio
from google.protobuf.empty_pb2 import Empty

import telepresence
from telepresence import errors, transport
from telepresence.daemon import _process
from telepresence.daemon._rpc import unary
from telepresence.kube import Kube, KubeError, KubeTarget
from telepresence.session import SessionError, open_data_plane
from telepresence.transport import TransportError
from telepresence.wire.proto import daemon_grpc, manager_pb2
from telepresence.wire.proto import daemon_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from telepresence.wire import shell

__all__ = ["RootDaemon"]

log = logging.getLogger(__name__)


class RootDaemon(daemon_grpc.DaemonBase):
    """The ``Daemon`` service: one data-plane connection at a time."""

    def __init__(self, tasks: anyio.abc.TaskGroup, stop: anyio.Event) -> None:
        self._tasks = tasks
        self._stop = stop
        self._state = ""
        self._session_id = ""
        self._holder: anyio.CancelScope | None = None
        self._lock = anyio.Lock()
        self._log_level = _process.LogLevel(tasks)
        self.mux: shell.MuxConnection | None = None

    def version(self) -> pb.DaemonVersion:
        return pb.DaemonVersion(
            name="root-daemon",
            version=telepresence.__version__,
            pid=os.getpid(),
            log_file=str(_process.ROOT_DAEMON.log_file),
        )

    def status(self) -> pb.RootStatus:
        return pb.RootStatus(
            version=self.version(), data_plane=self._state, session_id=self._session_id
        )

    @unary
    async def Version(self, request: Empty) -> pb.DaemonVersion:
        return self.version()

    @unary
    async def Status(self, request: Empty) -> pb.RootStatus:
        return self.status()

    @unary
    async def Connect(self, request: pb.DataPlaneRequest) -> pb.RootStatus:
        async with self._lock:
            self._drop()
            self._state, self._session_id = "connecting", request.session_id
            scope: anyio.CancelScope = await self._tasks.start(self._hold, request)
            self._holder = scope
            return self.status()

    @unary
    async def Disconnect(self, request: Empty) -> Empty:
        async with self._lock:
            self._drop()
            self._state, self._session_id = "", ""
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
        """Close the data plane (when the daemon stops)."""
        async with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._holder is not None:
            self._holder.cancel()
            self._holder = None
        self.mux = None

    async def _hold(
        self,
        request: pb.DataPlaneRequest,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope],
    ) -> None:
        """Open the data plane, report it started, and keep it until it ends or is dropped;
        a failure to open it is the Connect call's error."""
        started = False
        with anyio.CancelScope() as scope:
            try:
                async with _data_plane(request) as mux:
                    self.mux = mux
                    self._state = "connected"
                    log.info("data plane of session %s connected", request.session_id)
                    task_status.started(scope)
                    started = True
                    ended = await mux.wait_closed()
                    self._state = f"lost: {ended.message or ended.reason.name.lower()}"
            except (SessionError, KubeError, TransportError) as error:
                self._state = f"lost: {error}"
                if not started:
                    raise _translated(error) from error
            finally:
                self.mux = None
            log.warning("data plane of session %s %s", request.session_id, self._state)


@contextlib.asynccontextmanager
async def _data_plane(request: pb.DataPlaneRequest) -> AsyncIterator[shell.MuxConnection]:
    endpoint = manager_pb2.DataPlaneEndpoint(
        mux_port=request.mux_port, ca_certificate=request.ca_certificate
    )
    if request.transport == "direct":
        async with (
            transport.direct(request.manager_address, request.manager_namespace) as way,
            open_data_plane(way, endpoint, request.session_id) as mux,
        ):
            yield mux
        return
    target = KubeTarget(kubeconfig=request.kubeconfig or None, context=request.context or None)
    async with (
        Kube.open(target) as kube,
        transport.port_forward_data(kube, request.manager_namespace, request.manager_pod) as way,
        open_data_plane(way, endpoint, request.session_id) as mux,
    ):
        yield mux


def _translated(error: Exception) -> errors.TelepresenceError:
    if isinstance(error, KubeError):
        return errors.ClusterUnreachable(f"the root daemon cannot reach the manager: {error}")
    return errors.TelepresenceError(f"the root daemon's data plane failed: {error}")
