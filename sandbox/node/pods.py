"""A pod's life on its node, as the kubelet's pod worker drives it: setup, run, stop, report.

The kubelet (:mod:`~sandbox.node.kubelet`) gives every pod bound to its node a
:class:`PodWorker`, a task of its own, and calls :meth:`PodWorker.notify` whenever the stored
pod changes or goes away; the worker takes in what changed and does the rest.

Setting up
    Volumes are prepared (``sandbox.node.volumes``), the pod's network namespace is made on
    the node's bridge (``sandbox.node.podnet``, or the node's own for ``hostNetwork``), and
    ``/etc/hosts`` and ``/etc/resolv.conf`` are written into the pod's directory
    (``sandbox.node.env``). A step that fails is retried with a backoff and reported as an
    event (``FailedMount``, ``FailedCreatePodSandBox``), as upstream retries a pod's sync.
    Volumes made from the API (ConfigMaps, Secrets, tokens, the downward API) are brought up
    to date every 10 s while the pod runs.

Running
    Init containers run one at a time, each to exit 0 (a restartable one, a sidecar, only
    until it has started, and then alongside), and then the containers all at once, each
    driven by a :class:`~sandbox.node.supervisor.ContainerSupervisor` (pull, start, hooks,
    probes, restarts). Once every container is done for good the sidecars are stopped, in
    reverse order, and the network goes; the worker then waits for the pod's deletion.

Stopping
    A pod with a ``deletionTimestamp`` (the API server sets it and waits for the kubelet) is
    stopped: every running container gets its preStop hook, SIGTERM, and SIGKILL once
    ``deletionGracePeriodSeconds`` are over (a later, shorter grace period wins, also for a
    container already stopping). Then, as upstream's status manager waits for the pod's
    resources to be reclaimed, the network and volumes go, the final status (phase
    Succeeded or Failed) is written, and the object is deleted with ``gracePeriodSeconds:
    0``; the logs go last. A pod that is gone at once (a forced delete) gets 2 s, without
    preStop hooks. A stopping kubelet cancels the worker, which stops the containers
    (SIGTERM, SIGKILL after 2 s) and removes the network, shielded from the cancellation,
    but leaves the object as it is, as a node that goes down does.

Reporting
    Any change (a container's state, readiness, the pod's conditions others set) marks the
    status dirty; a reporter task writes it through ``pods/status`` when it differs from the
    stored one, also while the pod stops, as upstream's status manager does. The status
    itself is a pure function (:func:`sandbox.node.status.pod_status`); writes are made one
    at a time, so a slow one never lands after a newer one. Events are recorded through the
    kubelet, best effort.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from typing import TYPE_CHECKING

import anyio

from sandbox.apiserver import errors
from sandbox.node import env, netns
from sandbox.node.containers import Container
from sandbox.node.podnet import AddressesExhausted
from sandbox.node.status import pod_status
from sandbox.node.supervisor import MINIMUM_GRACE, RETRY_CAP, ContainerSupervisor
from sandbox.node.volumes import VolumeError, Volumes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from anyio.abc import TaskGroup

    from sandbox.apiserver.store import Key, Obj
    from sandbox.node.containers import ContainerProcess
    from sandbox.node.kubelet import Kubelet

log = logging.getLogger("sandbox.kubelet")

PODS: Key = ("", "pods")
FIELD_MANAGER = "kubelet"
#: The pod spec's default ``terminationGracePeriodSeconds``.
DEFAULT_GRACE = 30
#: How often volumes (ConfigMaps, Secrets, tokens, the downward API) are brought up to date.
VOLUME_REFRESH = 10.0


class PodWorker:
    """One pod's life on the node (see the module docstring).

    Args:
        kubelet: the node's kubelet: its API, network, images and events.
        pod: the pod as first seen bound to the node.
    """

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
        #: Where the containers' processes run: it outlives their supervision (see ``run``).
        self.background: TaskGroup | None = None
        self._run_scope = anyio.CancelScope()
        self._stop = anyio.Event()
        self._deadline: float | None = None
        self._grace_scopes: set[anyio.CancelScope] = set()
        self._dirty = anyio.Event()
        self._writing = anyio.Lock()
        self.notify()

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]

    def container(self, name: str) -> Container | None:
        return next((c for c in self.all_containers() if c.name == name), None)

    @property
    def grace_period(self) -> float:
        """The pod's ``terminationGracePeriodSeconds``."""
        return float(self.pod.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))

    # -- changes from the API ------------------------------------------------------------------

    def _stored(self) -> Obj | None:
        """The pod as stored now; None once it is gone (or another pod took its name)."""
        pod = self.kubelet.store.get(PODS, self.namespace, self.name)
        if pod is None or pod["metadata"].get("uid") != self.uid:
            return None
        return pod

    def notify(self) -> None:
        """The pod changed or went away: take in what changed."""
        pod = self._stored()
        if pod is None:
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
        self.changed()  # readiness gates and conditions others set show in the status

    def _request_stop(self, grace: float) -> None:
        deadline = anyio.current_time() + grace
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
            for scope in self._grace_scopes:
                scope.deadline = min(scope.deadline, deadline)
        self._stop.set()
        self._run_scope.cancel()

    @contextlib.contextmanager
    def grace(self, deadline: float) -> Iterator[anyio.CancelScope]:
        """A scope that ends at ``deadline``, or earlier once the pod's deletion says so."""
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        with anyio.CancelScope(deadline=deadline) as scope:
            self._grace_scopes.add(scope)
            try:
                yield scope
            finally:
                self._grace_scopes.discard(scope)

    # -- the pod's life ------------------------------------------------------------------------

    async def run(self) -> None:
        """Set the pod up, run it, and stop it once it is deleted (see the module docstring)."""
        try:
            async with anyio.create_task_group() as background:
                self.background = background
                background.start_soon(self._report, name=f"status of {self}")
                with self._run_scope:
                    await self._live()
                    self.terminal = True
                    self.changed()
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
        self.changed()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        await self._retry(self._prepare_volumes, "FailedMount")
        await self._retry(self._create_sandbox, "FailedCreatePodSandBox")
        self.changed()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._refresh_volumes, name=f"volumes of {self}")
            if await self._initialize(tasks):
                async with anyio.create_task_group() as main:
                    for record in self.containers:
                        supervisor = ContainerSupervisor(self, record)
                        main.start_soon(supervisor.run, self.restart_policy, name=record.name)
            tasks.cancel_scope.cancel()
        # The containers are done: sidecars stop too (upstream stops them in reverse order).
        deadline = anyio.current_time() + self.grace_period
        for record in reversed(self.init_containers):
            if record.process is not None and record.running:
                await ContainerSupervisor(self, record).kill(record.process, deadline)

    async def _retry(self, step: Callable[[], Awaitable[None]], reason: str) -> None:
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
            supervisor = ContainerSupervisor(self, record)
            if record.sidecar:
                started = anyio.Event()
                tasks.start_soon(supervisor.run, "Always", started, name=record.name)
                await started.wait()
                continue
            policy = "Never" if self.restart_policy == "Never" else "OnFailure"
            if await supervisor.run(policy) != 0:
                self.init_failed = True
                self.changed()
                return False
        self.initialized = True
        for record in self.containers:
            record.waiting("ContainerCreating")
        self.changed()
        return True

    # -- deletion ------------------------------------------------------------------------------

    async def _terminate(self) -> None:
        """Stop every container within the grace period; then the object goes."""
        assert self._deadline is not None
        async with anyio.create_task_group() as tasks:
            for record in self.all_containers():
                if record.process is not None and record.running:
                    message = f"Stopping container {record.name}"
                    await self.event(record, "Killing", message, warning=False)
                    tasks.start_soon(self._stop_container, record, record.process)
        for record in self.all_containers():
            if record.process is not None and "running" in record.state:
                record.end()  # it exited as its supervision was cancelled
        self.changed()
        if self.gone:
            return
        # As upstream's status manager, the object goes only once the pod's resources are
        # reclaimed: its network and volumes.
        await self._release_network()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.terminal = True
        await self._write_status()
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
        supervisor = ContainerSupervisor(self, record)
        await supervisor.kill(process, self._deadline, pre_stop=not self.gone)
        record.end()
        self.changed()  # reported while the others still stop

    # -- status --------------------------------------------------------------------------------

    def changed(self) -> None:
        """Something the status shows changed: the reporter writes it."""
        self._dirty.set()

    async def _report(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            await self._write_status()

    async def _write_status(self) -> None:
        async with self._writing:
            current = self._stored()
            if current is None:
                return
            kubelet = self.kubelet
            status = pod_status(
                current,
                self.init_containers,
                self.containers,
                restart_policy=self.restart_policy,
                initialized=self.initialized,
                init_failed=self.init_failed,
                stopped=self.terminal and self._stop.is_set(),
                sandbox_ready=self.sandbox_ready,
                host_ip=kubelet.node_ip,
                pod_ip=self.pod_ip,
                start_time=self.start_time,
                now=kubelet.timestamp(),
            )
            if status == current.get("status"):
                return
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

    # -- events --------------------------------------------------------------------------------

    async def event(
        self, record: Container, reason: str, message: str, *, warning: bool = True
    ) -> None:
        """Record an Event about one of the pod's containers (best effort)."""
        await self.kubelet.event(
            self.pod, reason, message, warning=warning, field_path=record.field_path
        )

    def background_event(self, record: Container, reason: str, message: str) -> None:
        """A warning from a synchronous callback (a probe's result): recorded in the pod's
        background, never holding up the probe."""
        if self.background is not None:
            self.background.start_soon(self.event, record, reason, message)
