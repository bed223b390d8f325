"""Enter a sandbox namespace, set up a private filesystem view, then run a program.

This file runs as a script (``python -I -S enter.py OPTIONS -- PROGRAM ARGS...``), never
imported by the daemons: namespace changes that need a single-threaded process (a new mount
namespace unshares the filesystem context, which a threaded process cannot) are made here,
in a process of their own, just before ``exec``. It uses the standard library only so that it
starts in a few milliseconds.

Order of operations:

1. ``--net`` / ``--uts`` / ``--mnt`` join existing namespaces (``/run/netns/NAME`` or
   ``/proc/PID/ns/...``), and ``--root /proc/PID/root`` takes a running process's root
   directory: how ``kubectl exec`` enters a running container.
2. ``--private-mounts`` unshares a mount namespace and makes every mount in it private
   *before* anything is mounted, so that nothing done here propagates to the host's mount
   table; the namespace and its mounts vanish with the last process in it.
3. ``--bind SRC:DST`` / ``--ro-bind SRC:DST`` mount a file or directory at ``DST``. A ``DST``
   that does not exist is made without touching the host's filesystem: its nearest existing
   ancestor is *shadowed* (a tmpfs over it, each original entry bound back into it), and the
   missing part is created on the tmpfs. Shadowing ``/`` itself builds a new root the same
   way and ``chroot``\\s into it at the end. Every source, and the stage, is opened before
   the first mount and mounted from its descriptor, so that one volume mounted over another's
   source (an emptyDir at ``/tmp`` over a sandbox kept in ``/tmp``) hides nothing.
4. ``--hostname`` sets the host name in a new UTS namespace; ``--chdir`` changes directory;
   ``--die-with-parent`` asks the kernel to kill the program when its parent exits.
5. ``--exec-fd N`` tells the caller when the program starts. Fd ``N`` (the write end of a
   pipe the caller passed down) stays open through the setup and is marked close-on-exec
   just before ``exec``, so the caller reads end of file on the other end exactly when the
   program has replaced the launcher: from then on its mounts are in place. A launcher that
   fails closes it too, by exiting; the exit status (127) and the message tell the two apart.

A step that fails for a reason it knows (:class:`EnterError`) ends the launcher with status
127 and one line on stderr, ``sandbox: `` and what failed; the program never runs. The
environment is passed through unchanged: the caller builds it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class EnterError(Exception):
    """A namespace or mount step failed; the message names the step."""


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def b(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    if _libc.mount(b(source), b(target), b(fstype), flags, b(data) if data else None) != 0:
        errno = ctypes.get_errno()
        raise EnterError(f"mount {source or fstype} on {target}: {os.strerror(errno)}")


def umount(target: str) -> None:
    _libc.umount2(target.encode(), MNT_DETACH)


def join(path: str, nstype: int, what: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise EnterError(f"cannot open the {what} namespace {path}: {error.strerror}") from None
    try:
        os.setns(fd, nstype)
    except OSError as error:
        raise EnterError(f"cannot enter the {what} namespace {path}: {error.strerror}") from None
    finally:
        os.close(fd)


class View:
    """The private filesystem view being built: where "/" currently is, and which
    directories are our own tmpfs (safe to create entries in)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.root = ""  # "" while the host's root is the root; else the new root's path
        self.owned: set[str] = set()  # paths (under the view's root) on our own tmpfs
        self.serial = 0

    def real(self, path: str) -> str:
        return self.root + path if self.root else path

    def _stage_dir(self) -> str:
        self.serial += 1
        path = os.path.join(self.stage, f"{os.getpid()}-{self.serial}")
        os.mkdir(path, 0o700)
        return path

    def ensure(self, path: str, directory: bool) -> None:
        """Make ``path`` (absolute, in the view) exist, shadowing what must be shadowed."""
        if os.path.lexists(self.real(path)):
            return
        parent = os.path.dirname(path)
        self.ensure(parent, directory=True)
        if parent not in self.owned:
            self.shadow(parent)
        target = self.real(path)
        if directory:
            os.mkdir(target, 0o755)
            self.owned.add(path)
        else:
            with open(target, "x"):
                pass

    def shadow(self, path: str) -> None:
        """Cover directory ``path`` with a tmpfs that holds the same entries, bound back."""
        if path == "/":
            self.new_root()
            return
        target = self.real(path)
        original = self._stage_dir()
        mount(target, original, None, MS_BIND | MS_REC)
        mode = os.stat(target).st_mode & 0o7777
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}")
        self._populate(original, target)
        umount(original)
        self.owned.add(path)

    def new_root(self) -> None:
        """Build a root of our own: a tmpfs with every top-level entry of ``/`` bound in."""
        root = self._stage_dir()
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        self._populate("/", root)
        self.root = root
        self.owned.add("/")

    def _populate(self, source: str, target: str) -> None:
        for entry in os.listdir(source):
            origin = os.path.join(source, entry)
            copy = os.path.join(target, entry)
            if os.path.islink(origin):
                os.symlink(os.readlink(origin), copy)
            elif os.path.isdir(origin):
                os.mkdir(copy)
                mount(origin, copy, None, MS_BIND | MS_REC)
            else:
                with open(copy, "x"):
                    pass
                mount(origin, copy, None, MS_BIND)

    def bind(self, source: Held, destination: str, read_only: bool) -> None:
        path = os.path.realpath(destination)  # the view mirrors the host's existing paths
        self.ensure(path, directory=source.directory)
        target = self.real(path)
        flags = MS_BIND | (MS_REC if source.directory else 0)
        mount(source.handle, target, None, flags)
        if read_only:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def enter(self) -> None:
        if self.root:
            os.chdir(self.root)
            os.chroot(".")
            os.chdir("/")


class Held:
    """A path opened before anything is mounted, and mounted from its descriptor: a mount
    over one of its parents (a volume at ``/tmp``, say) must not hide it."""

    def __init__(self, path: str, what: str) -> None:
        try:
            self.fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError as error:
            raise EnterError(f"cannot mount {what}: {path}: {error.strerror}") from None
        self.directory = os.path.isdir(path)
        self.handle = f"/proc/self/fd/{self.fd}"


def parse(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    if "--" not in argv:
        raise EnterError("usage: enter.py [OPTIONS] -- PROGRAM [ARGS...]")
    split = argv.index("--")
    options: dict[str, list[str]] = {}
    words = argv[:split]
    flags = ("--private-mounts", "--die-with-parent")
    i = 0
    while i < len(words):
        name = words[i]
        if name in flags:
            options.setdefault(name, []).append("")
            i += 1
            continue
        if i + 1 >= len(words) or not name.startswith("--"):
            raise EnterError(f"bad option {name!r}")
        options.setdefault(name, []).append(words[i + 1])
        i += 2
    command = argv[split + 1 :]
    if not command:
        raise EnterError("no program to run")
    return options, command


def exec_fd(value: str) -> int:
    """The ``--exec-fd`` descriptor: an open one, and not stdin, stdout or stderr (the
    program's own, which close-on-exec would take from it)."""
    if not value.isdigit() or int(value) < 3:
        raise EnterError(f"bad --exec-fd {value!r}: expected a file descriptor from 3 up")
    fd = int(value)
    try:
        os.fstat(fd)
    except OSError as error:
        raise EnterError(f"bad --exec-fd {fd}: {error.strerror}") from None
    return fd


def main(argv: list[str]) -> None:
    options, command = parse(argv)
    exec_fds = [exec_fd(value) for value in options.get("--exec-fd", [])]
    if "--die-with-parent" in options:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for option, nstype, what in (
        ("--net", os.CLONE_NEWNET, "network"),
        ("--uts", os.CLONE_NEWUTS, "UTS"),
        ("--mnt", os.CLONE_NEWNS, "mount"),
    ):
        for path in options.get(option, []):
            join(path, nstype, what)
    for root in options.get("--root", []):
        # A running container's root (``/proc/PID/root``), after joining its mount namespace.
        os.chroot(root)
        os.chdir("/")
    binds = [(b, False) for b in options.get("--bind", [])]
    binds += [(b, True) for b in options.get("--ro-bind", [])]
    if "--private-mounts" in options:
        os.unshare(os.CLONE_NEWNS)
        # Before any mount: nothing done in this namespace may reach the host's.
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    elif binds:
        raise EnterError("--bind needs --private-mounts")
    if binds:
        stages = options.get("--stage")
        if not stages:
            raise EnterError("--bind needs --stage DIR (an empty directory of the caller's)")
        view = View(Held(os.path.realpath(stages[-1]), "the stage").handle)
        # Shallow destinations first, so that a mount inside another one lands on top of it.
        specs: list[tuple[Held, str, bool]] = []
        for spec, read_only in binds:
            path, sep, destination = spec.partition(":")
            if not sep or not destination.startswith("/"):
                raise EnterError(f"bad mount {spec!r}: expected SOURCE:/ABSOLUTE/DESTINATION")
            if not os.path.exists(path):
                raise EnterError(f"cannot mount {path} at {destination}: it does not exist")
            specs.append((Held(path, f"{path} at {destination}"), destination, read_only))
        for held, destination, read_only in sorted(specs, key=lambda s: s[1].count("/")):
            view.bind(held, destination, read_only)
        view.enter()
    for hostname in options.get("--hostname", []):
        os.unshare(os.CLONE_NEWUTS)
        socket.sethostname(hostname)
    for directory in options.get("--chdir", []):
        try:
            os.chdir(directory)
        except OSError as error:
            raise EnterError(f"cannot change to {directory}: {error.strerror}") from None
    for fd in exec_fds:
        os.set_inheritable(fd, False)  # closed by the exec itself: the caller's signal
    try:
        os.execvp(command[0], command)
    except OSError as error:
        raise EnterError(f"cannot run {command[0]}: {error.strerror}") from None


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except EnterError as failure:
        print(f"sandbox: {failure}", file=sys.stderr)
        sys.exit(127)
