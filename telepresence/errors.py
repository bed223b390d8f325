"""What can go wrong connecting, as the user reads it: one hierarchy, one exit code each.

Every expected failure of ``telepresence connect`` and the commands around it is a
:class:`TelepresenceError` whose ``str()`` is one paragraph: what happened, and what to do.
The daemons raise these; a gRPC call carries the class's :attr:`~TelepresenceError.kind` in the
trailing metadata key :data:`ERROR_KIND_KEY`, and :func:`from_status` raises the same class on
the client side, so the CLI maps it to the same exit code wherever it happened. Anything else
is a bug, and gets a traceback.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "ERROR_KIND_KEY",
    "ClusterUnreachable",
    "ConfigError",
    "DaemonError",
    "ExitCode",
    "ManagerNotFound",
    "ManagerRefused",
    "NotConnected",
    "SessionConflict",
    "TelepresenceError",
    "error_class",
    "from_status",
]

#: The trailing metadata key that names an error's class across gRPC.
ERROR_KIND_KEY = "telepresence-error"


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    #: Anything else that failed (the message says what).
    FAILED = 1
    #: The command line is wrong (Click's own usage errors).
    USAGE = 2
    #: A values file or a --set/--set-string/--set-json argument is malformed.
    BAD_VALUES = 3
    #: The chart refused the values: schema, a template's check (namespace collision), lint.
    REJECTED = 4
    #: The release is not in the state the command needs: already installed, not installed.
    RELEASE_STATE = 5
    #: No usable kubeconfig or context, or the cluster's API server does not answer.
    UNREACHABLE = 6
    #: The traffic-manager did not become ready (or go away) in time.
    TIMEOUT = 7
    #: config.yml (or another local setting) is malformed.
    CONFIG = 8
    #: No traffic-manager in the manager namespace.
    MANAGER_NOT_FOUND = 9
    #: The traffic-manager (or the cluster's RBAC) refused this user.
    REFUSED = 10
    #: A daemon could not be started or reached.
    DAEMON = 11
    #: The command needs a connection and there is none, or another one is in the way.
    NOT_CONNECTED = 12
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


class TelepresenceError(Exception):
    """Base of every expected failure; ``str()`` is the message for the user."""

    kind: ClassVar[str] = "failed"
    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class ConfigError(TelepresenceError):
    """config.yml, a flag's value or the kubeconfig is malformed (the message names which)."""

    kind = "config"
    exit_code = ExitCode.CONFIG


class ClusterUnreachable(TelepresenceError):
    """No usable kubeconfig or context, or no answer from the cluster's API server."""

    kind = "unreachable"
    exit_code = ExitCode.UNREACHABLE


class ManagerNotFound(TelepresenceError):
    """No Ready traffic-manager pod in the manager namespace."""

    kind = "manager-not-found"
    exit_code = ExitCode.MANAGER_NOT_FOUND


class ManagerRefused(TelepresenceError):
    """The traffic-manager (or the API server, for the port-forward) refused this user."""

    kind = "refused"
    exit_code = ExitCode.REFUSED


class DaemonError(TelepresenceError):
    """A daemon could not be started, or stopped answering."""

    kind = "daemon"
    exit_code = ExitCode.DAEMON


class NotConnected(TelepresenceError):
    """The command needs a connection and there is none."""

    kind = "not-connected"
    exit_code = ExitCode.NOT_CONNECTED


class SessionConflict(TelepresenceError):
    """Connected already, to another cluster, namespace or manager: quit first."""

    kind = "conflict"
    exit_code = ExitCode.NOT_CONNECTED


_CLASSES: dict[str, type[TelepresenceError]] = {
    cls.kind: cls
    for cls in (
        TelepresenceError,
        ConfigError,
        ClusterUnreachable,
        ManagerNotFound,
        ManagerRefused,
        DaemonError,
        NotConnected,
        SessionConflict,
    )
}


def error_class(kind: str | None) -> type[TelepresenceError]:
    """The class a ``telepresence-error`` value names (the base class for unknown ones)."""
    return _CLASSES.get(kind or "", TelepresenceError)


def from_status(message: str | None, metadata: object) -> TelepresenceError:
    """The error a daemon's gRPC failure stands for, from its message and trailing metadata
    (a grpclib ``_Metadata`` multidict, or any mapping)."""
    kind = None
    getter = getattr(metadata, "get", None)
    if callable(getter):
        value = getter(ERROR_KIND_KEY)
        kind = value if isinstance(value, str) else None
    return error_class(kind)(message or "the daemon failed without saying why")
