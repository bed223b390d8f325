"""How exec runs a command inside a container, as ``runc exec`` does.

The command runs through the namespace launcher (:data:`sandbox.node.netns.ENTER`) in the
container process's network, UTS and mount namespaces, its root and working directory, with
its environment: :class:`ContainerProcess` reads them from ``/proc/PID`` of the container's
main process. The program is looked up in the container's root first, so that "cannot start"
is told apart from "exited with 127". The command gets a process group of its own, so that
ending it ends everything it started. With a terminal it runs on a pseudo-terminal that is
its controlling one (what a shell's job control and Ctrl-C need), whose size follows the
client's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from sandbox.apiserver import errors
from sandbox.node import netns
from sandbox.node.runtime._channels import STDERR, STDOUT

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sandbox.node.runtime._pods import Containers

#: The ``PATH`` containerd puts in a container's spec when the image gives none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Runs a terminal's command as the leader of a new session with the terminal as its
#: controlling one (what a shell's job control and Ctrl-C need), then the launcher.
_CONTROLLING_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"
)


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


def container_process(
    containers: Containers, pod: Mapping[str, Any], container: str
) -> ContainerProcess:
    """The running container's main process, or the kubelet's error when there is none."""
    pid = containers.container_pid(pod, container)
    if pid is not None:
        with contextlib.suppress(OSError):  # it has just exited
            return ContainerProcess.inspect(pid)
    raise errors.bad_request(f'container not found ("{container}")')


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
