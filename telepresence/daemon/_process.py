"""Where the daemons live, how they start, and how a client finds (or starts) one.

Each daemon is one process with one unix socket and one log file:

- the user daemon: ``<runtime dir>/connector.sock``, ``<cache dir>/logs/connector.log``;
- the root daemon: ``<runtime dir>/daemon.sock``, ``<cache dir>/logs/daemon.log``.

The runtime directory is ``$XDG_RUNTIME_DIR/telepresence`` (else ``/tmp/telepresence-<uid>``),
the cache directory ``$XDG_CACHE_HOME/telepresence``. A root daemon run as a system service
(``packaging/telepresence-root-daemon.service``) listens on ``/run/telepresence/daemon.sock``,
which clients use when it exists; ``TELEPRESENCE_ROOT_DAEMON_SOCKET`` names another.

A daemon holds an exclusive lock on ``<socket>.lock`` for as long as its process lives, so a
second one started by a race exits at once, and a client knows a stopped daemon is gone; a
client that starts one holds ``<socket>.start`` meanwhile, so that two commands started
together start one daemon, not two.

:func:`ensure_running` is the client's side: answer-or-start, then wait for the socket.
Daemons are started detached (a session of their own, stdin from /dev/null, output to their
log), so they outlive the command that started them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from telepresence import errors
from telepresence.paths import ensure_private_dir, logs_dir, runtime_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CONNECTOR",
    "LogLevel",
    "ROOT_DAEMON",
    "DaemonKind",
    "configure_logging",
    "ensure_running",
    "take_instance_lock",
    "is_answering",
    "is_running",
    "spawn",
    "spawn_missing",
]

#: Log files rotate at this size, keeping this many old ones.
LOG_BYTES, LOG_BACKUPS = 10 * 1024 * 1024, 5
#: Where the root daemon run as a system service listens (packaging/*.service).
SYSTEM_ROOT_DAEMON_SOCKET = Path("/run/telepresence/daemon.sock")
#: Seconds a started daemon has to open its socket.
START_TIMEOUT = 10.0
LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DaemonKind:
    """One of the two daemons."""

    #: The subcommand that runs it (``python -m telepresence.daemon NAME``).
    command: str
    #: Its name in messages and in ``Version``.
    title: str
    #: Its socket's and log's base name.
    base: str

    @property
    def socket(self) -> Path:
        if self is ROOT_DAEMON:
            if override := os.environ.get("TELEPRESENCE_ROOT_DAEMON_SOCKET"):
                return Path(override)
            if SYSTEM_ROOT_DAEMON_SOCKET.exists():  # the systemd service's
                return SYSTEM_ROOT_DAEMON_SOCKET
        return runtime_dir() / f"{self.base}.sock"

    @property
    def log_file(self) -> Path:
        return logs_dir() / f"{self.base}.log"


CONNECTOR = DaemonKind("user", "user daemon", "connector")
ROOT_DAEMON = DaemonKind("root", "root daemon", "daemon")


def configure_logging(kind: DaemonKind, level: str) -> Path:
    """Log to the daemon's rotating file (and nowhere else); returns the file."""
    path = kind.log_file
    ensure_private_dir(path.parent)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    # Third parties' chatter stays out unless asked for (trace).
    for noisy in ("hpack", "asyncio", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "trace" else 5)
    return path


def set_level(level: str) -> None:
    """Set the root logger's level by its Telepresence name."""
    logging.getLogger().setLevel(LEVELS[level])


class LogLevel:
    """``telepresence loglevel``: a daemon's level changed for a while, or until it stops."""

    def __init__(self, tasks: anyio.abc.TaskGroup) -> None:
        self._tasks = tasks
        self._configured = logging.getLogger().level
        self._revert: anyio.CancelScope | None = None

    def change(self, level: str, duration: float) -> None:
        """Set ``level``; back to the configured one after ``duration`` seconds (0: never).

        Raises:
            ConfigError: Not a level.
        """
        if level not in LEVELS:
            names = ", ".join(LEVELS)
            raise errors.ConfigError(f"{level!r} is not a log level: use one of {names}")
        if self._revert is not None:
            self._revert.cancel()
            self._revert = None
        logging.getLogger().setLevel(LEVELS[level])
        if duration > 0:
            self._revert = anyio.CancelScope()
            self._tasks.start_soon(self._back_after, duration, self._revert)

    async def _back_after(self, duration: float, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(duration)
            logging.getLogger().setLevel(self._configured)


def take_instance_lock(kind: DaemonKind) -> None:
    """Take the daemon's instance lock for the rest of this process's life: the kernel
    releases it when the process has exited, which is what a client waiting for the daemon to
    stop needs to know (:func:`is_running`).

    Raises:
        DaemonError: Another instance holds it.
    """
    ensure_private_dir(kind.socket.parent)
    fd = os.open(kind.socket.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.DaemonError(f"another {kind.title} is running ({kind.socket})") from None
    # The descriptor is left open on purpose.


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_running(kind: DaemonKind) -> bool:
    """Whether a daemon of this kind holds its instance lock (runs, answering or not)."""
    lock = kind.socket.with_suffix(".lock")
    if not lock.exists():
        return False
    with _locked(lock, wait=False) as free:
        return not free


async def is_answering(kind: DaemonKind) -> bool:
    """Whether something accepts connections on the daemon's socket."""
    try:
        stream = await anyio.connect_unix(kind.socket)
    except OSError:
        return False
    await stream.aclose()
    return True


#: The longest unix socket path Linux takes (``sun_path`` is 108 bytes with its final NUL).
MAX_SOCKET_PATH = 107


async def ensure_running(kind: DaemonKind, *, environment: dict[str, str] | None = None) -> bool:
    """Start the daemon unless it answers already; returns whether it was started.

    Raises:
        DaemonError: It could not be started, or did not open its socket in time.
    """
    if await is_answering(kind):
        return False
    if len(os.fsencode(kind.socket)) > MAX_SOCKET_PATH:
        raise errors.DaemonError(
            f"the {kind.title}'s socket path {kind.socket} is longer than a unix socket "
            f"allows ({MAX_SOCKET_PATH} bytes): set XDG_RUNTIME_DIR to a shorter directory"
        )
    ensure_private_dir(kind.socket.parent)
    return await anyio.to_thread.run_sync(_start_locked, kind, environment)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: it is nobody's child here, so init reaps it soon; until then
    # its state says so.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def spawn(kind: DaemonKind, environment: dict[str, str] | None = None) -> int:
    """Start the daemon as a process of its own session (stdin from /dev/null, output appended
    to its log) and return its pid, without waiting: it outlives this process, and the
    daemon itself refuses to run twice (its instance lock)."""
    log_file = kind.log_file
    ensure_private_dir(log_file.parent)
    with open(os.devnull, "rb") as stdin, open(log_file, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "telepresence.daemon", kind.command],
            stdin=stdin,
            stdout=output,
            stderr=output,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(environment or {})},
        )
    # Never waited for: it lives on after this process, which init then reaps it for.
    process.returncode = 0  # so that Popen does not warn about a child still running
    return process.pid


def spawn_missing(kinds: list[DaemonKind]) -> None:
    """Start each of these daemons that does not run yet, without waiting for any: what
    ``telepresence connect`` does first, so that the daemons start while the CLI does."""
    for kind in kinds:
        with contextlib.suppress(OSError, errors.DaemonError):
            ensure_private_dir(kind.socket.parent)
            if not is_running(kind):
                spawn(kind)


def _start_locked(kind: DaemonKind, environment: dict[str, str] | None) -> bool:
    """With the start lock held: check again, start unless one is starting already, and wait
    for the socket (in a thread: the lock and the wait are blocking calls)."""
    with _locked(kind.socket.with_suffix(".start"), wait=True):
        if anyio.from_thread.run(is_answering, kind):
            return False  # another command started it while this one waited
        # One that holds its instance lock is starting (the daemon takes it first thing).
        pid = None if is_running(kind) else spawn(kind, environment)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if anyio.from_thread.run(is_answering, kind):
                return pid is not None
            if pid is not None and not _alive(pid) and not is_running(kind):
                raise errors.DaemonError(f"the {kind.title} exited at start; see {kind.log_file}")
            time.sleep(0.01)
        raise errors.DaemonError(
            f"the {kind.title} did not open {kind.socket} within {START_TIMEOUT:g} s; "
            f"see {kind.log_file}"
        )
