"""The kubelet's side of a pod's subresources: logs, exec and port-forward.

Upstream, kube-apiserver checks a request for ``pods/log``, ``pods/exec`` or
``pods/portforward``, then proxies it to the kubelet of the pod's node, which asks the container
runtime: containerd reads the container's log file, enters the container for an exec, dials
the port inside the pod's network namespace. The sandbox's API server and nodes share one
process and one host, so :class:`PodRuntime` does that kubelet part in place:
``APIServer._pod_runtime`` authorizes the request, fetches the pod and hands the aiohttp
request to the method named after the subresource. What the node knows about its containers
comes through :class:`Containers`, which the kubelet implements.

- **log** reads the container's CRI log file (containerd's format, see :class:`Containers`)
  and answers ``text/plain``, chunked. ``follow`` polls the file and the container, as the
  kubelet's reader does once it hits the end of the file: the stream ends when the container
  stops (or a new instance starts) or the client goes away. :class:`LogFormatter` is the
  parsing and filtering (``sinceTime``, ``timestamps``, ``limitBytes``), with no I/O.
- **exec** speaks the WebSocket remote-command protocol (``v5.channel.k8s.io`` as kubectl 1.32
  does, down to ``channel.k8s.io``). Every binary message starts with a channel byte: 0 stdin,
  1 stdout, 2 stderr, 3 the final status, 4 terminal resizes; v5 adds ``[255, 0]``, "stdin is
  closed". The command runs inside the container through the namespace launcher
  (:data:`sandbox.node.netns.ENTER`): the container process's network, UTS and mount
  namespaces, its root and working directory, its environment, as ``runc exec`` sets them up.
  The status carries the exit code, so ``kubectl exec`` exits with it.
- **portforward** speaks the WebSocket port-forward protocol (``v4.channel.k8s.io``): port
  *i* of the ``ports`` query has data channel ``2i`` and error channel ``2i+1``, each opened
  with the port number (2 bytes, little-endian), as the kubelet's ``websocket.go`` does. The
  connection is dialled to the pod's IP, which the API server's process can route to. This is
  the project's default transport, so it is built for throughput: 256 KiB reads straight into
  the buffer that becomes the WebSocket message (the channel byte in front, no other copy),
  and backpressure both ways (the pod's socket is read only when the WebSocket has drained,
  and the WebSocket only when the pod's socket took the last message).
  The pod's side uses the asyncio loop's socket calls directly (aiohttp ties this module to
  asyncio anyway): ``recv_into`` needs no stream buffer in between, and a forward waits for
  data without holding a buffer. ``kubectl port-forward`` speaks SPDY (tunnelled in a
  WebSocket since 1.31), which is not served: it gets an error that says so.
- **attach**, **eviction** and **ephemeralcontainers** answer clear errors; **proxy** relays
  one plain HTTP request to the pod.

Errors before a stream starts are ``APIError``\\ s, worded as kube-apiserver and the kubelet
word them, which the API server turns into ``Status`` responses; once a WebSocket is open they
travel on its error channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import anyio
import anyio.abc
from aiohttp import WSMsgType, web
from yarl import URL

from sandbox.apiserver import errors
from sandbox.node import netns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from multidict import MultiMapping

log = logging.getLogger("sandbox.node")
#: How much a log read or a port-forward read takes at once.
READ_SIZE = 256 * 1024
#: The largest WebSocket message a client may send (a port-forward client's writes).
MAX_MESSAGE = 16 * 1024 * 1024
#: How often a followed log checks for more output and for its container's end.
FOLLOW_INTERVAL = 0.1
#: Go's ``time.RFC3339`` layout, as the kubelet's parse errors quote it.
RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"
#: The ``PATH`` containerd puts in a container's spec when the image gives none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Containers(Protocol):
    """What the node knows about its containers; the kubelet implements it.

    ``pod`` is the Pod object as the API server stores it; ``container`` is the name of one of
    its containers (init and ephemeral containers included).
    """

    def container_pid(self, pod: Mapping[str, Any], container: str) -> int | None:
        """The PID (in the API server's PID namespace) of the running container's main
        process, whose namespaces, root and environment ``exec`` enters; None when the
        container is not running."""
        ...

    def log_file(
        self, pod: Mapping[str, Any], container: str, *, previous: bool = False
    ) -> Path | None:
        """The container's log file: the current instance's, or with ``previous`` the one of
        the instance that terminated before it; None when there is none.

        The file is in the CRI log format, one record per line::

            <RFC3339Nano UTC timestamp> <stdout|stderr> <F|P> <content>\\n

        ``F`` marks the end of a line of output and ``P`` a partial line that the next record
        continues (containerd splits lines longer than its buffer).
        """
        ...

    def is_running(self, pod: Mapping[str, Any], container: str) -> bool:
        """Whether the container's current instance is running (its log may still grow)."""
        ...


# -- query parameters ---------------------------------------------------------------------------


def _flag(query: MultiMapping[str], name: str) -> bool:
    """A boolean query parameter as the API server converts it: present and not false/0."""
    value = query.get(name)
    return value is not None and value.lower() not in ("false", "0")


def _integer(query: MultiMapping[str], name: str) -> int | None:
    value = query.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rfc3339_nanoseconds(text: str) -> int:
    """An RFC 3339 time (any fraction of a second, up to nanoseconds) as nanoseconds since the
    epoch; ValueError when it is not one."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(text)
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = dt.datetime.fromisoformat(f"{day}T{clock}{zone}")
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


# -- containers of a pod ------------------------------------------------------------------------


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


def _names(pod: Mapping[str, Any], field: str) -> list[str]:
    return [c.get("name", "") for c in pod.get("spec", {}).get(field) or []]


def _has_container(pod: Mapping[str, Any], name: str) -> bool:
    fields = ("containers", "initContainers", "ephemeralContainers")
    return any(name in _names(pod, field) for field in fields)


def log_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container a log request is for (kube-apiserver's ``ValidateContainer``)."""
    name = _pod_name(pod)
    if requested:
        if not _has_container(pod, requested):
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    containers = _names(pod, "containers")
    if len(containers) == 1:
        return containers[0]
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    every = [*_names(pod, "initContainers"), *containers, *_names(pod, "ephemeralContainers")]
    raise errors.bad_request(
        f"a container name must be specified for pod {name}, choose one of: [{' '.join(every)}]"
    )


def stream_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container an exec or attach is for (kube-apiserver's ``streamLocation``)."""
    name = _pod_name(pod)
    if requested:
        if not _has_container(pod, requested):
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    containers = _names(pod, "containers")
    if len(containers) == 1:
        return containers[0]
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    message = (
        f"a container name must be specified for pod {name}, "
        f"choose one of: [{' '.join(containers)}]"
    )
    if init := _names(pod, "initContainers"):
        message += f" or one of the init containers: [{' '.join(init)}]"
    raise errors.bad_request(message)


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    status = pod.get("status") or {}
    for field in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(field) or []:
            if entry.get("name") == container:
                return entry  # type: ignore[no-any-return]
    return None


# -- logs: the CRI log format -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogOptions:
    """A ``pods/log`` request's options (``PodLogOptions``)."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    since_ns: int | None = None
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


def log_options(query: MultiMapping[str], pod: Mapping[str, Any]) -> LogOptions:
    """The options of a log request, checked as ``ValidatePodLogOptions`` checks them."""
    since_seconds = _integer(query, "sinceSeconds")
    tail_lines = _integer(query, "tailLines")
    limit_bytes = _integer(query, "limitBytes")
    since_ns = None
    if since_time := query.get("sinceTime", ""):
        try:
            since_ns = rfc3339_nanoseconds(since_time)
        except ValueError:
            raise errors.bad_request(
                f'parsing time "{since_time}" as "{RFC3339_LAYOUT}": cannot parse '
                f'"{since_time}" as "2006"'
            ) from None
    problems: list[tuple[str, Any, str]] = []
    if tail_lines is not None and tail_lines < 0:
        problems.append(("tailLines", tail_lines, "must be greater than or equal to 0"))
    if limit_bytes is not None and limit_bytes < 1:
        problems.append(("limitBytes", limit_bytes, "must be greater than 0"))
    if since_seconds is not None:
        if since_time:
            why = "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
            raise _invalid_log_options(pod, [("", None, why)])
        if since_seconds < 1:
            problems.append(("sinceSeconds", since_seconds, "must be greater than 0"))
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    if problems:
        raise _invalid_log_options(pod, problems)
    return LogOptions(
        container=query.get("container", ""),
        follow=_flag(query, "follow"),
        previous=_flag(query, "previous"),
        since_ns=since_ns,
        timestamps=_flag(query, "timestamps"),
        tail_lines=tail_lines,
        limit_bytes=limit_bytes,
    )


def _invalid_log_options(
    pod: Mapping[str, Any], problems: Sequence[tuple[str, Any, str]]
) -> errors.APIError:
    name = _pod_name(pod)
    described = [
        f"{field}: Invalid value: {value}: {why}" if field else why
        for field, value, why in problems
    ]
    message = f'PodLogOptions "{name}" is invalid: ' + (
        described[0] if len(described) == 1 else f"[{', '.join(described)}]"
    )
    causes = [
        {"reason": "FieldValueInvalid", "message": text, "field": field}
        for (field, _, _), text in zip(problems, described, strict=True)
    ]
    details = {"name": name, "kind": "PodLogOptions", "causes": causes}
    return errors.APIError(422, "Invalid", message, details=details)


class LogFormatter:
    """CRI log records in, what ``kubectl logs`` prints out; no I/O.

    Records may arrive split anywhere (a read ends mid-record): the incomplete tail is kept
    for the next :meth:`feed`. As the kubelet does, a timestamp prefixes only records that
    start a line, records older than ``since_ns`` are dropped, and output stops after
    ``limit_bytes``.
    """

    def __init__(
        self,
        *,
        timestamps: bool = False,
        since_ns: int | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.timestamps = timestamps
        self.since_ns = since_ns
        self.remaining = limit_bytes
        self._pending = b""
        self._line_start = True

    @property
    def done(self) -> bool:
        """Whether ``limit_bytes`` have been produced: nothing more will be."""
        return self.remaining is not None and self.remaining <= 0

    def feed(self, data: bytes) -> bytes:
        """The output for every record that ``data`` completes."""
        buffer = self._pending + data if self._pending else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._pending = buffer
            return b""
        self._pending = buffer[end + 1 :]
        output = bytearray()
        for record in buffer[:end].split(b"\n"):
            self._format(record, output)
        if self.remaining is not None:
            del output[max(self.remaining, 0) :]
            self.remaining -= len(output)
        return bytes(output)

    def _format(self, record: bytes, output: bytearray) -> None:
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            return  # not a CRI record: the kubelet skips it too
        timestamp, _stream, tags = parts[:3]
        content = parts[3] if len(parts) == 4 else b""
        if self.since_ns is not None:
            try:
                if rfc3339_nanoseconds(timestamp.decode()) < self.since_ns:
                    return
            except ValueError:
                return
        if self.timestamps and self._line_start:
            output += timestamp
            output += b" "
        output += content
        self._line_start = tags.split(b":", 1)[0] != b"P"
        if self._line_start:
            output += b"\n"


class LogCopy:
    """One log request's copy from the log file(s) to the response."""

    def __init__(
        self,
        containers: Containers,
        pod: Mapping[str, Any],
        container: str,
        options: LogOptions,
        follow_interval: float,
    ) -> None:
        self.containers = containers
        self.pod = pod
        self.container = container
        self.options = options
        self.follow = options.follow and not options.previous
        self.follow_interval = follow_interval
        self.formatter = LogFormatter(
            timestamps=options.timestamps,
            since_ns=options.since_ns,
            limit_bytes=options.limit_bytes,
        )

    async def run(self, http: web.Request, response: web.StreamResponse, path: Path) -> None:
        offset = 0
        if self.options.tail_lines is not None:
            offset = await anyio.to_thread.run_sync(tail_offset, path, self.options.tail_lines)
        # A followed log that is rotated (renamed, a new file in its place) goes on there.
        while await self._copy_file(http, response, path, offset):
            offset = 0

    async def _copy_file(
        self, http: web.Request, response: web.StreamResponse, path: Path, offset: int
    ) -> bool:
        """Copy one file from ``offset``; True when it was rotated (a new one at ``path``)."""
        async with await anyio.open_file(path, "rb") as file:
            await file.seek(offset)
            while not self.formatter.done:
                # Whether it ran *before* reading to the end: all it wrote before it stopped
                # is then read.
                running = self.follow and self.containers.is_running(self.pod, self.container)
                chunk = await file.read(READ_SIZE)
                if chunk:
                    if output := self.formatter.feed(chunk):
                        await response.write(output)
                    continue
                if not running or http.transport is None or http.transport.is_closing():
                    return False
                if self.containers.log_file(self.pod, self.container) != path:
                    return False  # a new instance started: the one followed has ended
                if _replaced(path, file.wrapped.fileno()):
                    return True
                await anyio.sleep(self.follow_interval)
        return False


def tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` records of a log file start (a blocking read backwards)."""
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        # The byte at end - 1 ends the last record (or is part of one being written): only
        # the newlines before it separate records.
        position, window, found = end, end - 1, 0
        while position > 0:
            position = max(0, position - READ_SIZE)
            file.seek(position)
            block = file.read(max(0, window - position))
            index = len(block)
            while (index := block.rfind(b"\n", 0, index)) >= 0:
                found += 1
                if found == lines:
                    return position + index + 1
            window = position
        return 0


# -- exec: the remote-command protocol ----------------------------------------------------------

#: The remote-command subprotocols, newest first, and their versions.
EXEC_PROTOCOLS = {
    "v5.channel.k8s.io": 5,
    "v4.channel.k8s.io": 4,
    "v3.channel.k8s.io": 3,
    "v2.channel.k8s.io": 2,
    "channel.k8s.io": 1,
}
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
#: v5: a client message ``[CLOSE, channel]`` closes that channel (stdin's EOF).
CLOSE = 255
#: Runs a terminal's command as the leader of a new session with the terminal as its
#: controlling one (what a shell's job control and Ctrl-C need), then the launcher.
_CONTROLLING_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"
)


def _go_list(words: Sequence[str]) -> str:
    return f"[{' '.join(words)}]"


def exit_status(code: int, command: Sequence[str]) -> dict[str, Any]:
    """The ``Status`` the error channel carries when a command exits (protocol v4 and up)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"{_go_list(command)}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def start_failure(message: str) -> dict[str, Any]:
    """The ``Status`` for a command that could not be started (the kubelet's InternalError)."""
    cause = f"error executing command in container: {message}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


def find_executable(name: str, root: str, cwd: str, path: str) -> str | None:
    """Why ``name`` cannot be run in the container whose root is ``root``, worded as runc
    words it; None when it can.

    runc looks the program up after entering the container; doing it before starting the
    launcher tells "cannot start" apart from "exited with 127" without another process.
    """

    def runnable(candidate: str) -> bool:
        real = os.path.join(root, os.path.join(cwd, candidate).lstrip("/"))
        return os.path.isfile(real) and os.access(real, os.X_OK)

    if "/" in name:
        real = os.path.join(root, os.path.join(cwd, name).lstrip("/"))
        if not os.path.lexists(real):
            return f'exec: "{name}": stat {name}: no such file or directory'
        return None if runnable(name) else f'exec: "{name}": permission denied'
    for directory in path.split(":"):
        if runnable(os.path.join(directory or ".", name)):
            return None
    return f'exec: "{name}": executable file not found in $PATH'


@dataclass(frozen=True, slots=True)
class ContainerProcess:
    """What an exec takes from the container's main process: where and with what it runs."""

    pid: int
    root: str
    cwd: str
    env: dict[str, str]

    @classmethod
    def inspect(cls, pid: int) -> ContainerProcess:
        """Read ``/proc/PID``; OSError when the process is gone."""
        with open(f"/proc/{pid}/environ", "rb") as file:
            raw = file.read()
        env: dict[str, str] = {}
        for entry in raw.split(b"\0"):
            key, sep, value = entry.decode(errors="surrogateescape").partition("=")
            if sep and key:
                env[key] = value
        cwd = os.readlink(f"/proc/{pid}/cwd")
        # Seen from outside, a chrooted process's directory carries its root's path in front.
        root = os.readlink(f"/proc/{pid}/root")
        if root != "/" and (cwd == root or cwd.startswith(root + "/")):
            cwd = cwd[len(root) :] or "/"
        return cls(pid, f"/proc/{pid}/root", cwd, env)

    def argv(self, command: Sequence[str]) -> list[str]:
        """The launcher's command line that runs ``command`` in this container."""
        pid = self.pid
        return [
            *netns.ENTER,
            *("--net", f"/proc/{pid}/ns/net", "--uts", f"/proc/{pid}/ns/uts"),
            *("--mnt", f"/proc/{pid}/ns/mnt", "--root", self.root, "--chdir", self.cwd),
            "--",
            *command,
        ]


class TerminalStream(anyio.abc.ByteStream):
    """The controlling side of a pseudo-terminal as a byte stream (non-blocking fd)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            await anyio.wait_readable(self.fd)
            try:
                data = os.read(self.fd, max_bytes)
            except BlockingIOError:
                continue
            except OSError:  # EIO: every process holding the terminal has closed it
                raise anyio.EndOfStream from None
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            await anyio.wait_writable(self.fd)
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                continue
            except OSError as error:
                raise anyio.BrokenResourceError from error

    async def send_eof(self) -> None:
        pass  # a terminal has no half-close; the program sees EOF when the session ends

    async def aclose(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


@dataclass(slots=True)
class Command:
    """A started exec: the process, where its input goes, where its output comes from."""

    process: anyio.abc.Process
    stdin: anyio.abc.ByteSendStream | None
    outputs: list[tuple[int, anyio.abc.ByteReceiveStream]]
    terminal: TerminalStream | None = None

    async def kill(self) -> None:
        """Stop the command and everything it started (its own process group), then reap."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await self.process.aclose()
            if self.terminal is not None:
                await self.terminal.aclose()


async def start_command(
    container: ContainerProcess,
    command: Sequence[str],
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Command:
    """Start ``command`` in ``container``, in a process group of its own."""
    env = dict(container.env)
    argv = container.argv(command)
    if not tty:
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        process = await anyio.open_process(
            argv,
            stdin=pipe if stdin else null,
            stdout=pipe if stdout else null,
            stderr=pipe if stderr else null,
            env=env,
            start_new_session=True,
        )
        outputs = [(STDOUT, process.stdout), (STDERR, process.stderr)]
        return Command(process, process.stdin, [(c, s) for c, s in outputs if s is not None])
    env.setdefault("TERM", "xterm")  # as containerd sets it for a terminal
    controller, terminal = os.openpty()
    try:
        process = await anyio.open_process(
            [sys.executable, "-I", "-S", "-c", _CONTROLLING_TERMINAL, *argv],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        os.close(controller)
        raise
    finally:
        os.close(terminal)
    stream = TerminalStream(controller)
    return Command(process, stream if stdin else None, [(STDOUT, stream)], terminal=stream)


class ExecSession:
    """One exec over an open WebSocket: client messages to the command, its output back,
    then its status on the error channel."""

    def __init__(self, ws: web.WebSocketResponse, version: int, command: Sequence[str]) -> None:
        self.ws = ws
        self.version = version
        self.command = list(command)

    async def run(
        self, container: ContainerProcess, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
    ) -> None:
        path = container.env.get("PATH", DEFAULT_PATH)
        if problem := find_executable(self.command[0], container.root, container.cwd, path):
            await self.send_status(start_failure(problem))
            return
        try:
            started = await start_command(
                container, self.command, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
            )
        except OSError as error:
            await self.send_status(start_failure(f"cannot start the command: {error}"))
            return
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._from_client, started, tasks.cancel_scope)
                async with anyio.create_task_group() as outputs:
                    for channel, stream in started.outputs:
                        outputs.start_soon(self._to_client, channel, stream, tasks.cancel_scope)
                code = await started.process.wait()
                await self.send_status(exit_status(code if code >= 0 else 128 - code, self.command))
                tasks.cancel_scope.cancel()
        finally:
            await started.kill()

    async def send_status(self, status: dict[str, Any]) -> None:
        if self.version >= 4:
            payload = json.dumps(status, separators=(",", ":")).encode()
        elif status["status"] == "Success":
            return
        else:
            payload = status["message"].encode()  # v1 to v3: the message as text
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_bytes(bytes([ERROR]) + payload)

    async def _to_client(
        self, channel: int, stream: anyio.abc.ByteReceiveStream, scope: anyio.CancelScope
    ) -> None:
        prefix = bytes([channel])
        try:
            async for data in stream:
                await self.ws.send_bytes(prefix + data)
        except ConnectionResetError:
            scope.cancel()  # the client is gone: so is the command
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def _from_client(self, command: Command, scope: anyio.CancelScope) -> None:
        stdin = command.stdin
        async for message in self.ws:
            data = message.data
            if message.type is not WSMsgType.BINARY or not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and stdin is not None and payload:
                try:
                    await stdin.send(payload)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    stdin = None  # the command closed its input: drop the rest
            elif channel == RESIZE and command.terminal is not None and self.version >= 3:
                self._resize(command.terminal, payload)
            elif channel == CLOSE and self.version >= 5 and payload[:1] == bytes([STDIN]):
                if stdin is not None and command.terminal is None:
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await stdin.aclose()
                stdin = None
        scope.cancel()  # the client closed the connection: the command is killed

    @staticmethod
    def _resize(terminal: TerminalStream, payload: bytes) -> None:
        try:
            size = json.loads(payload)
            terminal.resize(int(size["Width"]), int(size["Height"]))
        except (ValueError, KeyError, TypeError):
            pass  # a malformed resize is ignored, as the kubelet does


# -- port-forward -------------------------------------------------------------------------------

#: The port-forward subprotocols (all binary): the channel protocol v4, and the bare names
#: older clients send.
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io")


def parse_ports(values: Sequence[str]) -> list[int]:
    """The ``ports`` query parameters (repeated or comma-separated), as the kubelet reads
    them."""
    if not values:
        raise errors.bad_request('query parameter "ports" is required')
    ports = []
    for value in values:
        if not value:
            raise errors.bad_request('query parameter "ports" cannot be empty')
        for part in value.split(","):
            if not part.isdigit() or int(part) > 65535:
                raise errors.bad_request(
                    f'unable to parse "{value}" as a port: strconv.ParseUint: parsing "{part}": '
                    + ("invalid syntax" if not part.isdigit() else "value out of range")
                )
            if int(part) < 1:
                raise errors.bad_request(f'port "{value}" must be > 0')
            ports.append(int(part))
    return ports


class PortForward:
    """One forwarded port: a connection to the pod and its two channels on the WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, index: int, port: int, pod: Mapping[str, Any]):
        self.ws = ws
        self.port = port
        self.data_channel = 2 * index
        self.error_channel = 2 * index + 1
        self.pod = pod
        self.socket: socket.socket | None = None
        self.dialled = anyio.Event()

    async def open_channels(self) -> None:
        """Open both channels with the port number, as kubectl and client-go expect."""
        number = struct.pack("<H", self.port)
        await self.ws.send_bytes(bytes([self.data_channel]) + number)
        await self.ws.send_bytes(bytes([self.error_channel]) + number)

    async def run(self) -> None:
        """Dial the pod, then copy what the pod sends to the client until the pod's EOF."""
        try:
            sock = await self._dial()
        except OSError as error:
            await self.report(f"dial tcp {self._address()}: connect: {_strerror(error)}")
            return
        finally:
            self.dialled.set()
        while True:
            # A fresh buffer for each message (the transport may still hold the last one),
            # and none while the pod is silent: an idle forward holds no memory.
            buffer = bytearray(READ_SIZE + 1)
            buffer[0] = self.data_channel
            view = memoryview(buffer)
            try:
                received = sock.recv_into(view[1:])
            except BlockingIOError:
                del view, buffer
                await anyio.wait_readable(sock)
                continue
            except OSError as error:
                await self.report(f"read tcp {self._address()}: {_strerror(error)}")
                return
            if not received:
                return
            try:
                # aiohttp takes any bytes-like object (it checks for memoryview), typed bytes.
                await self.ws.send_bytes(view[: received + 1])  # type: ignore[arg-type]
            except ConnectionResetError:
                return  # the client is gone: its side ends the forward

    async def deliver(self, payload: memoryview) -> None:
        """Write what the client sent to the pod (waits until the pod's socket took it)."""
        await self.dialled.wait()
        if self.socket is None:
            return  # the dial failed: the client was told on the error channel
        try:
            await asyncio.get_running_loop().sock_sendall(self.socket, payload)
        except OSError as error:
            await self.report(f"write tcp {self._address()}: {_strerror(error)}")
            # Ends the read in run() too; the socket is closed once nothing waits on it.
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)

    async def report(self, why: str) -> None:
        """Tell the client on this port's error channel, as the kubelet words it."""
        name = _pod_name(self.pod)
        uid = self.pod.get("metadata", {}).get("uid", "")
        message = f"error forwarding port {self.port} to pod {name}, uid {uid}: {why}"
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_bytes(bytes([self.error_channel]) + message.encode())

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def _address(self) -> str:
        ip = str(self.pod.get("status", {}).get("podIP", ""))
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"

    async def _dial(self) -> socket.socket:
        ip = str(self.pod.get("status", {}).get("podIP", ""))
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.get_running_loop().sock_connect(sock, (ip, self.port))
        except BaseException:
            sock.close()
            raise
        self.socket = sock
        return sock


def _strerror(error: OSError) -> str:
    """An errno's text as Go prints it (lower case: "connection refused")."""
    # asyncio's connect errors carry their own text: the errno's is what Go would print.
    text = os.strerror(error.errno) if error.errno else str(error)
    return text[:1].lower() + text[1:]


async def _forward_from_client(
    ws: web.WebSocketResponse, forwards: Sequence[PortForward], scope: anyio.CancelScope
) -> None:
    """Demultiplex the client's messages to the ports; when the client closes, stop all."""
    async for message in ws:
        data = message.data
        if message.type is not WSMsgType.BINARY or len(data) < 2:
            continue
        index, is_error_channel = divmod(data[0], 2)
        if not is_error_channel and index < len(forwards):
            await forwards[index].deliver(memoryview(data)[1:])
    scope.cancel()


# -- the subresources ---------------------------------------------------------------------------

WEBSOCKET_ONLY = (
    "the sandbox serves pods/{sub} over WebSocket only (subprotocols {protocols}): "
    "use kubectl 1.30 or later, or a client that speaks them"
)
SPDY_PORTFORWARD = (
    "kubectl port-forward speaks SPDY (also when tunnelled in a WebSocket), which the sandbox "
    "does not serve: forward with a client of the WebSocket port-forward protocol "
    "(v4.channel.k8s.io), as kubernetes-asyncio and Telepresence are"
)
#: Headers that belong to one connection (RFC 9110 section 7.6.1), not to the relayed request.
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    ]
)


class PodRuntime:
    """The pod subresources a kubelet serves, for :class:`~sandbox.apiserver.server.APIServer`.

    Args:
        containers: what the node knows about its containers.
        follow_interval: how often a followed log looks for more output.
    """

    def __init__(self, containers: Containers, *, follow_interval: float = FOLLOW_INTERVAL):
        self.containers = containers
        self.follow_interval = follow_interval

    # -- log ----------------------------------------------------------------------------------

    async def log(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``GET pods/NAME/log``: the container's output as text, followed if asked."""
        options = log_options(http.query, pod)
        container = log_container(pod, options.container)
        path = self._log_file(pod, container, options.previous)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(http)
        try:
            if path is not None:
                copy = LogCopy(self.containers, pod, container, options, self.follow_interval)
                await copy.run(http, response, path)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        except OSError as error:  # the file went away: the stream just ends, as upstream
            log.warning("reading the log of %s/%s: %s", _pod_name(pod), container, error)
        return response

    def _log_file(self, pod: Mapping[str, Any], container: str, previous: bool) -> Path | None:
        """The file to read, or the kubelet's error (``validateContainerLogStatus``)."""
        name = _pod_name(pod)
        if previous:
            path = self.containers.log_file(pod, container, previous=True)
            if path is None:
                raise errors.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return path
        status = _container_status(pod, container) or {}
        state = status.get("state") or {}
        crashed = (status.get("lastState") or {}).get("terminated") is not None
        if self.containers.is_running(pod, container) or "running" in state:
            return self.containers.log_file(pod, container)
        if "terminated" in state or crashed:
            # A container waiting to restart shows its last instance's output, as upstream.
            path = self.containers.log_file(pod, container) or self.containers.log_file(
                pod, container, previous=True
            )
            if path is None:
                raise errors.bad_request(f'container "{container}" in pod "{name}" is terminated')
            return path
        reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        raise errors.bad_request(
            f'container "{container}" in pod "{name}" is waiting to start: {reason}'
        )

    # -- exec ---------------------------------------------------------------------------------

    async def exec(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/exec``: run a command in a container over the remote-command
        protocol."""
        query = http.query
        container = stream_container(pod, query.get("container", ""))
        command = query.getall("command", [])
        if not command:
            raise errors.bad_request("you must specify at least 1 command")
        tty, stdin = _flag(query, "tty"), _flag(query, "stdin")
        stdout, stderr = _flag(query, "stdout"), _flag(query, "stderr") and not tty
        if not (stdin or stdout or stderr):
            raise errors.bad_request("you must specify at least one of stdin, stdout, stderr")
        target = self._container_process(pod, container)
        ws = self._websocket(http, "exec", EXEC_PROTOCOLS)
        await ws.prepare(http)
        version = EXEC_PROTOCOLS.get(ws.ws_protocol or "", 1)
        try:
            await ExecSession(ws, version, command).run(
                target, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
            )
        finally:
            with anyio.CancelScope(shield=True):
                await ws.close()
        return ws

    def _container_process(self, pod: Mapping[str, Any], container: str) -> ContainerProcess:
        pid = self.containers.container_pid(pod, container)
        if pid is not None:
            with contextlib.suppress(OSError):  # it has just exited
                return ContainerProcess.inspect(pid)
        raise errors.bad_request(f'container not found ("{container}")')

    # -- portforward --------------------------------------------------------------------------

    async def portforward(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/portforward``: TCP to the pod's ports over the port-forward protocol."""
        if _speaks_spdy(http):
            raise errors.bad_request(SPDY_PORTFORWARD)
        ports = parse_ports(http.query.getall("ports", []))
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            name, namespace = _pod_name(pod), pod.get("metadata", {}).get("namespace", "")
            raise errors.bad_request(f'pod not found ("{name}_{namespace}"): it has no IP yet')
        ws = self._websocket(http, "portforward", PORTFORWARD_PROTOCOLS)
        await ws.prepare(http)
        forwards = [PortForward(ws, index, port, pod) for index, port in enumerate(ports)]
        try:
            for forward in forwards:
                await forward.open_channels()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_forward_from_client, ws, forwards, tasks.cancel_scope)
                async with anyio.create_task_group() as pods:
                    for forward in forwards:
                        pods.start_soon(forward.run)
                tasks.cancel_scope.cancel()  # every pod connection has ended
        except ConnectionResetError:
            pass  # the client went away
        finally:
            for forward in forwards:
                forward.close()
            with anyio.CancelScope(shield=True):
                await ws.close()
        return ws

    # -- the rest -----------------------------------------------------------------------------

    async def attach(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/attach``: not supported (containers' stdin is not kept open)."""
        stream_container(pod, http.query.get("container", ""))
        raise errors.bad_request(
            "attach is not supported by the sandbox: use kubectl exec, or kubectl logs -f for "
            "the container's output"
        )

    async def eviction(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/eviction``: not supported here (it is the API server's to implement)."""
        raise errors.bad_request(
            f"eviction is not supported by the sandbox: delete the pod instead "
            f"(kubectl delete pod {_pod_name(pod)})"
        )

    async def ephemeral(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/NAME/ephemeralcontainers``: reading works (it is the pod), changes do not."""
        if http.method == "GET":
            return web.json_response(pod)
        raise errors.bad_request("ephemeral containers are not supported by the sandbox")

    async def proxy(self, http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """``pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]``: one plain HTTP request to the pod."""
        if http.headers.get("Upgrade"):
            raise errors.bad_request("the sandbox's pod proxy does not upgrade connections")
        scheme, port, path = _proxy_target(http, pod)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise errors.APIError(
                503, "ServiceUnavailable", f'pod "{_pod_name(pod)}" has no IP address yet'
            )
        host = f"[{ip}]" if ":" in ip else ip
        query = [(k, v) for k, v in http.query.items() if k != "path"]
        url = URL(f"{scheme}://{host}:{port}{path}", encoded=True)
        headers = {
            k: v
            for k, v in http.headers.items()
            if k.lower() not in HOP_BY_HOP
            and k.lower() != "authorization"
            and not k.lower().startswith("impersonate-")
        }
        try:
            return await _relay(http, url, query, headers)
        except (aiohttp.ClientError, OSError) as error:
            raise errors.APIError(
                503, "ServiceUnavailable", f"error trying to reach service: {error}"
            ) from error

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _websocket(
        http: web.Request, sub: str, protocols: Mapping[str, int] | Sequence[str]
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            protocols=tuple(protocols), compress=False, max_msg_size=MAX_MESSAGE
        )
        if not ws.can_prepare(http).ok:
            raise errors.bad_request(WEBSOCKET_ONLY.format(sub=sub, protocols=", ".join(protocols)))
        return ws


def _speaks_spdy(http: web.Request) -> bool:
    """Whether the client wants SPDY: plain (``Upgrade: SPDY/3.1``), or tunnelled in a
    WebSocket as kubectl 1.31 and later do for port-forward."""
    offered = http.headers.get("Sec-WebSocket-Protocol", "")
    return http.headers.get("Upgrade", "").lower().startswith("spdy/") or "SPDY/" in offered


def _replaced(path: Path, fd: int) -> bool:
    """Whether ``path`` is now another file than the open ``fd`` (the log was rotated)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False  # between the rename and the new file: look again later


def _proxy_target(http: web.Request, pod: Mapping[str, Any]) -> tuple[str, int, str]:
    """Scheme, port and path of a pod proxy request (kube-apiserver's ``ResourceLocation``:
    the port defaults to the first declared container port, else 80)."""
    # /api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]
    parts = http.raw_path.split("?", 1)[0].split("/")
    named = len(parts) >= 8 and parts[3] == "namespaces" and parts[5] == "pods"
    target = parts[6] if named else _pod_name(pod)
    words = target.split(":")
    scheme = words[0] if len(words) == 3 else "http"
    port_text = words[-1] if len(words) >= 2 else ""
    rest = "/".join(parts[8:]) if named else ""
    path = "/" + rest if rest else http.query.get("path", "/")
    if not path.startswith("/"):
        path = "/" + path
    if not port_text:
        for container in pod.get("spec", {}).get("containers") or []:
            if container.get("ports"):
                port_text = str(container["ports"][0].get("containerPort", ""))
                break
    if scheme not in ("http", "https") or not (port_text or "80").isdigit():
        raise errors.bad_request(f"invalid pod proxy target {target!r}")
    return scheme, int(port_text or 80), path


async def _relay(
    http: web.Request, url: URL, query: list[tuple[str, str]], headers: dict[str, str]
) -> web.StreamResponse:
    body = http.content if http.can_read_body else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session,
        session.request(
            http.method,
            url,
            params=query,
            headers=headers,
            data=body,
            allow_redirects=False,
            ssl=False,
        ) as answer,
    ):
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        if "Content-Length" in answer.headers:
            response.content_length = int(answer.headers["Content-Length"])
        await response.prepare(http)
        async for chunk in answer.content.iter_chunked(READ_SIZE):
            await response.write(chunk)
        await response.write_eof()
        return response


__all__ = [
    "Containers",
    "LogFormatter",
    "LogOptions",
    "PodRuntime",
    "exit_status",
    "find_executable",
    "parse_ports",
    "rfc3339_nanoseconds",
    "tail_offset",
]
