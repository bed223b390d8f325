"""The pod a subresource request is for, as the node and the Pod object tell it.

:class:`Containers` is what the kubelet answers about its containers (the running process, the
log files); the rest reads the Pod object the API server fetched: which container a request
means when it names none, worded as kube-apiserver refuses it, and the container's status.
Requests' boolean parameters are read as the API server converts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sandbox.apiserver import errors

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from multidict import MultiMapping

#: How much a read from the pod's side (a log file, a pod's socket, a proxied answer) takes
#: at once.
READ_SIZE = 256 * 1024


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


def flag(query: MultiMapping[str], name: str) -> bool:
    """A boolean query parameter as the API server converts it: present and not false/0."""
    value = query.get(name)
    return value is not None and value.lower() not in ("false", "0")


def go_list(words: Sequence[str]) -> str:
    """Words as Go prints a slice of strings: ``[a b c]``."""
    return f"[{' '.join(words)}]"


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


def pod_ip(pod: Mapping[str, Any]) -> str:
    """The pod's IP address; empty while it has none."""
    return str((pod.get("status") or {}).get("podIP") or "")


def _names(pod: Mapping[str, Any], field: str) -> list[str]:
    return [c.get("name", "") for c in pod.get("spec", {}).get(field) or []]


def _has_container(pod: Mapping[str, Any], name: str) -> bool:
    fields = ("containers", "initContainers", "ephemeralContainers")
    return any(name in _names(pod, field) for field in fields)


def _container(pod: Mapping[str, Any], requested: str, choices: str) -> str:
    """The container named, else the pod's only one; the error for a pod of several ends
    with ``choices``."""
    name = pod_name(pod)
    if requested:
        if not _has_container(pod, requested):
            raise errors.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    containers = _names(pod, "containers")
    if len(containers) == 1:
        return containers[0]
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {name}")
    raise errors.bad_request(
        f"a container name must be specified for pod {name}, choose one of: {choices}"
    )


def log_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container a log request is for (kube-apiserver's ``ValidateContainer``)."""
    fields = ("initContainers", "containers", "ephemeralContainers")
    return _container(pod, requested, go_list([c for f in fields for c in _names(pod, f)]))


def stream_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container an exec or attach is for (kube-apiserver's ``streamLocation``)."""
    choices = go_list(_names(pod, "containers"))
    if init := _names(pod, "initContainers"):
        choices += f" or one of the init containers: {go_list(init)}"
    return _container(pod, requested, choices)


def container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    status = pod.get("status") or {}
    for field in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(field) or []:
            if entry.get("name") == container:
                return entry  # type: ignore[no-any-return]
    return None
