"""The resource types the API server serves: built-in ones from a table, custom ones from CRDs.

Discovery (``/api/v1``, ``/apis/<group>/<version>``), routing, the OpenAPI documents and RBAC
all read this registry, so a CustomResourceDefinition that becomes Established shows up in
every one of them at once, as it does on a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: The verbs of an ordinary stored resource, in the order kube-apiserver lists them.
STORED_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: Review resources (TokenReview, SubjectAccessReview, ...) are create-only and never stored.
CREATE_ONLY = ("create",)
#: Subresources that a client reads or writes as an object of the parent's kind.
OBJECT_SUBRESOURCES = frozenset({"status"})


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource, e.g. ``apps/v1 deployments``."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = STORED_VERBS
    #: Served from a CustomResourceDefinition (generic storage, no strategic merge patch).
    custom: bool = False
    #: A CRD's additionalPrinterColumns for server-side tables.
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    #: A CRD's version schema (openAPIV3Schema), for the OpenAPI documents.
    schema: Mapping[str, Any] | None = field(default=None, compare=False)
    #: A CRD's scale subresource paths (specReplicasPath, statusReplicasPath, labelSelectorPath).
    scale_paths: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def key(self) -> tuple[str, str]:
        """What storage and watches are keyed by: the group and the plural."""
        return (self.group, self.plural)

    @property
    def stored(self) -> bool:
        return "get" in self.verbs

    @property
    def qualified(self) -> str:
        """``deployments.apps``, or ``pods`` for the core group, as errors name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps``, as ``Invalid`` errors name a kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{namespace}"
        prefix += f"/{self.plural}"
        return f"{prefix}/{name}" if name else prefix


def _r(
    group_version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    subresources: tuple[str, ...] = (),
    verbs: tuple[str, ...] = STORED_VERBS,
) -> ResourceType:
    group, _, version = group_version.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=frozenset(subresources),
        verbs=verbs,
    )


ALL = ("all",)
BUILTIN: tuple[ResourceType, ...] = (
    _r("v1", "Namespace", "namespaces", namespaced=False, short=("ns",),
       subresources=("status", "finalize")),
    _r("v1", "Pod", "pods", short=("po",), categories=ALL,
       subresources=("status", "log", "exec", "portforward", "attach", "binding", "eviction",
                     "ephemeralcontainers")),
    _r("v1", "Service", "services", short=("svc",), categories=ALL,
       subresources=("status", "proxy")),
    _r("v1", "Endpoints", "endpoints", short=("ep",)),
    _r("v1", "ConfigMap", "configmaps", short=("cm",)),
    _r("v1", "Secret", "secrets"),
    _r("v1", "ServiceAccount", "serviceaccounts", short=("sa",), subresources=("token",)),
    _r("v1", "Event", "events", short=("ev",)),
    _r("v1", "Node", "nodes", namespaced=False, short=("no",), subresources=("status", "proxy")),
    _r("v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",),
       subresources=("status",)),
    _r("v1", "PersistentVolume", "persistentvolumes", namespaced=False, short=("pv",),
       subresources=("status",)),
    _r("v1", "ReplicationController", "replicationcontrollers", short=("rc",), categories=ALL,
       subresources=("status", "scale")),
    _r("v1", "ResourceQuota", "resourcequotas", short=("quota",), subresources=("status",)),
    _r("v1", "LimitRange", "limitranges", short=("limits",)),
    _r("apps/v1", "Deployment", "deployments", short=("deploy",), categories=ALL,
       subresources=("status", "scale")),
    _r("apps/v1", "ReplicaSet", "replicasets", short=("rs",), categories=ALL,
       subresources=("status", "scale")),
    _r("apps/v1", "StatefulSet", "statefulsets", short=("sts",), categories=ALL,
       subresources=("status", "scale")),
    _r("apps/v1", "DaemonSet", "daemonsets", short=("ds",), categories=ALL,
       subresources=("status",)),
    _r("apps/v1", "ControllerRevision", "controllerrevisions"),
    _r("batch/v1", "Job", "jobs", categories=ALL, subresources=("status",)),
    _r("batch/v1", "CronJob", "cronjobs", short=("cj",), categories=ALL,
       subresources=("status",)),
    _r("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    _r("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings",
       namespaced=False),
    _r("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
       "mutatingwebhookconfigurations", namespaced=False),
    _r("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
       "validatingwebhookconfigurations", namespaced=False),
    _r("coordination.k8s.io/v1", "Lease", "leases"),
    _r("authentication.k8s.io/v1", "TokenReview", "tokenreviews", namespaced=False,
       verbs=CREATE_ONLY),
    _r("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False,
       verbs=CREATE_ONLY),
    _r("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews",
       namespaced=False, verbs=CREATE_ONLY),
    _r("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
       namespaced=False, verbs=CREATE_ONLY),
    _r("authorization.k8s.io/v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
       namespaced=False, verbs=CREATE_ONLY),
    _r("authorization.k8s.io/v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
       verbs=CREATE_ONLY),
    _r("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    _r("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions",
       namespaced=False, short=("crd", "crds"), categories=("api-extensions",),
       subresources=("status",)),
    _r("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",),
       subresources=("status",)),
    _r("networking.k8s.io/v1", "Ingress", "ingresses", short=("ing",),
       subresources=("status",)),
    _r("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    _r("networking.k8s.io/v1", "IngressClass", "ingressclasses", namespaced=False),
    _r("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", namespaced=False,
       short=("pc",)),
    _r("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
)  # fmt: skip

#: The preferred order of groups in discovery, as kube-apiserver lists them (core first).
GROUP_ORDER = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
)


class Registry:
    """The served resource types, built-in and from Established CRDs."""

    def __init__(self) -> None:
        self._builtin = {(r.group, r.version, r.plural): r for r in BUILTIN}
        self._custom: dict[tuple[str, str, str], ResourceType] = {}

    def __iter__(self) -> Iterator[ResourceType]:
        yield from self._builtin.values()
        yield from self._custom.values()

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        key = (group, version, plural)
        return self._builtin.get(key) or self._custom.get(key)

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for resource in self:
            if resource.group == group and resource.kind == kind:
                return resource
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """Every served group and its versions, preferred version first, in discovery order."""
        groups: dict[str, list[str]] = {}
        for resource in self:
            versions = groups.setdefault(resource.group, [])
            if resource.version not in versions:
                versions.append(resource.version)

        def rank(group: str) -> tuple[int, str]:
            return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (99, group)

        return {group: groups[group] for group in sorted(groups, key=rank)}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for r in self if r.group == group and r.version == version]

    def set_custom(self, crd_name: str, resources: list[ResourceType]) -> None:
        """Serve (or stop serving, with an empty list) the versions of one CRD."""
        for key in [k for k, r in self._custom.items() if f"{r.plural}.{r.group}" == crd_name]:
            del self._custom[key]
        for resource in resources:
            self._custom[(resource.group, resource.version, resource.plural)] = resource


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types an Established CRD serves, one per served version."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    resources = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        resources.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                subresources=frozenset(k for k in ("status", "scale") if k in subresources),
                custom=True,
                printer_columns=tuple(version.get("additionalPrinterColumns", ())),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                scale_paths=subresources.get("scale"),
            )
        )
    return resources
