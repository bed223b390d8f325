"""What every controller shares: a work queue fed by the store, workers, and a client.

A controller here is what one of kube-controller-manager's loops is, minus the informer
cache: the store is in the same process and answers reads at once and up to date, so a sync
reads it directly, and the "expectations" upstream keeps for the lag of its cache have no
gap to cover. Store listeners only map a change to the keys it concerns and queue them;
all the work, and every write, happens in a worker's :meth:`Controller.sync`.

Writes go through :class:`Client`, that is through :class:`~sandbox.apiserver.objects.Objects`
as ``system:kube-controller-manager`` with the field manager ``kube-controller-manager``,
so defaulting, validation, admission webhooks, managedFields, optimistic concurrency and
watch events are those of any other client. A write that loses a race (``409 Conflict``)
or fails otherwise puts the key back with a backoff; the next sync starts from the store.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import anyio

from sandbox.apiserver import errors
from sandbox.apiserver.objects import now_rfc3339
from sandbox.apiserver.rbac import UserInfo
from sandbox.controllers.queue import WorkQueue

if TYPE_CHECKING:
    import datetime as dt

    from anyio.abc import TaskStatus

    from sandbox.apiserver.objects import Objects
    from sandbox.apiserver.resources import ResourceType
    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.controllers")

#: Who the controllers write as (kube-controller-manager without per-controller accounts).
CONTROLLER_MANAGER = UserInfo(
    name="system:kube-controller-manager", groups=("system:authenticated",)
)
FIELD_MANAGER = "kube-controller-manager"

PODS: Key = ("", "pods")
SERVICES: Key = ("", "services")
ENDPOINTS: Key = ("", "endpoints")
EVENTS: Key = ("", "events")
REPLICA_SETS: Key = ("apps", "replicasets")
DEPLOYMENTS: Key = ("apps", "deployments")
STATEFUL_SETS: Key = ("apps", "statefulsets")
CONTROLLER_REVISIONS: Key = ("apps", "controllerrevisions")
ENDPOINT_SLICES: Key = ("discovery.k8s.io", "endpointslices")

#: A queued object: its namespace and name.
ObjectKey = tuple[str, str]


def key_of(obj: Obj) -> ObjectKey:
    metadata = obj.get("metadata", {})
    return (metadata.get("namespace", ""), metadata["name"])


class Client:
    """The controllers' writes, through :class:`Objects` (see the module docstring)."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.store = objects.store
        self._resources: dict[Key, ResourceType] = {
            resource.key: resource for resource in objects.registry if not resource.custom
        }

    def now(self) -> dt.datetime:
        return self.objects.clock()

    def timestamp(self) -> str:
        return now_rfc3339(self.objects.clock)

    async def create(self, key: Key, namespace: str, body: Obj) -> Obj:
        return await self.objects.create(
            self._resources[key], namespace, body, CONTROLLER_MANAGER, field_manager=FIELD_MANAGER
        )

    async def update(self, key: Key, obj: Obj, *, subresource: str = "") -> Obj:
        """Replace ``obj`` as it was read: its resourceVersion guards against lost updates."""
        metadata = obj["metadata"]
        return await self.objects.update(
            self._resources[key],
            metadata.get("namespace", ""),
            metadata["name"],
            obj,
            CONTROLLER_MANAGER,
            subresource=subresource,
            field_manager=FIELD_MANAGER,
        )

    async def update_status(self, key: Key, obj: Obj) -> Obj:
        return await self.update(key, obj, subresource="status")

    async def delete(self, key: Key, obj: Obj) -> None:
        """Delete ``obj`` if it is still the same object (a uid precondition); gone is fine."""
        metadata = obj["metadata"]
        try:
            await self.objects.delete(
                self._resources[key],
                metadata.get("namespace", ""),
                metadata["name"],
                CONTROLLER_MANAGER,
                {"preconditions": {"uid": metadata.get("uid")}},
            )
        except errors.APIError as error:
            if error.code != 404:
                raise

    async def record_event(
        self, involved: Obj, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """A core/v1 Event about ``involved``, as ``kubectl describe`` lists them."""
        metadata = involved["metadata"]
        stamp = self.timestamp()
        event = {
            "metadata": {"generateName": f"{metadata['name']}."},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata["name"],
                "namespace": metadata.get("namespace", ""),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": reason_source(involved.get("kind", ""))},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": "",
        }
        try:
            await self.create(EVENTS, metadata.get("namespace", "default"), event)
        except errors.APIError as error:
            # Events are best effort, as upstream's recorder drops what it cannot write.
            log.debug("could not record event %s for %s: %s", reason, metadata["name"], error)


def reason_source(kind: str) -> str:
    """The component name kube-controller-manager's controllers sign their events with."""
    return {
        "ReplicaSet": "replicaset-controller",
        "Deployment": "deployment-controller",
        "StatefulSet": "statefulset-controller",
    }.get(kind, "kube-controller-manager")


class Controller(ABC):
    """One control loop: store changes in, keys queued, :meth:`sync` per key."""

    #: For logs and task names.
    name: str = "controller"
    #: The kind whose objects are the queue's keys; all of them are queued at start.
    primary: Key

    def __init__(self, client: Client, *, workers: int = 2) -> None:
        self.client = client
        self.store = client.store
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.workers = workers

    @abstractmethod
    def on_change(self, key: Key, change: Change) -> None:
        """Queue the keys a store change concerns (called synchronously; must not block)."""

    @abstractmethod
    async def sync(self, key: ObjectKey) -> None:
        """Bring the world in line with the object at ``key`` (which may be gone)."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled."""
        self.store.listeners.append(self._listen)
        try:
            for obj in self.store.list(self.primary):
                self.queue.add(key_of(obj))
            async with anyio.create_task_group() as tasks:
                for number in range(self.workers):
                    tasks.start_soon(self._work, name=f"{self.name} worker {number}")
                task_status.started()
        finally:
            self.store.listeners.remove(self._listen)

    def _listen(self, key: Key, change: Change) -> None:
        try:
            self.on_change(key, change)
        except Exception:  # a listener must never break the write that called it
            log.exception("%s: handling a change of %s failed", self.name, key)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.sync(key)
            except errors.APIError as error:
                level = logging.DEBUG if error.code == 409 else logging.WARNING
                log.log(level, "%s: syncing %s/%s: %s", self.name, *key, error)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: syncing %s/%s failed", self.name, *key)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)


def editable(obj: Obj) -> Obj:
    """A copy to change: stored objects are shared and never mutated."""
    return copy.deepcopy(obj)


def annotations_of(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata", {}).get("annotations") or {}
