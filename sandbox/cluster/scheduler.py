"""The scheduler: binds each new pod to a node.

kube-scheduler's job, reduced to what a sandbox of a few identical nodes needs: a pod without
``spec.nodeName`` goes to the Ready node that matches its ``nodeSelector`` and tolerates its
taints (NoSchedule/NoExecute) and runs the fewest pods, ties broken by name. A pod that no node
fits stays Pending with the ``PodScheduled=False/Unschedulable`` condition and the message
kube-scheduler writes (``0/2 nodes are available: ...``). The binding is what the
``pods/binding`` subresource does: ``spec.nodeName`` is set once and never changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.controllers.controller import PODS, Controller, editable

if TYPE_CHECKING:
    from sandbox.apiserver.store import Change, Key, Obj
    from sandbox.controllers.controller import ObjectKey

NODES: Key = ("", "nodes")


def _ready(node: Obj) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _tolerated(pod: Obj, node: Obj) -> bool:
    tolerations = pod.get("spec", {}).get("tolerations") or []
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return False
    return True


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return bool(
        toleration.get("key") == taint.get("key")
        and toleration.get("value", "") == taint.get("value", "")
    )


def _selected(pod: Obj, node: Obj) -> bool:
    labels = node.get("metadata", {}).get("labels") or {}
    selector = pod.get("spec", {}).get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _running_here(pod: Obj) -> bool:
    return not pod.get("spec", {}).get("nodeName") and not pod.get("metadata", {}).get(
        "deletionTimestamp"
    )


class Scheduler(Controller):
    """Binds unscheduled pods (see the module docstring)."""

    name = "scheduler"
    primary = PODS

    def on_change(self, key: Key, change: Change) -> None:
        if key == PODS and _running_here(change.object) and change.type != "DELETED":
            self.queue.add(
                (change.object["metadata"]["namespace"], change.object["metadata"]["name"])
            )
        elif key == NODES:
            # A node that became Ready (or changed labels) may fit the waiting pods.
            for pod in self.store.list(PODS):
                if _running_here(pod):
                    self.queue.add((pod["metadata"]["namespace"], pod["metadata"]["name"]))

    async def sync(self, key: ObjectKey) -> None:
        namespace, name = key
        pod = self.store.get(PODS, namespace, name)
        if pod is None or not _running_here(pod):
            return
        nodes = self.store.list(NODES)
        ready = [n for n in nodes if _ready(n)]
        fitting = [n for n in ready if _selected(pod, n) and _tolerated(pod, n)]
        if not fitting:
            await self._unschedulable(pod, nodes, ready)
            return
        load: dict[str, int] = {}
        for other in self.store.list(PODS):
            node_name = other.get("spec", {}).get("nodeName")
            if node_name:
                load[node_name] = load.get(node_name, 0) + 1
        chosen = min(
            fitting, key=lambda n: (load.get(n["metadata"]["name"], 0), n["metadata"]["name"])
        )
        bound = editable(pod)
        bound["spec"]["nodeName"] = chosen["metadata"]["name"]
        _set_condition(bound, "True", None, None, self.client.timestamp())
        # As the binding subresource: straight to storage, the one write that may set nodeName.
        self.store.update(PODS, bound)

    async def _unschedulable(self, pod: Obj, nodes: list[Obj], ready: list[Obj]) -> None:
        reasons = []
        if len(ready) < len(nodes):
            reasons.append(f"{len(nodes) - len(ready)} node(s) were not ready")
        if ready:
            reasons.append(
                f"{len(ready)} node(s) didn't match Pod's node affinity/selector or "
                "had untolerated taints"
            )
        message = f"0/{len(nodes)} nodes are available: " + ", ".join(reasons or ["no nodes"]) + "."
        status = pod.get("status", {})
        current = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        if current and current.get("message") == message:
            return
        updated = editable(pod)
        _set_condition(updated, "False", "Unschedulable", message, self.client.timestamp())
        updated.setdefault("status", {}).setdefault("phase", "Pending")
        await self.client.update_status(PODS, updated)


def _set_condition(
    pod: Obj, status: str, reason: str | None, message: str | None, now: str
) -> None:
    conditions = [
        c
        for c in pod.setdefault("status", {}).get("conditions") or []
        if c.get("type") != "PodScheduled"
    ]
    condition: dict[str, Any] = {
        "type": "PodScheduled",
        "status": status,
        "lastTransitionTime": now,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    pod["status"]["conditions"] = [condition, *conditions]
