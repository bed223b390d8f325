"""The Deployment controller: ReplicaSets per template revision, rolled as the strategy says.

Each sync follows ``syncDeployment`` of pkg/controller/deployment:

1. claim the namespace's ReplicaSets (adopt orphans the selector matches, release those it
   no longer does);
2. find the *new* ReplicaSet, whose template equals the Deployment's but for the
   ``pod-template-hash`` label, creating ``<name>-<hash>`` when a rollout needs it; it gets
   revision max(old revisions)+1 in ``deployment.kubernetes.io/revision``, which the
   Deployment carries too (a template that returns to an old ReplicaSet's, as ``rollout
   undo`` does, makes that one new again with the next revision);
3. paused, or a change of ``spec.replicas`` alone (ReplicaSets whose ``desired-replicas``
   annotation differs): scale, proportionally to each ReplicaSet's size, and no rollout;
4. otherwise roll: RollingUpdate grows the new ReplicaSet within ``maxSurge`` and shrinks
   old ones while ``replicas - maxUnavailable`` stay available (see :mod:`.rollout`);
   Recreate scales every old one to zero, waits for their pods to be gone, then scales up;
5. once complete, delete old ReplicaSets beyond ``revisionHistoryLimit`` (those with no
   pods left, oldest revision first);
6. write the status from the ReplicaSets' statuses, with the conditions ``kubectl rollout
   status`` and ``kubectl wait`` read: Available (MinimumReplicasAvailable or
   MinimumReplicasUnavailable) and Progressing (NewReplicaSetCreated, FoundNewReplicaSet,
   ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused,
   DeploymentResumed). A rollout that makes no progress is looked at again when its
   ``progressDeadlineSeconds`` run out.

Upstream's status strategy lets a status update change annotations too; the emulator's
``/status`` keeps only the status, so the revision annotation is written by a separate
update of the object (which does not change its generation).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any

from sandbox.apiserver import errors
from sandbox.controllers import pods as podutil
from sandbox.controllers import rollout
from sandbox.controllers.controller import (
    DEPLOYMENTS,
    PODS,
    REPLICA_SETS,
    Controller,
    ObjectKey,
    annotations_of,
    editable,
    key_of,
)
from sandbox.controllers.rollout import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_HISTORY,
    replicas_of,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.controllers.deployment")
PROGRESSING = "Progressing"
AVAILABLE = "Available"
TIMED_OUT = "ProgressDeadlineExceeded"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


class DeploymentController(Controller):
    name = "deployment-controller"
    primary = DEPLOYMENTS

    # -- what to look at ------------------------------------------------------------------------

    def on_change(self, key: Key, change: Change) -> None:
        if key == DEPLOYMENTS:
            self.queue.add(key_of(change.object))
        elif key == REPLICA_SETS:
            for rs in (change.object, change.previous):
                if rs is not None:
                    for owner in self._owners_of(rs):
                        self.queue.add(owner)
        elif key == PODS and change.type == "DELETED":
            # Recreate waits for the old pods to be gone.
            reference = podutil.controller_of(change.object)
            if reference is not None and reference.get("kind") == "ReplicaSet":
                namespace = change.object["metadata"].get("namespace", "")
                rs = self.store.get(REPLICA_SETS, namespace, reference["name"])
                if rs is not None:
                    for owner in self._owners_of(rs):
                        self.queue.add(owner)

    def _owners_of(self, rs: Obj) -> list[ObjectKey]:
        return podutil.owners(rs, "Deployment", self.store, DEPLOYMENTS)

    # -- the sync -------------------------------------------------------------------------------

    async def sync(self, key: ObjectKey) -> None:
        d = self.store.get(DEPLOYMENTS, *key)
        if d is None:
            return
        replica_sets = await self._claim(d)
        if podutil.deleting(d):
            d, new_rs, old = await self._new_and_old(d, replica_sets, create=False)
            await self._sync_status(d, [*old, new_rs], new_rs)
            return
        d = await self._check_paused_conditions(d)
        if d["spec"].get("paused"):
            await self._scale_only(d, replica_sets)
            return
        d, scaling = await self._scaling_event(d, replica_sets)
        if scaling:
            await self._scale_only(d, replica_sets)
        elif rollout.rolling(d):
            await self._roll(d, replica_sets)
        else:
            await self._recreate(d, replica_sets)

    async def _claim(self, d: Obj) -> list[Obj]:
        """``ClaimReplicaSets``: adopt and release by the selector, as for pods."""
        selector = podutil.selector_of(d)
        claimed = []
        for rs in self.store.list(REPLICA_SETS, d["metadata"]["namespace"]):
            reference = podutil.controller_of(rs)
            matches = podutil.selects(selector, rs)
            if reference is not None:
                if reference.get("uid") != d["metadata"]["uid"]:
                    continue
                if matches or podutil.deleting(d):
                    claimed.append(rs)
                else:
                    await self.client.update(REPLICA_SETS, podutil.without_controller(rs, d))
            elif matches and not podutil.deleting(d):
                adopted = podutil.with_controller(rs, d)
                claimed.append(await self.client.update(REPLICA_SETS, adopted))
        return claimed

    # -- revisions ------------------------------------------------------------------------------

    async def _new_and_old(
        self, d: Obj, replica_sets: list[Obj], *, create: bool
    ) -> tuple[Obj, Obj | None, list[Obj]]:
        """``getAllReplicaSetsAndSyncRevision``: (the Deployment as now stored, the new
        ReplicaSet if any, the old ones), with revisions brought up to date."""
        ordered = sorted(replica_sets, key=rollout.by_creation)
        template = d["spec"]["template"]
        new_rs = next(
            (rs for rs in ordered if rollout.equal_ignoring_hash(rs["spec"]["template"], template)),
            None,
        )
        old = [rs for rs in ordered if rs is not new_rs]
        revision = max((rollout.revision_of(rs) for rs in old), default=0) + 1
        if new_rs is not None:
            updated = editable(new_rs)
            changed = self._set_new_annotations(d, updated, revision, exists=True)
            min_ready = d["spec"].get("minReadySeconds", 0)
            if changed or updated["spec"].get("minReadySeconds", 0) != min_ready:
                updated["spec"]["minReadySeconds"] = min_ready
                return d, await self.client.update(REPLICA_SETS, updated), old
            d = await self._set_revision(d, annotations_of(new_rs).get(REVISION, ""))
            if rollout.progress_deadline(d) is not None and not rollout.condition(
                d.get("status", {}), PROGRESSING
            ):
                status = editable(d.get("status", {}))
                rollout.set_condition(
                    status,
                    self._condition(
                        PROGRESSING,
                        "True",
                        "FoundNewReplicaSet",
                        f'Found new replica set "{new_rs["metadata"]["name"]}"',
                    ),
                )
                d = await self._write_status(d, status)
            return d, new_rs, old
        if not create:
            return d, None, old
        d, new_rs = await self._create_new(d, old, revision)
        return d, new_rs, old

    async def _create_new(self, d: Obj, old: list[Obj], revision: int) -> tuple[Obj, Obj]:
        metadata = d["metadata"]
        collisions = d.get("status", {}).get("collisionCount")
        template_hash = rollout.template_hash(d["spec"]["template"], collisions)
        template = editable(d["spec"]["template"])
        template.setdefault("metadata", {})["labels"] = {
            **(template["metadata"].get("labels") or {}),
            POD_TEMPLATE_HASH: template_hash,
        }
        selector = editable(d["spec"]["selector"])
        selector["matchLabels"] = {
            **(selector.get("matchLabels") or {}),
            POD_TEMPLATE_HASH: template_hash,
        }
        name = f"{metadata['name']}-{template_hash}"
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": metadata["namespace"],
                "labels": template["metadata"]["labels"],
                "ownerReferences": [podutil.controller_reference(d)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        rs["spec"]["replicas"] = rollout.new_replicas(d, [*old, rs], rs)
        self._set_new_annotations(d, rs, revision, exists=False)
        try:
            created = await self.client.create(REPLICA_SETS, metadata["namespace"], rs)
        except errors.APIError as error:
            if error.reason != "AlreadyExists":
                raise
            existing = self.store.get(REPLICA_SETS, metadata["namespace"], name)
            if (
                existing is not None
                and podutil.owned_by(existing, d)
                and rollout.equal_ignoring_hash(existing["spec"]["template"], d["spec"]["template"])
            ):
                return d, existing
            # A hash collision: the next hash takes the collision count into account.
            status = editable(d.get("status", {}))
            status["collisionCount"] = int(collisions or 0) + 1
            await self._write_status(d, status)
            raise
        if created["spec"]["replicas"] > 0:
            await self.client.record_event(
                d,
                "ScalingReplicaSet",
                f"Scaled up replica set {name} from 0 to {created['spec']['replicas']}",
            )
        d = await self._set_revision(d, str(revision))
        if rollout.progress_deadline(d) is not None:
            status = editable(d.get("status", {}))
            rollout.set_condition(
                status,
                self._condition(
                    PROGRESSING, "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'
                ),
            )
            d = await self._write_status(d, status)
        return d, created

    def _set_new_annotations(self, d: Obj, rs: Obj, revision: int, *, exists: bool) -> bool:
        """``SetNewReplicaSetAnnotations``: the Deployment's annotations, the revision (and the
        revisions it had before, when a rollback makes an old ReplicaSet new again)."""
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for name, value in annotations_of(d).items():
            if name not in rollout.NOT_COPIED and annotations.get(name) != value:
                annotations[name] = value
                changed = True
        previous = annotations.get(REVISION, "")
        try:
            previous_number = int(previous) if previous else 0
        except ValueError:
            return changed
        if previous_number < revision:
            annotations[REVISION] = str(revision)
            changed = True
            if previous:
                history = [r for r in annotations.get(REVISION_HISTORY, "").split(",") if r]
                history.append(previous)
                while len(",".join(history)) > rollout.MAX_REVISION_HISTORY_CHARS:
                    history.pop(0)
                annotations[REVISION_HISTORY] = ",".join(history)
        if not exists:
            changed |= self._set_replicas_annotations(d, rs)
        return changed

    def _set_replicas_annotations(self, d: Obj, rs: Obj) -> bool:
        replicas = replicas_of(d)
        wanted = {
            DESIRED_REPLICAS: str(replicas),
            MAX_REPLICAS: str(replicas + rollout.max_surge(d)),
        }
        annotations = rs["metadata"].setdefault("annotations", {})
        if all(annotations.get(k) == v for k, v in wanted.items()):
            return False
        annotations.update(wanted)
        return True

    async def _set_revision(self, d: Obj, revision: str) -> Obj:
        if annotations_of(d).get(REVISION) == revision:
            return d
        updated = editable(d)
        updated["metadata"].setdefault("annotations", {})[REVISION] = revision
        return await self.client.update(DEPLOYMENTS, updated)

    # -- scaling --------------------------------------------------------------------------------

    async def _scale_rs(self, rs: Obj, size: int, d: Obj) -> tuple[bool, Obj]:
        """``scaleReplicaSetAndRecordEvent``: the new size and the replicas annotations."""
        resized = replicas_of(rs) != size
        updated = editable(rs)
        annotated = self._set_replicas_annotations(d, updated)
        if not resized and not annotated:
            return False, rs
        before = replicas_of(rs)
        updated["spec"]["replicas"] = size
        rs = await self.client.update(REPLICA_SETS, updated)
        if resized:
            direction = "up" if size > before else "down"
            await self.client.record_event(
                d,
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {size}",
            )
        return resized, rs

    async def _scaling_event(self, d: Obj, replica_sets: list[Obj]) -> tuple[Obj, bool]:
        """``isScalingEvent``: some active ReplicaSet was sized for other replicas."""
        d, new_rs, old = await self._new_and_old(d, replica_sets, create=False)
        for rs in rollout.active([*old, new_rs]):
            desired = annotations_of(rs).get(DESIRED_REPLICAS)
            if desired is not None and desired.isdigit() and int(desired) != replicas_of(d):
                return d, True
        return d, False

    async def _scale_only(self, d: Obj, replica_sets: list[Obj]) -> None:
        """``sync``: scale, clean up when paused, update the status; no rollout."""
        d, new_rs, old = await self._new_and_old(d, replica_sets, create=False)
        await self._scale(d, new_rs, old)
        if d["spec"].get("paused"):
            await self._clean_up(d, old)
        await self._sync_status(d, [*old, new_rs], new_rs)

    async def _scale(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        replicas = replicas_of(d)
        latest = _active_or_latest(new_rs, old)
        if latest is not None:
            if replicas_of(latest) != replicas:
                await self._scale_rs(latest, replicas, d)
            return
        if _saturated(d, new_rs):
            for rs in rollout.active(old):
                await self._scale_rs(rs, 0, d)
            return
        if not rollout.rolling(d):
            return
        # Proportional scaling: spread the change over the active ReplicaSets by size.
        everyone = rollout.active([*old, new_rs])
        allowed = replicas + rollout.max_surge(d) if replicas > 0 else 0
        to_add = allowed - sum(replicas_of(rs) for rs in everyone)

        def by_size(rs: Obj) -> tuple[int, float]:
            created = rollout.by_creation(rs)[0]
            # Larger first; among equals, newer first when growing, older when shrinking.
            return (-replicas_of(rs), -created if to_add > 0 else created)

        everyone.sort(key=by_size)
        added = 0
        sizes: list[int] = []
        for rs in everyone:
            share = _proportion(rs, d, to_add, added) if to_add else 0
            sizes.append(replicas_of(rs) + share)
            added += share
        if everyone and to_add:
            sizes[0] = max(sizes[0] + to_add - added, 0)
        for rs, size in zip(everyone, sizes, strict=True):
            await self._scale_rs(rs, size, d)

    # -- strategies -----------------------------------------------------------------------------

    async def _roll(self, d: Obj, replica_sets: list[Obj]) -> None:
        """``rolloutRolling``."""
        d, new_rs, old = await self._new_and_old(d, replica_sets, create=True)
        assert new_rs is not None
        everyone = [*old, new_rs]
        if await self._reconcile_new(d, everyone, new_rs):
            await self._sync_rollout_status(d, everyone, new_rs)
            return
        if await self._reconcile_old(d, everyone, rollout.active(old), new_rs):
            await self._sync_rollout_status(d, everyone, new_rs)
            return
        if rollout.complete(d, d.get("status", {})):
            await self._clean_up(d, old)
        await self._sync_rollout_status(d, everyone, new_rs)

    async def _reconcile_new(self, d: Obj, everyone: list[Obj], new_rs: Obj) -> bool:
        replicas = replicas_of(d)
        if replicas_of(new_rs) == replicas:
            return False
        if replicas_of(new_rs) > replicas:
            return (await self._scale_rs(new_rs, replicas, d))[0]
        return (await self._scale_rs(new_rs, rollout.new_replicas(d, everyone, new_rs), d))[0]

    async def _reconcile_old(
        self, d: Obj, everyone: list[Obj], old: list[Obj], new_rs: Obj
    ) -> bool:
        """``reconcileOldReplicaSets``: first the old ReplicaSets' unavailable pods, then
        available ones while enough stay available."""
        if sum(replicas_of(rs) for rs in old) == 0:
            return False
        all_pods = sum(replicas_of(rs) for rs in everyone)
        min_available = replicas_of(d) - rollout.max_unavailable(d)
        new_unavailable = replicas_of(new_rs) - rollout.available_of(new_rs)
        most = all_pods - min_available - new_unavailable
        if most <= 0:
            return False
        old, cleaned = await self._clean_up_unhealthy(d, old, most)
        scaled = await self._scale_down_old(d, [*old, new_rs], old)
        return cleaned + scaled > 0

    async def _clean_up_unhealthy(self, d: Obj, old: list[Obj], most: int) -> tuple[list[Obj], int]:
        total = 0
        result = []
        for rs in sorted(old, key=rollout.by_creation):
            unhealthy = replicas_of(rs) - rollout.available_of(rs)
            current = rs
            if total < most and replicas_of(rs) > 0 and unhealthy > 0:
                count = min(most - total, unhealthy)
                _, current = await self._scale_rs(rs, replicas_of(rs) - count, d)
                total += count
            result.append(current)
        return result, total

    async def _scale_down_old(self, d: Obj, everyone: list[Obj], old: list[Obj]) -> int:
        min_available = replicas_of(d) - rollout.max_unavailable(d)
        available = sum(rollout.available_of(rs) for rs in everyone)
        if available <= min_available:
            return 0
        wanted = available - min_available
        total = 0
        for rs in sorted(old, key=rollout.by_creation):
            if total >= wanted:
                break
            if replicas_of(rs) == 0:
                continue
            count = min(replicas_of(rs), wanted - total)
            await self._scale_rs(rs, replicas_of(rs) - count, d)
            total += count
        return total

    async def _recreate(self, d: Obj, replica_sets: list[Obj]) -> None:
        """``rolloutRecreate``: all old pods gone before any new one."""
        d, new_rs, old = await self._new_and_old(d, replica_sets, create=False)
        scaled_down = False
        for rs in rollout.active(old):
            scaled_down |= (await self._scale_rs(rs, 0, d))[0]
        if scaled_down or self._old_pods_running(new_rs, old):
            await self._sync_rollout_status(d, [*old, new_rs], new_rs)
            return
        if new_rs is None:
            d, new_rs, old = await self._new_and_old(d, replica_sets, create=True)
            assert new_rs is not None
        await self._scale_rs(new_rs, replicas_of(d), d)
        if rollout.complete(d, d.get("status", {})):
            await self._clean_up(d, old)
        await self._sync_rollout_status(d, [*old, new_rs], new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old: list[Obj]) -> bool:
        uids = {rs["metadata"]["uid"] for rs in old}
        if new_rs is not None:
            uids.discard(new_rs["metadata"]["uid"])
        namespace = old[0]["metadata"]["namespace"] if old else ""
        return any(
            (podutil.controller_of(pod) or {}).get("uid") in uids and not podutil.terminal(pod)
            for pod in (self.store.list(PODS, namespace) if old else [])
        )

    async def _clean_up(self, d: Obj, old: list[Obj]) -> None:
        """``cleanupDeployment``: old ReplicaSets beyond revisionHistoryLimit, oldest revision
        first, once they have no pods."""
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        current = [self.store.get(REPLICA_SETS, *key_of(rs)) for rs in old]
        cleanable = [rs for rs in current if rs is not None and not podutil.deleting(rs)]
        surplus = len(cleanable) - int(limit)
        if surplus <= 0:
            return
        cleanable.sort(key=lambda rs: (rollout.revision_of(rs), *rollout.by_creation(rs)))
        for rs in cleanable[:surplus]:
            status = rs.get("status", {})
            if (
                status.get("replicas", 0) != 0
                or replicas_of(rs) != 0
                or rs["metadata"].get("generation", 1) > status.get("observedGeneration", 0)
            ):
                continue
            await self.client.delete(REPLICA_SETS, rs)

    # -- status ---------------------------------------------------------------------------------

    def _condition(self, kind: str, state: str, reason: str, message: str) -> dict[str, Any]:
        return rollout.new_condition(kind, state, reason, message, self.client.timestamp())

    def _calculate_status(self, d: Obj, everyone: list[Obj], new_rs: Obj | None) -> Obj:
        available = rollout.status_count(everyone, "availableReplicas")
        total = sum(replicas_of(rs) for rs in everyone)
        previous = d.get("status", {})
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": rollout.status_count(everyone, "replicas"),
            "updatedReplicas": rollout.status_count([new_rs], "replicas"),
            "readyReplicas": rollout.status_count(everyone, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
            "collisionCount": previous.get("collisionCount"),
        }
        # DeploymentStatus omits its zero fields.
        status = {k: v for k, v in status.items() if v}
        if previous.get("conditions"):
            status["conditions"] = editable(previous["conditions"])
        if available >= replicas_of(d) - rollout.max_unavailable(d):
            minimum = self._condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            minimum = self._condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        rollout.set_condition(status, minimum)
        return status

    def _refresh(self, everyone: Sequence[Obj | None]) -> list[Obj]:
        return [
            current
            for rs in everyone
            if rs is not None and (current := self.store.get(REPLICA_SETS, *key_of(rs)))
        ]

    async def _sync_status(
        self, d: Obj, everyone: Sequence[Obj | None], new_rs: Obj | None
    ) -> None:
        """``syncDeploymentStatus``: the counts, without judging progress."""
        refreshed = self._refresh(everyone)
        new_rs = next(iter(self._refresh([new_rs])), None)
        await self._write_status(d, self._calculate_status(d, refreshed, new_rs))

    async def _sync_rollout_status(
        self, d: Obj, everyone: Sequence[Obj | None], new_rs: Obj | None
    ) -> None:
        """``syncRolloutStatus``: the counts and the Progressing condition."""
        d = self.store.get(DEPLOYMENTS, *key_of(d)) or d
        refreshed = self._refresh(everyone)
        if new_rs is not None:
            uid = new_rs["metadata"]["uid"]
            new_rs = next((rs for rs in refreshed if rs["metadata"]["uid"] == uid), None)
        status = self._calculate_status(d, refreshed, new_rs)
        deadline = rollout.progress_deadline(d)
        if deadline is None:
            rollout.remove_condition(status, PROGRESSING)
        current = rollout.condition(d.get("status", {}), PROGRESSING)
        finished = (
            status.get("replicas", 0) == status.get("updatedReplicas", 0)
            and current is not None
            and current.get("reason") == NEW_RS_AVAILABLE
        )
        subject = (
            f'ReplicaSet "{new_rs["metadata"]["name"]}"'
            if new_rs is not None
            else f'Deployment "{d["metadata"]["name"]}"'
        )
        if deadline is not None and not finished:
            if rollout.complete(d, status):
                rollout.set_condition(
                    status,
                    self._condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE,
                        f"{subject} has successfully progressed.",
                    ),
                )
            elif rollout.progressing(d, status):
                progress = self._condition(
                    PROGRESSING, "True", "ReplicaSetUpdated", f"{subject} is progressing."
                )
                if current is not None:
                    # Progress moves lastUpdateTime, even with the same reason.
                    if current.get("status") == "True":
                        progress["lastTransitionTime"] = current.get("lastTransitionTime")
                    rollout.remove_condition(status, PROGRESSING)
                rollout.set_condition(status, progress)
            elif self._timed_out(d, status, deadline):
                rollout.set_condition(
                    status,
                    self._condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT,
                        f"{subject} has timed out progressing.",
                    ),
                )
        if status == d.get("status"):
            self._requeue_stuck(d, status, deadline)
            return
        await self._write_status(d, status)

    def _timed_out(self, d: Obj, status: Obj, deadline: int) -> bool:
        del d
        progress = rollout.condition(status, PROGRESSING)
        if progress is None or progress.get("reason") == NEW_RS_AVAILABLE:
            return False
        if progress.get("reason") == TIMED_OUT:
            return True
        since = podutil.parse_time(progress.get("lastUpdateTime"))
        return since is not None and since + dt.timedelta(seconds=deadline) < self.client.now()

    def _requeue_stuck(self, d: Obj, status: Obj, deadline: int | None) -> None:
        """Look again when a rollout without progress would pass its deadline."""
        progress = rollout.condition(status, PROGRESSING)
        if (
            deadline is None
            or progress is None
            or progress.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT)
            or rollout.complete(d, status)
        ):
            return
        since = podutil.parse_time(progress.get("lastUpdateTime"))
        if since is None:
            return
        remaining = (since + dt.timedelta(seconds=deadline) - self.client.now()).total_seconds()
        self.queue.add_after(key_of(d), max(remaining, 0) + 1)

    async def _check_paused_conditions(self, d: Obj) -> Obj:
        """A paused rollout says so in Progressing (Unknown), and so does a resumed one."""
        if rollout.progress_deadline(d) is None:
            return d
        current = rollout.condition(d.get("status", {}), PROGRESSING)
        if current is not None and current.get("reason") == TIMED_OUT:
            return d
        paused_noted = current is not None and current.get("reason") == PAUSED
        paused = bool(d["spec"].get("paused"))
        if paused == paused_noted:
            return d
        status = editable(d.get("status", {}))
        if paused:
            note = self._condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused")
        else:
            note = self._condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed")
        rollout.set_condition(status, note)
        return await self._write_status(d, status)

    async def _write_status(self, d: Obj, status: Obj) -> Obj:
        if status == d.get("status"):
            return d
        updated = editable(d)
        updated["status"] = status
        return await self.client.update_status(DEPLOYMENTS, updated)


def _active_or_latest(new_rs: Obj | None, old: list[Obj]) -> Obj | None:
    """``FindActiveOrLatest``: the only active ReplicaSet, or the newest when none is."""
    if new_rs is None and not old:
        return None
    newest_first = sorted(old, key=rollout.by_creation, reverse=True)
    actives = rollout.active([*newest_first, new_rs])
    if not actives:
        return new_rs if new_rs is not None else newest_first[0]
    return actives[0] if len(actives) == 1 else None


def _saturated(d: Obj, rs: Obj | None) -> bool:
    """``IsSaturated``: the new ReplicaSet has all the replicas, all available."""
    if rs is None:
        return False
    desired = annotations_of(rs).get(DESIRED_REPLICAS, "")
    replicas = replicas_of(d)
    return (
        replicas_of(rs) == replicas
        and desired == str(replicas)
        and rs.get("status", {}).get("availableReplicas", 0) == replicas
    )


def _proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """``GetProportion``: this ReplicaSet's share of a scaling, within what is left."""
    if replicas_of(rs) == 0 or to_add in {0, added}:
        return 0
    fraction = _fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _fraction(rs: Obj, d: Obj) -> int:
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    most = replicas_of(d) + rollout.max_surge(d)
    before_text = annotations_of(rs).get(MAX_REPLICAS, "")
    before = int(before_text) if before_text.isdigit() else 0
    if before == 0:
        before = int(d.get("status", {}).get("replicas", 0))
        if before == 0:
            return 0
    # integer.RoundToInt32 rounds halves away from zero.
    size = replicas_of(rs) * most / before
    return math.floor(size + 0.5) - replicas_of(rs)
