"""One container of a pod, supervised through its instances, as the kubelet's runtime manager.

:class:`ContainerSupervisor` runs a container until it is done for good under a restart
policy; each round is one instance:

1. The image is resolved to a program (``sandbox.images``): an unknown one shows
   ``ErrImagePull`` until the next sync, then ``ImagePullBackOff`` until the retry, which
   backs off from the kubelet's ``crash_backoff`` up to 5 minutes, as upstream's image puller.
2. The environment and mounts are made (``sandbox.node.env``, ``sandbox.node.volumes``); a
   missing ConfigMap or Secret key shows ``CreateContainerConfigError``, retried.
3. The instance starts through the launcher (:mod:`~sandbox.node.containers`), and counts as
   started once the launcher has become the program, so that a hook or an exec sees its
   mounts: what a runtime's "started" promises.
4. The postStart hook, then the probes (:mod:`~sandbox.node.probes`), run while it does. A
   failed hook, liveness or startup probe, or a changed image in the pod's spec, kills it.
5. Once it exits, it is restarted as the policy says: at once the first time, then with
   upstream's CrashLoopBackOff; a changed image restarts it whatever the policy.

Killing an instance (:meth:`ContainerSupervisor.kill`) is upstream's ``killContainer``: the
preStop hook, SIGTERM, and SIGKILL at the deadline. The deadline is the pod's to move up:
a deletion with a shorter grace period, given while a container stops, cuts the wait short
(:meth:`~sandbox.node.pods.PodWorker.grace`).

The container's state lives in its :class:`~sandbox.node.containers.Container` record,
which the pod's status is made from; a supervisor only drives it, and tells the pod worker
when it changed.
"""

from __future__ import annotations

import secrets
import shutil
import signal
from typing import TYPE_CHECKING, Any

import anyio

from sandbox import images
from sandbox.node import env
from sandbox.node.containers import ContainerProcess, go_duration, launcher_argv
from sandbox.node.probes import Prober, Target, run_handler
from sandbox.node.volumes import Mount, VolumeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sandbox.node.containers import Container
    from sandbox.node.pods import PodWorker

#: Upstream's minimumGracePeriodInSeconds: a pod deleted at once still gets this long, and
#: SIGTERM gets it after a preStop hook that used the grace period up.
MINIMUM_GRACE = 2.0
#: The longest wait between attempts to set a pod or a container up.
RETRY_CAP = 10.0
#: The longest a start waits for the launcher to become the program (should it hang).
EXEC_WAIT = 10.0
#: Upstream's cap on the image pull backoff.
MAX_PULL_BACKOFF = 300.0


class ContainerSupervisor:
    """Runs one container of a pod (see the module docstring).

    Args:
        worker: the pod's worker: the pod, its sandbox, its volumes and its status.
        record: the container's record, whose state the supervisor keeps.
    """

    def __init__(self, worker: PodWorker, record: Container) -> None:
        self.worker = worker
        self.record = record

    def __str__(self) -> str:
        return f"{self.worker}/{self.record.name}"

    async def run(self, policy: str, started: anyio.Event | None = None) -> int:
        """Run the container until it is done for good under ``policy``; its last exit code.
        ``started`` is set once its startup probe succeeded (a sidecar's, which the next init
        container waits for)."""
        record = self.record
        worker = self.worker
        while True:
            program = await self._pull()
            environment, mounts = await self._configure()
            process = await self._start(program, environment, mounts)
            killed = await self._watch(process, started)
            code = record.end()
            exited_at = anyio.current_time()
            if record.init and not record.sidecar and code == 0:
                record.ready = True
            worker.changed()
            if killed == "changed":
                continue  # upstream restarts a changed container whatever the policy
            if policy == "Never" or (policy == "OnFailure" and code == 0 and killed is None):
                return code
            wait, period = record.restart_backoff.delay(exited_at, anyio.current_time())
            if wait > 0:
                pod = f"{worker.name}_{worker.namespace}({worker.uid})"
                record.backing_off(
                    f"back-off {go_duration(period)} restarting failed container={record.name} "
                    f"pod={pod}"
                )
                worker.changed()
                await worker.event(
                    record,
                    "BackOff",
                    f"Back-off restarting failed container {record.name} in pod {pod}",
                )
                await self._wait_for_change(wait)

    async def _wait_for_change(self, seconds: float) -> None:
        """Wait ``seconds``, or less should the container's image change."""
        with anyio.move_on_after(seconds):
            await self.record.changed.wait()

    async def _pull(self) -> images.Program:
        """The program of the container's image, retried with ImagePullBackOff."""
        record = self.record
        worker = self.worker
        delay = worker.kubelet.crash_backoff
        while True:
            record.changed = anyio.Event()
            image = record.image
            spec = record.spec
            request = images.Container(
                image=image,
                command=tuple(str(w) for w in spec.get("command") or ()),
                args=tuple(str(w) for w in spec.get("args") or ()),
                pod=worker.name,
                namespace=worker.namespace,
            )
            try:
                program = worker.kubelet.images.resolve(request)
            except images.UnknownImage as error:
                record.waiting("ErrImagePull", str(error))
                worker.changed()
                await worker.event(record, "Failed", f'Failed to pull image "{image}": {error}')
                await worker.event(record, "Failed", "Error: ErrImagePull")
                # ErrImagePull shows until the next sync, then ImagePullBackOff until the retry.
                hold = min(1.0, delay / 2)
                await self._wait_for_change(hold)
                if not record.changed.is_set():
                    record.waiting(
                        "ImagePullBackOff",
                        f'Back-off pulling image "{image}": ErrImagePull: {error}',
                    )
                    worker.changed()
                    message = f'Back-off pulling image "{image}"'
                    await worker.event(record, "BackOff", message, warning=False)
                    await self._wait_for_change(delay - hold)
                delay = min(delay * 2, MAX_PULL_BACKOFF)
                continue
            except images.ImageError as error:
                record.waiting("CreateContainerError", str(error))
                worker.changed()
                await worker.event(record, "Failed", f"Error: {error}")
                await self._wait_for_change(delay)
                delay = min(delay * 2, MAX_PULL_BACKOFF)
                continue
            message = f'Container image "{image}" already present on machine'
            await worker.event(record, "Pulled", message, warning=False)
            return program

    async def _configure(self) -> tuple[dict[str, str], list[Mount]]:
        """The container's environment and mounts, retried while they cannot be made
        (``CreateContainerConfigError``)."""
        record = self.record
        worker = self.worker
        kubelet = worker.kubelet
        assert worker.volumes is not None
        delay = 0.5
        while True:
            try:
                environment = env.container_env(
                    worker.pod,
                    record.spec,
                    store=kubelet.store,
                    pod_ip=worker.pod_ip,
                    host_ip=kubelet.node_ip,
                    node_name=kubelet.node_name,
                )
                return environment, worker.volumes.mounts(record.spec, env=environment)
            except (env.EnvError, VolumeError) as error:
                record.waiting("CreateContainerConfigError", str(error))
                worker.changed()
                await worker.event(record, "Failed", f"Error: {error}")
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP)

    async def _start(
        self, program: images.Program, environment: Mapping[str, str], mounts: list[Mount]
    ) -> ContainerProcess:
        record = self.record
        worker = self.worker
        assert worker.network_path is not None
        assert worker.background is not None
        # The image's files under a volume's mount point would be hidden: bind them back.
        covered = [
            path
            for path in program.files
            if any(path.is_relative_to(mount.destination) for mount in mounts)
        ]
        mounts = [*mounts, *(Mount(path, str(path), read_only=True) for path in covered)]
        stage = worker.directory / "stage" / f"{record.name}-{record.instances}"
        shutil.rmtree(stage, ignore_errors=True)
        argv = launcher_argv(
            program.argv,
            network=worker.network_path,
            stage=stage,
            resolv_conf=worker.directory / "resolv.conf",
            hosts=worker.directory / "etc-hosts",
            mounts=mounts,
            hostname=worker.hostname,
            working_dir=record.spec.get("workingDir"),
        )
        # As containerd: HOSTNAME, then the image's ENV, then the container's own variables.
        process_env = {"HOSTNAME": worker.hostname, **program.env, **environment}
        log_path = worker.log_directory / record.name / f"{record.instances}.log"
        process = ContainerProcess(argv, process_env, log_path, stage)
        await worker.background.start(process.run, name=f"container {self}")
        # Shielded, so that the record gets the instance; a few milliseconds.
        with anyio.CancelScope(deadline=anyio.current_time() + EXEC_WAIT, shield=True):
            await process.executed()
        record.begin(process, f"sandbox://{secrets.token_hex(32)}", images.image_id(record.image))
        worker.changed()
        await worker.event(record, "Created", f"Created container {record.name}", warning=False)
        await worker.event(record, "Started", f"Started container {record.name}", warning=False)
        return process

    def _target(self, process: ContainerProcess) -> Target:
        record = self.record
        ports = {
            str(port["name"]): int(port["containerPort"])
            for port in record.spec.get("ports") or []
            if port.get("name") and port.get("containerPort")
        }
        return Target(
            name=record.name,
            pod_ip=self.worker.pod_ip,
            ports=ports,
            pid=process.pid if process.running else None,
            env=process.env,
            working_dir=record.spec.get("workingDir"),
        )

    async def _watch(self, process: ContainerProcess, started: anyio.Event | None) -> str | None:
        """Hooks and probes while the instance runs; returns why it was killed, if it was:
        ``failed`` (a hook or probe) or ``changed`` (its image)."""
        record = self.record
        worker = self.worker
        killed: str | None = None

        async def kill(why: str, reason: str, probe: Mapping[str, Any] | None = None) -> None:
            nonlocal killed
            killed = why
            await worker.event(record, "Killing", reason, warning=False)
            seconds = (probe or {}).get("terminationGracePeriodSeconds", worker.grace_period)
            await self.kill(process, anyio.current_time() + float(seconds))

        async def hooks_and_probes() -> None:
            target = self._target(process)
            post_start = (record.spec.get("lifecycle") or {}).get("postStart")
            if post_start:
                outcome = await run_handler(
                    post_start, target, worker.kubelet.dialer, time_limit=None
                )
                if not outcome.success:
                    message = f"PostStartHook failed: {outcome.message}"
                    await worker.event(record, "FailedPostStartHook", message)
                    await kill("failed", f"Container {record.name} failed post start hook")
                    return
            if record.init and not record.sidecar:
                record.started = True
                worker.changed()
                return

            def on_started() -> None:
                record.started = True
                if started is not None:
                    started.set()
                worker.changed()

            def on_ready(ready: bool) -> None:
                record.ready = ready
                worker.changed()

            def on_unhealthy(message: str) -> None:
                worker.background_event(record, "Unhealthy", message)

            prober = Prober(
                record.spec,
                target,
                worker.kubelet.dialer,
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
            tasks.start_soon(hooks_and_probes, name=f"probes of {self}")
            tasks.start_soon(definition_changed, name=f"spec of {self}")
            await process.exited.wait()
            tasks.cancel_scope.cancel()
        shutil.rmtree(process.stage, ignore_errors=True)
        return killed

    async def kill(
        self, process: ContainerProcess, deadline: float, *, pre_stop: bool = True
    ) -> None:
        """preStop, SIGTERM, and SIGKILL at ``deadline`` (which a shorter grace period given
        later moves up); returns once the instance is gone."""
        record = self.record
        worker = self.worker
        hook = (record.spec.get("lifecycle") or {}).get("preStop") if pre_stop else None
        if hook:
            with worker.grace(deadline) as scope:
                outcome = await run_handler(
                    hook, self._target(process), worker.kubelet.dialer, time_limit=None
                )
                if not outcome.success:
                    message = f"PreStopHook failed: {outcome.message}"
                    worker.background_event(record, "FailedPreStopHook", message)
            if scope.cancelled_caught:
                # Upstream gives SIGTERM a last 2 s when the hook used the grace period up.
                deadline = anyio.current_time() + MINIMUM_GRACE
        process.send_signal(signal.SIGTERM)
        with worker.grace(deadline):
            await process.exited.wait()
        if not process.exited.is_set():
            process.kill()
            await process.exited.wait()
