"""What the kubelet reports: its pods' statuses and its Node's, worded as upstream's.

Everything here is a pure function of what the kubelet knows (its records of a pod's
containers, the stored object, the time), so that the pod worker (:mod:`~sandbox.node.pods`)
and the node's registration (:mod:`~sandbox.node.kubelet`) only decide *when* to write.

A pod's status
    :func:`pod_status` is the whole ``status`` the kubelet writes through ``pods/status``:
    the phase (:func:`pod_phase`, upstream's ``getPhase``), the conditions
    (:func:`pod_conditions`: PodReadyToStartContainers, Initialized, Ready with readiness
    gates, ContainersReady, PodScheduled), the host and pod IPs, the start time, the QoS
    class (:func:`qos_class`) and every container's state. Fields another writer owns (a
    readiness gate's condition, a DisruptionTarget, ``nominatedNodeName``) are kept.

A Node's status
    :func:`node_status`: the pressure conditions (all False) and Ready, the addresses,
    capacity and allocatable, and ``nodeInfo``.

A condition keeps its ``lastTransitionTime`` while its status stays the same
(:func:`transition_time`), in a pod's as in a node's.
"""

from __future__ import annotations

import platform
import uuid
from typing import TYPE_CHECKING, Any

from sandbox.node import env

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sandbox.apiserver.store import Obj
    from sandbox.node.containers import Container

KUBELET_VERSION = "v1.32.0"
#: The status fields the kubelet owns; any other field another writer set is kept.
OWN_POD_STATUS = frozenset(
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
#: The node's conditions: type, status, reason and message, as a healthy kubelet reports them.
NODE_CONDITIONS = (
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def transition_time(previous: Mapping[str, Any], status: str, now: str) -> Any:
    """A condition's ``lastTransitionTime``: the ``previous`` one's (as it is) while the
    status stays, else ``now``."""
    return previous.get("lastTransitionTime", now) if previous.get("status") == status else now


# -- a pod's ----------------------------------------------------------------------------------


def pod_status(
    current: Obj,
    init_containers: Sequence[Container],
    containers: Sequence[Container],
    *,
    restart_policy: str,
    initialized: bool,
    init_failed: bool,
    stopped: bool,
    sandbox_ready: bool,
    host_ip: str,
    pod_ip: str,
    start_time: str,
    now: str,
) -> Obj:
    """The status to write for the pod ``current`` (the stored object); ``stopped`` is a pod
    whose containers were stopped for good for its deletion (see :func:`pod_phase`)."""
    old = current.get("status") or {}
    phase = pod_phase(
        containers,
        restart_policy=restart_policy,
        initialized=initialized,
        init_failed=init_failed,
        stopped=stopped,
    )
    status = {key: value for key, value in old.items() if key not in OWN_POD_STATUS}
    status["phase"] = phase
    gates = current.get("spec", {}).get("readinessGates") or []
    status["conditions"] = pod_conditions(
        phase,
        init_containers,
        containers,
        old=old.get("conditions") or [],
        now=now,
        sandbox_ready=sandbox_ready,
        initialized=initialized,
        readiness_gates=[gate.get("conditionType", "") for gate in gates],
    )
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if start_time:
        status["startTime"] = start_time
    status["qosClass"] = qos_class(current.get("spec", {}))
    if init_containers:
        status["initContainerStatuses"] = [c.status() for c in init_containers]
    status["containerStatuses"] = [c.status() for c in containers]
    return status


def pod_phase(
    containers: Sequence[Container],
    *,
    restart_policy: str,
    initialized: bool,
    init_failed: bool,
    stopped: bool,
) -> str:
    """The kubelet's ``getPhase`` (1.32) over the regular containers; ``stopped`` is a pod
    whose containers were stopped for its deletion, which ends Succeeded or Failed."""
    if init_failed and restart_policy == "Never":
        return "Failed"
    if not initialized:
        return "Failed" if stopped else "Pending"
    waiting = running = exited = succeeded = 0
    for record in containers:
        state = record.state
        if "running" in state:
            running += 1
        elif "terminated" in state:
            exited += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif "terminated" in record.last_state:
            exited += 1  # crash-looping: it ran, and will again
        else:
            waiting += 1
    total = len(containers)
    if stopped:
        return "Succeeded" if succeeded == total else "Failed"
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if exited == total:
        if restart_policy == "Always":
            return "Running"
        if succeeded == total:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def pod_conditions(
    phase: str,
    init_containers: Sequence[Container],
    containers: Sequence[Container],
    *,
    old: Sequence[Mapping[str, Any]],
    now: str,
    sandbox_ready: bool,
    initialized: bool,
    readiness_gates: Sequence[str],
) -> list[dict[str, Any]]:
    """The pod's conditions, the kubelet's in upstream's order and wording, then any others
    already there (a readiness gate's, a DisruptionTarget). A condition keeps its
    ``lastTransitionTime`` while its status stays."""
    before = {c.get("type"): c for c in old}

    def condition(kind: str, true: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        status = "True" if true else "False"
        previous = before.get(kind) or {}
        made: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": transition_time(previous, status, now),
        }
        if not true and reason:
            made["reason"] = reason
            if message:
                made["message"] = message
        return made

    incomplete = [c.name for c in init_containers if not (c.completed or c.sidecar)]
    unready = [c.name for c in init_containers if c.sidecar and not c.ready]
    unready += [c.name for c in containers if not c.ready]
    if phase == "Succeeded":
        reason, message = "PodCompleted", ""
    else:
        reason, message = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        )
    containers_ready = condition(
        "ContainersReady", not unready and phase != "Succeeded", reason, message
    )
    unmet = [g for g in readiness_gates if (before.get(g) or {}).get("status") != "True"]
    if containers_ready["status"] == "True" and unmet:
        gate = unmet[0]
        message = (
            f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            if gate not in before
            else f'the status of pod readiness gate "{gate}" is not "True", but '
            f"{before[gate].get('status')}"
        )
        ready = condition("Ready", False, "ReadinessGatesNotReady", message)
    else:
        ready = condition("Ready", containers_ready["status"] == "True", reason, message)
    conditions = [
        condition("PodReadyToStartContainers", sandbox_ready),
        condition(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        ready,
        containers_ready,
        dict(before.get("PodScheduled") or condition("PodScheduled", True)),
    ]
    own = {c["type"] for c in conditions}
    return conditions + [dict(c) for kind, c in before.items() if kind not in own]


def qos_class(spec: Mapping[str, Any]) -> str:
    """``GetPodQOS``: Guaranteed when every container limits CPU and memory and requests
    what it limits, BestEffort when none requests or limits either, else Burstable."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for name in ("cpu", "memory"):
            any_set = any_set or name in requests or name in limits
            if name not in limits or env.quantity(requests.get(name, limits[name])) != env.quantity(
                limits[name]
            ):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# -- a node's ---------------------------------------------------------------------------------


def node_status(node: Obj, *, name: str, ip: str, boot_id: str, now: str) -> Obj:
    """The status of the Node ``node`` (the stored object) whose kubelet is ``name`` at
    ``ip``, started as ``boot_id``."""
    old = {c.get("type"): c for c in node.get("status", {}).get("conditions") or []}
    conditions = [
        {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition_time(old.get(kind, {}), status, now),
            "reason": reason,
            "message": message,
        }
        for kind, status, reason, message in NODE_CONDITIONS
    ]
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.sandbox")
    resources = dict(env.NODE_ALLOCATABLE)
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": machine.hex,
            "systemUUID": str(machine),
            "bootID": boot_id,
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": "sandbox://1",
            "kubeletVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def _os_image() -> str:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return "Linux"
    return release.get("PRETTY_NAME", "Linux")
