"""The arithmetic of Deployments, as pkg/controller/deployment/util computes it: pure
functions over stored objects, no I/O.

``maxSurge`` and ``maxUnavailable`` are ints or percentages of ``spec.replicas``; a surge
percentage rounds up and an unavailable one down, and when both come to zero one pod may be
unavailable, or no rollout could ever progress (``ResolveFenceposts``).

Upstream counts a ReplicaSet's pods by its ``spec.replicas`` alone and relies on its
ReplicaSet controller acting quickly. Here, where the ReplicaSet controllers run alongside,
the bounds are kept for the pods that exist: a ReplicaSet counts as
:func:`pods_of` = max(spec.replicas, status.replicas) pods (a scaled-down one still has its
pods until its controller removed them) and :func:`available_of` = min(spec.replicas,
status.availableReplicas) available ones (a scaled-down one is about to lose some). So a
rollout never has more than ``replicas + maxSurge`` pods, nor fewer than ``replicas -
maxUnavailable`` available, at any moment a watch shows.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from sandbox.controllers.pods import parse_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sandbox.apiserver.store import Obj

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Annotations a Deployment does not pass on to its ReplicaSets (``annotationsToSkip``).
NOT_COPIED = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
     "deprecated.deployment.rollback.to"}
)  # fmt: skip
#: ``--deployment-controller``'s limit on the revision-history annotation.
MAX_REVISION_HISTORY_CHARS = 2000
#: ``rand.SafeEncodeString``'s alphabet: no vowels, no look-alike digits.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_PERCENT = re.compile(r"^(\d+)%$")
#: A progressDeadlineSeconds of MaxInt32 means "no deadline".
NO_DEADLINE = 2**31 - 1


# -- the template hash -----------------------------------------------------------------------


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """A stable name for a pod template, in the form of ``controller.ComputeHash``: a 32-bit
    FNV-1a of the template (here its canonical JSON) and the collision count, its decimal
    digits spelled in the safe alphabet."""
    data = json.dumps(without_nulls(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in str(value).encode())


def equal_ignoring_hash(a: Obj, b: Obj) -> bool:
    """``EqualIgnoreHash``: templates equal but for the ``pod-template-hash`` label."""

    def strip(template: Obj) -> Any:
        metadata = dict(template.get("metadata") or {})
        labels = metadata.get("labels") or {}
        metadata["labels"] = {k: v for k, v in labels.items() if k != POD_TEMPLATE_HASH}
        return without_nulls({**template, "metadata": metadata})

    return bool(strip(a) == strip(b))


def without_nulls(value: Any) -> Any:
    """``value`` as Go decodes it: a null is the zero value, the same as no field at all (a
    template ``kubectl rollout undo`` sends has ``metadata.creationTimestamp: null``)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# -- fenceposts ------------------------------------------------------------------------------


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """``GetScaledValueFromIntOrPercent``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    match = _PERCENT.match(value)
    if match is None:
        if value.isdigit():
            return int(value)
        raise ValueError(f"invalid value for IntOrString: invalid value {value!r}")
    product = int(match.group(1)) * total
    return math.ceil(product / 100) if round_up else product // 100


def rolling(deployment: Obj) -> bool:
    strategy = deployment["spec"].get("strategy", {}).get("type", "RollingUpdate")
    return bool(strategy == "RollingUpdate")


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """``ResolveFenceposts``: (maxSurge, maxUnavailable) in pods."""
    params = deployment["spec"].get("strategy", {}).get("rollingUpdate") or {}
    replicas = replicas_of(deployment)
    surge = scaled_value(params.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = scaled_value(params.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(deployment: Obj) -> int:
    return fenceposts(deployment)[0] if rolling(deployment) else 0


def max_unavailable(deployment: Obj) -> int:
    """``MaxUnavailable``: never more than the replicas; zero for Recreate or no replicas."""
    replicas = replicas_of(deployment)
    if not rolling(deployment) or replicas == 0:
        return 0
    return min(fenceposts(deployment)[1], replicas)


# -- counting ------------------------------------------------------------------------------


def replicas_of(obj: Obj) -> int:
    return int(obj["spec"].get("replicas", 1))


def pods_of(rs: Obj) -> int:
    """The pods a ReplicaSet has or is about to have (see the module docstring)."""
    return max(replicas_of(rs), int(rs.get("status", {}).get("replicas", 0)))


def available_of(rs: Obj) -> int:
    """The available pods a ReplicaSet keeps (see the module docstring)."""
    return min(replicas_of(rs), int(rs.get("status", {}).get("availableReplicas", 0)))


def status_count(replica_sets: Iterable[Obj | None], field: str) -> int:
    return sum(int((rs or {}).get("status", {}).get(field, 0)) for rs in replica_sets)


def active(replica_sets: Iterable[Obj | None]) -> list[Obj]:
    """``FilterActiveReplicaSets``: those asked for at least one pod."""
    return [rs for rs in replica_sets if rs is not None and replicas_of(rs) > 0]


def revision_of(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata", {}).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def by_creation(obj: Obj) -> tuple[float, str]:
    """``ReplicaSetsByCreationTimestamp``: oldest first, then by name."""
    created = parse_time(obj["metadata"].get("creationTimestamp"))
    return (created.timestamp() if created else 0.0, obj["metadata"]["name"])


def new_replicas(deployment: Obj, replica_sets: list[Obj], new_rs: Obj) -> int:
    """``NewRSNewReplicas``: how far the new ReplicaSet may grow now."""
    if not rolling(deployment):
        return replicas_of(deployment)
    replicas = replicas_of(deployment)
    current = sum(pods_of(rs) for rs in replica_sets)
    most = replicas + max_surge(deployment)
    if current >= most:
        return replicas_of(new_rs)
    return replicas_of(new_rs) + min(most - current, replicas - replicas_of(new_rs))


def complete(deployment: Obj, status: Obj) -> bool:
    """``DeploymentComplete``: every replica updated and available, the spec observed."""
    replicas = replicas_of(deployment)
    return bool(
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
    )


def progressing(deployment: Obj, status: Obj) -> bool:
    """``DeploymentProgressing``: more updated, fewer old, more ready or available pods."""
    old = deployment.get("status", {})

    def old_pods(s: Obj) -> int:
        return int(s.get("replicas", 0)) - int(s.get("updatedReplicas", 0))

    return (
        status.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or old_pods(status) < old_pods(old)
        or status.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or status.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )


def progress_deadline(deployment: Obj) -> int | None:
    seconds = deployment["spec"].get("progressDeadlineSeconds")
    return None if seconds is None or seconds == NO_DEADLINE else int(seconds)


# -- conditions ------------------------------------------------------------------------------


def condition(status: Obj, kind: str) -> dict[str, Any] | None:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def set_condition(status: Obj, new: dict[str, Any]) -> None:
    """``SetDeploymentCondition``: same status and reason is no change; same status keeps
    its lastTransitionTime."""
    current = condition(status, new["type"])
    if current and current["status"] == new["status"] and current["reason"] == new["reason"]:
        return
    if current and current["status"] == new["status"]:
        new = {**new, "lastTransitionTime": current.get("lastTransitionTime")}
    status["conditions"] = [
        *(c for c in status.get("conditions") or [] if c.get("type") != new["type"]),
        new,
    ]


def remove_condition(status: Obj, kind: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    if not status["conditions"]:
        del status["conditions"]


def new_condition(kind: str, state: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": state,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }
