"""Containers as processes: how the kubelet runs one instance, keeps its log, stops it.

A container instance is one process started through the namespace launcher (``enter.py``):
it joins the pod's network namespace, gets a private mount view with the pod's
``/etc/resolv.conf``, ``/etc/hosts`` and volumes bound in, and its own UTS namespace with the
pod's host name (see :func:`launcher_argv`). The launcher holds one end of a pipe open until
it has become the program (``--exec-fd``), so the instance counts as started exactly when its
mounts are in place. The process is its own session leader, so that when it exits, what it
left behind in its process group is killed with it, as a container's cgroup is (there is no
PID namespace here; a daemon that starts a new session escapes).

Its stdout and stderr are read here and written to the instance's log file in the CRI
format the real runtimes write and ``kubectl logs`` reads through the kubelet::

    2024-05-01T12:00:00.123456789Z stdout F a whole line
    2024-05-01T12:00:00.2Z stderr P the first 16 KiB of a longer line...

(``F`` a full line, ``P`` a part of one; timestamps as Go's ``RFC3339Nano``). Each instance
has a file of its own (``<restartCount>.log``), so the previous instance's log stays for
``kubectl logs --previous``.

:class:`Container` is the kubelet's record of one container across its instances: the state
the pod's status shows (waiting, running, terminated, the last termination), the restart
count and the :class:`Backoff` between restarts. What the pod's status says about its
containers as a whole is worked out from these records in :mod:`~sandbox.node.status`.

Log writes are small synchronous ``write(2)`` calls on a local file, made from the event
loop: cheaper than a thread hop per line, and never blocking for long.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import anyio

from sandbox.node import netns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from anyio.abc import ByteReceiveStream, Process, TaskStatus

    from sandbox.node.volumes import Mount

log = logging.getLogger("sandbox.kubelet")

#: containerd's default ``max_container_log_line_size``: longer lines are split into parts.
MAX_LOG_LINE = 16 * 1024
#: How long a stopping kubelet waits between SIGTERM and SIGKILL.
STOP_CAP = 2.0
#: How long output may keep coming after the main process exited (from what it left behind).
DRAIN = 1.0
#: Upstream's cap on the restart backoff, and how long an exit-free stretch resets it (2x cap).
MAX_BACKOFF = 300.0
#: The launcher's exit status when it could not set up or run the program (``enter.py``).
LAUNCH_FAILED = 127
#: The exit code a container that could not start reports (runc's).
START_ERROR_CODE = 128


def rfc3339_nano(nanoseconds: int) -> str:
    """A Unix time in nanoseconds as Go's ``time.RFC3339Nano`` in UTC (trailing zeros of the
    fraction dropped)."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints the whole and common ones
    (``10s``, ``2m40s``, ``5m0s``, ``500ms``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:g}s"
    if minutes:
        hours, minutes = divmod(int(minutes), 60)
        text = f"{minutes}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return text


class LogWriter:
    """Writes one instance's output to its log file in the CRI format."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._partial: dict[str, bytes] = {}
        self._failed = False

    def write(self, stream: str, data: bytes) -> None:
        """Log ``data`` read from ``stream`` (``stdout`` or ``stderr``): whole lines now, the
        rest once its line ends (or is too long to wait for)."""
        pending = self._partial.pop(stream, b"") + data
        lines = []
        while True:
            end = pending.find(b"\n")
            if end == -1 or end > MAX_LOG_LINE:
                if len(pending) < MAX_LOG_LINE:
                    break
                lines.append(self._line(stream, "P", pending[:MAX_LOG_LINE]))
                pending = pending[MAX_LOG_LINE:]
                continue
            lines.append(self._line(stream, "F", pending[:end]))
            pending = pending[end + 1 :]
        if pending:
            self._partial[stream] = pending
        if lines:
            self._emit(b"".join(lines))

    def finish(self, stream: str) -> None:
        """``stream`` ended: a last line without its newline is still a full line."""
        rest = self._partial.pop(stream, b"")
        if rest:
            self._emit(self._line(stream, "F", rest))

    def _emit(self, records: bytes) -> None:
        # A log that cannot be written (a full disk) loses output; the container goes on.
        try:
            os.write(self._fd, records)
        except OSError as error:
            if not self._failed:
                log.warning("cannot write the container log %s: %s", self.path, error)
            self._failed = True

    def close(self) -> None:
        for stream in list(self._partial):
            self.finish(stream)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def _line(stream: str, tag: str, content: bytes) -> bytes:
        return f"{rfc3339_nano(time.time_ns())} {stream} {tag} ".encode() + content + b"\n"


def launcher_argv(
    program: Sequence[str],
    *,
    network: Path,
    stage: Path,
    resolv_conf: Path,
    hosts: Path,
    mounts: Sequence[Mount],
    hostname: str,
    working_dir: str | None,
) -> list[str]:
    """The command line that runs ``program`` as a container of the pod (module docstring)."""
    argv = [*netns.ENTER, "--net", str(network), "--private-mounts", "--stage", str(stage)]
    argv += ["--ro-bind", f"{resolv_conf}:/etc/resolv.conf", "--bind", f"{hosts}:/etc/hosts"]
    for mount in mounts:
        argv += [
            "--ro-bind" if mount.read_only else "--bind",
            f"{mount.source}:{mount.destination}",
        ]
    argv += ["--hostname", hostname, "--die-with-parent"]
    if working_dir:
        argv += ["--chdir", working_dir]
    return [*argv, "--", *program]


class ContainerProcess:
    """One instance of a container: its process, its output pumps, its exit.

    :meth:`run` owns the process: started in a task group that outlives the container's
    supervision (so that stopping a pod can still signal it and log what it says), it returns
    when the process is gone. Cancelled, it stops the process (SIGTERM, SIGKILL after
    :data:`STOP_CAP`) before it returns.

    Args:
        argv: the launcher's command line (:func:`launcher_argv`); :meth:`run` adds the
            ``--exec-fd`` that tells it when the program runs (:meth:`executed`).
        env: the program's environment.
        log_path: the instance's CRI log.
        stage: an empty directory of the launcher's (``--stage``).
    """

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, stage: Path
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.stage = stage
        self.pid: int | None = None
        self.started_at: dt.datetime | None = None
        self.finished_at: dt.datetime | None = None
        self.exit_code: int | None = None
        #: The launcher's own error, when it could not start the program at all.
        self.start_error: str | None = None
        self.exited = anyio.Event()
        self._executed = anyio.Event()
        self._process: Process | None = None
        self._stderr_head = b""

    @property
    def running(self) -> bool:
        return self._process is not None and not self.exited.is_set()

    async def executed(self) -> None:
        """Return once the launcher has set the container up and become its program, or has
        exited: from then on the container's mounts are in place, so that a hook or an exec
        sees what the program sees, as a runtime's "started" promises.

        The launcher holds the write end of a pipe (``--exec-fd``) that the exec closes, so
        end of file on the read end says so exactly; a launcher that fails closes it by
        exiting, and :meth:`run` reports the failure as the instance's exit.
        """
        await self._executed.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the process, report started, and return once it is gone (see the class)."""
        self.stage.mkdir(parents=True, exist_ok=True)
        writer = LogWriter(self.log_path)
        exec_read, exec_write = os.pipe()
        try:
            await self._run(writer, exec_read, exec_write, task_status)
        finally:
            writer.close()  # (already closed once the process was started)
            os.close(exec_read)

    async def _run(
        self, writer: LogWriter, exec_read: int, exec_write: int, task_status: TaskStatus[None]
    ) -> None:
        launcher = len(netns.ENTER)
        argv = [*self.argv[:launcher], "--exec-fd", str(exec_write), *self.argv[launcher:]]
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                pass_fds=(exec_write,),
            )
        except OSError as error:
            self.started_at = dt.datetime.now(dt.UTC)
            self._finish(START_ERROR_CODE, f"cannot start the launcher: {error}")
            task_status.started()
            return
        finally:
            os.close(exec_write)  # the launcher's copy is the only one left
        self._process = process
        self.pid = process.pid
        self.started_at = dt.datetime.now(dt.UTC)
        task_status.started()
        try:
            async with anyio.create_task_group() as pumps:
                drained = [anyio.Event(), anyio.Event()]
                assert process.stdout is not None
                assert process.stderr is not None
                pumps.start_soon(self._pump, process.stdout, "stdout", writer, drained[0])
                pumps.start_soon(self._pump, process.stderr, "stderr", writer, drained[1])
                pumps.start_soon(self._await_exec, exec_read)
                try:
                    await process.wait()
                finally:
                    with anyio.CancelScope(shield=True):
                        if process.returncode is None:
                            await self.stop(STOP_CAP)
                        self._kill_group()
                        with anyio.move_on_after(DRAIN):
                            for event in drained:
                                await event.wait()
                        pumps.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                writer.close()
                await process.aclose()
                code = process.returncode if process.returncode is not None else -signal.SIGKILL
                self._finish(code, None)

    async def _await_exec(self, exec_read: int) -> None:
        """End of file on the launcher's ``--exec-fd`` pipe: it became the program, or exited
        (nothing is ever written to it)."""
        os.set_blocking(exec_read, False)
        while True:
            await anyio.wait_readable(exec_read)
            with contextlib.suppress(BlockingIOError):
                if not os.read(exec_read, 64):
                    break
        self._executed.set()

    def _finish(self, returncode: int, start_error: str | None) -> None:
        self.finished_at = dt.datetime.now(dt.UTC)
        # Killed by a signal (asyncio reports -N): 128 + N, as a shell and the CRI report it.
        self.exit_code = 128 - returncode if returncode < 0 else returncode
        head = self._stderr_head
        if returncode == LAUNCH_FAILED and head.startswith(b"sandbox: "):
            start_error = head.split(b"\n", 1)[0][len(b"sandbox: ") :].decode(errors="replace")
        if start_error is not None:
            self.start_error = start_error
            self.exit_code = START_ERROR_CODE
        self._executed.set()
        self.exited.set()

    async def _pump(
        self, stream: ByteReceiveStream, name: str, writer: LogWriter, done: anyio.Event
    ) -> None:
        try:
            async for chunk in stream:
                if name == "stderr" and len(self._stderr_head) < 4096:
                    self._stderr_head += chunk[: 4096 - len(self._stderr_head)]
                writer.write(name, chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            writer.finish(name)
            done.set()

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the main process (as a runtime signals a container's PID 1)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the main process and everything in its process group."""
        self.send_signal(signal.SIGKILL)
        self._kill_group()

    def _kill_group(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def stop(self, grace: float) -> None:
        """SIGTERM, up to ``grace`` seconds to exit, then SIGKILL; returns once it is gone."""
        if self._process is None:
            return
        self.send_signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self._wait()
        if self._process.returncode is None:
            self.kill()
        await self._wait()

    async def _wait(self) -> None:
        # The process itself, not self.exited: run() may be the one stopping it.
        assert self._process is not None
        if self._process.returncode is None:
            await self._process.wait()


class Backoff:
    """The restart backoff of one container, as the kubelet keeps it (``flowcontrol.Backoff``
    keyed by container): the first restart is at once, each later one waits ``initial``
    seconds after the exit, doubling up to :data:`MAX_BACKOFF`; an exit more than twice the
    cap after the previous one starts afresh."""

    def __init__(self, initial: float, maximum: float = MAX_BACKOFF) -> None:
        self.initial = initial
        self.maximum = maximum
        self._delay: float | None = None
        self._last_exit = 0.0

    def delay(self, exited_at: float, now: float) -> tuple[float, float]:
        """How long to wait, from ``now``, before restarting after an exit at ``exited_at``
        (both :func:`anyio.current_time`), and the backoff period that wait is part of (for
        the message); the restart is then counted."""
        if self._delay is None or exited_at - self._last_exit > 2 * self.maximum:
            self._delay = self.initial
            self._last_exit = exited_at
            return 0.0, 0.0
        period = self._delay
        self._delay = min(period * 2, self.maximum)
        self._last_exit = exited_at
        return max(0.0, period - (now - exited_at)), period


class Container:
    """The kubelet's record of one container of a pod, across its instances."""

    def __init__(self, spec: Mapping[str, Any], *, init: bool, backoff: float) -> None:
        self.spec = dict(spec)
        self.name: str = spec["name"]
        self.init = init
        #: A restartable init container (``restartPolicy: Always``), a sidecar.
        self.sidecar = init and spec.get("restartPolicy") == "Always"
        self.instances = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}
        self.last_state: dict[str, Any] = {}
        self.ready = False
        self.started = False
        self.container_id = ""
        self.image_id = ""
        self.process: ContainerProcess | None = None
        #: The logs of the latest instance and of the one ``lastState`` shows.
        self.log: Path | None = None
        self.previous_log: Path | None = None
        self.restart_backoff = Backoff(backoff)
        #: Set when the container's image changed in the pod's spec (a restart is due).
        self.changed = anyio.Event()

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def restart_count(self) -> int:
        return max(self.instances - 1, 0)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def field_path(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def waiting(self, reason: str, message: str | None = None) -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = False

    def begin(self, process: ContainerProcess, container_id: str, image_id: str) -> None:
        """A new instance started: the previous one (if any) becomes ``lastState``."""
        self._keep_last_termination()
        self.instances += 1
        self.process = process
        self.container_id = container_id
        self.image_id = image_id
        self.log = process.log_path
        assert process.started_at is not None
        self.state = {"running": {"startedAt": rfc3339(process.started_at)}}
        self.ready = False
        self.started = False

    def end(self) -> int:
        """The instance exited: record how (a signal shows as 128 + its number, as the CRI
        reports it); returns its exit code."""
        process = self.process
        assert process is not None
        assert process.exit_code is not None
        code = process.exit_code
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": rfc3339(process.started_at or dt.datetime.now(dt.UTC)),
            "finishedAt": rfc3339(process.finished_at or dt.datetime.now(dt.UTC)),
            "containerID": self.container_id,
        }
        if process.start_error is not None:
            terminated["reason"] = "StartError"
            terminated["message"] = process.start_error
        self.state = {"terminated": terminated}
        self.ready = False
        self.started = False
        return code

    def backing_off(self, message: str) -> None:
        """Waiting to restart: the exit just recorded moves to ``lastState``."""
        self._keep_last_termination()
        self.waiting("CrashLoopBackOff", message)

    def _keep_last_termination(self) -> None:
        """The termination in ``state`` becomes ``lastState``; only its log and the latest
        are kept (upstream keeps a container's current and previous log)."""
        if "terminated" not in self.state:
            return
        older = self.previous_log
        self.last_state = self.state
        self.previous_log = self.log
        if older is not None and older != self.previous_log:
            older.unlink(missing_ok=True)

    @property
    def completed(self) -> bool:
        """Exited with status 0 (an init container that is done)."""
        return bool(self.state.get("terminated", {}).get("exitCode") == 0)

    def status(self) -> dict[str, Any]:
        """The entry of ``containerStatuses`` / ``initContainerStatuses``."""
        status: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    def log_file(self, *, previous: bool) -> Path | None:
        """The log ``kubectl logs`` shows, as the kubelet picks it: the running or latest
        instance's, or with ``previous`` the one ``lastState`` records."""
        if previous:
            return self.previous_log if "terminated" in self.last_state else None
        return self.log
