"""The kubelet: runs the pods bound to one node and reports them, and the node, to the API.

The node
    :meth:`Kubelet.run` registers the Node (Ready, its addresses, its pod CIDR, capacity,
    ``nodeInfo``; :func:`sandbox.node.status.node_status`), renews its Lease in
    ``kube-node-lease`` every 10 s and writes the node's status again every 5 minutes, as a
    kubelet with node leases does.

Pods
    A store listener queues the uid of every pod bound to the node (``spec.nodeName``) when
    it changes; a dispatcher task gives a new pod a :class:`~sandbox.node.pods.PodWorker`, a
    task of its own that sets the pod up, runs it, stops it and reports its status (see
    :mod:`sandbox.node.pods`), and tells an existing one to look again. Nothing is done in
    the listener, which runs inside the write that called it. A pod that finished before
    this kubelet started is left as it is.

The pod runtime
    ``kubectl logs`` and ``exec`` reach the containers through the methods of
    ``sandbox.node.runtime.Containers`` (:meth:`Kubelet.container_pid`,
    :meth:`Kubelet.log_file`, :meth:`Kubelet.is_running`), answered from the workers'
    records.

Writes and events
    Every write goes through the API server's ``Objects`` as ``system:node:<name>``, like
    any client's. Events (Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed...)
    are recorded with their counts, best effort (:meth:`Kubelet.event`).

Shutdown
    Cancelling :meth:`Kubelet.run` cancels every worker, which stops its containers
    (SIGTERM, SIGKILL after 2 s) and removes its network, shielded from the cancellation,
    but leaves the objects as they are, as a node that goes down does.

Not modelled: ``activeDeadlineSeconds``, ephemeral containers, resource limits (nothing is
enforced, so no OOMKilled), termination message files, static pods, evictions.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from sandbox.apiserver import errors
from sandbox.apiserver.rbac import UserInfo
from sandbox.controllers.queue import WorkQueue
from sandbox.images import ImageMap, default_images
from sandbox.node.pods import FIELD_MANAGER, PODS, PodWorker
from sandbox.node.probes import connect_tcp
from sandbox.node.status import node_status

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from anyio.abc import TaskGroup, TaskStatus

    from sandbox.apiserver.resources import ResourceType
    from sandbox.apiserver.server import APIServer
    from sandbox.apiserver.store import Change, Key, Obj
    from sandbox.node.containers import Container
    from sandbox.node.podnet import PodNetwork
    from sandbox.node.probes import Dialer

log = logging.getLogger("sandbox.kubelet")

NODES: Key = ("", "nodes")
EVENTS: Key = ("", "events")
LEASES: Key = ("coordination.k8s.io", "leases")
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
#: Upstream renews the lease every quarter of its duration...
LEASE_RENEW = 10.0
#: ...and, with leases, reports an unchanged node status every 5 minutes.
NODE_STATUS_REPORT = 300.0
TERMINAL = ("Succeeded", "Failed")


class Kubelet:
    """One node's kubelet (see the module docstring).

    Args:
        api: the API server; reads come from its store, writes go through its ``Objects``.
        node_name: the Node's name.
        node_ip: its address on the node network (``status.hostIP`` of its pods).
        network: the node's pod network (its bridge and pod CIDR).
        directory: where pods' files (volumes, hosts, resolv.conf) and logs are kept.
        cluster_dns: the nameserver of ``ClusterFirst`` pods.
        cluster_domain: the cluster's DNS domain.
        images: what images run (default: :func:`sandbox.images.default_images`).
        crash_backoff: the first delay of the restart and image pull backoffs (upstream: 10 s).
        dialer: how probes and hooks connect to pod IPs (default: from this process's network
            namespace, which in the sandbox routes to every pod).
    """

    def __init__(
        self,
        api: APIServer,
        node_name: str,
        node_ip: str,
        network: PodNetwork,
        directory: Path,
        *,
        cluster_dns: str,
        cluster_domain: str = "cluster.local",
        images: ImageMap | None = None,
        crash_backoff: float = 10.0,
        dialer: Dialer = connect_tcp,
    ) -> None:
        self.api = api
        self.objects = api.objects
        self.store = api.store
        self.node_name = node_name
        self.node_ip = node_ip
        self.network = network
        self.directory = directory
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.images = images if images is not None else default_images()
        self.crash_backoff = crash_backoff
        self.dialer = dialer
        self.user = UserInfo(
            name=f"system:node:{node_name}", groups=("system:nodes", "system:authenticated")
        )
        self._resources: dict[Key, ResourceType] = {
            resource.key: resource for resource in self.objects.registry if not resource.custom
        }
        self._queue: WorkQueue[str] = WorkQueue()
        self._workers: dict[str, PodWorker] = {}
        self._events: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._boot_id = str(uuid.uuid4())

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register the node and run its pods until cancelled; started once registered."""
        (self.directory / "pods").mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        await self._register()
        self.store.listeners.append(self._listen)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._heartbeat, name=f"kubelet {self.node_name} heartbeat")
                tasks.start_soon(self._dispatch, tasks, name=f"kubelet {self.node_name} pods")
                for pod in self.store.list(PODS):
                    if self._bound_here(pod):
                        self._queue.add(pod["metadata"]["uid"])
                task_status.started()
        finally:
            self.store.listeners.remove(self._listen)

    def _bound_here(self, pod: Obj | None) -> bool:
        return pod is not None and pod.get("spec", {}).get("nodeName") == self.node_name

    def _listen(self, key: Key, change: Change) -> None:
        if key != PODS:
            return
        if self._bound_here(change.object) or self._bound_here(change.previous):
            self._queue.add(change.object["metadata"]["uid"])

    async def _dispatch(self, tasks: TaskGroup) -> None:
        while True:
            uid = await self._queue.get()
            try:
                worker = self._workers.get(uid)
                if worker is not None:
                    worker.notify()
                    continue
                pod = self._pod(uid)
                if pod is None or not self._bound_here(pod):
                    continue
                if pod.get("status", {}).get("phase") in TERMINAL:
                    continue  # finished before this kubelet started: nothing to run
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                tasks.start_soon(self._run_worker, worker, name=f"pod {worker}")
            finally:
                self._queue.done(uid)

    def _pod(self, uid: str) -> Obj | None:
        found = self.store.by_uid(uid)
        if found is None or found[0] != PODS:
            return None
        return self.store.get(PODS, found[1], found[2])

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("%s: pod %s failed", self.node_name, worker)
        finally:
            self._workers.pop(worker.uid, None)
            for key in [key for key in self._events if key[0] == worker.uid]:
                del self._events[key]

    # -- what the pod runtime asks (sandbox.node.runtime.Containers) ---------------------------

    def _container(self, pod: Mapping[str, Any], container: str) -> Container | None:
        worker = self._workers.get(pod.get("metadata", {}).get("uid", ""))
        return worker.container(container) if worker is not None else None

    def container_pid(self, pod: Mapping[str, Any], container: str) -> int | None:
        """The running container's main process, or None."""
        record = self._container(pod, container)
        if record is None or record.process is None or not record.running:
            return None
        return record.process.pid

    def log_file(
        self, pod: Mapping[str, Any], container: str, *, previous: bool = False
    ) -> Path | None:
        """The container's current (or previous) instance's CRI log."""
        record = self._container(pod, container)
        return record.log_file(previous=previous) if record is not None else None

    def is_running(self, pod: Mapping[str, Any], container: str) -> bool:
        record = self._container(pod, container)
        return record is not None and record.running

    # -- writes --------------------------------------------------------------------------------

    def resource(self, key: Key) -> ResourceType:
        return self._resources[key]

    def timestamp(self) -> str:
        return self.objects.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    async def event(
        self,
        pod: Obj,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        field_path: str = "",
    ) -> None:
        """Record an Event about ``pod``; a repeat of the same one counts up (best effort)."""
        metadata = pod["metadata"]
        key = (metadata["uid"], field_path, reason, message)
        stamp = self.timestamp()
        resource = self.resource(EVENTS)
        known = self._events.get(key)
        try:
            if known is not None:
                name, count = known
                self._events[key] = (name, count + 1)
                await self.objects.patch(
                    resource,
                    metadata["namespace"],
                    name,
                    "merge",
                    {"count": count + 1, "lastTimestamp": stamp},
                    self.user,
                    field_manager=FIELD_MANAGER,
                )
                return
            involved = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
                "resourceVersion": metadata.get("resourceVersion"),
            }
            if field_path:
                involved["fieldPath"] = field_path
            body = {
                "metadata": {"generateName": f"{metadata['name']}."},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": "Warning" if warning else "Normal",
                "source": {"component": "kubelet", "host": self.node_name},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "reportingComponent": "kubelet",
                "reportingInstance": self.node_name,
            }
            created = await self.objects.create(
                resource, metadata["namespace"], body, self.user, field_manager=FIELD_MANAGER
            )
            self._events[key] = (created["metadata"]["name"], 1)
        except errors.APIError as error:
            self._events.pop(key, None)
            log.debug("%s: event %s for %s not recorded: %s", self.node_name, reason, key, error)

    # -- the node ------------------------------------------------------------------------------

    async def _register(self) -> None:
        nodes = self.resource(NODES)
        if self.store.get(NODES, "", self.node_name) is None:
            cidr = str(self.network.cidr)
            labels = {
                "kubernetes.io/hostname": self.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            }
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node_name,
                    "labels": labels,
                    "annotations": {
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    },
                },
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            }
            await self.objects.create(nodes, "", body, self.user, field_manager=FIELD_MANAGER)
        await self._write_node_status()
        await self._renew_lease()

    async def _write_node_status(self) -> None:
        node = self.store.get(NODES, "", self.node_name)
        if node is None:
            return
        status = node_status(
            node, name=self.node_name, ip=self.node_ip, boot_id=self._boot_id, now=self.timestamp()
        )
        body = {"metadata": {"name": self.node_name}, "status": status}
        await self.objects.update(
            self.resource(NODES),
            "",
            self.node_name,
            body,
            self.user,
            subresource="status",
            field_manager=FIELD_MANAGER,
        )

    async def _heartbeat(self) -> None:
        reported = anyio.current_time()
        while True:
            await anyio.sleep(LEASE_RENEW)
            try:
                await self._renew_lease()
                if anyio.current_time() - reported >= NODE_STATUS_REPORT:
                    await self._write_node_status()
                    reported = anyio.current_time()
            except errors.APIError as error:
                log.warning("%s: heartbeat failed: %s", self.node_name, error)

    async def _renew_lease(self) -> None:
        renewed = self.objects.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        leases = self.resource(LEASES)
        lease = self.store.get(LEASES, LEASE_NAMESPACE, self.node_name)
        if lease is None:
            if self.store.get(("", "namespaces"), "", LEASE_NAMESPACE) is None:
                return
            node = self.store.get(NODES, "", self.node_name) or {"metadata": {}}
            body = {
                "metadata": {
                    "name": self.node_name,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.node_name,
                            "uid": node["metadata"].get("uid", ""),
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": LEASE_DURATION,
                    "renewTime": renewed,
                },
            }
            await self.objects.create(
                leases, LEASE_NAMESPACE, body, self.user, field_manager=FIELD_MANAGER
            )
            return
        await self.objects.patch(
            leases,
            LEASE_NAMESPACE,
            self.node_name,
            "merge",
            {"spec": {"renewTime": renewed}},
            self.user,
            field_manager=FIELD_MANAGER,
        )
