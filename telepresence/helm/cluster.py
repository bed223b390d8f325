"""Which cluster and namespace a command works on, and the waits that watch it there.

This is the module of ``telepresence.helm`` that reads the cluster, through the client's
Kubernetes adapter (:mod:`telepresence.kube`), whose errors it tells in its own terms. Helm applies
the release; what the user then waits for is the traffic-manager's Deployment rolling out, as
``kubectl rollout status`` reports it (the spec's generation observed, every replica updated,
no old replica left, every updated replica available), and on uninstall for its pods to be
gone. While waiting, each change of the Deployment or of its pods produces one line of
progress naming what the pods are doing (``ContainerCreating``, ``ImagePullBackOff: ...``,
running but not ready), which is also what a timeout reports.

Changes are noticed with watches (of the one Deployment, and of the pods its selector picks)
rather than by polling: after each change both are read again, so the watches are only wake-up
calls, and a watch that ends or expires (``410 Gone``) simply leads to the next read. The waits
take no timeout: the caller wraps them in a cancel scope.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telepresence import kube
from telepresence.helm.errors import ClusterUnreachable, HelmFailed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "DEFAULT_MANAGER_NAMESPACE",
    "Target",
    "describe_pods",
    "label_selector",
    "rollout_state",
    "wait_for_pods_gone",
    "wait_for_rollout",
]

type Object = dict[str, Any]
type Progress = Callable[[str], None]

#: The manager namespace unless told otherwise, as in the reference.
DEFAULT_MANAGER_NAMESPACE = "ambassador"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the traffic-manager is (to be) installed.

    Attributes:
        namespace: The manager namespace, which is also the Helm release's namespace.
        kubeconfig: A kubeconfig file; None means ``KUBECONFIG``, else ``~/.kube/config``
            (or, inside a pod, its service account).
        context: A context of the kubeconfig; None means its current context.
    """

    namespace: str = DEFAULT_MANAGER_NAMESPACE
    kubeconfig: str | None = None
    context: str | None = None

    def kubeconfig_paths(self) -> str | None:
        """The kubeconfig file(s) as kubectl would pick them (``:``-separated), or None when
        there is none (in a pod)."""
        return kube.kubeconfig_paths(kube.KubeTarget(self.kubeconfig, self.context))

    def helm_kubeconfig(self) -> str | None:
        """The kubeconfig to hand to Helm. Helm's Go runtime read its environment when the
        library was loaded, so a single file is always passed explicitly (``KUBECONFIG`` may
        have changed since, as in tests); a list is left to Helm, which merges it itself."""
        paths = self.kubeconfig_paths()
        if paths is None or os.pathsep in paths.strip(os.pathsep):
            return None
        return paths.strip(os.pathsep)


# -- what a rollout looks like ---------------------------------------------------------------


def rollout_state(deployment: Object) -> tuple[bool, str]:
    """Whether a Deployment has rolled out, and if not what it waits for (the conditions of
    ``kubectl rollout status``)."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if int(metadata.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return False, "the Deployment's new spec is not picked up yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return False, "the Deployment exceeded its progress deadline"
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return False, f"{updated} of {wanted} pods updated"
    if replicas > updated:
        old = replicas - updated
        return False, f"{old} old {'pod' if old == 1 else 'pods'} not replaced yet"
    if available < updated:
        return False, f"{available} of {updated} pods available"
    return True, "ready"


def describe_pods(pods: list[Object]) -> str:
    """What the pods are doing, one ``pod NAME: state`` clause each, newest first."""
    if not pods:
        return "no pod yet"
    ordered = sorted(
        pods,
        key=lambda pod: (pod.get("metadata") or {}).get("creationTimestamp") or "",
        reverse=True,
    )
    return "; ".join(
        f"pod {(pod.get('metadata') or {}).get('name', '?')}: {_pod_state(pod)}" for pod in ordered
    )


def _pod_state(pod: Object) -> str:
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "terminating"
    containers = status.get("containerStatuses") or []
    for container in [*(status.get("initContainerStatuses") or []), *containers]:
        state = container.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") not in (None, "", "PodInitializing"):
            message = _one_line(waiting.get("message") or "")
            return f"{waiting['reason']}: {message}" if message else str(waiting["reason"])
        terminated = state.get("terminated")
        if terminated and terminated.get("reason") != "Completed":
            reason = terminated.get("reason") or "terminated"
            return f"{reason} (exit code {terminated.get('exitCode', '?')})"
    phase = status.get("phase") or "Pending"
    if phase == "Pending":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reason = condition.get("reason") or "not scheduled"
                message = _one_line(condition.get("message") or "")
                return f"{reason}: {message}" if message else str(reason)
        if not (pod.get("spec") or {}).get("nodeName"):
            return "waiting to be scheduled"
        return "starting"
    if phase == "Running":
        if containers and all(container.get("ready") for container in containers):
            return "ready"
        restarts = sum(int(container.get("restartCount") or 0) for container in containers)
        return "running, not ready yet" + (f" ({restarts} restarts)" if restarts else "")
    return str(phase)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the waits -------------------------------------------------------------------------------


async def wait_for_rollout(target: Target, name: str, progress: Progress) -> None:
    """Return once the Deployment ``name`` in the target namespace has rolled out, reporting
    each new state; runs until cancelled otherwise.

    Raises:
        ClusterUnreachable: The API server cannot be reached.
        HelmFailed: The Deployment disappeared, or the API server refused to show it.
    """
    async with _open(target) as cluster:
        deployment_path = f"/apis/apps/v1/namespaces/{target.namespace}/deployments"
        pods_path = f"/api/v1/namespaces/{target.namespace}/pods"
        last = ""
        while True:
            deployment = await cluster.get(f"{deployment_path}/{name}")
            if deployment is None:
                raise HelmFailed(
                    f"the Deployment {name} in namespace {target.namespace} was deleted while "
                    "waiting for it"
                )
            selector = label_selector(deployment)
            pods, pods_version = await cluster.collection(pods_path, label_selector=selector)
            done, state = rollout_state(deployment)
            if done:
                return
            line = f"Waiting for the traffic-manager: {state}; {describe_pods(pods)}"
            if line != last:
                progress(line)
                last = line
            await cluster.next_change(
                kube.Watch(
                    deployment_path,
                    str(deployment["metadata"]["resourceVersion"]),
                    field_selector=f"metadata.name={name}",
                ),
                kube.Watch(pods_path, pods_version, label_selector=selector),
            )


async def wait_for_pods_gone(target: Target, label_selector: str, progress: Progress) -> None:
    """Return once no pod in the target namespace matches ``label_selector``, reporting the
    ones still there; runs until cancelled otherwise."""
    async with _open(target) as cluster:
        pods_path = f"/api/v1/namespaces/{target.namespace}/pods"
        last = ""
        while True:
            pods, version = await cluster.collection(pods_path, label_selector=label_selector)
            if not pods:
                return
            line = f"Waiting for the traffic-manager to stop: {describe_pods(pods)}"
            if line != last:
                progress(line)
                last = line
            await cluster.next_change(kube.Watch(pods_path, version, label_selector=label_selector))


def label_selector(deployment: Object) -> str:
    """A Deployment's pod selector (its ``matchLabels``) as a label selector string."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# -- the API server ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _open(target: Target) -> AsyncIterator[kube.Kube]:
    """The target's cluster, with the adapter's errors told as ``telepresence helm``'s."""
    try:
        async with kube.Kube.open(kube.KubeTarget(target.kubeconfig, target.context)) as cluster:
            yield cluster
    except kube.ClusterUnreachable as error:
        raise ClusterUnreachable(str(error)) from error
    except kube.KubeError as error:
        raise HelmFailed(str(error)) from error
