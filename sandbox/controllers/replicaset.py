"""The ReplicaSet controller: ``spec.replicas`` pods from the template, and a status.

A sync (``syncReplicaSet`` in pkg/controller/replicaset) claims the active pods of the
namespace: those it controls and its selector still matches, plus orphans the selector
matches (adopted by adding a controller ownerReference); pods it controls that no longer
match are released. Then it creates pods from the template (``<name>-<5 random>``, by
generateName) or deletes the surplus, those :func:`~sandbox.controllers.pods.deletion_rank`
puts first (not ready before ready, newer before older), and writes the status: replicas,
fullyLabeledReplicas, readyReplicas, availableReplicas (ready for ``minReadySeconds``) and
observedGeneration. A pod that is ready but not yet available brings the key back when it
will be.

Pods are queued to the ReplicaSet that controls them, or, for orphans, to every ReplicaSet
in the namespace whose selector matches (before or after the change).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sandbox.controllers import pods as podutil
from sandbox.controllers.controller import (
    PODS,
    REPLICA_SETS,
    Controller,
    ObjectKey,
    editable,
    key_of,
)

if TYPE_CHECKING:
    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.controllers.replicaset")
#: At most this many pods are created or deleted in one sync (upstream's burstReplicas).
BURST_REPLICAS = 500


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    primary = REPLICA_SETS

    def on_change(self, key: Key, change: Change) -> None:
        if key == REPLICA_SETS:
            self.queue.add(key_of(change.object))
        elif key == PODS:
            for pod in (change.object, change.previous):
                if pod is not None:
                    for owner in self._owners_of(pod):
                        self.queue.add(owner)

    def _owners_of(self, pod: Obj) -> list[ObjectKey]:
        return podutil.owners(pod, "ReplicaSet", self.store, REPLICA_SETS)

    async def sync(self, key: ObjectKey) -> None:
        namespace, name = key
        rs = self.store.get(REPLICA_SETS, namespace, name)
        if rs is None:
            return  # its pods go with the garbage collector
        claimed = await self._claim(rs)
        if not podutil.deleting(rs):
            await self._manage(rs, claimed)
        rs = self.store.get(REPLICA_SETS, namespace, name)
        if rs is not None:
            await self._update_status(rs, await self._claim(rs))

    async def _claim(self, rs: Obj) -> list[Obj]:
        """``ClaimPods``: the active pods this ReplicaSet controls, after adopting and
        releasing by its selector."""
        selector = podutil.selector_of(rs)
        claimed = []
        for pod in self.store.list(PODS, rs["metadata"]["namespace"]):
            if not podutil.active(pod):
                continue
            reference = podutil.controller_of(pod)
            matches = podutil.selects(selector, pod)
            if reference is not None:
                if reference.get("uid") != rs["metadata"]["uid"]:
                    continue
                if matches or podutil.deleting(rs):
                    claimed.append(pod)
                else:
                    await self.client.update(PODS, podutil.without_controller(pod, rs))
            elif matches and not podutil.deleting(rs):
                claimed.append(await self.client.update(PODS, podutil.with_controller(pod, rs)))
        return claimed

    async def _manage(self, rs: Obj, claimed: list[Obj]) -> None:
        wanted = int(rs["spec"].get("replicas", 1))
        difference = len(claimed) - wanted
        if difference < 0:
            count = min(-difference, BURST_REPLICAS)
            template = rs["spec"]["template"]
            for _ in range(count):
                pod = podutil.pod_from_template(
                    template, rs, generateName=podutil.generate_name(rs["metadata"]["name"])
                )
                created = await self.client.create(PODS, rs["metadata"]["namespace"], pod)
                await self.client.record_event(
                    rs, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}"
                )
        elif difference > 0:
            surplus = sorted(claimed, key=podutil.deletion_rank)[: min(difference, BURST_REPLICAS)]
            for pod in surplus:
                await self.client.delete(PODS, pod)
                await self.client.record_event(
                    rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}"
                )

    async def _update_status(self, rs: Obj, claimed: list[Obj]) -> None:
        spec = rs["spec"]
        min_ready = int(spec.get("minReadySeconds", 0))
        now = self.client.now()
        template_labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
        status: dict[str, Any] = {
            "replicas": len(claimed),
            "fullyLabeledReplicas": sum(
                1
                for pod in claimed
                if all(
                    (pod["metadata"].get("labels") or {}).get(k) == v
                    for k, v in template_labels.items()
                )
            ),
            "readyReplicas": sum(1 for pod in claimed if podutil.ready(pod)),
            "availableReplicas": sum(
                1 for pod in claimed if podutil.available(pod, min_ready, now)
            ),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if conditions := rs.get("status", {}).get("conditions"):
            status["conditions"] = conditions
        # The API omits zero counts (omitempty), except replicas.
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        if status != rs.get("status"):
            updated = editable(rs)
            updated["status"] = status
            await self.client.update_status(REPLICA_SETS, updated)
        pending = [
            seconds
            for pod in claimed
            if (seconds := podutil.seconds_until_available(pod, min_ready, now)) is not None
        ]
        if pending:
            self.queue.add_after(key_of(rs), min(pending) + 0.01)
