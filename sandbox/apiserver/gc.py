"""The garbage collector and the namespace finalizer, as kube-controller-manager runs them.

A deletion only marks what must happen; this task finishes it:

- an object whose owners (``ownerReferences``) are all gone is deleted (background cascade);
- an owner being deleted in the foreground (finalizer ``foregroundDeletion``) has its
  dependents deleted first, and goes once none are left;
- an owner deleted with ``Orphan`` (finalizer ``orphan``) has its reference removed from its
  dependents, then goes;
- a Terminating namespace has everything in it deleted, then its ``kubernetes`` finalizer
  removed, and then it goes.

Each pass looks at the whole store. Passes run after writes that can need one (a deletion, a
deletionTimestamp), never more often than ``interval``, so a burst of writes costs one pass.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import anyio

from sandbox.apiserver import errors
from sandbox.apiserver.objects import NAMESPACES, deletes_during_update
from sandbox.apiserver.rbac import UserInfo

if TYPE_CHECKING:
    from sandbox.apiserver.objects import Objects
    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.apiserver.gc")
SYSTEM = UserInfo(
    name="system:serviceaccount:kube-system:generic-garbage-collector", groups=("system:masters",)
)


class GarbageCollector:
    def __init__(self, objects: Objects, *, interval: float = 0.05) -> None:
        self.objects = objects
        self.store = objects.store
        self.interval = interval
        self._wakeup = anyio.Event()
        self.store.listeners.append(self._on_change)

    def _on_change(self, key: Key, change: Change) -> None:
        del key
        if change.type == "DELETED" or change.object.get("metadata", {}).get("deletionTimestamp"):
            self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            try:
                await self.collect()
            except Exception:
                log.exception("garbage collection pass failed")
            await anyio.sleep(self.interval)

    async def collect(self) -> None:
        """One pass over the store (see the module docstring)."""
        store = self.store
        live: dict[str, Obj] = {}
        for key in store.resource_keys():
            for _, obj in store.items(key):
                live[obj["metadata"].get("uid", "")] = obj
        for key in store.resource_keys():
            resource = self._resource(key)
            if resource is None:
                continue
            for (namespace, name), obj in list(store.items(key)):
                metadata = obj["metadata"]
                owners = metadata.get("ownerReferences") or []
                if owners:
                    alive = [o for o in owners if o.get("uid") in live]
                    orphaning = [
                        o
                        for o in alive
                        if "orphan" in _finalizers(live[o["uid"]]) and _deleting(live[o["uid"]])
                    ]
                    if orphaning:
                        kept = [o for o in owners if o not in orphaning]
                        await self._set_owners(key, obj, kept)
                        continue
                    foreground = any(
                        "foregroundDeletion" in _finalizers(live[o["uid"]])
                        and _deleting(live[o["uid"]])
                        for o in alive
                    )
                    if not alive or foreground:
                        await self._delete(key, namespace, name, "Background")
                        continue
                if _deleting(obj):
                    await self._finish(key, obj, live)
        for namespace_object in store.list(NAMESPACES):
            if _deleting(namespace_object):
                await self._empty_namespace(namespace_object)

    def _resource(self, key: Key):  # type: ignore[no-untyped-def]
        for resource in self.objects.registry:
            if resource.key == key:
                return resource
        return None

    async def _delete(self, key: Key, namespace: str, name: str, policy: str) -> None:
        resource = self._resource(key)
        if resource is None:
            return
        try:
            await self.objects.delete(
                resource, namespace, name, SYSTEM, {"propagationPolicy": policy}
            )
        except errors.APIError as error:
            if error.code != 404:
                log.warning("could not delete %s %s/%s: %s", key, namespace, name, error)

    async def _set_owners(self, key: Key, obj: Obj, owners: list[dict[str, object]]) -> None:
        updated = copy.deepcopy(obj)
        if owners:
            updated["metadata"]["ownerReferences"] = owners
        else:
            updated["metadata"].pop("ownerReferences", None)
        self.store.update(key, updated)

    async def _finish(self, key: Key, obj: Obj, live: dict[str, Obj]) -> None:
        """Drop the GC's own finalizers once their work is done."""
        uid = obj["metadata"].get("uid")
        finalizers = _finalizers(obj)
        dependents = [
            o
            for o in live.values()
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]
        remaining = list(finalizers)
        if "orphan" in remaining and not dependents:
            remaining.remove("orphan")
        if "foregroundDeletion" in remaining and not dependents:
            remaining.remove("foregroundDeletion")
        if remaining == finalizers:
            return
        updated = copy.deepcopy(obj)
        updated["metadata"]["finalizers"] = remaining
        if not remaining:
            del updated["metadata"]["finalizers"]
        self.store.update(key, updated)
        resource = self._resource(key)
        # As any update: the object goes now only if no grace period runs (a pod deleted in
        # the foreground still gets its kubelet's graceful stop, which then deletes it).
        if resource is not None and deletes_during_update(resource, obj, updated):
            metadata = updated["metadata"]
            self.store.delete(key, metadata.get("namespace", ""), metadata["name"])

    async def _empty_namespace(self, namespace: Obj) -> None:
        name = namespace["metadata"]["name"]
        left = 0
        for key in self.store.resource_keys():
            resource = self._resource(key)
            if resource is None or not resource.namespaced:
                continue
            for obj in self.store.list(key, name):
                left += 1
                if not _deleting(obj):
                    await self._delete(key, name, obj["metadata"]["name"], "Background")
        if left:
            return
        finalizers = namespace.get("spec", {}).get("finalizers") or []
        if "kubernetes" in finalizers:
            updated = copy.deepcopy(namespace)
            updated["spec"]["finalizers"] = [f for f in finalizers if f != "kubernetes"]
            self.store.update(NAMESPACES, updated)
            namespace = updated
        if not namespace.get("spec", {}).get("finalizers") and not _finalizers(namespace):
            self.store.delete(NAMESPACES, "", name)


def _finalizers(obj: Obj) -> list[str]:
    return list(obj.get("metadata", {}).get("finalizers") or [])


def _deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))
