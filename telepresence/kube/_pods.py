"""Which pod to talk to: the newest Ready one, and the ports its containers name.

A pod is worth forwarding to when its ``Ready`` condition is ``True`` (the kubelet's probes
passed, so the process listens) and it is not being deleted: a pod with a
``deletionTimestamp`` is shutting down even while it still reports Ready, and a connection
made now would be cut when it goes. Among several, the newest is preferred: after a rollout
the older ones are those about to be replaced. Pods are plain JSON dictionaries, as the API
server sends them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["is_ready", "named_ports", "newest_ready_pod"]

type Object = dict[str, Any]


def is_ready(pod: Object) -> bool:
    """Whether the pod is Ready and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in conditions
    )


def newest_ready_pod(pods: Iterable[Object]) -> Object | None:
    """The most recently created Ready pod, or None when none is Ready.

    Creation times have a resolution of one second; pods created within the same second are
    ordered by name, so that the choice does not depend on the order of the list.
    """
    ready = [pod for pod in pods if is_ready(pod)]
    if not ready:
        return None
    return max(ready, key=_age_key)


def named_ports(pod: Object) -> dict[str, int]:
    """The pod's named container ports, ``{name: containerPort}``. Kubernetes requires a
    port name to be unique within the pod; should one repeat anyway, the first one counts."""
    ports: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            name, number = port.get("name"), port.get("containerPort")
            if name and isinstance(number, int):
                ports.setdefault(str(name), number)
    return ports


def _age_key(pod: Object) -> tuple[str, str]:
    metadata = pod.get("metadata") or {}
    # RFC 3339 times in UTC ("...Z"), as the API server writes them, sort as strings.
    return str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or "")
