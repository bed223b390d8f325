"""Discovery documents and OpenAPI v3, generated from the registry.

kubectl and client-go find resources through ``/api``, ``/apis`` and the per-version resource
lists (the legacy form: a client asking for the aggregated form gets this one, tells them apart
by Content-Type, and uses it). kubectl reads OpenAPI v3 for two things: whether a PATCH of a
kind takes ``fieldValidation`` (then it validates on the server instead of downloading OpenAPI
v2, which this server does not serve), and, when a PATCH advertises strategic merge, the
schemas to compute one. Advertising it only for kinds whose full schema we do not publish would
break that, so no kind advertises it: kubectl then computes strategic merge patches from its
compiled-in types, and uses JSON merge patches for custom resources, as it does on a real
cluster for them.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.apiserver.resources import Registry, ResourceType

SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "portforward": ["create", "get"],
    "attach": ["create", "get"],
    "binding": ["create"],
    "eviction": ["create"],
    "token": ["create"],
    "finalize": ["update"],
    "proxy": ["create", "delete", "get", "patch", "update"],
    "ephemeralcontainers": ["get", "patch", "update"],
}
SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "log": ("", "v1", "Pod"),
    "exec": ("", "v1", "PodExecOptions"),
    "portforward": ("", "v1", "PodPortForwardOptions"),
    "attach": ("", "v1", "PodAttachOptions"),
    "proxy": ("", "v1", "PodProxyOptions"),
}


def version_info() -> dict[str, str]:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-sandbox",
        "gitCommit": "sandbox",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [api_group(registry, g) for g in registry.group_versions() if g]
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {k: v for k, v in g.items() if k not in ("kind", "apiVersion")} for g in groups if g
        ],
    }


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = registry.in_group_version(group, version)
    if not resources:
        return None
    entries: list[dict[str, Any]] = []
    for resource in sorted(resources, key=lambda r: r.plural):
        entry: dict[str, Any] = {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        if resource.stored:
            entry["storageVersionHash"] = _hash(resource.qualified)[:12]
        entries.append(entry)
        for sub in sorted(resource.subresources):
            sub_entry: dict[str, Any] = {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
            }
            if sub in SUBRESOURCE_KINDS:
                sub_group, sub_version, sub_kind = SUBRESOURCE_KINDS[sub]
                sub_entry["kind"] = sub_kind
                if sub_group:
                    sub_entry["group"], sub_entry["version"] = sub_group, sub_version
            entries.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- OpenAPI v3 --------------------------------------------------------------------------------


def openapi_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_index(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            path = openapi_path(group, version)
            document = openapi_document(registry, group, version)
            digest = _hash(json.dumps(document, sort_keys=True)).upper()[:64]
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def _gvk(resource: ResourceType) -> list[dict[str, str]]:
    return [{"group": resource.group, "version": resource.version, "kind": resource.kind}]


_QUERY = ("dryRun", "fieldManager", "fieldValidation")


def _operation(resource: ResourceType, action: str, verb: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{verb}{resource.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(resource)[0],
        "responses": {"200": {"description": "OK"}},
    }
    if action in ("post", "put", "patch"):
        operation["parameters"] = [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in (*_QUERY, "force")
            if name != "force" or action == "patch"
        ]
        ref = {"$ref": f"#/components/schemas/{_schema_name(resource)}"}
        types = (
            ["application/json"]
            if action != "patch"
            else [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        )
        operation["requestBody"] = {"content": {t: {"schema": ref} for t in types}}
    return operation


def _schema_name(resource: ResourceType) -> str:
    group = ".".join(reversed(resource.group.split("."))) if resource.group else "core"
    return f"{group}.{resource.version}.{resource.kind}"


def openapi_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = [r for r in registry.in_group_version(group, version) if r.stored]
    if not resources and not registry.in_group_version(group, version):
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for resource in resources:
        base = resource.path("{namespace}" if resource.namespaced else None)
        paths[base] = {
            "get": _operation(resource, "list", "list"),
            "post": _operation(resource, "post", "create"),
            "delete": _operation(resource, "deletecollection", "deleteCollection"),
        }
        paths[base + "/{name}"] = {
            "get": _operation(resource, "get", "read"),
            "put": _operation(resource, "put", "replace"),
            "patch": _operation(resource, "patch", "patch"),
            "delete": _operation(resource, "delete", "delete"),
        }
        schema: dict[str, Any] = dict(resource.schema or {"type": "object"})
        schema["x-kubernetes-group-version-kind"] = _gvk(resource)
        schemas[_schema_name(resource)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
