"""What each verb does to stored objects: kube-apiserver's generic registry and strategies.

A write goes through the stages of the real server, in its order: decode, fill in the
server's fields (uid, timestamps, generation, defaults), mutating admission, validation,
validating admission, then the store with optimistic concurrency. Deletion honours finalizers
and propagation policies; the garbage collector (``gc.py``) finishes what they start.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import ipaddress
import json
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from sandbox.apiserver import errors, patch, validation
from sandbox.apiserver.admission import AdmissionRequest
from sandbox.apiserver.resources import ResourceType, from_crd

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sandbox.apiserver.admission import Admission
    from sandbox.apiserver.rbac import UserInfo
    from sandbox.apiserver.resources import Registry
    from sandbox.apiserver.store import Change, Key, Obj, Store

#: generateName's suffix alphabet (k8s.io/apiserver/pkg/storage/names: no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODE_PORTS = range(30000, 32768)
NAMESPACES: Key = ("", "namespaces")
CRDS: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
PODS: Key = ("", "pods")
SERVICE_ACCOUNTS: Key = ("", "serviceaccounts")
#: Where the ServiceAccount admission plugin mounts a pod's API credentials.
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_TOKEN_VOLUME_PREFIX = "kube-api-access-"
_MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
WEBHOOKS = {
    "mutating": ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    "validating": ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
}
#: Kinds whose status is written only through the status subresource; for these a change of
#: anything but metadata and status is a new ``generation``.
_SPEC_KINDS_WITHOUT_STATUS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
    }
)


def now_rfc3339(clock: Callable[[], dt.datetime]) -> str:
    return clock().strftime("%Y-%m-%dT%H:%M:%SZ")


class Objects:
    """The verbs on stored objects; the HTTP layer decodes requests and calls these."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        admission: Admission,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.registry = registry
        self.admission = admission
        self.clock = clock
        store.listeners.append(self._on_change)
        self._register_existing_crds()

    # -- reads --------------------------------------------------------------------------------

    def get(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(resource.key, namespace, name)
        if obj is None:
            raise errors.not_found(resource, name)
        return self.present(resource, obj)

    def present(self, resource: ResourceType, obj: Obj) -> Obj:
        """The object as the requested version shows it (custom resources convert with
        strategy None: only apiVersion changes, as upstream)."""
        if obj.get("apiVersion") != resource.api_version:
            return {**obj, "apiVersion": resource.api_version}
        return obj

    def require_namespace(self, resource: ResourceType, namespace: str, *, create: bool) -> None:
        if not resource.namespaced:
            return
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.APIError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )
        if create and ns.get("metadata", {}).get("deletionTimestamp"):
            raise errors.forbidden(
                f'{resource.plural} "" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated"
            )

    # -- create -------------------------------------------------------------------------------

    async def create(
        self,
        resource: ResourceType,
        namespace: str,
        body: Obj,
        user: UserInfo,
        *,
        dry_run: bool = False,
        options: Mapping[str, Any] | None = None,
        field_manager: str | None = "",
    ) -> Obj:
        """Create ``body``; ``field_manager`` None means an apply already recorded its fields."""
        self._check_type(resource, body)
        obj = copy.deepcopy(body)
        if obj.get("metadata") is None:
            obj["metadata"] = {}
        metadata = obj["metadata"]
        _check_metadata_types(resource, metadata)
        if resource.namespaced:
            _check_namespace(metadata, namespace)
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        self.require_namespace(resource, namespace, create=True)
        # Admission names an object by its generateName until the name is generated.
        shown_name = metadata.get("name") or metadata.get("generateName") or "Unknown"
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + "".join(
                secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)
            )
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        self._fill_server_fields(resource, obj)
        if resource.key == PODS:
            admit_service_account(self.store, resource, obj, shown_name)
        obj = await self._admit_and_validate(
            resource, "CREATE", obj, None, user, dry_run=dry_run, options=options
        )
        name = obj["metadata"].get("name", "")
        if self.store.get(resource.key, namespace if resource.namespaced else "", name):
            raise errors.already_exists(resource, name)
        if field_manager is not None:
            self._track(resource, None, obj, field_manager, subresource="")
        if dry_run:
            if resource.key == ("", "services"):
                self._check_cluster_ips(resource, obj)  # the allocator's dry run
            return obj
        self._allocate(resource, obj)
        return self.store.create(resource.key, obj)

    def _check_type(self, resource: ResourceType, body: Obj) -> None:
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if (
            api_version
            and api_version != resource.api_version
            and not (resource.custom and api_version.startswith(resource.group + "/"))
        ):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({resource.api_version})"
            )
        if kind and kind != resource.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
            )

    def _fill_server_fields(self, resource: ResourceType, obj: Obj) -> None:
        metadata = obj["metadata"]
        for server_field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            metadata.pop(server_field, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_rfc3339(self.clock)
        metadata["generation"] = 1
        if "status" in resource.subresources and resource.kind not in ("Namespace",):
            # PrepareForCreate: status is the controllers' to write, through /status.
            obj.pop("status", None)
        if resource.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        validation.default(resource.group, resource.kind, obj)

    def _allocate(self, resource: ResourceType, obj: Obj) -> None:
        """A Service's ClusterIP and node ports, as the service REST storage allocates them."""
        if resource.key != ("", "services"):
            return
        spec = obj.setdefault("spec", {})
        kind = spec.get("type", "ClusterIP")
        if kind != "ExternalName" and spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = self._free_cluster_ip()
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        self._check_cluster_ips(resource, obj)
        if kind in ("NodePort", "LoadBalancer"):
            used = {
                port.get("nodePort")
                for service in self.store.list(("", "services"))
                for port in service.get("spec", {}).get("ports", [])
            }
            for port in spec.get("ports", []):
                if not port.get("nodePort"):
                    port["nodePort"] = next(p for p in NODE_PORTS if p not in used)
                    used.add(port["nodePort"])

    @staticmethod
    def _check_cluster_ips(resource: ResourceType, obj: Obj) -> None:
        """A ClusterIP asked for must be in the service range: the allocator's refusal,
        which names the range (clients, Telepresence's manager among them, read it there)."""
        spec = obj.get("spec") or {}
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        for ip in ips:
            if not isinstance(ip, str) or ip in ("", "None"):
                continue
            try:
                inside = ipaddress.ip_address(ip) in SERVICE_CIDR
            except ValueError:
                continue  # validation words a malformed address
            if inside:
                continue
            name = obj.get("metadata", {}).get("name", "")
            listed = ", ".join(f'"{i}"' for i in ips)
            detail = (
                f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid "
                f"range. The range of valid IPs is {SERVICE_CIDR}"
            )
            value = f"[]string{{{listed}}}"
            raise errors.invalid(
                resource,
                name,
                f'Service "{name}" is invalid: spec.clusterIPs: Invalid value: {value}: {detail}',
                [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {value}: {detail}",
                        "field": "spec.clusterIPs",
                    }
                ],
            )

    def _free_cluster_ip(self) -> str:
        used = {s.get("spec", {}).get("clusterIP") for s in self.store.list(("", "services"))}
        for offset in range(1, SERVICE_CIDR.num_addresses - 1):
            address = str(SERVICE_CIDR.network_address + offset)
            if address not in used:
                return address
        raise errors.internal("the service IP range is exhausted")

    async def _admit_and_validate(
        self,
        resource: ResourceType,
        operation: str,
        obj: Obj,
        old: Obj | None,
        user: UserInfo,
        *,
        dry_run: bool,
        options: Mapping[str, Any] | None,
        subresource: str = "",
    ) -> Obj:
        metadata = obj["metadata"]
        request = AdmissionRequest(
            operation=operation,
            group=resource.group,
            version=resource.version,
            kind=resource.kind,
            resource=resource.plural,
            subresource=subresource,
            namespace=metadata.get("namespace", ""),
            name=metadata.get("name", ""),
            user=user_info_dict(user),
            object=obj,
            old_object=old,
            dry_run=dry_run,
            options=options,
        )
        mutated = await self.admission.mutate(self.store.list(WEBHOOKS["mutating"]), request)
        if mutated is not None and mutated != obj:
            obj = mutated
            request = _replace_object(request, obj)
        self.validate(resource, obj, old)
        await self.admission.validate(self.store.list(WEBHOOKS["validating"]), request)
        return obj

    def validate(self, resource: ResourceType, obj: Obj, old: Obj | None) -> None:
        metadata = obj.get("metadata", {})
        name = metadata.get("name", "")
        causes = validation.validate(resource.group, resource.kind, obj, old)
        if not name and not any(c.field == "metadata.name" for c in causes):
            causes.insert(
                0,
                validation.Cause(
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                    "metadata.name",
                ),
            )
        if causes:
            raise errors.invalid(
                resource,
                name,
                validation.invalid_message(resource.qualified_kind, name, causes),
                [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
            )

    # -- update and patch ---------------------------------------------------------------------

    async def update(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        user: UserInfo,
        *,
        subresource: str = "",
        dry_run: bool = False,
        options: Mapping[str, Any] | None = None,
        field_manager: str = "",
    ) -> Obj:
        self._check_type(resource, body)
        if body.get("metadata") is None:
            body["metadata"] = {}
        metadata = body["metadata"]
        _check_metadata_types(resource, metadata)
        assert isinstance(metadata, dict)
        if metadata.get("name") is not None:
            _check_name(metadata, name)
        if resource.namespaced:
            _check_namespace(metadata, namespace)
        ns = namespace if resource.namespaced else ""
        current = self.store.get(resource.key, ns, name)
        if current is None:
            raise errors.not_found(resource, name)
        check_resource_version(resource, metadata, current)
        obj = self._merge_for_update(
            resource, current, copy.deepcopy(body), subresource=subresource
        )
        return await self._store_update(
            resource,
            obj,
            current,
            user,
            subresource=subresource,
            dry_run=dry_run,
            options=options,
            field_manager=field_manager,
        )

    def _track(
        self, resource: ResourceType, live: Obj | None, obj: Obj, manager: str, *, subresource: str
    ) -> None:
        """Record a create, update or patch in ``obj``'s managedFields (see
        :func:`patch.record_update`). managedFields the client changed are its to set: ``[{}]``
        clears them all; any other new list is the state this write is recorded on top of;
        ``[]`` or leaving them out changes nothing (as the real server treats them)."""
        metadata = obj["metadata"]
        sent = metadata.get("managedFields")
        before = (live or {}).get("metadata", {}).get("managedFields")
        if sent == [{}]:
            metadata.pop("managedFields", None)
            return
        if sent and sent != before:
            live = {
                **(live or {}),
                "metadata": {**(live or {}).get("metadata", {}), "managedFields": sent},
            }
        elif live is None:
            metadata.pop("managedFields", None)
        patch.record_update(
            live,
            obj,
            group=resource.group,
            kind=resource.kind,
            manager=manager,
            api_version=resource.api_version,
            subresource=subresource,
            now=now_rfc3339(self.clock),
            skip_status="status" in resource.subresources and subresource != "status",
        )

    def _merge_for_update(
        self, resource: ResourceType, current: Obj, obj: Obj, *, subresource: str
    ) -> Obj:
        """What of the client's object an update keeps (PrepareForUpdate of each strategy)."""
        if subresource == "status":
            # Only status changes through /status.
            return {**copy.deepcopy(current), "status": obj.get("status", {})}
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        metadata = obj["metadata"]
        old_metadata = current["metadata"]
        for kept in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ):
            if kept in old_metadata:
                metadata[kept] = old_metadata[kept]
            else:
                metadata.pop(kept, None)
        if "status" in resource.subresources and resource.kind != "Namespace":
            if "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
            else:
                obj.pop("status", None)
        validation.default(resource.group, resource.kind, obj)
        if resource.key == ("", "services"):
            spec, old_spec = obj.setdefault("spec", {}), current.get("spec", {})
            for allocated in ("clusterIP", "clusterIPs"):
                if not spec.get(allocated) and old_spec.get(allocated):
                    spec[allocated] = old_spec[allocated]
        if _spec_changed(resource, current, obj):
            metadata["generation"] = old_metadata.get("generation", 1) + 1
        return obj

    async def _store_update(
        self,
        resource: ResourceType,
        obj: Obj,
        current: Obj,
        user: UserInfo,
        *,
        subresource: str,
        dry_run: bool,
        options: Mapping[str, Any] | None,
        field_manager: str | None,
    ) -> Obj:
        """Admit, validate and store an update; ``field_manager`` None means an apply already
        recorded its fields."""
        obj = await self._admit_and_validate(
            resource,
            "UPDATE",
            obj,
            current,
            user,
            dry_run=dry_run,
            options=options,
            subresource=subresource,
        )
        if field_manager is not None:
            self._track(resource, current, obj, field_manager, subresource=subresource)
        if dry_run:
            return obj
        metadata = obj["metadata"]
        if _same_content(obj, current):
            return current  # a no-op write does not bump the resourceVersion, as upstream
        if deletes_during_update(resource, current, obj):
            ns = metadata.get("namespace", "")
            self.store.update(resource.key, obj)
            return self.store.delete(resource.key, ns, metadata["name"])
        self._allocate(resource, obj)
        return self.store.update(resource.key, obj)

    async def patch(  # noqa: PLR0917 (the path's parts, then what is done and by whom)
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        body: Any,
        user: UserInfo,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_manager: str = "",
        force: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[int, Obj]:
        """Returns the HTTP code (201 when an apply created the object) and the object."""
        ns = namespace if resource.namespaced else ""
        current = self.store.get(resource.key, ns, name)
        if patch_type == "apply":
            if not field_manager:
                raise errors.bad_request(
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                    "required for apply patch"
                )
            if not isinstance(body, dict):
                raise errors.bad_request("apply patch must be an object")
            result = patch.server_side_apply(
                current,
                body,
                group=resource.group,
                kind=resource.kind,
                manager=field_manager,
                force=force,
                now=now_rfc3339(self.clock),
            )
            if current is None:
                result.setdefault("metadata", {})["name"] = name
                created = await self.create(
                    resource,
                    namespace,
                    result,
                    user,
                    dry_run=dry_run,
                    options=options,
                    field_manager=None,
                )
                return 201, created
        else:
            if current is None:
                raise errors.not_found(resource, name)
            base = current
            if patch_type == "json":
                result = patch.json_patch(base, body)
            elif patch_type == "merge":
                result = patch.merge_patch(base, body)
            elif patch_type == "strategic":
                if resource.custom or not patch.supports_strategic_merge(
                    resource.group, resource.kind
                ):
                    raise errors.APIError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types "
                        "include: application/json-patch+json, application/merge-patch+json, "
                        "application/apply-patch+yaml",
                    )
                result = patch.strategic_merge_patch(
                    base, body, group=resource.group, kind=resource.kind
                )
            else:
                raise errors.unsupported_media_type(patch_type)
        if not isinstance(result, dict) or not isinstance(result.get("metadata"), dict):
            raise errors.bad_request("the patch produced an object without metadata")
        _check_metadata_types(resource, result["metadata"])
        assert current is not None
        check_resource_version(resource, result["metadata"], current)
        result["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        _check_name(result["metadata"], name)
        obj = self._merge_for_update(resource, current, result, subresource=subresource)
        updated = await self._store_update(
            resource,
            obj,
            current,
            user,
            subresource=subresource,
            dry_run=dry_run,
            options=options,
            field_manager=None if patch_type == "apply" else field_manager,
        )
        return 200, updated

    # -- delete -------------------------------------------------------------------------------

    async def delete(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        user: UserInfo,
        options: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> tuple[bool, Obj]:
        """Returns whether the object is gone, and the object (as deleted, or as it stays)."""
        ns = namespace if resource.namespaced else ""
        current = self.store.get(resource.key, ns, name)
        if current is None:
            raise errors.not_found(resource, name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"].get("uid"):
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object "
                f"meta: {current['metadata'].get('uid')}",
            )
        wanted = preconditions.get("resourceVersion")
        if wanted and wanted != current["metadata"].get("resourceVersion"):
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: ResourceVersion in precondition: {wanted}, ResourceVersion "
                f"in object meta: {current['metadata'].get('resourceVersion')}",
            )
        await self.admission.validate(
            self.store.list(WEBHOOKS["validating"]),
            AdmissionRequest(
                operation="DELETE",
                group=resource.group,
                version=resource.version,
                kind=resource.kind,
                resource=resource.plural,
                subresource="",
                namespace=ns,
                name=name,
                user=user_info_dict(user),
                object=None,
                old_object=current,
                dry_run=dry_run,
                options=dict(options),
            ),
        )
        if dry_run:
            return True, current
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else _default_propagation(resource)
        )
        obj = copy.deepcopy(current)
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        elif policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        graceful = self._grace_period(resource, obj, options)
        if resource.key == NAMESPACES:
            obj.setdefault("status", {})["phase"] = "Terminating"
        stays = (
            bool(finalizers)
            or graceful is not None
            or (resource.key == NAMESPACES and obj.get("spec", {}).get("finalizers"))
        )
        if not stays:
            return True, self.store.delete(resource.key, ns, name)
        if finalizers:
            metadata["finalizers"] = finalizers
        grace = graceful or 0  # None: no grace period (gone at once, or with the finalizers)
        if metadata.get("deletionTimestamp"):
            # A later request may only shorten the grace period (BeforeDelete), and one
            # without any ends it (markAsDeleting), so the last finalizer's removal deletes.
            grace = min(grace, metadata.get("deletionGracePeriodSeconds", grace))
        else:
            metadata["deletionTimestamp"] = now_rfc3339(self.clock)
        metadata["deletionGracePeriodSeconds"] = grace
        if _same_content(obj, current):
            return False, current
        return False, self.store.update(resource.key, obj)

    def _grace_period(
        self, resource: ResourceType, obj: Obj, options: Mapping[str, Any]
    ) -> int | None:
        """A pod bound to a node ends gracefully: its kubelet deletes it once stopped."""
        if resource.key != ("", "pods") or not obj.get("spec", {}).get("nodeName"):
            return None
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return None
        seconds = options.get("gracePeriodSeconds")
        if seconds is None:
            seconds = obj.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        return None if int(seconds) == 0 else int(seconds)

    # -- custom resource definitions ----------------------------------------------------------

    def _register_existing_crds(self) -> None:
        for crd in self.store.list(CRDS):
            self.registry.set_custom(crd["metadata"]["name"], from_crd(crd))

    def _on_change(self, key: Key, change: Change) -> None:
        if key != CRDS:
            return
        name = change.object["metadata"]["name"]
        if change.type == "DELETED":
            # Its objects go with it (the real server's customresourcecleanup finalizer).
            for served in {resource.key for resource in from_crd(change.object)}:
                for namespace, object_name in list(dict(self.store.items(served))):
                    self.store.delete(served, namespace, object_name)
            self.registry.set_custom(name, [])
            return
        self.registry.set_custom(name, from_crd(change.object))
        status = change.object.get("status") or {}
        if not any(c.get("type") == "Established" for c in status.get("conditions", [])):
            # The CRD controller's answer: the names are accepted and the API is served.
            established = copy.deepcopy(change.object)
            stamp = now_rfc3339(self.clock)
            established["status"] = {
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": stamp,
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": stamp,
                    },
                ],
                "acceptedNames": change.object.get("spec", {}).get("names", {}),
                "storedVersions": [
                    v["name"]
                    for v in change.object.get("spec", {}).get("versions", [])
                    if v.get("storage")
                ],
            }
            self.store.update(CRDS, established)


def admit_service_account(store: Store, resource: ResourceType, pod: Obj, shown_name: str) -> None:
    """The ServiceAccount admission plugin on a pod's CREATE
    (``plugin/pkg/admission/serviceaccount``), which runs before the webhooks.

    The pod runs as a ServiceAccount that must exist (``default`` unless it names another;
    ``403`` otherwise), takes the account's ``imagePullSecrets`` when it has none, and, unless
    the pod or else the account says ``automountServiceAccountToken: false``, gets the
    projected ``kube-api-access-<5 random>`` volume (a bound token, the cluster CA, the
    namespace) mounted read-only at :data:`TOKEN_MOUNT_PATH` in every container and init
    container that mounts nothing there itself. A pod that already has a ``kube-api-access-``
    volume keeps it instead of getting a second. Mirror pods are left alone.
    """
    metadata = pod["metadata"]
    spec = pod.get("spec")
    if not isinstance(spec, dict) or _MIRROR_POD_ANNOTATION in (metadata.get("annotations") or {}):
        return
    namespace = metadata.get("namespace", "")
    name = spec.get("serviceAccountName") or "default"
    spec["serviceAccountName"] = name
    account = store.get(SERVICE_ACCOUNTS, namespace, name)
    if account is None:
        raise errors.forbidden(
            f'{resource.plural} "{shown_name}" is forbidden: error looking up service account '
            f'{namespace}/{name}: serviceaccount "{name}" not found',
            resource,
            shown_name,
        )
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = account.get("automountServiceAccountToken")
    if automount is not False:
        _mount_service_account_token(spec)
    if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [
            {"name": secret.get("name", "")} for secret in account["imagePullSecrets"]
        ]


def _mount_service_account_token(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        return  # validation refuses the pod
    existing = next(
        (
            volume["name"]
            for volume in volumes
            if isinstance(volume, dict)
            and str(volume.get("name", "")).startswith(_TOKEN_VOLUME_PREFIX)
        ),
        None,
    )
    volume_name = existing or _TOKEN_VOLUME_PREFIX + "".join(
        secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)
    )
    mount = {"name": volume_name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
    mounted = False
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        for container in containers if isinstance(containers, list) else []:
            current = container.get("volumeMounts") or [] if isinstance(container, dict) else None
            if not isinstance(current, list) or any(
                isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in current
            ):
                continue
            container["volumeMounts"] = [*current, dict(mount)]
            mounted = True
    if mounted and existing is None:
        spec["volumes"] = [*volumes, _token_volume(volume_name)]


def _token_volume(name: str) -> dict[str, Any]:
    """``TokenVolumeSource``: 3607 s is the "warn only" expiry kube-apiserver recognises as
    the admission plugin's own; kubelet rotates the token well before it."""
    return {
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
            "defaultMode": 0o644,
        },
    }


def _check_name(metadata: Mapping[str, Any], name: str) -> None:
    if metadata.get("name") != name:
        raise errors.bad_request(
            f"the name of the object ({metadata.get('name')}) does not match the name on the URL "
            f"({name})"
        )


def _check_namespace(metadata: Mapping[str, Any], namespace: str) -> None:
    if metadata.get("namespace") not in (None, "", namespace):
        raise errors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )


def check_resource_version(
    resource: ResourceType, metadata: Mapping[str, Any], current: Obj
) -> None:
    """Optimistic concurrency: a write that names a resourceVersion must name the current one."""
    wanted = metadata.get("resourceVersion")
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise errors.conflict(resource, current["metadata"]["name"], errors.STALE)


def _default_propagation(resource: ResourceType) -> str:
    # Deleting through the API without a policy: dependents are collected in the background
    # (the legacy default of orphaning applied to extensions/v1beta1 only).
    del resource
    return "Background"


def _spec_changed(resource: ResourceType, old: Obj, new: Obj) -> bool:
    if resource.kind in _SPEC_KINDS_WITHOUT_STATUS:
        return False
    ignored = {"metadata", "status"}
    return {k: v for k, v in old.items() if k not in ignored} != {
        k: v for k, v in new.items() if k not in ignored
    }


def deletes_during_update(resource: ResourceType, existing: Obj, updated: Obj) -> bool:
    """Whether an update completes the object's deletion (upstream's
    ``ShouldDeleteDuringUpdate``): its deletion was requested, no finalizer is left, and no
    grace period runs (``deletionGracePeriodSeconds`` 0 or unset). A pod that its kubelet is
    stopping gracefully stays through a status write or a label change; the kubelet deletes
    it with ``gracePeriodSeconds: 0`` once stopped. A namespace also waits for its
    ``spec.finalizers`` (``ShouldDeleteNamespaceDuringUpdate``)."""
    old = existing.get("metadata", {})
    if updated.get("metadata", {}).get("finalizers") or not old.get("deletionTimestamp"):
        return False
    if resource.key == NAMESPACES and updated.get("spec", {}).get("finalizers"):
        return False
    return not old.get("deletionGracePeriodSeconds")


def _same_content(a: Obj, b: Obj) -> bool:
    strip = ("resourceVersion",)
    meta_a = {k: v for k, v in a.get("metadata", {}).items() if k not in strip}
    meta_b = {k: v for k, v in b.get("metadata", {}).items() if k not in strip}
    return meta_a == meta_b and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


def user_info_dict(user: UserInfo) -> dict[str, Any]:
    info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {k: list(v) for k, v in dict(user.extra).items()}
    return info


def _replace_object(request: AdmissionRequest, obj: Obj) -> AdmissionRequest:
    return dataclasses.replace(request, object=obj)


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


#: ObjectMeta's fields that clients write, with their Go types (for decoding errors).
_META_TYPES: dict[str, tuple[type, str]] = {
    "name": (str, "string"),
    "generateName": (str, "string"),
    "namespace": (str, "string"),
    "uid": (str, "types.UID"),
    "resourceVersion": (str, "string"),
    "labels": (dict, "map[string]string"),
    "annotations": (dict, "map[string]string"),
    "finalizers": (list, "[]string"),
    "ownerReferences": (list, "[]v1.OwnerReference"),
}
_JSON_TYPE_NAMES = {str: "string", bool: "bool", int: "number", float: "number", dict: "object"}


def _check_metadata_types(resource: ResourceType, metadata: object) -> None:
    """``400`` for metadata of the wrong JSON types, as Go's decoder words it."""

    def mistyped(value: object, field: str, go_type: str) -> errors.APIError:
        found = _JSON_TYPE_NAMES.get(type(value), "array")
        return errors.bad_request(
            f"json: cannot unmarshal {found} into Go struct field {field} of type {go_type}"
        )

    if not isinstance(metadata, dict):
        raise mistyped(metadata, f"{resource.kind}.metadata", "v1.ObjectMeta")
    for key, (python_type, go_type) in _META_TYPES.items():
        value = metadata.get(key)
        if value is None:
            continue
        field = f"ObjectMeta.metadata.{key}"
        if not isinstance(value, python_type):
            raise mistyped(value, field, go_type)
        if python_type is str:
            continue
        contents: Any = value
        items = list(contents.values() if key in ("labels", "annotations") else contents)
        if key != "ownerReferences":
            wrong = [item for item in items if not isinstance(item, str)]
            if wrong:
                raise mistyped(wrong[0], field, "string")
        elif wrong := [item for item in items if not isinstance(item, dict)]:
            raise mistyped(wrong[0], field, "v1.OwnerReference")
