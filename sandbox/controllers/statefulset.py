"""The StatefulSet controller: pods with stable names, made and removed in order.

A sync follows ``updateStatefulSet`` of pkg/controller/statefulset:

- Revisions are ControllerRevisions ``<set>-<hash>`` holding the template (as the strategic
  merge patch upstream stores); the one of the current template is ``updateRevision``, the
  one every pod had when the last update completed is ``currentRevision``. Each pod carries
  its revision in the ``controller-revision-hash`` label.
- Pod ``<set>-<ordinal>`` for each ordinal in ``[start, start + replicas)``, with
  ``hostname`` its name and ``subdomain`` the ``serviceName`` (so a headless Service's
  DNS names each one) and the labels ``statefulset.kubernetes.io/pod-name`` and
  ``apps.kubernetes.io/pod-index``. A finished pod is deleted and made again.
- OrderedReady creates one pod at a time, the next only once every lower one is Running and
  Ready (and available for ``minReadySeconds``), and removes surplus pods from the highest
  ordinal down, one at a time, while the others are healthy; Parallel does each all at once.
- RollingUpdate then replaces pods not of ``updateRevision``, highest ordinal first, one at
  a time, each after the previous replacement is healthy, down to ``partition`` (pods below
  it are made from the current revision). OnDelete leaves pods until someone deletes them.
- The status: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision, updateRevision, observedGeneration, collisionCount.

Not done: volumeClaimTemplates (no PersistentVolumeClaims are made; there is no storage
provisioner here) and the cleanup of old ControllerRevisions beyond revisionHistoryLimit.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from sandbox.controllers import pods as podutil
from sandbox.controllers import rollout
from sandbox.controllers.controller import (
    CONTROLLER_REVISIONS,
    PODS,
    STATEFUL_SETS,
    Controller,
    ObjectKey,
    editable,
    key_of,
)

if TYPE_CHECKING:
    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.controllers.statefulset")
REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
HASH_LABEL = "controller.kubernetes.io/hash"


class StatefulSetController(Controller):
    name = "statefulset-controller"
    primary = STATEFUL_SETS

    def on_change(self, key: Key, change: Change) -> None:
        if key == STATEFUL_SETS:
            self.queue.add(key_of(change.object))
        elif key == PODS:
            for pod in (change.object, change.previous):
                if pod is None:
                    continue
                for owner in podutil.owners(pod, "StatefulSet", self.store, STATEFUL_SETS):
                    self.queue.add(owner)

    async def sync(self, key: ObjectKey) -> None:
        sts = self.store.get(STATEFUL_SETS, *key)
        if sts is None:
            return
        members = await self._claim(sts)
        current, update = await self._revisions(sts)
        if not podutil.deleting(sts):
            await self._update(sts, members, current, update)
        sts = self.store.get(STATEFUL_SETS, *key)
        if sts is not None:
            await self._update_status(sts, await self._claim(sts), current, update)

    # -- pods -----------------------------------------------------------------------------------

    async def _claim(self, sts: Obj) -> dict[int, Obj]:
        """The pods of this set by ordinal: those it controls, and orphans of its selector
        named as its members (``isMemberOf``)."""
        selector = podutil.selector_of(sts)
        name = sts["metadata"]["name"]
        pattern = re.compile(rf"^{re.escape(name)}-(\d+)$")
        members: dict[int, Obj] = {}
        for pod in self.store.list(PODS, sts["metadata"]["namespace"]):
            match = pattern.match(pod["metadata"]["name"])
            reference = podutil.controller_of(pod)
            matches = podutil.selects(selector, pod) and match is not None
            if reference is not None:
                if reference.get("uid") != sts["metadata"]["uid"]:
                    continue
                if not matches and not podutil.deleting(sts):
                    await self.client.update(PODS, podutil.without_controller(pod, sts))
                    continue
                member = pod
            elif matches and not podutil.deleting(sts) and not podutil.deleting(pod):
                member = await self.client.update(PODS, podutil.with_controller(pod, sts))
            else:
                continue
            if match is not None:
                members[int(match.group(1))] = member
        return members

    def _new_pod(self, sts: Obj, template: Obj, revision: str, ordinal: int) -> Obj:
        name = f"{sts['metadata']['name']}-{ordinal}"
        pod = podutil.pod_from_template(template, sts, name=name)
        pod["metadata"]["labels"].update(
            {POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal), REVISION_LABEL: revision}
        )
        spec = pod["spec"] = editable(pod["spec"])
        spec["hostname"] = name
        if service := sts["spec"].get("serviceName"):
            spec["subdomain"] = service
        return pod

    async def _update(self, sts: Obj, members: dict[int, Obj], current: Obj, update: Obj) -> None:
        spec = sts["spec"]
        start = int((spec.get("ordinals") or {}).get("start", 0))
        replicas = int(spec.get("replicas", 1))
        wanted = range(start, start + replicas)
        monotonic = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        min_ready = int(spec.get("minReadySeconds", 0))
        now = self.client.now()
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
        condemned = [members[o] for o in sorted(members, reverse=True) if o not in wanted]
        unhealthy = [
            members[o]
            for o in [*sorted(o for o in members if o in wanted), *sorted(members)]
            if not _healthy(members[o])
        ]
        first_unhealthy = unhealthy[0] if unhealthy else None

        for ordinal in wanted:
            pod = members.get(ordinal)
            if pod is None:
                if rolling and ordinal < start + partition:
                    template, revision = _template_of(current), current["metadata"]["name"]
                else:
                    template, revision = spec["template"], update["metadata"]["name"]
                created = await self.client.create(
                    PODS,
                    sts["metadata"]["namespace"],
                    self._new_pod(sts, template, revision, ordinal),
                )
                members[ordinal] = created
                await self.client.record_event(
                    sts,
                    "SuccessfulCreate",
                    f"create Pod {created['metadata']['name']} in StatefulSet "
                    f"{sts['metadata']['name']} successful",
                )
                if monotonic:
                    return
                continue
            if podutil.terminal(pod):
                # Made again on the next sync, once this one is gone.
                if not podutil.deleting(pod):
                    await self.client.delete(PODS, pod)
                return
            if monotonic and (podutil.deleting(pod) or not podutil.running_and_ready(pod)):
                return
            if monotonic and not podutil.available(pod, min_ready, now):
                wait = podutil.seconds_until_available(pod, min_ready, now)
                if wait is not None:
                    self.queue.add_after(key_of(sts), wait + 0.01)
                return

        for pod in condemned:
            if podutil.deleting(pod):
                if monotonic:
                    return
                continue
            if monotonic and not podutil.running_and_ready(pod) and pod is not first_unhealthy:
                return
            await self._delete_pod(sts, pod)
            if monotonic:
                return

        if not rolling:
            return
        for ordinal in sorted((o for o in wanted if o in members), reverse=True):
            if ordinal < start + partition:
                break
            pod = members[ordinal]
            revision = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL)
            if revision != update["metadata"]["name"] and not podutil.deleting(pod):
                await self._delete_pod(sts, pod)
                return
            if not _healthy(pod):
                return

    async def _delete_pod(self, sts: Obj, pod: Obj) -> None:
        await self.client.delete(PODS, pod)
        await self.client.record_event(
            sts,
            "SuccessfulDelete",
            f"delete Pod {pod['metadata']['name']} in StatefulSet "
            f"{sts['metadata']['name']} successful",
        )

    # -- revisions ------------------------------------------------------------------------------

    async def _revisions(self, sts: Obj) -> tuple[Obj, Obj]:
        """(current, update) ControllerRevisions, making the update one if it is new."""
        owned = [
            r
            for r in self.store.list(CONTROLLER_REVISIONS, sts["metadata"]["namespace"])
            if podutil.owned_by(r, sts)
        ]
        data = {"spec": {"template": {**sts["spec"]["template"], "$patch": "replace"}}}
        latest = max((int(r.get("revision", 0)) for r in owned), default=0)
        wanted = rollout.without_nulls(data)
        update = next((r for r in owned if rollout.without_nulls(r.get("data")) == wanted), None)
        if update is None:
            collisions = int(sts.get("status", {}).get("collisionCount") or 0)
            revision_hash = rollout.template_hash(data, collisions)
            update = await self.client.create(
                CONTROLLER_REVISIONS,
                sts["metadata"]["namespace"],
                {
                    "apiVersion": "apps/v1",
                    "kind": "ControllerRevision",
                    "metadata": {
                        "name": f"{sts['metadata']['name']}-{revision_hash}",
                        "labels": {
                            **(sts["spec"]["template"].get("metadata", {}).get("labels") or {}),
                            HASH_LABEL: revision_hash,
                        },
                        "ownerReferences": [podutil.controller_reference(sts)],
                    },
                    "data": data,
                    "revision": latest + 1,
                },
            )
        elif int(update.get("revision", 0)) < latest:
            # Back to an older template (a rollback): it becomes the latest revision.
            renumbered = editable(update)
            renumbered["revision"] = latest + 1
            update = await self.client.update(CONTROLLER_REVISIONS, renumbered)
        current_name = sts.get("status", {}).get("currentRevision")
        current = next((r for r in owned if r["metadata"]["name"] == current_name), update)
        return current, update

    # -- status ---------------------------------------------------------------------------------

    async def _update_status(
        self, sts: Obj, members: dict[int, Obj], current: Obj, update: Obj
    ) -> None:
        min_ready = int(sts["spec"].get("minReadySeconds", 0))
        now = self.client.now()
        current_name, update_name = current["metadata"]["name"], update["metadata"]["name"]
        counts = {"replicas": 0, "ready": 0, "available": 0, "current": 0, "updated": 0}
        for pod in members.values():
            counts["replicas"] += 1
            if podutil.running_and_ready(pod):
                counts["ready"] += 1
                if podutil.available(pod, min_ready, now):
                    counts["available"] += 1
            if not podutil.deleting(pod):
                revision = (pod["metadata"].get("labels") or {}).get(REVISION_LABEL)
                counts["current"] += revision == current_name
                counts["updated"] += revision == update_name
        strategy = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
        if (
            strategy == "RollingUpdate"
            and counts["updated"] == counts["replicas"]
            and counts["ready"] == counts["replicas"]
        ):
            # completeRollingUpdate: every pod runs the update revision, which is now current.
            counts["current"] = counts["updated"]
            current_name = update_name
        status: dict[str, Any] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": counts["replicas"],
            "readyReplicas": counts["ready"],
            "currentReplicas": counts["current"],
            "updatedReplicas": counts["updated"],
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": int(sts.get("status", {}).get("collisionCount") or 0),
            "availableReplicas": counts["available"],
        }
        status = {
            k: v
            for k, v in status.items()
            if v or k in ("replicas", "availableReplicas", "collisionCount")
        }
        if conditions := sts.get("status", {}).get("conditions"):
            status["conditions"] = conditions
        if status != sts.get("status"):
            updated = editable(sts)
            updated["status"] = status
            await self.client.update_status(STATEFUL_SETS, updated)
        pending = [
            wait
            for pod in members.values()
            if (wait := podutil.seconds_until_available(pod, min_ready, now)) is not None
        ]
        if pending:
            self.queue.add_after(key_of(sts), min(pending) + 0.01)


def _healthy(pod: Obj) -> bool:
    return podutil.running_and_ready(pod) and not podutil.deleting(pod)


def _template_of(revision: Obj) -> Obj:
    template = dict(revision.get("data", {}).get("spec", {}).get("template", {}))
    template.pop("$patch", None)
    return template
