"""Where the client keeps its files, by the XDG Base Directory Specification (also exported by
:mod:`telepresence.config`; this module imports nothing heavy, for the CLI's start).

- configuration: ``$XDG_CONFIG_HOME/telepresence`` (``~/.config/telepresence``), holding
  ``config.yml``;
- cache and logs: ``$XDG_CACHE_HOME/telepresence`` (``~/.cache/telepresence``) and its
  ``logs``;
- the daemons' unix sockets: ``$XDG_RUNTIME_DIR/telepresence``, else
  ``/tmp/telepresence-<uid>``.

The spec says a relative path in one of these variables is invalid and to be ignored, and an
empty one is as if unset; both then fall back to the default.

The functions only compute paths. :func:`ensure_private_dir` creates one for use: a socket
directory in ``/tmp`` that another user created first, or that others can write to, would let
them stand in for the daemons, so such a directory is refused rather than used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "PrivateDirectoryError",
    "cache_dir",
    "config_dir",
    "config_path",
    "ensure_private_dir",
    "logs_dir",
    "runtime_dir",
]

APP = "telepresence"
CONFIG_FILE = "config.yml"


class PrivateDirectoryError(OSError):
    """A directory of the client cannot be created, or is not safe to use; ``str()`` says
    which and what to do."""


def _xdg(variable: str, default: Path) -> Path:
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else default


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/telepresence``, by default ``~/.config/telepresence``."""
    return _xdg("XDG_CONFIG_HOME", Path.home() / ".config") / APP


def config_path() -> Path:
    """The user's ``config.yml``."""
    return config_dir() / CONFIG_FILE


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/telepresence``, by default ``~/.cache/telepresence``."""
    return _xdg("XDG_CACHE_HOME", Path.home() / ".cache") / APP


def logs_dir() -> Path:
    """Where the daemons write their logs."""
    return cache_dir() / "logs"


def runtime_dir() -> Path:
    """Where the daemons listen (unix sockets): ``$XDG_RUNTIME_DIR/telepresence``, else
    ``/tmp/telepresence-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return Path(runtime) / APP
    # Not tempfile.gettempdir(): $TMPDIR can be long (macOS), and a unix socket's path must
    # fit in sun_path (104 or 108 bytes).
    return Path("/tmp") / f"{APP}-{os.getuid()}"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) unless it exists, and check that it is safe to use.

    Returns:
        ``path``.

    Raises:
        PrivateDirectoryError: It cannot be created, is not a directory, belongs to another
            user, or can be written by its group or by others.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            path.chmod(0o700)  # whatever the umask let through
        status = path.stat()
    except OSError as error:
        raise PrivateDirectoryError(
            f"cannot create the directory {path}: {error.strerror or error}"
        ) from error
    if not stat.S_ISDIR(status.st_mode):
        raise PrivateDirectoryError(f"{path} is not a directory: remove it or move it away")
    if status.st_uid != os.getuid():
        raise PrivateDirectoryError(
            f"{path} belongs to another user (uid {status.st_uid}), so it is not used:"
            " remove it, or set XDG_RUNTIME_DIR, XDG_CACHE_HOME or XDG_CONFIG_HOME elsewhere"
        )
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(status.st_mode)
        raise PrivateDirectoryError(
            f"{path} can be written by other users (mode {mode:04o}), so it is not used:"
            f" run chmod go-w {path}"
        )
    return path
