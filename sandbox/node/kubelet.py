"""The kubelet: runs the pods bound to one node and reports them, and the node, to the API.

The node
    :meth:`Kubelet.run` registers the Node (Ready, its addresses, its pod CIDR, capacity,
    ``nodeInfo``), renews its Lease in ``kube-node-lease`` every 10 s and writes the node's
    status again every 5 minutes, as a kubelet with node leases does.

Pods
    A store listener queues the uid of every pod bound to the node (``spec.nodeName``) when
    it changes; a dispatcher task gives a new pod a :class:`PodWorker`, a task of its own, and
    tells an existing one to look again. Nothing is done in the listener, which runs inside
    the write that called it.

A pod's life (:class:`PodWorker`)
    Volumes are prepared (``sandbox.node.volumes``), the pod's network namespace is made on
    the node's bridge (``sandbox.node.podnet``), ``/etc/hosts`` and ``/etc/resolv.conf`` are
    written into the pod's directory (``sandbox.node.env``). Init containers then run one at
    a time, each to exit 0 (a restartable one, a sidecar, only until it has started), and the
    containers all at once, each supervised by a loop that pulls its image (``sandbox.images``
    maps names to programs), builds its environment, starts it
    (:mod:`~sandbox.node.containers`), runs its postStart hook and probes
    (:mod:`~sandbox.node.probes`), and once it exits restarts it as ``restartPolicy`` says,
    with upstream's CrashLoopBackOff. A liveness or startup failure, or a changed image,
    kills the container (preStop, SIGTERM, SIGKILL after the grace period) for a restart.

Deletion
    A pod with a ``deletionTimestamp`` (the API server sets it and waits for the kubelet) is
    stopped: every running container gets its preStop hook, SIGTERM, and SIGKILL once
    ``deletionGracePeriodSeconds`` are over (a later, shorter grace period wins). Then, as
    upstream's status manager waits for the pod's resources to be reclaimed, the network and
    volumes go, the final status (phase Succeeded or Failed) is written, the only status
    write while the pod stops, and the object is deleted with ``gracePeriodSeconds: 0``;
    the logs go last. A pod that is gone at once (a forced delete) gets 2 s. A stopping
    kubelet stops every pod (SIGTERM, SIGKILL after 2 s) and removes its networks, shielded
    from the cancellation, but leaves the objects as they are, as a node that goes down does.

Status
    Written through ``pods/status`` when it differs from the stored one: phase, the
    conditions (PodReadyToStartContainers, Initialized, ContainersReady, Ready with readiness
    gates, PodScheduled), IPs, start time, QoS class and every container's state. Every write
    goes through the API server's ``Objects`` as ``system:node:<name>``, like any client's.
    Events (Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed...) are recorded
    with their counts, best effort.

Not modelled: ``activeDeadlineSeconds``, ephemeral containers, resource limits (nothing is
enforced, so no OOMKilled), termination message files, static pods, evictions.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import secrets
import shutil
import signal
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from sandbox import images
from sandbox.apiserver import errors
from sandbox.apiserver.rbac import UserInfo
from sandbox.controllers.queue import WorkQueue
from sandbox.images import ImageMap, default_images
from sandbox.node import env, netns
from sandbox.node.containers import (
    Container,
    ContainerProcess,
    go_duration,
    launcher_argv,
    pod_conditions,
    pod_phase,
    qos_class,
)
from sandbox.node.podnet import AddressesExhausted
from sandbox.node.probes import Prober, Target, connect_tcp, run_handler
from sandbox.node.volumes import Mount, VolumeError, Volumes

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from anyio.abc import TaskGroup, TaskStatus

    from sandbox.apiserver.resources import ResourceType
    from sandbox.apiserver.server import APIServer
    from sandbox.apiserver.store import Change, Key, Obj
    from sandbox.node.podnet import PodNetwork
    from sandbox.node.probes import Dialer

log = logging.getLogger("sandbox.kubelet")

PODS: Key = ("", "pods")
NODES: Key = ("", "nodes")
EVENTS: Key = ("", "events")
LEASES: Key = ("coordination.k8s.io", "leases")
FIELD_MANAGER = "kubelet"
KUBELET_VERSION = "v1.32.0"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
#: Upstream renews the lease every quarter of its duration...
LEASE_RENEW = 10.0
#: ...and, with leases, reports an unchanged node status every 5 minutes.
NODE_STATUS_REPORT = 300.0
#: Upstream's minimumGracePeriodInSeconds: a pod deleted at once still gets this long.
MINIMUM_GRACE = 2.0
#: How often volumes (ConfigMaps, Secrets, tokens, the downward API) are brought up to date.
VOLUME_REFRESH = 10.0
#: The longest wait between attempts to set a pod up (volumes, network, environment).
RETRY_CAP = 10.0
DEFAULT_GRACE = 30
TERMINAL = ("Succeeded", "Failed")
#: The status fields the kubelet owns; any other field another writer set is kept.
_OWN_STATUS = frozenset(
    {
        "phase",
        "conditions",
        "hostIP",
        "hostIPs",
        "podIP",
        "podIPs",
        "startTime",
        "qosClass",
        "initContainerStatuses",
        "containerStatuses",
    }
)


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
        body = {"metadata": {"name": self.node_name}, "status": self._node_status(node)}
        await self.objects.update(
            self.resource(NODES),
            "",
            self.node_name,
            body,
            self.user,
            subresource="status",
            field_manager=FIELD_MANAGER,
        )

    def _node_status(self, node: Obj) -> Obj:
        stamp = self.timestamp()
        old = {c.get("type"): c for c in node.get("status", {}).get("conditions") or []}
        conditions = []
        for kind, status, reason, message in (
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ):
            before = old.get(kind, {})
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": before.get("lastTransitionTime", stamp)
                    if before.get("status") == status
                    else stamp,
                    "reason": reason,
                    "message": message,
                }
            )
        machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.node_name}.sandbox")
        resources = dict(env.NODE_ALLOCATABLE)
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine.hex,
                "systemUUID": str(machine),
                "bootID": self._boot_id,
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": "sandbox://1",
                "kubeletVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

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


def _os_image() -> str:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return "Linux"
    return release.get("PRETTY_NAME", "Linux")


class PodWorker:
    """One pod's life on the node (see the module docstring)."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        metadata = pod["metadata"]
        self.uid: str = metadata["uid"]
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.pod = pod
        spec = pod.get("spec", {})
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        backoff = kubelet.crash_backoff
        self.init_containers = [
            Container(c, init=True, backoff=backoff) for c in spec.get("initContainers") or []
        ]
        self.containers = [
            Container(c, init=False, backoff=backoff) for c in spec.get("containers") or []
        ]
        if not self.init_containers:
            for record in self.containers:
                record.waiting("ContainerCreating")
        self.directory = kubelet.directory / "pods" / self.uid
        self.log_directory = kubelet.directory / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        self.volumes: Volumes | None = None
        self.attached = False
        self.network_path: Path | None = None
        self.pod_ip = ""
        self.hostname = self.name
        self.sandbox_ready = False
        self.initialized = not self.init_containers
        self.init_failed = False
        #: All containers are done for good, or were stopped for the pod's deletion.
        self.terminal = False
        self.gone = False
        self.start_time = ""
        self._run_scope = anyio.CancelScope()
        self._stop = anyio.Event()
        self._deadline: float | None = None
        self._grace_scopes: set[anyio.CancelScope] = set()
        self._dirty = anyio.Event()
        self._background: TaskGroup | None = None
        self.notify()

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]

    def container(self, name: str) -> Container | None:
        return next((c for c in self.all_containers() if c.name == name), None)

    # -- changes from the API ------------------------------------------------------------------

    def notify(self) -> None:
        """The pod changed or went away: take in what changed."""
        pod = self.kubelet.store.get(PODS, self.namespace, self.name)
        if pod is None or pod["metadata"].get("uid") != self.uid:
            self.gone = True
            self._request_stop(MINIMUM_GRACE)
            return
        self.pod = pod
        metadata = pod["metadata"]
        if metadata.get("deletionTimestamp"):
            grace = metadata.get("deletionGracePeriodSeconds")
            self._request_stop(float(grace if grace is not None else DEFAULT_GRACE))
        spec = pod.get("spec", {})
        for record in self.all_containers():
            new = next(
                (
                    c
                    for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                    if c.get("name") == record.name
                ),
                None,
            )
            if new is not None and new.get("image") != record.image:
                record.spec = dict(new)
                record.changed.set()
        self._changed()  # readiness gates and conditions others set show in the status

    def _request_stop(self, grace: float) -> None:
        deadline = anyio.current_time() + grace
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
            for scope in self._grace_scopes:
                scope.deadline = min(scope.deadline, deadline)
        self._stop.set()
        self._run_scope.cancel()

    # -- the pod's life ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as background:
                self._background = background
                background.start_soon(self._report, name=f"status of {self}")
                with self._run_scope:
                    await self._live()
                    self.terminal = True
                    self._changed()
                    await self._release_network()
                    await self._stop.wait()
                await self._terminate()
                background.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_network()
                if self.gone:
                    shutil.rmtree(self.directory, ignore_errors=True)
                    shutil.rmtree(self.log_directory, ignore_errors=True)
                else:
                    shutil.rmtree(self.directory / "stage", ignore_errors=True)

    async def _live(self) -> None:
        """Set the pod up and run its containers until every one is done for good."""
        self.start_time = self.kubelet.timestamp()
        self._changed()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        await self._retry(self._prepare_volumes, "FailedMount")
        await self._retry(self._create_sandbox, "FailedCreatePodSandBox")
        self._changed()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._refresh_volumes, name=f"volumes of {self}")
            if await self._initialize(tasks):
                async with anyio.create_task_group() as main:
                    for record in self.containers:
                        main.start_soon(
                            self._supervise,
                            record,
                            self.restart_policy,
                            None,
                            name=f"{record.name}",
                        )
            tasks.cancel_scope.cancel()
        # The containers are done: sidecars stop too (upstream stops them in reverse order).
        grace = float(self.pod.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))
        deadline = anyio.current_time() + grace
        for record in reversed(self.init_containers):
            if record.process is not None and record.running:
                await self._kill(record, record.process, deadline)

    async def _retry(self, step: Any, reason: str) -> None:
        delay = 0.5
        while True:
            try:
                await step()
                return
            except VolumeError as error:
                message = f"MountVolume.SetUp failed for volume {error.volume!r}: {error}"
                await self.kubelet.event(self.pod, reason, message.replace("'", '"'), warning=True)
            except (env.EnvError, netns.NamespaceError, AddressesExhausted, OSError) as error:
                log.info("%s: %s: %s", self, reason, error)
                await self.kubelet.event(self.pod, reason, str(error), warning=True)
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP)

    async def _prepare_volumes(self) -> None:
        if self.volumes is None:
            self.volumes = Volumes(self.pod, self.directory, self.kubelet.api)
        await self.volumes.prepare()

    async def _refresh_volumes(self) -> None:
        assert self.volumes is not None
        while True:
            await anyio.sleep(VOLUME_REFRESH)
            try:
                await self.volumes.refresh()
            except VolumeError as error:
                log.info("%s: refreshing volumes: %s", self, error)

    async def _create_sandbox(self) -> None:
        """The pod's network namespace (or the node's, for hostNetwork), hosts and DNS."""
        kubelet = self.kubelet
        spec = self.pod.get("spec", {})
        if spec.get("hostNetwork"):
            self.pod_ip = kubelet.node_ip
            self.network_path = netns.path(kubelet.network.node_namespace)
            self.hostname = kubelet.node_name
        else:
            self.hostname = env.hostname(self.pod, cluster_domain=kubelet.cluster_domain)
            if not self.attached:
                address = await kubelet.network.attach(self.uid)
                self.attached = True
                self.pod_ip = address.ip
                self.network_path = netns.path(address.namespace)
        hosts = env.hosts_file(self.pod, pod_ip=self.pod_ip, cluster_domain=kubelet.cluster_domain)
        resolv = env.resolv_conf(
            self.pod, nameserver=kubelet.cluster_dns, cluster_domain=kubelet.cluster_domain
        )
        (self.directory / "etc-hosts").write_text(hosts)
        (self.directory / "resolv.conf").write_text(resolv)
        self.sandbox_ready = True

    async def _release_network(self) -> None:
        self.sandbox_ready = False
        if self.attached:
            with anyio.CancelScope(shield=True):
                await self.kubelet.network.detach(self.uid)
            self.attached = False

    async def _initialize(self, tasks: TaskGroup) -> bool:
        """Run the init containers in order; False when one failed for good."""
        for record in self.init_containers:
            if record.sidecar:
                started = anyio.Event()
                tasks.start_soon(self._supervise, record, "Always", started, name=record.name)
                await started.wait()
                continue
            policy = "Never" if self.restart_policy == "Never" else "OnFailure"
            if await self._supervise(record, policy, None) != 0:
                self.init_failed = True
                self._changed()
                return False
        self.initialized = True
        for record in self.containers:
            record.waiting("ContainerCreating")
        self._changed()
        return True

    # -- one container -------------------------------------------------------------------------

    async def _supervise(self, record: Container, policy: str, started: anyio.Event | None) -> int:
        """Run ``record`` until it is done for good under ``policy``; its last exit code."""
        while True:
            program = await self._pull(record)
            environment, mounts = await self._configure(record)
            process = await self._start(record, program, environment, mounts)
            killed = await self._watch(record, process, started)
            code = record.end()
            exited_at = anyio.current_time()
            if record.init and not record.sidecar and code == 0:
                record.ready = True
            self._changed()
            if killed == "changed":
                continue  # upstream restarts a changed container whatever the policy
            if policy == "Never" or (policy == "OnFailure" and code == 0 and killed is None):
                return code
            wait, period = record.restart_backoff.delay(exited_at, anyio.current_time())
            if wait > 0:
                pod = f"{self.name}_{self.namespace}({self.uid})"
                record.backing_off(
                    f"back-off {go_duration(period)} restarting failed container={record.name} "
                    f"pod={pod}"
                )
                self._changed()
                await self.kubelet.event(
                    self.pod,
                    "BackOff",
                    f"Back-off restarting failed container {record.name} in pod {pod}",
                    warning=True,
                    field_path=record.field_path,
                )
                with anyio.move_on_after(wait):
                    await record.changed.wait()

    async def _pull(self, record: Container) -> images.Program:
        """The program of the container's image, retried with ImagePullBackOff."""
        delay = self.kubelet.crash_backoff
        while True:
            record.changed = anyio.Event()
            image = record.image
            spec = record.spec
            request = images.Container(
                image=image,
                command=tuple(str(w) for w in spec.get("command") or ()),
                args=tuple(str(w) for w in spec.get("args") or ()),
                pod=self.name,
                namespace=self.namespace,
            )
            try:
                program = self.kubelet.images.resolve(request)
            except images.UnknownImage as error:
                record.waiting("ErrImagePull", str(error))
                self._changed()
                await self._event(record, "Failed", f'Failed to pull image "{image}": {error}')
                await self._event(record, "Failed", "Error: ErrImagePull")
                # ErrImagePull shows until the next sync, then ImagePullBackOff until the retry.
                hold = min(1.0, delay / 2)
                with anyio.move_on_after(hold):
                    await record.changed.wait()
                if not record.changed.is_set():
                    record.waiting(
                        "ImagePullBackOff",
                        f'Back-off pulling image "{image}": ErrImagePull: {error}',
                    )
                    self._changed()
                    await self._event(record, "BackOff", f'Back-off pulling image "{image}"', False)
                    with anyio.move_on_after(delay - hold):
                        await record.changed.wait()
                delay = min(delay * 2, 300.0)
                continue
            except images.ImageError as error:
                record.waiting("CreateContainerError", str(error))
                self._changed()
                await self._event(record, "Failed", f"Error: {error}")
                with anyio.move_on_after(delay):
                    await record.changed.wait()
                delay = min(delay * 2, 300.0)
                continue
            await self._event(
                record, "Pulled", f'Container image "{image}" already present on machine', False
            )
            return program

    async def _configure(self, record: Container) -> tuple[dict[str, str], list[Mount]]:
        """The container's environment and mounts, retried while they cannot be made
        (``CreateContainerConfigError``)."""
        delay = 0.5
        kubelet = self.kubelet
        assert self.volumes is not None
        while True:
            try:
                environment = env.container_env(
                    self.pod,
                    record.spec,
                    store=kubelet.store,
                    pod_ip=self.pod_ip,
                    host_ip=kubelet.node_ip,
                    node_name=kubelet.node_name,
                )
                return environment, self.volumes.mounts(record.spec, env=environment)
            except (env.EnvError, VolumeError) as error:
                record.waiting("CreateContainerConfigError", str(error))
                self._changed()
                await self._event(record, "Failed", f"Error: {error}")
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP)

    async def _start(
        self,
        record: Container,
        program: images.Program,
        environment: Mapping[str, str],
        mounts: list[Mount],
    ) -> ContainerProcess:
        assert self.network_path is not None
        assert self._background is not None
        stage = self.directory / "stage" / f"{record.name}-{record.instances}"
        shutil.rmtree(stage, ignore_errors=True)
        argv = launcher_argv(
            program.argv,
            network=self.network_path,
            stage=stage,
            resolv_conf=self.directory / "resolv.conf",
            hosts=self.directory / "etc-hosts",
            mounts=mounts,
            hostname=self.hostname,
            working_dir=record.spec.get("workingDir"),
        )
        # As containerd: HOSTNAME, then the image's ENV, then the container's own variables.
        process_env = {"HOSTNAME": self.hostname, **program.env, **environment}
        log_path = self.log_directory / record.name / f"{record.instances}.log"
        process = ContainerProcess(argv, process_env, log_path, stage)
        await self._background.start(process.run, name=f"container {self}/{record.name}")
        with anyio.CancelScope(shield=True):  # a few milliseconds: then the record has it
            await process.executed()
        record.begin(process, f"sandbox://{secrets.token_hex(32)}", images.image_id(record.image))
        self._changed()
        await self._event(record, "Created", f"Created container {record.name}", False)
        await self._event(record, "Started", f"Started container {record.name}", False)
        return process

    def _target(self, record: Container, process: ContainerProcess) -> Target:
        ports = {
            str(port["name"]): int(port["containerPort"])
            for port in record.spec.get("ports") or []
            if port.get("name") and port.get("containerPort")
        }
        return Target(
            name=record.name,
            pod_ip=self.pod_ip,
            ports=ports,
            pid=process.pid if process.running else None,
            env=process.env,
            working_dir=record.spec.get("workingDir"),
        )

    async def _watch(
        self, record: Container, process: ContainerProcess, started: anyio.Event | None
    ) -> str | None:
        """Hooks and probes while the instance runs; returns why it was killed, if it was:
        ``failed`` (a hook or probe) or ``changed`` (its image)."""
        killed: str | None = None
        grace = float(self.pod.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))

        async def kill(why: str, reason: str, probe: Mapping[str, Any] | None = None) -> None:
            nonlocal killed
            killed = why
            await self._event(record, "Killing", reason, False)
            seconds = (probe or {}).get("terminationGracePeriodSeconds", grace)
            await self._kill(record, process, anyio.current_time() + float(seconds))

        async def hooks_and_probes() -> None:
            target = self._target(record, process)
            post_start = (record.spec.get("lifecycle") or {}).get("postStart")
            if post_start:
                outcome = await run_handler(
                    post_start, target, self.kubelet.dialer, time_limit=None
                )
                if not outcome.success:
                    message = f"PostStartHook failed: {outcome.message}"
                    await self._event(record, "FailedPostStartHook", message)
                    await kill("failed", f"Container {record.name} failed post start hook")
                    return
            if record.init and not record.sidecar:
                record.started = True
                self._changed()
                return

            def on_started() -> None:
                record.started = True
                if started is not None:
                    started.set()
                self._changed()

            def on_ready(ready: bool) -> None:
                record.ready = ready
                self._changed()

            def on_unhealthy(message: str) -> None:
                self._background_event(record, "Unhealthy", message)

            prober = Prober(
                record.spec,
                target,
                self.kubelet.dialer,
                on_started=on_started,
                on_ready=on_ready,
                on_unhealthy=on_unhealthy,
            )
            reason = await prober.run()
            spec = record.spec
            probe = spec.get("livenessProbe") if "liveness" in reason else spec.get("startupProbe")
            await kill("failed", reason, probe)

        async def definition_changed() -> None:
            await record.changed.wait()
            await kill("changed", f"Container {record.name} definition changed, will be restarted")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hooks_and_probes, name=f"probes of {self}/{record.name}")
            tasks.start_soon(definition_changed, name=f"spec of {self}/{record.name}")
            await process.exited.wait()
            tasks.cancel_scope.cancel()
        shutil.rmtree(process.stage, ignore_errors=True)
        return killed

    async def _kill(
        self,
        record: Container,
        process: ContainerProcess,
        deadline: float,
        *,
        pre_stop: bool = True,
    ) -> None:
        """preStop, SIGTERM, and SIGKILL at ``deadline`` (which a shorter grace period given
        later moves up); returns once the instance is gone."""
        hook = (record.spec.get("lifecycle") or {}).get("preStop") if pre_stop else None
        if hook:
            with self._grace(deadline) as scope:
                outcome = await run_handler(
                    hook, self._target(record, process), self.kubelet.dialer, time_limit=None
                )
                if not outcome.success:
                    message = f"PreStopHook failed: {outcome.message}"
                    self._background_event(record, "FailedPreStopHook", message)
            if scope.cancelled_caught:
                # Upstream gives SIGTERM a last 2 s when the hook used the grace period up.
                deadline = anyio.current_time() + MINIMUM_GRACE
        process.send_signal(signal.SIGTERM)
        with self._grace(deadline):
            await process.exited.wait()
        if not process.exited.is_set():
            process.kill()
            await process.exited.wait()

    @contextlib.contextmanager
    def _grace(self, deadline: float) -> Iterator[anyio.CancelScope]:
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        with anyio.CancelScope(deadline=deadline) as scope:
            self._grace_scopes.add(scope)
            try:
                yield scope
            finally:
                self._grace_scopes.discard(scope)

    # -- deletion ------------------------------------------------------------------------------

    async def _terminate(self) -> None:
        """Stop every container within the grace period; then the object goes."""
        assert self._deadline is not None
        async with anyio.create_task_group() as tasks:
            for record in self.all_containers():
                if record.process is not None and record.running:
                    await self._event(record, "Killing", f"Stopping container {record.name}", False)
                    tasks.start_soon(self._stop_container, record, record.process)
        for record in self.all_containers():
            if record.process is not None and "running" in record.state:
                record.end()
        if self.gone:
            return
        # As upstream's status manager, the object goes only once the pod's resources are
        # reclaimed: its network and volumes.
        await self._release_network()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.terminal = True
        await self._write_status(final=True)
        kubelet = self.kubelet
        try:
            await kubelet.objects.delete(
                kubelet.resource(PODS),
                self.namespace,
                self.name,
                kubelet.user,
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except errors.APIError as error:
            if error.code not in (404, 409):
                log.warning("%s: deleting the pod failed: %s", self, error)
        self.gone = True

    async def _stop_container(self, record: Container, process: ContainerProcess) -> None:
        assert self._deadline is not None
        await self._kill(record, process, self._deadline, pre_stop=not self.gone)

    # -- status --------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty.set()

    async def _report(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            await self._write_status()

    async def _write_status(self, *, final: bool = False) -> None:
        current = self.kubelet.store.get(PODS, self.namespace, self.name)
        if current is None or current["metadata"].get("uid") != self.uid:
            return
        if not final and (self._stop.is_set() or current["metadata"].get("deletionTimestamp")):
            return  # a stopping pod's status is written once, when it has stopped
        status = self._status(current)
        if status == current.get("status"):
            return
        kubelet = self.kubelet
        body = {"metadata": {"name": self.name, "namespace": self.namespace}, "status": status}
        try:
            await kubelet.objects.update(
                kubelet.resource(PODS),
                self.namespace,
                self.name,
                body,
                kubelet.user,
                subresource="status",
                field_manager=FIELD_MANAGER,
            )
        except errors.APIError as error:
            if error.code != 404:
                log.warning("%s: writing the status failed: %s", self, error)

    def _status(self, current: Obj) -> Obj:
        old = current.get("status") or {}
        phase = pod_phase(
            self.containers,
            restart_policy=self.restart_policy,
            initialized=self.initialized,
            init_failed=self.init_failed,
            stopped=self.terminal and self._stop.is_set(),
        )
        status = {key: value for key, value in old.items() if key not in _OWN_STATUS}
        status["phase"] = phase
        gates = current.get("spec", {}).get("readinessGates") or []
        status["conditions"] = pod_conditions(
            phase,
            self.init_containers,
            self.containers,
            old=old.get("conditions") or [],
            now=self.kubelet.timestamp(),
            sandbox_ready=self.sandbox_ready,
            initialized=self.initialized,
            readiness_gates=[gate.get("conditionType", "") for gate in gates],
        )
        status["hostIP"] = self.kubelet.node_ip
        status["hostIPs"] = [{"ip": self.kubelet.node_ip}]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        status["qosClass"] = qos_class(current.get("spec", {}))
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        status["containerStatuses"] = [c.status() for c in self.containers]
        return status

    # -- events --------------------------------------------------------------------------------

    async def _event(
        self, record: Container, reason: str, message: str, warning: bool = True
    ) -> None:
        await self.kubelet.event(
            self.pod, reason, message, warning=warning, field_path=record.field_path
        )

    def _background_event(self, record: Container, reason: str, message: str) -> None:
        """An event from a synchronous callback (a probe's result): recorded in the pod's
        background, never holding up the probe."""
        if self._background is not None:
            self._background.start_soon(self._event, record, reason, message)
