"""Pods as the workload controllers see them: owned, ready, available, ranked for deletion.

These are the helpers of k8s.io/kubernetes/pkg/controller (``controller_utils.go``,
``controller_ref_manager.go``) and pkg/api/v1/pod, as pure functions over stored objects.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sandbox.apiserver.selectors import labels_match, requirements_from_selector

if TYPE_CHECKING:
    from sandbox.apiserver.selectors import Requirement
    from sandbox.apiserver.store import Key, Obj, Store

#: generateName leaves room for its five random characters within the 63 of a label value.
MAX_GENERATE_NAME = 58
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


# -- ownership ---------------------------------------------------------------------------------


def controller_of(obj: Obj) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any (``metav1.GetControllerOf``)."""
    for reference in obj.get("metadata", {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return dict(reference)
    return None


def controller_reference(owner: Obj) -> dict[str, Any]:
    """``metav1.NewControllerRef``: the reference a controller puts on what it makes."""
    metadata = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_of(obj: Obj) -> list[Requirement]:
    return requirements_from_selector(obj.get("spec", {}).get("selector"))


def selects(requirements: list[Requirement], obj: Obj) -> bool:
    """Whether a workload's selector matches ``obj``; an empty selector matches nothing, as
    the controllers treat it (the API refuses one anyway)."""
    return bool(requirements) and labels_match(requirements, obj["metadata"].get("labels"))


def owners(obj: Obj, kind: str, store: Store, key: Key) -> list[tuple[str, str]]:
    """The keys of the ``kind`` objects (stored under ``key``) that should look at ``obj``:
    its controller, when it has one of that kind (none when its controller is of another
    kind), otherwise every one in its namespace whose selector matches it (one may adopt
    it)."""
    namespace = obj["metadata"].get("namespace", "")
    reference = controller_of(obj)
    if reference is not None:
        return [(namespace, reference["name"])] if reference.get("kind") == kind else []
    return [
        (namespace, candidate["metadata"]["name"])
        for candidate in store.list(key, namespace)
        if selects(selector_of(candidate), obj)
    ]


def deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def owned_by(obj: Obj, owner: Obj) -> bool:
    reference = controller_of(obj)
    return reference is not None and reference.get("uid") == owner["metadata"]["uid"]


def with_controller(obj: Obj, owner: Obj) -> Obj:
    """``obj`` adopted by ``owner`` (the patch ``ClaimObject`` sends, as a whole object)."""
    references = [
        r for r in obj["metadata"].get("ownerReferences") or [] if not r.get("controller")
    ]
    return {
        **obj,
        "metadata": {
            **obj["metadata"],
            "ownerReferences": [*references, controller_reference(owner)],
        },
    }


def without_controller(obj: Obj, owner: Obj) -> Obj:
    """``obj`` released by ``owner`` (its selector no longer matches)."""
    uid = owner["metadata"]["uid"]
    metadata = dict(obj["metadata"])
    references = [r for r in metadata.get("ownerReferences") or [] if r.get("uid") != uid]
    if references:
        metadata["ownerReferences"] = references
    else:
        metadata.pop("ownerReferences", None)
    return {**obj, "metadata": metadata}


def generate_name(owner_name: str) -> str:
    """``getPodsPrefix``: the owner's name and a dash, cut to fit the random suffix."""
    return f"{owner_name}-"[:MAX_GENERATE_NAME]


def pod_from_template(template: Obj, owner: Obj, **metadata: Any) -> Obj:
    """``GetPodFromTemplate``: a pod of the template's labels, annotations, finalizers and
    spec, controlled by ``owner``; ``metadata`` adds or overrides (name, generateName)."""
    template_metadata = template.get("metadata") or {}
    pod_metadata: dict[str, Any] = {
        "labels": dict(template_metadata.get("labels") or {}),
        "ownerReferences": [controller_reference(owner)],
    }
    for field in ("annotations", "finalizers"):
        if template_metadata.get(field):
            pod_metadata[field] = template_metadata[field]
    pod_metadata.update(metadata)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_metadata, "spec": template["spec"]}


# -- state ---------------------------------------------------------------------------------------


def active(pod: Obj) -> bool:
    """``IsPodActive``: not finished and not being deleted."""
    return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") and not deleting(pod)


def terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def ready_condition(pod: Obj) -> dict[str, Any] | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def ready(pod: Obj) -> bool:
    condition = ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def running_and_ready(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and ready(pod)


def ready_since(pod: Obj) -> dt.datetime | None:
    condition = ready_condition(pod)
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> bool:
    """``IsPodAvailable``: ready for at least ``minReadySeconds``."""
    if not ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + dt.timedelta(seconds=min_ready_seconds) <= now


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> float | None:
    """How long until a ready pod counts as available, when that is still ahead."""
    since = ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    remaining = (since + dt.timedelta(seconds=min_ready_seconds) - now).total_seconds()
    return remaining if remaining > 0 else None


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def restarts(pod: Obj) -> int:
    return sum(
        int(status.get("restartCount", 0))
        for status in pod.get("status", {}).get("containerStatuses") or []
    )


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Sort key of ``ActivePods``: the pods to delete first sort first.

    Unscheduled before scheduled, Pending before Unknown before Running, not ready before
    ready, lower ``pod-deletion-cost`` first, ready for less time before longer, more
    restarts before fewer, newer before older.
    """
    status = pod.get("status", {})
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    try:
        cost = int(pod["metadata"].get("annotations", {}).get(POD_DELETION_COST, "0"))
    except ValueError:
        cost = 0
    since = ready_since(pod)
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (
        bool(pod.get("spec", {}).get("nodeName")),
        phase_rank,
        ready(pod),
        cost,
        -(since.timestamp() if since else 0.0),
        -restarts(pod),
        -(created.timestamp() if created else 0.0),
        pod["metadata"]["name"],
    )
