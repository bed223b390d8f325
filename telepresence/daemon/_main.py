"""A daemon's ``main``: :func:`run` logs to the daemon's rotating log file, takes the instance
lock, serves its API on its socket until ``Quit`` or SIGTERM/SIGINT, then disconnects and
removes the socket.
"""

from __future__ import annotations

import grp
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import anyio
from grpclib.server import Server

import telepresence
from telepresence import errors
from telepresence.config import ConfigError, load_config
from telepresence.daemon import _process

if TYPE_CHECKING:
    from telepresence.daemon._process import DaemonKind
    from telepresence.daemon.root import RootDaemon
    from telepresence.daemon.user import Connector

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(kind: DaemonKind, log_level: str | None = None) -> int:
    """Run the daemon until it is told to stop (its instance lock taken already); the exit
    status."""
    try:
        config, warnings = load_config()
    except ConfigError as error:
        print(f"telepresence {kind.title}: {error}", file=sys.stderr)
        return 1
    levels = config.log_levels
    level = log_level or (levels.user_daemon if kind is _process.CONNECTOR else levels.root_daemon)
    log_file = _process.configure_logging(kind, level)
    for warning in warnings:
        log.warning("%s", warning)
    try:
        anyio.run(_serve, kind, backend="asyncio", backend_options=_backend_options())
    except errors.DaemonError as error:
        log.error("%s", error)
        print(f"telepresence {kind.title}: {error}", file=sys.stderr)
        return 1
    except Exception:
        log.exception("the %s failed", kind.title)
        print(f"telepresence {kind.title} failed; see {log_file}", file=sys.stderr)
        return 1
    return 0


def _backend_options() -> dict[str, bool]:
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _serve(kind: DaemonKind) -> None:
    stop = anyio.Event()
    path = kind.socket
    async with anyio.create_task_group() as tasks:
        service = _service(kind, tasks, stop)
        server = Server([service])
        path.unlink(missing_ok=True)  # a stale socket: the instance lock is ours
        await server.start(path=str(path))
        try:
            _protect(kind, path)
            tasks.start_soon(_on_signals, stop, name="signals")
            log.info(
                "%s %s (pid %d) serving on %s",
                kind.title,
                telepresence.__version__,
                os.getpid(),
                path,
            )
            await stop.wait()
            log.info("%s stopping", kind.title)
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await service.disconnect()
        finally:
            server.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await server.wait_closed()
            path.unlink(missing_ok=True)
            tasks.cancel_scope.cancel()
    log.info("%s stopped", kind.title)


def _service(
    kind: DaemonKind, tasks: anyio.abc.TaskGroup, stop: anyio.Event
) -> Connector | RootDaemon:
    if kind is _process.CONNECTOR:
        from telepresence.daemon.user import Connector  # noqa: PLC0415

        return Connector(tasks, stop)
    from telepresence.daemon.root import RootDaemon  # noqa: PLC0415

    return RootDaemon(tasks, stop)


def _protect(kind: DaemonKind, path: os.PathLike[str]) -> None:
    """Only its user may use a daemon's socket. The root daemon's also belongs to the user who
    ran ``sudo telepresence connect``, so that their user daemon can reach it; as a system
    service, to the group ``TELEPRESENCE_ROOT_DAEMON_GROUP`` names."""
    os.chmod(path, 0o600)
    if kind is not _process.ROOT_DAEMON or os.geteuid() != 0:
        return
    if group := os.environ.get("TELEPRESENCE_ROOT_DAEMON_GROUP"):
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("no group %s: only root may use %s", group, path)
            return
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    elif (owner := os.environ.get("SUDO_UID")) and owner.isdigit():
        os.chown(path, int(owner), -1)


async def _on_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            log.info("%s: stopping", signal.Signals(received).name)
            stop.set()
            return
