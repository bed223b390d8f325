"""PATCH bodies applied the way the Kubernetes API server applies them.

The API server accepts four patch types, and each one is a pure function here, from the stored
object and the decoded request body to a new object (the inputs are never mutated):

* ``application/json-patch+json`` (RFC 6902): :func:`json_patch`, through the ``jsonpatch``
  library. As in the API server, a body that is not a list of operation objects is a bad request
  (400) and any operation that cannot be applied (a failed ``test``, a missing path) is 422.
* ``application/merge-patch+json`` (RFC 7386): :func:`merge_patch`. Maps merge, ``null``
  deletes, anything else (lists included) replaces.
* ``application/strategic-merge-patch+json``: :func:`strategic_merge_patch`, a port of the
  apply half of ``k8s.io/apimachinery/pkg/util/strategicpatch``. The real server drives it with
  the ``patchStrategy``/``patchMergeKey`` struct tags of the Go types; here those tags are the
  table :data:`_SCHEMA` (type -> field -> element type, strategy, merge key), written out for the
  built-in kinds this emulator serves. A field missing from the table behaves like a tag-less
  field: maps merge key by key, lists are replaced. Custom resources have no Go type, so the real
  server answers 415 for them, and so does this module.
* ``application/apply-patch+yaml``: :func:`server_side_apply`, an approximation of
  ``sigs.k8s.io/structured-merge-diff`` as the API server's field manager runs it. Ownership is
  a set of field paths per manager, stored in ``metadata.managedFields`` in the real ``FieldsV1``
  format; lists are associative where the same table gives them keys (the equivalent of
  ``x-kubernetes-list-map-keys``), sets where the tag merges a primitive list, atomic otherwise.
  It merges the applied configuration into the live object, prunes what this manager applied
  before and no one owns any longer, and reports fields another manager owns with a different
  value as a 409 conflict unless ``force`` moves them over.

Errors are :class:`PatchError`, carrying the HTTP status and the ``Status`` causes the real server
answers with, so the HTTP layer only has to wrap them in a ``Status`` object.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final, NamedTuple

import jsonpatch

__all__ = [
    "PatchError",
    "json_patch",
    "merge_patch",
    "server_side_apply",
    "strategic_merge_patch",
    "supports_strategic_merge",
]


class PatchError(Exception):
    """A patch that cannot be applied.

    Attributes:
        status: The HTTP status the API server answers with: 400 for a malformed patch, 409 for an
            apply conflict, 415 when the patch type is not supported for the kind, 422 for a JSON
            patch operation that cannot be applied (a failed ``test``, a path that does not exist).
        message: The ``Status`` message.
        causes: ``Status.details.causes``: dicts with ``reason``, ``message`` and ``field``
            (may be empty).
        reason: The ``Status`` reason (``BadRequest``, ``Conflict``, ``UnsupportedMediaType``,
            ``Invalid``).
    """

    def __init__(
        self, status: int, message: str, causes: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.causes: list[dict[str, str]] = causes or []
        self.reason = _REASONS.get(status, "BadRequest")


_REASONS: Final = {400: "BadRequest", 409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid"}


# --- The struct tags -------------------------------------------------------------------------


class _Field(NamedTuple):
    """The patch metadata of one field, as its Go struct tags give it.

    ``type`` names the field's type in :data:`_SCHEMA` (for a list, its element type), ``strategy``
    is ``patchStrategy`` (``merge``, ``replace``, ``retainKeys``, comma-separated) and ``key`` is
    ``patchMergeKey``. ``list_keys`` are the server-side apply ``+listMapKey`` keys where they
    differ from the merge key (``()``: ``+listType=atomic`` despite a merge strategy).
    """

    type: str | None = None
    strategy: str = ""
    key: str = ""
    list_keys: tuple[str, ...] | None = None

    @property
    def merges(self) -> bool:
        """Whether the field's ``patchStrategy`` includes ``merge``."""
        return "merge" in self.strategy.split(",")


_UNTYPED: Final = _Field()
# A list without a patchStrategy: strategic merge patch replaces it, apply treats it as atomic.
# Listed where a reader might expect otherwise (tolerations, taints, RBAC rules).
_ATOMIC: Final = _UNTYPED


def _merge(key: str = "", type_: str | None = None, **kw: Any) -> _Field:
    """``patchStrategy:"merge"`` with ``patchMergeKey:"<key>"`` (no key: a primitive list)."""
    return _Field(type_, "merge", key, **kw)


_META: Final = _Field("ObjectMeta")
_TEMPLATE: Final = _Field("PodTemplateSpec")
_CONDITIONS: Final = {"conditions": _merge("type")}

# type -> field -> patch metadata, from the struct tags in k8s.io/api (core/v1, apps/v1, batch/v1,
# ...) and k8s.io/apimachinery (meta/v1). Only fields whose tags matter are listed.
_SCHEMA: Final[dict[str, dict[str, _Field]]] = {
    "ObjectMeta": {
        "finalizers": _merge(),  # a set of strings: patches union, $deleteFromPrimitiveList removes
        "ownerReferences": _merge("uid"),
    },
    "PodTemplateSpec": {"metadata": _META, "spec": _Field("PodSpec")},
    "PodSpec": {
        "volumes": _Field(None, "merge,retainKeys", "name"),
        "initContainers": _merge("name", "Container"),
        "containers": _merge("name", "Container"),
        "ephemeralContainers": _merge("name", "Container"),
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge(
            "topologyKey", list_keys=("topologyKey", "whenUnsatisfiable")
        ),
        "schedulingGates": _merge("name"),
        "resourceClaims": _Field(None, "merge,retainKeys", "name"),
        "tolerations": _ATOMIC,
        "readinessGates": _ATOMIC,
    },
    "Container": {  # also EphemeralContainer, whose common fields carry the same tags
        "ports": _merge("containerPort", list_keys=("containerPort", "protocol")),
        "env": _merge("name"),
        "volumeMounts": _merge("mountPath"),
        "volumeDevices": _merge("devicePath"),
        "resizePolicy": _ATOMIC,
        "args": _ATOMIC,
        "command": _ATOMIC,
        "envFrom": _ATOMIC,
    },
    "Pod": {"metadata": _META, "spec": _Field("PodSpec"), "status": _Field("PodStatus")},
    "PodStatus": {
        **_CONDITIONS,
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _Field(None, "merge,retainKeys", "name"),
        "containerStatuses": _ATOMIC,
    },
    "Service": {
        "metadata": _META,
        "spec": _Field("ServiceSpec"),
        "status": _Field("ConditionsStatus"),
    },
    "ServiceSpec": {"ports": _merge("port", list_keys=("port", "protocol"))},
    "ConditionsStatus": _CONDITIONS,  # status types whose only tagged field is conditions
    "Namespace": {"metadata": _META, "status": _Field("ConditionsStatus")},
    "ServiceAccount": {"metadata": _META, "secrets": _merge("name"), "imagePullSecrets": _ATOMIC},
    "Endpoints": {"metadata": _META, "subsets": _ATOMIC},
    "Node": {"metadata": _META, "spec": _Field("NodeSpec"), "status": _Field("NodeStatus")},
    "NodeSpec": {"podCIDRs": _merge(), "taints": _ATOMIC},
    "NodeStatus": {**_CONDITIONS, "addresses": _merge("type")},
    "PersistentVolumeClaim": {"metadata": _META, "status": _Field("ConditionsStatus")},
    "ReplicationController": {
        "metadata": _META,
        "spec": _Field("WorkloadSpec"),
        "status": _Field("ConditionsStatus"),
    },
    # Deployment, ReplicaSet, DaemonSet, ReplicationController: a pod template.
    "WorkloadSpec": {"template": _TEMPLATE},
    "DeploymentSpec": {"template": _TEMPLATE, "strategy": _Field(None, "retainKeys")},
    "StatefulSetSpec": {"template": _TEMPLATE, "volumeClaimTemplates": _ATOMIC},
    "Deployment": {
        "metadata": _META,
        "spec": _Field("DeploymentSpec"),
        "status": _Field("ConditionsStatus"),
    },
    "ReplicaSet": {
        "metadata": _META,
        "spec": _Field("WorkloadSpec"),
        "status": _Field("ConditionsStatus"),
    },
    "StatefulSet": {
        "metadata": _META,
        "spec": _Field("StatefulSetSpec"),
        "status": _Field("ConditionsStatus"),
    },
    "DaemonSet": {
        "metadata": _META,
        "spec": _Field("WorkloadSpec"),
        "status": _Field("ConditionsStatus"),
    },
    "Job": {"metadata": _META, "spec": _Field("JobSpec"), "status": _Field("JobStatus")},
    "JobSpec": {"template": _TEMPLATE},
    # JobStatus.conditions: patchStrategy merge, but +listType=atomic for apply.
    "JobStatus": {"conditions": _merge("type", list_keys=())},
    "CronJob": {
        "metadata": _META,
        "spec": _Field("CronJobSpec"),
        "status": _Field("CronJobStatus"),
    },
    "CronJobSpec": {"jobTemplate": _Field("JobTemplateSpec")},
    "CronJobStatus": {"active": _ATOMIC},
    "JobTemplateSpec": {"metadata": _META, "spec": _Field("JobSpec")},
    "Role": {"metadata": _META, "rules": _ATOMIC},
    "ClusterRole": {"metadata": _META, "rules": _ATOMIC},
    "RoleBinding": {"metadata": _META, "subjects": _ATOMIC},
    "ClusterRoleBinding": {"metadata": _META, "subjects": _ATOMIC},
    "EndpointSlice": {"metadata": _META, "endpoints": _ATOMIC, "ports": _ATOMIC},
    "WebhookConfiguration": {"metadata": _META, "webhooks": _merge("name")},
    "PodDisruptionBudget": {"metadata": _META, "status": _Field("ConditionsStatus")},
    # CustomResourceDefinitionStatus.conditions: no patchStrategy, but +listMapKey=type.
    "CustomResourceDefinition": {"metadata": _META, "status": _Field("CRDStatus")},
    "CRDStatus": {"conditions": _Field(list_keys=("type",))},
    "ObjectOnly": {"metadata": _META},  # kinds with no tagged field besides metadata
}

# (API group, kind) -> root type in _SCHEMA: the kinds the real server has Go types for.
_KINDS: Final[dict[tuple[str, str], str]] = {
    ("", "Pod"): "Pod",
    ("", "Service"): "Service",
    ("", "ConfigMap"): "ObjectOnly",
    ("", "Secret"): "ObjectOnly",
    ("", "Namespace"): "Namespace",
    ("", "ServiceAccount"): "ServiceAccount",
    ("", "Endpoints"): "Endpoints",
    ("", "Event"): "ObjectOnly",
    ("", "Node"): "Node",
    ("", "PersistentVolumeClaim"): "PersistentVolumeClaim",
    ("", "ReplicationController"): "ReplicationController",
    ("apps", "Deployment"): "Deployment",
    ("apps", "ReplicaSet"): "ReplicaSet",
    ("apps", "StatefulSet"): "StatefulSet",
    ("apps", "DaemonSet"): "DaemonSet",
    ("batch", "Job"): "Job",
    ("batch", "CronJob"): "CronJob",
    ("rbac.authorization.k8s.io", "Role"): "Role",
    ("rbac.authorization.k8s.io", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): "ClusterRoleBinding",
    ("coordination.k8s.io", "Lease"): "ObjectOnly",
    ("discovery.k8s.io", "EndpointSlice"): "EndpointSlice",
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): "WebhookConfiguration",
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): "WebhookConfiguration",
    ("policy", "PodDisruptionBudget"): "PodDisruptionBudget",
    ("networking.k8s.io", "Ingress"): "ObjectOnly",
    ("networking.k8s.io", "NetworkPolicy"): "ObjectOnly",
    ("apiextensions.k8s.io", "CustomResourceDefinition"): "CustomResourceDefinition",
}

# Kinds with a status subresource: their registry strategies reset status on writes to the main
# resource (GetResetFields), so apply neither sets nor owns it there.
_STATUS_RESET: Final = frozenset(
    {
        ("", "Pod"),
        ("", "Service"),
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolumeClaim"),
        ("", "ReplicationController"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("policy", "PodDisruptionBudget"),
        ("networking.k8s.io", "Ingress"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    }
)


def _lookup(type_name: str | None, field: str) -> _Field:
    """The patch metadata of ``field`` in ``type_name`` (untyped when either is unknown)."""
    if type_name is None:
        return _UNTYPED
    return _SCHEMA.get(type_name, {}).get(field, _UNTYPED)


def supports_strategic_merge(group: str, kind: str) -> bool:
    """Whether the API server accepts a strategic merge patch for this kind.

    Args:
        group: The API group ("" for the core group).
        kind: The kind, e.g. ``Deployment``.

    Returns:
        True for the built-in kinds in the schema table; False for custom resources and any other
        kind, which have no Go struct to read patch strategies from.
    """
    return (group, kind) in _KINDS


# --- JSON patch and JSON merge patch ---------------------------------------------------------


def json_patch(obj: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch.

    Args:
        obj: The stored object.
        operations: The decoded request body: a list of operation objects.

    Returns:
        The patched object (a new object).

    Raises:
        PatchError: 400 when the body is not a list of objects (the API server fails to decode
            it); 422 when an operation cannot be applied: a failed ``test``, a missing path, an
            unknown ``op`` (the API server reports every application error as 422).
    """
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise PatchError(400, "json: cannot unmarshal the patch into a list of operations")
    try:
        result = jsonpatch.apply_patch(obj, operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        path = exc.op.location if isinstance(exc.op, jsonpatch.PatchOperation) else ""
        raise PatchError(422, f"testing value {path} failed: test failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise PatchError(422, f"the patch cannot be applied: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise PatchError(422, f"the patch cannot be applied: {exc}") from exc
    if not isinstance(result, dict):
        raise PatchError(422, "the patched document is not an object")
    return result


def merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 JSON merge patch.

    Maps merge recursively, a ``null`` value deletes the key, and any other value (a list, a
    scalar) replaces what was there; ``null`` values inside added maps are dropped.

    Args:
        obj: The stored object.
        patch: The decoded request body.

    Returns:
        The patched object (a new object).

    Raises:
        PatchError: 400 when the body is not a JSON object: RFC 7386 would make the whole
            document that value, which no API object can be.
    """
    if not isinstance(patch, dict):
        raise PatchError(400, f"invalid JSON merge patch: expected an object, got {_kind(patch)}")
    return _merge_patch_map(obj, patch)


def _merge_patch_map(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = _merge_patch_map(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- Strategic merge patch -------------------------------------------------------------------

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER: Final = "$setElementOrder"

# The real server's answer to a strategic merge patch for a custom resource
# (negotiation.NewUnsupportedMediaTypeError with the patch types CRs accept).
_UNSUPPORTED_SMP: Final = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)

# k8s.io/apimachinery/pkg/util/mergepatch errors the API server answers 400 or 422 for.
_ERR_PRIMITIVE_LIST: Final = "invalid patch format of primitive list"
_ERR_RETAIN_KEYS: Final = "invalid patch format of retainKeys"
_ERR_SET_ELEMENT_ORDER: Final = "invalid patch format of setElementOrder list"
_ERR_LIST_OF_LISTS: Final = "lists of lists are not supported"


def strategic_merge_patch(
    obj: dict[str, Any], patch: Any, *, group: str, kind: str
) -> dict[str, Any]:
    """Apply a strategic merge patch the way ``strategicpatch.StrategicMergeMapPatch`` does.

    Maps merge recursively and ``null`` deletes a key. A list whose field has
    ``patchStrategy:"merge"`` merges element by element on its ``patchMergeKey`` (or, for
    primitives, as a union); any other list is replaced. The directives ``$patch`` (``replace``,
    ``delete``, on a map or as a list element), ``$retainKeys``,
    ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` are honoured and never
    appear in the result. Without ``$setElementOrder``, list order follows the real server's
    merge: items named in the patch keep the patch's relative order, other items keep the live
    order, and new items are placed ahead of live items that the patch does not mention (which
    is why ``kubectl patch`` shows an added container first).

    Args:
        obj: The stored object.
        patch: The decoded request body (a JSON object).
        group: The object's API group ("" for core).
        kind: The object's kind.

    Returns:
        The patched object (a new object).

    Raises:
        PatchError: 415 for a kind without Go types (custom resources); 400 for a malformed
            patch (not an object, a list element without its merge key, a bad directive); 422
            for a list of lists.
    """
    root = _KINDS.get((group, kind))
    if root is None:
        raise PatchError(415, _UNSUPPORTED_SMP)
    if not isinstance(patch, dict):
        go_type = "map[string]interface {}"
        raise PatchError(
            400, f"json: cannot unmarshal {_kind(patch)} into Go value of type {go_type}"
        )
    return _smp_map(copy.deepcopy(obj), copy.deepcopy(patch), root)


def _kind(value: Any) -> str:
    """The JSON kind of a value, as Go's decoder names it in errors."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return "number"


def _shape(value: Any) -> str:
    return "map" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"


def _same(left: Any, right: Any) -> bool:
    """Go's ``==`` on decoded JSON values: equal and of the same JSON kind (True is not 1)."""
    return _kind(left) == _kind(right) and left == right


def _clean(value: Any) -> tuple[Any, bool]:
    """A patch value made storable: no directives, no ``null`` map values.

    ``removeDirectives`` drops any map carrying ``$patch`` (the key it sits under, or the list
    element, goes with it); ``discardNullValuesFromPatch`` drops ``null`` map values, which only
    ever mean "delete". Returns the value and whether to keep it.
    """
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None or key.startswith("$"):
                continue
            cleaned, keep = _clean(item)
            if keep:
                out[key] = cleaned
        return out, True
    if isinstance(value, list):
        items = [_clean(item) for item in value]
        return [item for item, keep in items if keep], True
    return value, True


def _smp_map(
    original: dict[str, Any], patch: dict[str, Any], type_name: str | None
) -> dict[str, Any]:
    """``mergeMap``: merge ``patch`` into ``original`` (both private copies, mutated freely)."""
    if _DIRECTIVE in patch:
        directive = patch.pop(_DIRECTIVE)
        if directive == "replace":
            cleaned, _ = _clean(patch)
            return dict(cleaned)
        if directive == "delete":
            return {}
        raise PatchError(400, f"unknown patch type: {directive} in map: {_json(patch)}")

    _apply_retain_keys(original, patch)
    _apply_set_element_order(original, patch, type_name)

    for raw_key, patch_value in patch.items():
        key = raw_key
        is_delete_list = False
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            key = _directive_target(key, _DELETE_FROM_PRIMITIVE_LIST, _ERR_PRIMITIVE_LIST)
            is_delete_list = True
        elif key.startswith("$"):
            continue  # an unknown directive: the typed decode would drop it
        if patch_value is None:
            original.pop(key, None)
            continue
        if key not in original or _shape(original[key]) != _shape(patch_value):
            if not is_delete_list:
                cleaned, keep = _clean(patch_value)
                if keep:
                    original[key] = cleaned
                else:
                    original.pop(key, None)
            continue
        field = _lookup(type_name, key)
        current = original[key]
        if isinstance(current, dict):
            if "replace" in field.strategy.split(","):
                original[key] = _clean(patch_value)[0]
            else:
                original[key] = _smp_map(current, patch_value, field.type)
        elif isinstance(current, list):
            original[key] = _smp_list_field(current, patch_value, field, is_delete_list)
        else:
            original[key] = patch_value
    return original


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _directive_target(key: str, prefix: str, error: str) -> str:
    """``extractKey``: the field a ``$prefix/<field>`` directive names."""
    head, sep, tail = key.partition("/")
    if not sep or head != prefix:
        raise PatchError(400, error)
    return tail


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """``applyRetainKeysDirective``: clear the fields of ``original`` not in ``$retainKeys``."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise PatchError(400, _ERR_RETAIN_KEYS)
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        # Every field the patch sets must be one it retains.
        if key not in retain:
            raise PatchError(400, _ERR_RETAIN_KEYS)
    for key in [key for key in original if key not in retain]:
        del original[key]


def _apply_set_element_order(
    original: dict[str, Any], patch: dict[str, Any], type_name: str | None
) -> None:
    """``mergePatchIntoOriginal``: merge each list named by ``$setElementOrder/<field>``, then
    order it: the directive's order first, then the patch's, then the live list's."""
    for directive in [key for key in patch if key.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive)
        if not isinstance(order, list):
            raise PatchError(400, _ERR_SET_ELEMENT_ORDER)
        key = _directive_target(directive, _SET_ELEMENT_ORDER, _ERR_SET_ELEMENT_ORDER)
        found_original, found_patch = key in original, key in patch
        original_value, patch_value = original.get(key), patch.pop(key, None)
        if (found_original and not isinstance(original_value, list)) or (
            found_patch and not isinstance(patch_value, list)
        ):
            raise PatchError(400, _ERR_SET_ELEMENT_ORDER)
        original_list: list[Any] = original_value if isinstance(original_value, list) else []
        patch_list: list[Any] = patch_value if isinstance(patch_value, list) else []
        field = _lookup(type_name, key)
        merge_key = field.key if field.merges else ""
        _validate_set_element_order(patch_list, order, merge_key)
        if found_original and found_patch:
            merged = _smp_list_field(original_list, patch_list, field, False)
        elif found_original:
            merged = list(original_list)
        elif found_patch:
            merged = _clean(patch_list)[0]
        else:
            continue
        if _element_shape(original_list, patch_list) == "map" and not merge_key:
            original[key] = merged  # no key to order maps by
            continue
        patch_items, server_only = _partition(merged, order, merge_key)
        original[key] = _normalize_order(patch_items, server_only, order, original_list, merge_key)


def _validate_set_element_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """``validatePatchWithSetOrderList``: the patch's items must appear in the directive's list,
    in the same relative order (``$patch: delete`` items aside)."""
    if not order or not patch_list:
        return
    items = patch_list
    if merge_key:
        if not all(isinstance(item, dict) for item in patch_list):
            raise PatchError(400, _ERR_SET_ELEMENT_ORDER)
        items = [item for item in patch_list if item.get(_DIRECTIVE) != "delete"]
    patch_index = order_index = 0
    while patch_index < len(items) and order_index < len(order):
        item = items[patch_index]
        if isinstance(item, dict) and _DIRECTIVE in item:
            patch_index += 1
            continue
        if _merge_key_equal(item, order[order_index], merge_key):
            patch_index += 1
        order_index += 1
    if patch_index < len(items):
        raise PatchError(
            400,
            f"the order in patch list:\n{_json(patch_list)}\n doesn't match "
            f"{_SET_ELEMENT_ORDER} list:\n{_json(order)}",
        )


def _merge_key_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _same(left, right)
    for item in (left, right):
        if not isinstance(item, dict):
            raise PatchError(400, f"expected a map, but received {_kind(item)}")
        if merge_key not in item:
            raise PatchError(400, _no_merge_key(item, merge_key))
    return _same(left[merge_key], right[merge_key])


def _no_merge_key(item: Any, merge_key: str) -> str:
    return f"map: {_json(item)} does not contain declared merge key: {merge_key}"


def _element_shape(*lists: list[Any]) -> str:
    """``sliceElementType``: the shape all elements share (lists of lists are refused)."""
    shapes = {_shape(item) for items in lists for item in items}
    if "list" in shapes:
        raise PatchError(422, _ERR_LIST_OF_LISTS)
    if len(shapes) > 1:
        raise PatchError(400, f"list element types are not identical: {_json(list(lists))}")
    return shapes.pop() if shapes else "scalar"


def _smp_list_field(
    original: list[Any], patch: list[Any], field: _Field, is_delete_list: bool
) -> list[Any]:
    """``mergeSliceHandler``: lists with the merge strategy merge, others are replaced."""
    if field.merges or is_delete_list:
        return _smp_list(original, patch, field, is_delete_list)
    return list(_clean(patch)[0])


def _smp_list(
    original: list[Any], patch: list[Any], field: _Field, is_delete_list: bool
) -> list[Any]:
    """``mergeSlice``: merge two lists element-wise, then restore a sensible order."""
    if not original and not patch:
        return original
    if _element_shape(original, patch) != "map":
        if is_delete_list:
            # $deleteFromPrimitiveList/<field>: drop every occurrence of the listed values.
            return [item for item in original if not any(_same(item, d) for d in patch)]
        merged = _dedupe([*original, *patch])
        merge_key = ""
    else:
        merge_key = field.key
        if not merge_key:
            raise PatchError(400, f"cannot merge lists without merge key for {field.type}")
        original, patch = _apply_list_directives(original, patch, merge_key)
        merged = _merge_by_key(original, patch, merge_key, field.type)
    patch_items, server_only = _partition(merged, patch, merge_key)
    return _normalize_order(patch_items, server_only, patch, original, merge_key)


def _dedupe(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not any(_same(item, seen) for seen in out):
            out.append(item)
    return out


def _apply_list_directives(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """``mergeSliceWithSpecialElements``: act on the ``$patch`` list elements and drop them.

    ``{"<key>": v, "$patch": "delete"}`` deletes every live element with that key;
    ``{"$patch": "replace"}`` makes the patch's other elements the whole list.
    """
    remaining: list[Any] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(400, f"expected a map, but received {_kind(item)}")
        if _DIRECTIVE not in item:
            remaining.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise PatchError(400, _no_merge_key(item, merge_key))
            original = [
                live
                for live in original
                if not (isinstance(live, dict) and _same(live.get(merge_key), item[merge_key]))
            ]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError(400, "merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(400, f"unknown patch type: {directive} in map: {_json(item)}")
    if replace:
        return [_clean(item)[0] for item in remaining], []
    return original, remaining


def _merge_by_key(
    original: list[Any], patch: list[Any], merge_key: str, type_name: str | None
) -> list[Any]:
    """``mergeSliceWithoutSpecialElements``: merge into the element with the same key, or append."""
    merged = list(original)
    for item in patch:
        if merge_key not in item:
            raise PatchError(400, _no_merge_key(item, merge_key))
        index = _find_by_key(merged, merge_key, item[merge_key])
        if index is None:
            merged.append(_clean(item)[0])
        else:
            merged[index] = _smp_map(merged[index], item, type_name)
    return merged


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int | None:
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PatchError(400, f"value for key {index} is not a map")
        if merge_key in item and _same(item[merge_key], value):
            return index
    return None


def _partition(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """``partition{Primitives,Maps}ByPresentInList``: items named in ``by``, and the rest."""
    named: list[Any] = []
    rest: list[Any] = []
    for item in items:
        if merge_key:
            if not isinstance(item, dict) or merge_key not in item:
                raise PatchError(400, _no_merge_key(item, merge_key))
            present = any(
                isinstance(other, dict) and _same(other.get(merge_key), item[merge_key])
                for other in by
            )
        else:
            present = any(_same(item, other) for other in by)
        (named if present else rest).append(item)
    return named, rest


def _position(items: list[Any], value: Any, merge_key: str) -> int:
    """``index``: where ``value`` (by merge key, for maps) sits in ``items``, or -1."""

    def ident(item: Any) -> Any:
        if merge_key:
            return item.get(merge_key) if isinstance(item, dict) else None
        return item

    wanted = ident(value)
    for index, item in enumerate(items):
        if _same(ident(item), wanted):
            return index
    return -1


def _normalize_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
) -> list[Any]:
    """``normalizeElementOrder``: sort the patch's items by the patch (or directive) order and
    the server-only items by the live order, then interleave the two by the live order.

    As in ``mergeSortedSlice``, a patch item the live list does not have goes before the
    server-only item being compared with it.
    """

    def by(order: list[Any]) -> Any:
        def key(item: Any) -> int:
            index = _position(order, item, merge_key)
            return index if index >= 0 else len(order)

        return key

    left = sorted(server_only, key=by(server_order))
    right = sorted(patch_items, key=by(patch_order))
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
            continue
        if i >= len(left):
            out.append(right[j])
            j += 1
            continue
        left_at = _position(server_order, left[i], merge_key)
        right_at = _position(server_order, right[j], merge_key)
        if left_at >= 0 and right_at >= 0 and left_at < right_at:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out


# --- Server-side apply -----------------------------------------------------------------------

# A field path in FieldsV1 notation: ("f:spec", "f:containers", 'k:{"name":"web"}', "f:image").
_Path = tuple[str, ...]
_ITEM: Final = object()  # the value recorded for a list item's own path (its "." member)

# internal/stripmeta.go: fields no manager ever owns.
_STRIPPED: Final[frozenset[_Path]] = frozenset(
    {
        ("f:apiVersion",),
        ("f:kind",),
        ("f:metadata",),
        *(
            ("f:metadata", f"f:{name}")
            for name in (
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            )
        ),
    }
)
_KEPT_FROM_LIVE: Final = ("resourceVersion", "uid", "creationTimestamp")
# Defaults structured-merge-diff uses for list-map keys an item leaves out (ports' protocol).
_KEY_DEFAULTS: Final = {"protocol": "TCP"}
# internal/skipnonapplied.go: who owns the fields of an object that has no managedFields yet.
_BEFORE_FIRST_APPLY: Final = "before-first-apply"


class _Manager(NamedTuple):
    """One managedFields entry: who (``BuildManagerIdentifier``: manager, operation, subresource,
    and apiVersion for updaters only), what they own, and the stored entry, reused verbatim
    while the field set is unchanged."""

    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str
    fields: frozenset[_Path]
    entry: dict[str, Any] | None = None

    def is_applier(self, manager: str) -> bool:
        """Whether this is ``manager``'s own Apply entry on the main resource."""
        return self.manager == manager and self.operation == "Apply" and not self.subresource

    def describe(self) -> str:
        """``printManager``: how conflict messages name the manager."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def server_side_apply(
    live: dict[str, Any] | None,
    applied: Any,
    *,
    group: str,
    kind: str,
    manager: str,
    force: bool,
    now: str,
) -> dict[str, Any]:
    """Apply a configuration the way server-side apply does (an honest approximation).

    With no live object the result is the applied configuration (a create). Otherwise the
    configuration is merged into the live object: maps merge, lists with keys in the schema
    table merge item by item (sets of primitives by value), other lists are replaced whole.
    Fields this manager applied last time and leaves out now are removed unless another manager
    owns them. A field another manager owns (Apply or Update) whose value would change is a
    conflict: 409, unless ``force`` takes it over. An object without managedFields is first
    attributed to the ``before-first-apply`` manager, as the real field manager does.

    Status is not applied through the main resource for kinds with a status subresource.
    ``metadata.uid`` and ``creationTimestamp`` are kept from the live object, and so is
    ``resourceVersion`` unless the configuration gives one: that one is a precondition, left in
    the result for the caller to check against the stored object. Defaulting and validation are
    the caller's. Kinds outside the schema table (custom resources) are applied with every list
    atomic. Applying to the status subresource is not modelled.

    Args:
        live: The stored object, or None to create.
        applied: The decoded apply configuration.
        group: The object's API group ("" for core).
        kind: The object's kind.
        manager: The field manager applying (the ``fieldManager`` query parameter).
        force: Whether to take over conflicting fields (``force=true``).
        now: The RFC 3339 time recorded in this manager's managedFields entry. An apply that
            changes nothing keeps the entry's previous time, as the real server does.

    Returns:
        The new object, with ``metadata.managedFields`` updated.

    Raises:
        PatchError: 400 for a configuration that is not an object, sets managedFields, or has a
            keyed list item without its key; 409 when it conflicts with another manager.
    """
    if not isinstance(applied, dict):
        raise PatchError(400, f"the apply configuration must be an object, not {_kind(applied)}")
    metadata = applied.get("metadata")
    if isinstance(metadata, dict) and metadata.get("managedFields") is not None:
        raise PatchError(400, "metadata.managedFields must be nil")
    root = _KINDS.get((group, kind))
    reset_status = (group, kind) in _STATUS_RESET
    config = {k: v for k, v in applied.items() if not (reset_status and k == "status")}
    api_version = str(config.get("apiVersion") or (live or {}).get("apiVersion") or "")
    applied_set = _field_set(config, root, strict=True)

    time = now
    others: list[_Manager] = []
    if live is None:
        result = _ssa_merge({}, config, root)
    else:
        base = _without_managed_fields(live)
        managers = _decode_managers(live) or [
            _Manager(
                _BEFORE_FIRST_APPLY,
                "Update",
                str(live.get("apiVersion") or api_version),
                "",
                now,
                _field_set(base, root, strict=False, skip_status=reset_status),
            )
        ]
        previous = next((m for m in managers if m.is_applier(manager)), None)
        others = [m for m in managers if not m.is_applier(manager)]
        result = _ssa_merge(base, config, root)
        for key in _KEPT_FROM_LIVE:
            _copy_meta(base, result, key)
        if isinstance(metadata, dict) and metadata.get("resourceVersion"):
            # A resourceVersion in the configuration is a precondition: left for the caller to
            # compare with the stored one (the real server answers 409 when it is stale).
            result["metadata"]["resourceVersion"] = metadata["resourceVersion"]
        if previous is not None:
            _prune(result, previous.fields, applied_set, others)
        others = _settle_ownership(
            base, result, root, others, force=force, reset_status=reset_status
        )
        if previous is not None and previous.time and result == base:
            time = previous.time

    managers = list(others)
    if applied_set:
        managers.append(_Manager(manager, "Apply", api_version, "", time, applied_set))
    _store_managers(result, managers)
    return result


def record_update(
    live: dict[str, Any] | None,
    result: dict[str, Any],
    *,
    group: str,
    kind: str,
    manager: str,
    api_version: str,
    subresource: str,
    now: str,
    skip_status: bool,
) -> None:
    """Record a write that is not an apply (create, update, patch) in ``managedFields``.

    As the real field manager's updater does: the writer's ``Update`` entry (one per manager,
    apiVersion and subresource) gains every field the write added or changed, no manager keeps
    a field the write changed or removed, and a manager left with nothing is dropped. A
    writer whose fields did not change keeps its entry and its time.

    Args:
        live: The stored object before the write, or None for a create.
        result: The object as it will be stored (after defaulting and admission); its
            ``metadata.managedFields`` is replaced.
        group: The object's API group ("" for core).
        kind: The object's kind.
        manager: The field manager (the ``fieldManager`` parameter, or the user agent's
            first part).
        api_version: The request's apiVersion, recorded for updaters.
        subresource: The subresource written through ("" for the main resource).
        now: The RFC 3339 time for a changed entry.
        skip_status: Whether the main resource ignores status (it has a status subresource),
            so nobody owns status through it.
    """
    root = _KINDS.get((group, kind))
    changed, removed = _field_changes(
        _fields_only(live) if live is not None else {},
        _fields_only(result),
        root,
        skip_status=skip_status,
    )
    managers = [] if live is None else _decode_managers(live)
    identity = (manager, "Update", api_version, subresource)
    mine = next(
        (m for m in managers if (m.manager, m.operation, m.api_version, m.subresource) == identity),
        None,
    )
    settled = _take_fields([m for m in managers if m is not mine], changed | removed)
    owned = (mine.fields if mine else frozenset()) | changed
    owned -= removed
    if mine is not None and owned == mine.fields:
        settled.append(mine)
    elif owned:
        settled.append(_Manager(manager, "Update", api_version, subresource, now, frozenset(owned)))
    _store_managers(result, settled)


def _fields_only(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without its managedFields, for reading: a shallow view, not a copy."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return out


def _copy_meta(source: dict[str, Any], target: dict[str, Any], key: str) -> None:
    meta = source.get("metadata") if isinstance(source.get("metadata"), dict) else {}
    target_meta = target.setdefault("metadata", {})
    if isinstance(meta, dict) and key in meta:
        target_meta[key] = copy.deepcopy(meta[key])
    else:
        target_meta.pop(key, None)


def _entry_order(entry: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """``sortEncodedManagedFields``: by operation, time, manager, apiVersion, subresource."""
    return (
        str(entry.get("operation", "")),
        str(entry.get("time", "")),
        str(entry.get("manager", "")),
        str(entry.get("apiVersion", "")),
        str(entry.get("subresource", "")),
    )


def _settle_ownership(
    live: dict[str, Any],
    result: dict[str, Any],
    root: str | None,
    others: list[_Manager],
    *,
    force: bool,
    reset_status: bool,
) -> list[_Manager]:
    """``Updater.update``: find conflicts with the other managers, then take away from them
    what was forced over or removed; managers left with nothing are dropped."""
    changed, removed = _field_changes(live, result, root, skip_status=reset_status)
    conflicts = [(other, path) for other in others for path in sorted(other.fields & changed)]
    if conflicts and not force:
        raise _conflict_error(conflicts)
    return _take_fields(others, changed | removed)


def _field_changes(
    before_obj: dict[str, Any], after_obj: dict[str, Any], root: str | None, *, skip_status: bool
) -> tuple[set[_Path], set[_Path]]:
    """The owned-able paths a write added or changed, and those it removed."""
    before = _flatten_object(before_obj, root, skip_status=skip_status)
    after = _flatten_object(after_obj, root, skip_status=skip_status)
    changed = {path for path, value in after.items() if path not in before or before[path] != value}
    return changed, set(before.keys() - after.keys())


def _take_fields(managers: list[_Manager], taken: set[_Path]) -> list[_Manager]:
    """``managers`` without ``taken`` fields; a manager left with nothing is dropped, one that
    loses nothing keeps its stored entry as it was."""
    settled = []
    for manager in managers:
        fields = manager.fields - taken
        if fields == manager.fields:
            settled.append(manager)
        elif fields:
            settled.append(manager._replace(fields=frozenset(fields), entry=None))
    return settled


def _store_managers(obj: dict[str, Any], managers: list[_Manager]) -> None:
    """Write ``managers`` as ``obj``'s managedFields, in the server's order (none: removed)."""
    entries = sorted((_encode_manager(m) for m in managers), key=_entry_order)
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def _conflict_error(conflicts: list[tuple[_Manager, _Path]]) -> PatchError:
    """``NewConflictError``: one cause per conflicting field, and the summary kubectl prints."""
    conflicts.sort(key=lambda c: (c[0].manager, c[0].operation, c[0].subresource, c[1]))
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {other.describe()}",
            "field": _path_string(path),
        }
        for other, path in conflicts
    ]
    if len(conflicts) == 1:
        other, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {other.describe()}: {_path_string(path)}"
        )
    else:
        lines: list[str] = []
        last = ""
        for other, path in conflicts:
            if other.describe() != last:
                last = other.describe()
                lines.append(f"conflicts with {last}:")
            lines.append(f"- {_path_string(path)}")
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return PatchError(409, message, causes)


def _path_string(path: _Path) -> str:
    """``fieldpath.Path.String``: ``.spec.containers[name="web"].image``."""
    out = []
    for element in path:
        tag, _, rest = element.partition(":")
        if tag == "f":
            out.append(f".{rest}")
        elif tag == "k":
            key = json.loads(rest)
            out.append("[" + ",".join(f"{k}={_json(v)}" for k, v in key.items()) + "]")
        elif tag == "v":
            out.append(f"[={rest}]")
        else:
            out.append(f"[{rest}]")
    return "".join(out)


# Field sets ----------------------------------------------------------------------------------


def _list_keys(field: _Field) -> tuple[str, ...] | None:
    """The apply list type of a field: its map keys, ``()`` for a set, None when atomic."""
    if field.list_keys is not None:
        return field.list_keys or None
    if field.merges:
        return (field.key,) if field.key else ()
    return None


def _item_element(item: Any, keys: tuple[str, ...], *, strict: bool, index: int) -> str | None:
    """The path element naming a list item: ``k:{...}`` by its keys, ``v:...`` in a set."""
    if not keys:
        return f"v:{_canonical(item)}"
    if not isinstance(item, dict):
        if strict:
            raise PatchError(400, f"element {index}: expected an object in an associative list")
        return None
    values: dict[str, Any] = {}
    for name in sorted(keys):
        if name in item:
            values[name] = item[name]
        elif name in _KEY_DEFAULTS:
            values[name] = _KEY_DEFAULTS[name]
        elif strict:
            raise PatchError(
                400,
                f"element {index}: associative list with keys has an element that omits key "
                f"field {json.dumps(name)} (and doesn't have default value)",
            )
        else:
            return None
    return f"k:{_canonical(values)}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _flatten_object(
    obj: dict[str, Any], root: str | None, *, skip_status: bool = False, strict: bool = False
) -> dict[_Path, Any]:
    """Every owned-able path of ``obj`` with its value (``ToFieldSet`` with values), minus the
    fields no manager owns."""
    out: dict[_Path, Any] = {}
    _flatten(obj, root, (), out, strict=strict)
    return {
        path: value
        for path, value in out.items()
        if path not in _STRIPPED
        and path[:2] != ("f:metadata", "f:managedFields")
        and not (skip_status and path[:1] == ("f:status",))
    }


def _field_set(
    obj: dict[str, Any], root: str | None, *, strict: bool, skip_status: bool = False
) -> frozenset[_Path]:
    return frozenset(_flatten_object(obj, root, skip_status=skip_status, strict=strict))


def _flatten(
    value: Any, type_name: str | None, path: _Path, out: dict[_Path, Any], *, strict: bool
) -> None:
    if not isinstance(value, dict):
        out[path] = value  # a scalar or null is a member
        return
    if not value and path:
        out[path] = {}  # so is an empty map
        return
    for key, item in value.items():
        field = _lookup(type_name, key)
        child = (*path, f"f:{key}")
        if isinstance(item, list):
            _flatten_list(item, field, child, out, strict=strict)
        else:
            _flatten(item, field.type, child, out, strict=strict)


def _flatten_list(
    items: list[Any], field: _Field, path: _Path, out: dict[_Path, Any], *, strict: bool
) -> None:
    keys = _list_keys(field)
    if keys is None:
        out[path] = items  # an atomic list is a member, whole
        return
    elements = [_item_element(item, keys, strict=strict, index=i) for i, item in enumerate(items)]
    if None in elements:
        out[path] = items  # a live list that is not keyed after all
        return
    for element, item in zip(elements, items, strict=True):
        assert element is not None
        item_path = (*path, element)
        out[item_path] = _ITEM  # the item itself is a member...
        if keys and isinstance(item, dict):
            for key, child in item.items():  # ...and so are its fields
                sub = _lookup(field.type, key)
                if isinstance(child, list):
                    _flatten_list(child, sub, (*item_path, f"f:{key}"), out, strict=strict)
                else:
                    _flatten(child, sub.type, (*item_path, f"f:{key}"), out, strict=strict)


# Merging and pruning ------------------------------------------------------------------------


def _ssa_merge(
    live: dict[str, Any], config: dict[str, Any], type_name: str | None
) -> dict[str, Any]:
    """Merge an apply configuration into an object (``TypedValue.Merge``)."""
    out = copy.deepcopy(live)
    for key, value in config.items():
        if value is None:
            out.pop(key, None)
            continue
        field = _lookup(type_name, key)
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            out[key] = _ssa_merge(current, value, field.type)
        elif isinstance(current, list) and isinstance(value, list):
            out[key] = _ssa_merge_list(current, value, field)
        elif isinstance(value, dict):
            out[key] = _ssa_merge({}, value, field.type)
        elif isinstance(value, list):
            out[key] = _ssa_merge_list([], value, field)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _ssa_merge_list(lhs: list[Any], rhs: list[Any], field: _Field) -> list[Any]:
    """``mergingWalker.visitListItems``: associative lists merge item by item, keeping live-only
    items where they are and the configuration's order for the rest; atomic lists are replaced."""
    keys = _list_keys(field)
    if keys is None:
        return [_ssa_item(None, item, field, ()) for item in rhs]
    # Live items that cannot be keyed stay where they are, under a name no item can have.
    rhs_pes = [_item_element(item, keys, strict=True, index=i) or "" for i, item in enumerate(rhs)]
    lhs_pes = [
        _item_element(item, keys, strict=False, index=i) or f"i:{i}" for i, item in enumerate(lhs)
    ]
    observed_rhs: dict[str, Any] = {}
    for pe, item in zip(rhs_pes, rhs, strict=True):
        if pe in observed_rhs:
            raise PatchError(400, f"duplicate entries for key {_path_string((pe,))}")
        observed_rhs[pe] = item
    observed_lhs: dict[str, Any] = {}
    for pe, item in zip(lhs_pes, lhs, strict=True):
        observed_lhs.setdefault(pe, item)
    shared = [pe for pe in rhs_pes if pe in observed_lhs]
    next_shared = shared.pop(0) if shared else None
    merged_rhs: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lhs_pes) or ri < len(rhs_pes):
        if li < len(lhs_pes) and ri < len(rhs_pes):
            pe = lhs_pes[li]
            if pe == rhs_pes[ri]:
                merged_rhs.add(pe)
                out.append(_ssa_item(observed_lhs[pe], observed_rhs[pe], field, keys))
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in observed_rhs and next_shared is not None and next_shared != pe:
                li += 1  # a shared item, but not the one this round places
                continue
        if li < len(lhs_pes):
            pe = lhs_pes[li]
            if pe not in observed_rhs:
                out.append(copy.deepcopy(lhs[li]))
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
                continue
        if ri < len(rhs_pes):
            pe = rhs_pes[ri]
            merged_rhs.add(pe)
            out.append(_ssa_item(observed_lhs.get(pe), observed_rhs[pe], field, keys))
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


def _ssa_item(live: Any, applied: Any, field: _Field, keys: tuple[str, ...]) -> Any:
    if keys and isinstance(applied, dict):
        return _ssa_merge(live if isinstance(live, dict) else {}, applied, field.type)
    return copy.deepcopy(applied)


def _prune(
    obj: dict[str, Any],
    last: frozenset[_Path],
    applied: frozenset[_Path],
    others: list[_Manager],
) -> None:
    """``Updater.prune``: remove what this manager applied last time and no longer does, unless
    some manager (this one included) owns it or something beneath it."""
    owned = set(applied).union(*(m.fields for m in others))
    beneath = {path[:i] for path in owned for i in range(1, len(path))}
    for path in sorted(last - owned, key=len):
        if path not in beneath:
            _remove_path(obj, path)


def _remove_path(obj: dict[str, Any], path: _Path) -> None:
    """Remove the value at ``path``; maps and lists this empties go too (Go's omitempty), up to
    but not including the top-level fields."""
    chain: list[tuple[Any, Any]] = []  # (container, key or index) down to the target
    node: Any = obj
    for element in path:
        at = _locate(node, element)
        if at is None:
            return  # already gone with an enclosing item
        chain.append((node, at))
        node = node[at]
    for depth in range(len(chain) - 1, -1, -1):
        container, at = chain[depth]
        del container[at]
        if container or depth < 2:
            break


def _locate(node: Any, element: str) -> Any:
    tag, _, rest = element.partition(":")
    if tag == "f":
        return rest if isinstance(node, dict) and rest in node else None
    if not isinstance(node, list):
        return None
    if tag == "v":
        wanted = json.loads(rest)
        return next((i for i, item in enumerate(node) if _same(item, wanted)), None)
    if tag == "k":
        wanted = json.loads(rest)
        for index, item in enumerate(node):
            if isinstance(item, dict) and all(
                _same(item.get(name, _KEY_DEFAULTS.get(name)), value)
                for name, value in wanted.items()
            ):
                return index
        return None
    index = int(rest)
    return index if 0 <= index < len(node) else None


# managedFields ------------------------------------------------------------------------------


def _decode_managers(obj: dict[str, Any]) -> list[_Manager]:
    """The managers recorded in ``metadata.managedFields`` (malformed entries are skipped)."""
    meta = obj.get("metadata")
    entries = meta.get("managedFields") if isinstance(meta, dict) else None
    managers = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("fieldsV1", {}), dict):
            continue
        if entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            continue
        fields: set[_Path] = set()
        _decode_fields(entry.get("fieldsV1") or {}, (), fields)
        managers.append(
            _Manager(
                manager=str(entry.get("manager", "")),
                operation=str(entry.get("operation", "Update")),
                api_version=str(entry.get("apiVersion", "")),
                subresource=str(entry.get("subresource", "")),
                time=str(entry.get("time", "")),
                fields=frozenset(fields),
                entry=entry,
            )
        )
    return managers


def _decode_fields(node: dict[str, Any], prefix: _Path, out: set[_Path]) -> None:
    """FieldsV1 to paths: a ``"."`` child, or an empty node, marks a member."""
    for key, child in node.items():
        if key == ".":
            out.add(prefix)
            continue
        tag, _, rest = key.partition(":")
        element = key
        if tag in {"k", "v"}:
            try:  # canonical JSON, so the same key always compares equal
                element = f"{tag}:{_canonical(json.loads(rest))}"
            except ValueError:
                continue
        path = (*prefix, element)
        if isinstance(child, dict) and child:
            _decode_fields(child, path, out)
        else:
            out.add(path)


def _encode_fields(paths: frozenset[_Path]) -> dict[str, Any]:
    """Paths to FieldsV1: members with children get a ``"."`` entry; children are sorted
    fields first, then keys, values and indexes, as structured-merge-diff writes them."""
    tree: dict[str, Any] = {}
    members: set[_Path] = set(paths)
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})

    rank = {"f": 0, "k": 1, "v": 2, "i": 3}

    def render(node: dict[str, Any], path: _Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if node and path in members:
            out["."] = {}
        for element in sorted(node, key=lambda e: (rank.get(e[:1], 4), e)):
            out[element] = render(node[element], (*path, element))
        return out

    return render(tree, ())


def _encode_manager(manager: _Manager) -> dict[str, Any]:
    if manager.entry is not None:
        return copy.deepcopy(manager.entry)
    entry: dict[str, Any] = {
        "manager": manager.manager,
        "operation": manager.operation,
        "apiVersion": manager.api_version,
        "time": manager.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": _encode_fields(manager.fields),
    }
    if manager.subresource:
        entry["subresource"] = manager.subresource
    return entry
