"""Server-side printing: objects as a ``meta.k8s.io/v1`` Table, the way ``kubectl get`` asks.

Why the server prints
---------------------
``kubectl get`` does not format objects itself. It asks for
``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns and cells the server
returns; ``-o wide`` shows the columns of priority 1 as well. So the columns, their order and
the text of each cell (``1/1``, ``Running``, ``80:30080/TCP``, ``5m``) are the server's job,
done upstream by ``pkg/printers/internalversion/printers.go`` through a ``TableConvertor``. The
server always generates the wide columns; the client hides those of priority 1.

How it works
------------
Each kind's printer is data: its column definitions (name, type, format, description from the
API's own field documentation, priority) and a function from one object to its cells, kept in
``_PRINTERS`` under ``(group, kind)``. A kind without a printer gets the generic registry's
two columns, ``Name`` and ``Created At``, as upstream's ``defaultTableConvertor`` gives (that is
what CustomResourceDefinitions themselves show). Custom resources print their CRD version's
``additionalPrinterColumns``, or ``Age`` when it has none, with the values found by a small
JSONPath evaluator, converted per column type as apiextensions' ``cellForJSONValue`` does.

Ages are rendered like ``duration.HumanDuration``: two or three significant figures, ``90s``,
``3m2s``, ``15m``, ``5h30m``, ``3d4h``, ``400d``, ``2y10d``. A fixed ``now`` makes them testable.

Rows carry the object as the request's ``includeObject`` asks: nothing, a
``PartialObjectMetadata`` (the default, which is what kubectl needs for names and namespaces), or
the whole object.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["human_duration", "to_table"]

type Obj = dict[str, Any]

INCLUDE_OBJECT_VALUES: Final = ("None", "Metadata", "Object")


# ---------------------------------------------------------------------------------------------
# Durations and timestamps (k8s.io/apimachinery/pkg/util/duration)
# ---------------------------------------------------------------------------------------------


def human_duration(delta: dt.timedelta) -> str:
    """Formats a duration as ``duration.HumanDuration`` does for kubectl's ``AGE`` column.

    Args:
        delta: How long ago; a slightly negative value (clock skew up to 2 s) counts as 0.

    Returns:
        ``"<invalid>"`` for a duration below -1 s, otherwise e.g. ``"5s"``, ``"3m2s"``,
        ``"2m"``, ``"5h"``, ``"3d4h"``, ``"400d"`` or ``"2y10d"``.
    """
    total = delta / dt.timedelta(seconds=1)
    seconds = int(total)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = int(delta / dt.timedelta(minutes=1))
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = int(delta / dt.timedelta(hours=1))
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _since(value: Any, now: dt.datetime) -> str:
    """``translateTimestampSince``: ``<unknown>`` for a missing time."""
    parsed = _parse_time(value)
    if parsed is None:
        return "<unknown>"
    return human_duration(now - parsed)


def _created_at(obj: Obj) -> str:
    """``CreationTimestamp.Time.UTC().Format(time.RFC3339)``; Go's zero time when unset."""
    parsed = _parse_time(_meta(obj).get("creationTimestamp"))
    if parsed is None:
        return "0001-01-01T00:00:00Z"
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Loose access to JSON objects
# ---------------------------------------------------------------------------------------------


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _i(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _meta(obj: Obj) -> dict[str, Any]:
    return _d(obj.get("metadata"))


def _name(obj: Obj) -> str:
    return _s(_meta(obj).get("name"))


def _age(obj: Obj, now: dt.datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


# ---------------------------------------------------------------------------------------------
# Shared cell formats (pkg/printers/internalversion, k8s.io/apimachinery/pkg/labels)
# ---------------------------------------------------------------------------------------------


def _format_labels(labels: Any) -> str:
    """``labels.FormatLabels``: sorted ``k=v`` pairs, ``<none>`` when there are none."""
    items = _d(labels)
    if not items:
        return "<none>"
    return ",".join(f"{k}={items[k]}" for k in sorted(items))


def _selector_string(selector: Any) -> str:
    """``metav1.LabelSelectorAsSelector(...).String()``: requirements sorted by key."""
    if not isinstance(selector, dict):
        return ""
    requirements: list[tuple[str, str]] = []
    for key, value in _d(selector.get("matchLabels")).items():
        requirements.append((key, f"{key}={value}"))
    for expr in _l(selector.get("matchExpressions")):
        expr_d = _d(expr)
        key, operator = _s(expr_d.get("key")), _s(expr_d.get("operator"))
        values = ",".join(sorted(str(v) for v in _l(expr_d.get("values"))))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(operator, key)
        requirements.append((key, text))
    return ",".join(text for _, text in sorted(requirements, key=lambda r: r[0]))


def _format_label_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: like the selector string, ``<none>`` when empty."""
    text = _selector_string(selector)
    return text or "<none>"


def _container_cells(spec: Any) -> list[str]:
    """``layoutContainerCells``: container names and images, comma-separated."""
    containers = [_d(c) for c in _l(_d(spec).get("containers"))]
    return [
        ",".join(_s(c.get("name")) for c in containers),
        ",".join(_s(c.get("image")) for c in containers),
    ]


def _list_with_more(items: list[str], total: int, limit: int = 3) -> str:
    """``listWithMoreString``: at most three entries, then ``+ N more...``."""
    text = ",".join(items[:limit])
    if total > limit:
        return f"{text} + {total - limit} more..."
    return text or "<unset>"


# ---------------------------------------------------------------------------------------------
# Column definitions: field documentation, as the API's SwaggerDoc carries it
# ---------------------------------------------------------------------------------------------

_NAME_DOC: Final = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DOC: Final = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_CONTAINERS_DOC: Final = "Names of each container in the template."
_IMAGES_DOC: Final = "Images referenced by each container in the template."
_SELECTOR_LINK: Final = (
    "More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/"
    "#label-selectors"
)
_ROLE_REF_DOC: Final = (
    "RoleRef can reference a Role in the current namespace or a ClusterRole in the global "
    "namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This "
    "field is immutable."
)
_CLUSTER_ROLE_REF_DOC: Final = (
    "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be "
    "resolved, the Authorizer must return an error. This field is immutable."
)
_NODE_ADDRESSES_DOC: Final = (
    "List of addresses reachable to the node. Queried from cloud provider, if available. More "
    "info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is "
    "declared as mergeable, but the merge key is not sufficiently unique, which can cause data "
    "corruption when it is merged. Callers should instead use a full-replacement patch. See "
    "https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change "
    "during the lifetime of a Node. However, there are some exceptions where this may not be "
    "possible, such as Pods that inherit a Node's address in its own status or consumers of the "
    "downward API (status.hostIP)."
)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    type: str
    description: str
    priority: int = 0
    format: str = ""

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


_NAME: Final = _Column("Name", "string", _NAME_DOC, format="name")
_AGE: Final = _Column("Age", "string", _AGE_DOC)
_CREATED_AT: Final = _Column("Created At", "date", _AGE_DOC)
_CONTAINERS: Final = _Column("Containers", "string", _CONTAINERS_DOC, 1)
_IMAGES: Final = _Column("Images", "string", _IMAGES_DOC, 1)


def _selector_column(doc: str) -> _Column:
    return _Column("Selector", "string", doc, 1)


type _Cells = Callable[[Obj, dt.datetime], list[Any]]
type _Conditions = Callable[[Obj], list[dict[str, str]]]


@dataclass(frozen=True, slots=True)
class _Printer:
    columns: tuple[_Column, ...]
    cells: _Cells
    conditions: _Conditions | None = None


# ---------------------------------------------------------------------------------------------
# Row functions, one per kind (printPod, printDeployment, ...)
# ---------------------------------------------------------------------------------------------


def _pod_cells(pod: Obj, now: dt.datetime) -> list[Any]:
    """``printPod``: readiness, the status kubectl shows, restarts, then the wide columns."""
    spec, status = _d(pod.get("spec")), _d(pod.get("status"))
    containers = _l(spec.get("containers"))
    init_containers = [_d(c) for c in _l(spec.get("initContainers"))]
    total = len(containers)
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: dt.datetime | None = None
    last_sidecar_restart: dt.datetime | None = None
    phase = _s(status.get("phase"))
    reason = _s(status.get("reason")) or phase
    for condition in _l(status.get("conditions")):
        cond = _d(condition)
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    sidecars = {_s(c.get("name")) for c in init_containers if c.get("restartPolicy") == "Always"}
    total += len(sidecars)

    def later(current: dt.datetime | None, state: Any) -> dt.datetime | None:
        finished = _parse_time(_get(state, "lastState", "terminated", "finishedAt"))
        if finished is not None and (current is None or finished > current):
            return finished
        return current

    initializing = False
    init_count = len(init_containers)
    for i, raw in enumerate(_l(status.get("initContainerStatuses"))):
        ctr = _d(raw)
        count = _i(ctr.get("restartCount"))
        restarts += count
        last_restart = later(last_restart, ctr)
        is_sidecar = _s(ctr.get("name")) in sidecars
        if is_sidecar:
            sidecar_restarts += count
            last_sidecar_restart = later(last_sidecar_restart, ctr)
        state = _d(ctr.get("state"))
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if terminated is not None and _i(_d(terminated).get("exitCode")) == 0:
            continue
        if is_sidecar and ctr.get("started") is True:
            if ctr.get("ready") is True:
                ready += 1
            continue
        if terminated is not None:
            term = _d(terminated)
            if _s(term.get("reason")):
                reason = "Init:" + term["reason"]
            elif _i(term.get("signal")):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{_i(term.get('exitCode'))}"
        elif waiting is not None and _s(_d(waiting).get("reason")) not in ("", "PodInitializing"):
            reason = "Init:" + _d(waiting)["reason"]
        else:
            reason = f"Init:{i}/{init_count}"
        initializing = True
        break

    initialized = any(
        _d(c).get("type") == "Initialized" and _d(c).get("status") == "True"
        for c in _l(status.get("conditions"))
    )
    if not initializing or initialized:
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for raw in reversed(_l(status.get("containerStatuses"))):
            ctr = _d(raw)
            restarts += _i(ctr.get("restartCount"))
            last_restart = later(last_restart, ctr)
            state = _d(ctr.get("state"))
            waiting, terminated = _d(state.get("waiting")), state.get("terminated")
            term = _d(terminated)
            if _s(waiting.get("reason")):
                reason = waiting["reason"]
            elif terminated is not None and _s(term.get("reason")):
                reason = term["reason"]
            elif terminated is not None:
                signal = _i(term.get("signal"))
                reason = f"Signal:{signal}" if signal else f"ExitCode:{_i(term.get('exitCode'))}"
            elif ctr.get("ready") is True and state.get("running") is not None:
                has_running = True
                ready += 1
        # A pod whose last container completed but another still runs is Running again.
        if reason == "Completed" and has_running:
            pod_ready = any(
                _d(c).get("type") == "Ready" and _d(c).get("status") == "True"
                for c in _l(status.get("conditions"))
            )
            reason = "Running" if pod_ready else "NotReady"

    if _meta(pod).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ips = _l(status.get("podIPs"))
    pod_ip = _s(_d(pod_ips[0]).get("ip")) if pod_ips else ""
    gates = _l(spec.get("readinessGates"))
    gates_text = "<none>"
    if gates:
        conditions = {_s(_d(c).get("type")): _d(c) for c in _l(status.get("conditions"))}
        true = sum(
            1
            for gate in gates
            if conditions.get(_s(_d(gate).get("conditionType")), {}).get("status") == "True"
        )
        gates_text = f"{true}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod, now),
        pod_ip or "<none>",
        _s(spec.get("nodeName")) or "<none>",
        _s(status.get("nominatedNodeName")) or "<none>",
        gates_text,
    ]


def _pod_conditions(pod: Obj) -> list[dict[str, str]]:
    # Completed pods carry a row condition; kubectl hides them unless --show-all was given.
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        message = "The pod has completed successfully."
    elif phase == "Failed":
        message = "The pod failed."
    else:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": message}]


def _deployment_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        f"{_i(status.get('readyReplicas'))}/{_i(spec.get('replicas'))}",
        _i(status.get("updatedReplicas")),
        _i(status.get("availableReplicas")),
        _age(obj, now),
        *_container_cells(_get(spec, "template", "spec")),
        _selector_string(spec.get("selector")),
    ]


def _replica_set_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        _i(spec.get("replicas")),
        _i(status.get("replicas")),
        _i(status.get("readyReplicas")),
        _age(obj, now),
        *_container_cells(_get(spec, "template", "spec")),
        _selector_string(spec.get("selector")),
    ]


def _stateful_set_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        f"{_i(status.get('readyReplicas'))}/{_i(spec.get('replicas'))}",
        _age(obj, now),
        *_container_cells(_get(spec, "template", "spec")),
    ]


def _daemon_set_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [
        _name(obj),
        _i(status.get("desiredNumberScheduled")),
        _i(status.get("currentNumberScheduled")),
        _i(status.get("numberReady")),
        _i(status.get("updatedNumberScheduled")),
        _i(status.get("numberAvailable")),
        _format_labels(_get(spec, "template", "spec", "nodeSelector")),
        _age(obj, now),
        *_container_cells(_get(spec, "template", "spec")),
        _selector_string(spec.get("selector")),
    ]


def _has_condition(obj: Obj, condition_type: str) -> bool:
    return any(
        _d(c).get("type") == condition_type and _d(c).get("status") == "True"
        for c in _l(_get(obj, "status", "conditions"))
    )


_JOB_STATUSES: Final = (
    ("Complete", "Complete"),
    ("Failed", "Failed"),
    ("", "Terminating"),
    ("Suspended", "Suspended"),
    ("FailureTarget", "FailureTarget"),
    ("SuccessCriteriaMet", "SuccessCriteriaMet"),
)


def _job_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    state = "Running"
    for condition, text in _JOB_STATUSES:
        # The empty condition stands for a deletion in progress, checked in upstream's order.
        hit = (
            _meta(obj).get("deletionTimestamp") if not condition else _has_condition(obj, condition)
        )
        if hit:
            state = text
            break
    succeeded = _i(status.get("succeeded"))
    completions, parallelism = spec.get("completions"), spec.get("parallelism")
    if isinstance(completions, int):
        done = f"{succeeded}/{completions}"
    elif parallelism is None:
        done = f"{succeeded}/1 of 1"
    elif _i(parallelism) > 1:
        done = f"{succeeded}/1 of {_i(parallelism)}"
    else:
        done = f"{succeeded}/1"
    started = _parse_time(status.get("startTime"))
    completed = _parse_time(status.get("completionTime"))
    if started is None:
        duration = ""
    elif completed is None:
        duration = human_duration(now - started)
    else:
        duration = human_duration(completed - started)
    return [
        _name(obj),
        state,
        done,
        duration,
        _age(obj, now),
        *_container_cells(_get(spec, "template", "spec")),
        _format_label_selector(spec.get("selector")),
    ]


def _cron_job_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    suspend = spec.get("suspend")
    last = status.get("lastScheduleTime")
    return [
        _name(obj),
        _s(spec.get("schedule")),
        _s(spec.get("timeZone")) or "<none>",
        "<unset>" if suspend is None else ("True" if suspend else "False"),
        len(_l(status.get("active"))),
        _since(last, now) if last else "<none>",
        _age(obj, now),
        *_container_cells(_get(spec, "jobTemplate", "spec", "template", "spec")),
        _format_label_selector(_get(spec, "jobTemplate", "spec", "selector")),
    ]


def _service_external_ip(spec: Obj, status: Obj) -> str:
    """``getServiceExternalIP`` (wide, as the server always prints)."""
    stype = _s(spec.get("type"))
    external = [_s(ip) for ip in _l(spec.get("externalIPs"))]
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if stype == "LoadBalancer":
        ingress = [
            _s(_d(i).get("ip")) or _s(_d(i).get("hostname"))
            for i in _l(_get(status, "loadBalancer", "ingress"))
        ]
        found = [ip for ip in ingress if ip] + external
        return ",".join(found) if found else "<pending>"
    if stype == "ExternalName":
        return _s(spec.get("externalName"))
    return "<unknown>"


def _service_ports(spec: Obj) -> str:
    """``makePortString``: ``80/TCP``, or ``80:30080/TCP`` with a node port."""
    pieces = []
    for port in _l(spec.get("ports")):
        port_d = _d(port)
        number, protocol = _i(port_d.get("port")), _s(port_d.get("protocol"))
        node_port = _i(port_d.get("nodePort"))
        pieces.append(f"{number}:{node_port}/{protocol}" if node_port else f"{number}/{protocol}")
    return ",".join(pieces) or "<none>"


def _service_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    ips = _l(spec.get("clusterIPs"))
    cluster_ip = _s(ips[0]) if ips else _s(spec.get("clusterIP")) or "<none>"
    return [
        _name(obj),
        _s(spec.get("type")),
        cluster_ip,
        _service_external_ip(spec, status),
        _service_ports(spec),
        _age(obj, now),
        _format_labels(spec.get("selector")),
    ]


def _config_map_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    count = len(_d(obj.get("data"))) + len(_d(obj.get("binaryData")))
    return [_name(obj), count, _age(obj, now)]


def _secret_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), _s(obj.get("type")), len(_d(obj.get("data"))), _age(obj, now)]


def _namespace_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), _s(_get(obj, "status", "phase")), _age(obj, now)]


def _service_account_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), len(_l(obj.get("secrets"))), _age(obj, now)]


def _endpoints_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    """``formatEndpoints``: ``ip:port`` pairs, at most three, ``<none>`` without subsets."""
    subsets = _l(obj.get("subsets"))
    if not subsets:
        return [_name(obj), "<none>", _age(obj, now)]
    listed: list[str] = []
    count = 0
    for subset in subsets:
        subset_d = _d(subset)
        addresses = [_s(_d(a).get("ip")) for a in _l(subset_d.get("addresses"))]
        ports = _l(subset_d.get("ports"))
        if not ports:
            count += len(addresses)
            listed.extend(addresses)
            continue
        for port in ports:
            number = _i(_d(port).get("port"))
            count += len(addresses)
            for ip in addresses:
                host = f"[{ip}]" if ":" in ip else ip
                listed.append(f"{host}:{number}")
    text = ",".join(listed[:3])
    if count > 3:
        text = f"{text} + {count - 3} more..."
    return [_name(obj), text, _age(obj, now)]


def _event_source(source: Any, controller: Any, instance: Any) -> str:
    component = _s(_d(source).get("component")) or _s(controller)
    host = _s(_d(source).get("host")) or _s(instance)
    return f"{component}, {host}" if host else component


def _event_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    """``printEvent`` for a core/v1 Event (events.k8s.io fields are mapped onto it first)."""
    first = _since(obj.get("firstTimestamp"), now)
    if not obj.get("firstTimestamp"):
        first = _since(obj.get("eventTime"), now)
    last = _since(obj.get("lastTimestamp"), now) if obj.get("lastTimestamp") else first
    count = _i(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _i(series.get("count"))
    elif count == 0:
        # Singleton events of the new API carry no count.
        count = 1
    involved = _d(obj.get("involvedObject"))
    kind = _s(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if _s(involved.get("name")) else kind
    return [
        last,
        _s(obj.get("type")),
        _s(obj.get("reason")),
        target,
        _s(involved.get("fieldPath")),
        _event_source(
            obj.get("source"), obj.get("reportingComponent"), obj.get("reportingInstance")
        ),
        _s(obj.get("message")).strip(),
        first,
        count,
        _name(obj),
    ]


_EVENTS_V1_FIELDS: Final = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "deprecatedSource": "source",
    "reportingController": "reportingComponent",
}


def _events_v1_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    legacy = dict(obj)
    for new, old in _EVENTS_V1_FIELDS.items():
        if new in obj:
            legacy[old] = obj[new]
    return _event_cells(legacy, now)


def _node_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    states: list[str] = []
    for condition in _l(status.get("conditions")):
        cond = _d(condition)
        if cond.get("type") == "Ready":
            states = ["Ready" if cond.get("status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if spec.get("unschedulable") is True:
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for key, value in _d(_meta(obj).get("labels")).items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role":
            roles.add(_s(value))
    info = _d(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for addr in _l(status.get("addresses")):
            if _d(addr).get("type") == kind:
                return _s(_d(addr).get("address"))
        return "<none>"

    return [
        _name(obj),
        ",".join(states),
        ",".join(sorted(r for r in roles if r)) or "<none>",
        _age(obj, now),
        _s(info.get("kubeletVersion")),
        address("InternalIP"),
        address("ExternalIP"),
        _s(info.get("osImage")) or "<unknown>",
        _s(info.get("kernelVersion")) or "<unknown>",
        _s(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


def _created_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), _created_at(obj)]


def _binding_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    ref = _d(obj.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in _l(obj.get("subjects")):
        subject_d = _d(subject)
        kind, name = _s(subject_d.get("kind")), _s(subject_d.get("name"))
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            accounts.append(f"{_s(subject_d.get('namespace'))}/{name}")
    return [
        _name(obj),
        f"{_s(ref.get('kind'))}/{_s(ref.get('name'))}",
        _age(obj, now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(accounts),
    ]


def _lease_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), _s(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


def _endpoint_slice_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    ports: list[str] = []
    for port in _l(obj.get("ports")):
        port_d = _d(port)
        if isinstance(port_d.get("port"), int):
            ports.append(str(port_d["port"]))
        elif isinstance(port_d.get("name"), str):
            ports.append(port_d["name"])
        else:
            ports.append("*")
    addresses = [
        _s(a) for endpoint in _l(obj.get("endpoints")) for a in _l(_d(endpoint).get("addresses"))
    ]
    return [
        _name(obj),
        _s(obj.get("addressType")),
        _list_with_more(ports, len(ports)),
        _list_with_more(addresses, len(addresses)),
        _age(obj, now),
    ]


def _webhook_configuration_cells(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), len(_l(obj.get("webhooks"))), _age(obj, now)]


# ---------------------------------------------------------------------------------------------
# The printers, by (group, kind)
# ---------------------------------------------------------------------------------------------

_DEFAULT_PRINTER: Final = _Printer((_NAME, _CREATED_AT), _created_cells)

_PRINTERS: Final[dict[tuple[str, str], _Printer]] = {
    ("", "Pod"): _Printer(
        (
            _NAME,
            _Column(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            _Column("Status", "string", "The aggregate status of the containers in this pod."),
            _Column(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when "
                "the last container in this pod has restarted.",
            ),
            _AGE,
            _Column(
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. "
                "Empty if not yet allocated.",
                1,
            ),
            _Column(
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a "
                "candidate for scheduling by the scheduler defined in schedulerName. Once this "
                "field is set, the kubelet for this node becomes responsible for the lifecycle "
                "of this pod. This field should not be used to express a desire for the pod to "
                "be scheduled on a specific node. "
                "https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
                1,
            ),
            _Column(
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node, "
                "but it cannot be scheduled right away as preemption victims receive their "
                "graceful termination periods. This field does not guarantee that the pod will "
                "be scheduled on this node. Scheduler may decide to place the pod elsewhere if "
                "other nodes become available sooner. Scheduler may also decide to give the "
                "resources on this node to a higher priority pod that is created after "
                "preemption. As a result, this field may be different than PodSpec.nodeName "
                "when the pod is scheduled.",
                1,
            ),
            _Column(
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is "
                "ready when all its containers are ready AND all conditions specified in the "
                'readiness gates have status equal to "True" More info: '
                "https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
                1,
            ),
        ),
        _pod_cells,
        _pod_conditions,
    ),
    ("apps", "Deployment"): _Printer(
        (
            _NAME,
            _Column("Ready", "string", "Number of the pod with ready state"),
            _Column(
                "Up-to-date",
                "integer",
                "Total number of non-terminating pods targeted by this deployment that have the "
                "desired template spec.",
            ),
            _Column(
                "Available",
                "integer",
                "Total number of available non-terminating pods (ready for at least "
                "minReadySeconds) targeted by this deployment.",
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _selector_column(
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this "
                "will be the ones affected by this deployment. It must match the pod template's "
                "labels."
            ),
        ),
        _deployment_cells,
    ),
    ("apps", "ReplicaSet"): _Printer(
        (
            _NAME,
            _Column(
                "Desired",
                "integer",
                "Replicas is the number of desired pods. This is a pointer to distinguish "
                "between explicit zero and unspecified. Defaults to 1. More info: "
                "https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
            ),
            _Column(
                "Current",
                "integer",
                "Replicas is the most recently observed number of non-terminating pods. More "
                "info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
            ),
            _Column(
                "Ready",
                "integer",
                "The number of non-terminating pods targeted by this ReplicaSet with a Ready "
                "Condition.",
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _selector_column(
                "Selector is a label query over pods that should match the replica count. Label "
                "keys and values that must match in order to be controlled by this replica set. "
                f"It must match the pod template's labels. {_SELECTOR_LINK}"
            ),
        ),
        _replica_set_cells,
    ),
    ("apps", "StatefulSet"): _Printer(
        (
            _NAME,
            _Column("Ready", "string", "Number of the pod with ready state"),
            _AGE,
            _CONTAINERS,
            _IMAGES,
        ),
        _stateful_set_cells,
    ),
    ("apps", "DaemonSet"): _Printer(
        (
            _NAME,
            _Column(
                "Desired",
                "integer",
                "The total number of nodes that should be running the daemon pod (including "
                "nodes correctly running the daemon pod). More info: "
                "https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            _Column(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to "
                "run the daemon pod. More info: "
                "https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            _Column(
                "Ready",
                "integer",
                "numberReady is the number of nodes that should be running the daemon pod and "
                "have one or more of the daemon pod running with a Ready Condition.",
            ),
            _Column(
                "Up-to-date",
                "integer",
                "The total number of nodes that are running updated daemon pod",
            ),
            _Column(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more "
                "of the daemon pod running and available (ready for at least "
                "spec.minReadySeconds)",
            ),
            _Column(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node. "
                "Selector which must match a node's labels for the pod to be scheduled on that "
                "node. More info: "
                "https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _selector_column(
                "A label query over pods that are managed by the daemon set. Must match in order "
                f"to be controlled. It must match the pod template's labels. {_SELECTOR_LINK}"
            ),
        ),
        _daemon_set_cells,
    ),
    ("batch", "Job"): _Printer(
        (
            _NAME,
            _Column("Status", "string", "Status of the job."),
            _Column(
                "Completions",
                "string",
                "The number of pods which reached phase Succeeded. The value increases "
                "monotonically for a given spec. However, it may decrease in reaction to scale "
                "down of elastic indexed jobs.",
            ),
            _Column("Duration", "string", "Time required to complete the job."),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _selector_column(
                "A label query over pods that should match the pod count. Normally, the system "
                f"sets this field for you. {_SELECTOR_LINK}"
            ),
        ),
        _job_cells,
    ),
    ("batch", "CronJob"): _Printer(
        (
            _NAME,
            _Column(
                "Schedule",
                "string",
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            _Column("Timezone", "string", "The time zone name for the given schedule."),
            _Column(
                "Suspend",
                "boolean",
                "This flag tells the controller to suspend subsequent executions, it does not "
                "apply to already started executions.  Defaults to false.",
            ),
            _Column("Active", "integer", "A list of pointers to currently running jobs."),
            _Column(
                "Last Schedule",
                "string",
                "Information when was the last time the job was successfully scheduled.",
            ),
            _AGE,
            _CONTAINERS,
            _IMAGES,
            _selector_column(
                "A label query over pods that should match the pod count. Normally, the system "
                f"sets this field for you. {_SELECTOR_LINK}"
            ),
        ),
        _cron_job_cells,
    ),
    ("", "Service"): _Printer(
        (
            _NAME,
            _Column(
                "Type",
                "string",
                "type determines how the Service is exposed. Defaults to ClusterIP. Valid "
                "options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
            ),
            _Column(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            _Column(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also "
                "accept traffic for this service.",
            ),
            _Column(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service. More info: "
                "https://kubernetes.io/docs/concepts/services-networking/service/"
                "#virtual-ips-and-service-proxies",
            ),
            _AGE,
            _selector_column(
                "Route service traffic to pods with label keys and values matching this "
                "selector. If empty or not present, the service is assumed to have an external "
                "process managing its endpoints, which Kubernetes will not modify. Only applies "
                "to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is "
                "ExternalName. More info: "
                "https://kubernetes.io/docs/concepts/services-networking/service/"
            ),
        ),
        _service_cells,
    ),
    ("", "ConfigMap"): _Printer(
        (
            _NAME,
            _Column(
                "Data",
                "string",
                "Data contains the configuration data. Each key must consist of alphanumeric "
                "characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the "
                "BinaryData field. The keys stored in Data must not overlap with the keys in the "
                "BinaryData field, this is enforced during validation process.",
            ),
            _AGE,
        ),
        _config_map_cells,
    ),
    ("", "Secret"): _Printer(
        (
            _NAME,
            _Column(
                "Type",
                "string",
                "Used to facilitate programmatic handling of secret data. More info: "
                "https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            _Column(
                "Data",
                "string",
                "Data contains the secret data. Each key must consist of alphanumeric "
                "characters, '-', '_' or '.'. The serialized form of the secret data is a base64 "
                "encoded string, representing the arbitrary (possibly non-string) data value "
                "here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            _AGE,
        ),
        _secret_cells,
    ),
    ("", "Namespace"): _Printer(
        (_NAME, _Column("Status", "string", "The status of the namespace"), _AGE),
        _namespace_cells,
    ),
    ("", "ServiceAccount"): _Printer(
        (
            _NAME,
            _Column(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using "
                "this ServiceAccount are allowed to use.",
            ),
            _AGE,
        ),
        _service_account_cells,
    ),
    ("", "Endpoints"): _Printer(
        (
            _NAME,
            _Column(
                "Endpoints",
                "string",
                "The set of all endpoints is the union of all subsets. Addresses are placed into "
                "subsets according to the IPs they share.",
            ),
            _AGE,
        ),
        _endpoints_cells,
    ),
    ("", "Event"): _Printer(
        (
            _Column(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            _Column(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            _Column(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for "
                "the transition into the object's current status.",
            ),
            _Column("Object", "string", "The object that this event is about."),
            _Column(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string "
                "should contain a valid JSON/Go field access statement, such as "
                "desiredState.manifest.containers[2].",
                1,
            ),
            _Column(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable "
                "string.",
                1,
            ),
            _Column(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            _Column(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in "
                "TypeMeta.)",
                1,
            ),
            _Column("Count", "string", "The number of times this event has occurred.", 1),
            _Column("Name", "string", _NAME_DOC, 1, "name"),
        ),
        _event_cells,
    ),
    ("", "Node"): _Printer(
        (
            _NAME,
            _Column("Status", "string", "The status of the node"),
            _Column("Roles", "string", "The roles of the node"),
            _AGE,
            _Column("Version", "string", "Kubelet Version reported by the node."),
            _Column("Internal-IP", "string", _NODE_ADDRESSES_DOC, 1),
            _Column("External-IP", "string", _NODE_ADDRESSES_DOC, 1),
            _Column(
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 "
                "(wheezy)).",
                1,
            ),
            _Column(
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                1,
            ),
            _Column(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. "
                "containerd://1.4.2).",
                1,
            ),
        ),
        _node_cells,
    ),
    ("rbac.authorization.k8s.io", "Role"): _DEFAULT_PRINTER,
    ("rbac.authorization.k8s.io", "ClusterRole"): _DEFAULT_PRINTER,
    ("rbac.authorization.k8s.io", "RoleBinding"): _Printer(
        (
            _NAME,
            _Column("Role", "string", _ROLE_REF_DOC),
            _AGE,
            _Column("Users", "string", "Users in the roleBinding", 1),
            _Column("Groups", "string", "Groups in the roleBinding", 1),
            _Column("ServiceAccounts", "string", "ServiceAccounts in the roleBinding", 1),
        ),
        _binding_cells,
    ),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _Printer(
        (
            _NAME,
            _Column("Role", "string", _CLUSTER_ROLE_REF_DOC),
            _AGE,
            _Column("Users", "string", "Users in the clusterRoleBinding", 1),
            _Column("Groups", "string", "Groups in the clusterRoleBinding", 1),
            _Column("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding", 1),
        ),
        _binding_cells,
    ),
    ("coordination.k8s.io", "Lease"): _Printer(
        (
            _NAME,
            _Column(
                "Holder",
                "string",
                "holderIdentity contains the identity of the holder of a current lease. If "
                "Coordinated Leader Election is used, the holder identity must be equal to the "
                "elected LeaseCandidate.metadata.name field.",
            ),
            _AGE,
        ),
        _lease_cells,
    ),
    ("discovery.k8s.io", "EndpointSlice"): _Printer(
        (
            _NAME,
            _Column(
                "AddressType",
                "string",
                "addressType specifies the type of address carried by this EndpointSlice. All "
                "addresses in this slice must be the same type. This field is immutable after "
                "creation.",
            ),
            _Column(
                "Ports",
                "string",
                "ports specifies the list of network ports exposed by each endpoint in this "
                "slice. Each port must have a unique name.",
            ),
            _Column(
                "Endpoints",
                "string",
                "endpoints is a list of unique endpoints in this slice. Each slice may include a "
                "maximum of 1000 endpoints.",
            ),
            _AGE,
        ),
        _endpoint_slice_cells,
    ),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _Printer(
        (
            _NAME,
            _Column(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            _AGE,
        ),
        _webhook_configuration_cells,
    ),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _Printer(
        (
            _NAME,
            _Column(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            _AGE,
        ),
        _webhook_configuration_cells,
    ),
}

# events.k8s.io Events print through the core Event printer (they share the internal type).
_PRINTERS[("events.k8s.io", "Event")] = _Printer(_PRINTERS[("", "Event")].columns, _events_v1_cells)


# ---------------------------------------------------------------------------------------------
# Custom resources: additionalPrinterColumns (apiextensions-apiserver/pkg/registry/tableconvertor)
# ---------------------------------------------------------------------------------------------

_PATH_TOKEN: Final = re.compile(
    r"""\.(?P<field>[^.\[\]]+)"""
    r"""|\[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<star>\*)\]"""
    r"""|\[\?\(@(?P<fpath>(?:\.[^.=!\s)]+)+)\s*(?P<op>==|!=)\s*(?P<fvalue>[^)]*?)\s*\)\]"""
)


class _BadPath(ValueError):
    """A JSONPath this evaluator does not understand."""


def _parse_path(path: str) -> list[re.Match[str]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    tokens: list[re.Match[str]] = []
    pos = 0
    while pos < len(text):
        match = _PATH_TOKEN.match(text, pos)
        if match is None:
            raise _BadPath(path)
        tokens.append(match)
        pos = match.end()
    return tokens


def _filter_literal(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _find_results(data: Any, path: str) -> list[Any]:
    """The values a simple JSONPath selects: fields, quoted keys, indexes, ``[*]`` and
    ``[?(@.a.b=="x")]`` filters; missing keys select nothing, as with ``AllowMissingKeys``."""
    current = [data]
    for token in _parse_path(path):
        found: list[Any] = []
        for value in current:
            if token["field"] is not None or token["key"] is not None:
                key = token["field"] if token["field"] is not None else token["key"]
                if isinstance(value, dict) and key in value:
                    found.append(value[key])
            elif token["index"] is not None:
                index = int(token["index"])
                if isinstance(value, list) and -len(value) <= index < len(value):
                    found.append(value[index])
            elif token["star"] is not None:
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, dict):
                    found.extend(value[k] for k in sorted(value))
            else:
                wanted = _filter_literal(token["fvalue"])
                keys = token["fpath"].split(".")[1:]
                for item in _l(value):
                    have = _get(item, *keys)
                    if (have == wanted) == (token["op"] == "=="):
                        found.append(item)
        current = found
    return current


def _go_print(value: Any) -> str:
    """``fmt.Fprint`` of a decoded JSON value, as the JSONPath printer writes string cells."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    return str(value)


def _cell_for_json_value(column_type: str, value: Any, now: dt.datetime) -> Any:
    """``cellForJSONValue``: the value as the column's type, or ``None`` when it does not fit."""
    if value is None:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if column_type == "integer" and is_number:
        return int(value)
    if column_type == "number" and is_number:
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        parsed = _parse_time(value)
        return "<invalid>" if parsed is None else human_duration(now - parsed)
    return None


def _custom_printer(printer_columns: Sequence[dict[str, Any]]) -> _Printer:
    specs = list(printer_columns) or [
        # serveDefaultColumnsIfEmpty: a CRD version without columns shows Age.
        {
            "name": "Age",
            "type": "date",
            "description": _AGE_DOC,
            "jsonPath": ".metadata.creationTimestamp",
        }
    ]
    columns = [_NAME]
    paths: list[str] = []
    for spec in specs:
        path = _s(spec.get("jsonPath"))
        description = _s(spec.get("description")) or (
            f"Custom resource definition column (in JSONPath format): {path}"
        )
        columns.append(
            _Column(
                _s(spec.get("name")),
                _s(spec.get("type")),
                description,
                _i(spec.get("priority")),
                _s(spec.get("format")),
            )
        )
        paths.append(path)
    types = [c.type for c in columns[1:]]

    def cells(obj: Obj, now: dt.datetime) -> list[Any]:
        row: list[Any] = [_name(obj)]
        for path, column_type in zip(paths, types, strict=True):
            try:
                results = _find_results(obj, path)
            except _BadPath:
                results = []
            if not results:
                row.append(None)
            elif column_type == "string":
                row.append(_go_print(results[0]))
            else:
                row.append(_cell_for_json_value(column_type, results[0], now))
        return row

    return _Printer(tuple(columns), cells)


# ---------------------------------------------------------------------------------------------
# The Table
# ---------------------------------------------------------------------------------------------


def _row_object(obj: Obj, include_object: str) -> Obj | None:
    if include_object == "None":
        return None
    if include_object == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": _meta(obj),
        }
    return obj


def to_table(
    group: str,
    kind: str,
    objects: Sequence[Obj],
    *,
    include_object: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    printer_columns: Sequence[dict[str, Any]] | None = None,
    no_headers: bool = False,
) -> dict[str, Any]:
    """Prints objects of one kind as a ``meta.k8s.io/v1`` Table, as the API server does.

    Args:
        group: API group, ``""`` for the core group.
        kind: Kind of every object, e.g. ``Pod``.
        objects: The objects: a list's items, or the one object of a GET.
        include_object: ``TableOptions.includeObject``: ``"None"`` leaves rows without an
            object, ``"Metadata"`` (the default) gives a ``PartialObjectMetadata``, ``"Object"``
            the whole object.
        list_meta: The list's metadata (``resourceVersion``, ``continue``,
            ``remainingItemCount``). When ``None`` and there is one object, its
            ``resourceVersion``, as for a GET.
        now: The time ages are measured to; the current time when ``None``.
        printer_columns: For a custom resource, the ``additionalPrinterColumns`` of the served
            version (an empty list gives the default ``Age`` column). ``None`` for built-in
            kinds, whose own printer (or the generic Name/Created At) applies.
        no_headers: ``TableOptions.noHeaders``: leave out the column definitions, as the server
            does for the later pages of a watch.

    Returns:
        The Table as a JSON-ready dict.

    Raises:
        ValueError: ``include_object`` is not one of ``None``, ``Metadata``, ``Object``.
    """
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise ValueError(
            f"includeObject: Unsupported value: {json.dumps(include_object)}: supported values: "
            + ", ".join(json.dumps(v) for v in INCLUDE_OBJECT_VALUES)
        )
    when = now if now is not None else dt.datetime.now(dt.UTC)
    if printer_columns is not None:
        printer = _custom_printer(printer_columns)
    else:
        printer = _PRINTERS.get((group, kind), _DEFAULT_PRINTER)
    if list_meta is not None:
        metadata = dict(list_meta)
    elif len(objects) == 1 and _s(_meta(objects[0]).get("resourceVersion")):
        metadata = {"resourceVersion": _meta(objects[0])["resourceVersion"]}
    else:
        metadata = {}
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, when)}
        if printer.conditions is not None:
            conditions = printer.conditions(obj)
            if conditions:
                row["conditions"] = conditions
        row_object = _row_object(obj, include_object)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": None if no_headers else [c.definition() for c in printer.columns],
        "rows": rows,
    }
