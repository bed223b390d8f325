"""Role-based access control, as kube-apiserver's RBAC authorizer decides it.

What a request may do is decided from four kinds of stored objects (Roles, RoleBindings,
ClusterRoles, ClusterRoleBindings), read through an :data:`ObjectLister` on every call. Nothing is
cached between calls, so a binding created a moment ago counts at once, as it does in a real
cluster once the informer has seen it.

How a decision is made follows ``plugin/pkg/auth/authorizer/rbac`` and
``pkg/registry/rbac/validation/rule.go`` upstream:

1. A user in the group ``system:masters`` is allowed anything. Upstream that is a separate
   authorizer placed before RBAC (``authorizerfactory.NewPrivilegedGroups``), not a binding, so it
   holds even if the ``cluster-admin`` ClusterRoleBinding is deleted.
2. Otherwise every ClusterRoleBinding is visited, then, if the request has a namespace, every
   RoleBinding in that namespace. A binding counts if any of its subjects is the user, one of the
   user's groups, or (for a ServiceAccount subject) the user ``system:serviceaccount:<ns>:<name>``.
3. The binding's roleRef is resolved to rules: a Role in the binding's namespace, or a
   ClusterRole. A ClusterRole bound by a RoleBinding grants its rules in that namespace only,
   because RoleBindings are only consulted for requests in their own namespace.
4. The first rule that matches allows the request, and the reason names the binding, the role and
   the subject, in upstream's words. RBAC has no deny: a request no rule matches gets no opinion,
   which the API server turns into 403 Forbidden.

Bindings whose role does not exist grant nothing, but, as upstream, the lookup error is kept and,
if the request ends up denied, becomes the reason (``RBAC: clusterrole.rbac.authorization.k8s.io
"x" not found``), which the API server appends to the Forbidden message.

ClusterRoles with an ``aggregationRule`` get their rules as the clusterrole-aggregation controller
(``pkg/controller/clusterroleaggregation``) would write them: for each selector in turn, the
ClusterRoles whose labels match it, sorted by name, skipping the role itself, with repeated rules
dropped. Aggregation is transitive (``edit`` picks up ``view``'s aggregated rules because ``view``
carries the aggregate-to-edit label), so the rules of an aggregated role that is itself selected are
its own aggregated rules. We compute this when a request is evaluated rather than rewriting stored
objects: it gives the controller's settled result with no window in which it is stale.

:func:`bootstrap_policy` returns the default ClusterRoles and ClusterRoleBindings kube-apiserver's
RBAC post-start hook creates, transcribed from upstream's
``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata`` (a recent release), restricted to the
roles that matter to users and discovery; the control-plane component roles are left out.

:meth:`Authorizer.forbidden_message` renders the ``message`` of the 403 Status exactly as
``responsewriters.Forbidden`` and ``apierrors.NewForbidden`` do, including Go's ``%q`` quoting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from sandbox.apiserver.goformat import go_quote
from sandbox.apiserver.selectors import (
    InvalidSelector,
    Requirement,
    labels_match,
    requirements_from_selector,
)

__all__ = [
    "Attributes",
    "Authorizer",
    "Decision",
    "ObjectLister",
    "SYSTEM_MASTERS",
    "UserInfo",
    "aggregate_cluster_role_rules",
    "bootstrap_policy",
    "go_quote",
    "rule_allows",
]

type ObjectLister = Callable[[str, str | None], Iterable[Mapping[str, Any]]]
"""``lister(resource, namespace)``: the stored objects of one RBAC resource.

``resource`` is one of ``"roles"``, ``"rolebindings"``, ``"clusterroles"`` or
``"clusterrolebindings"``; ``namespace`` is the namespace to list, or ``None`` for all namespaces
(and for the cluster-scoped kinds). Objects are JSON dicts as Kubernetes serialises them.
"""

SYSTEM_MASTERS: Final = "system:masters"
"""The privileged group (``user.SystemPrivilegedGroup``) that bypasses authorization."""

_SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
_RBAC_GROUP: Final = "rbac.authorization.k8s.io"

_EMPTY_EXTRA: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The authenticated user of a request (``k8s.io/apiserver`` ``user.Info``).

    Attributes:
        name: The user name, e.g. ``alice`` or ``system:serviceaccount:default:builder``.
        uid: A unique id for the user, if the authenticator gave one.
        groups: The groups the user belongs to, e.g. ``("system:authenticated",)``.
        extra: Further authenticator-provided values (``user.Info.GetExtra``). RBAC ignores them;
            they are kept so the same value can be handed to SubjectAccessReviews and webhooks.
            Stored read-only; any mapping of sequences may be passed in.
    """

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default=_EMPTY_EXTRA, hash=False)

    def __post_init__(self) -> None:
        # Accept lists for convenience but store immutable values, so a UserInfo stays frozen.
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(
            self, "extra", MappingProxyType({k: tuple(v) for k, v in self.extra.items()})
        )


@dataclass(frozen=True, slots=True)
class Attributes:
    """What the authorizer is asked about (``k8s.io/apiserver`` ``authorizer.Attributes``).

    Attributes:
        user: Who is asking.
        verb: For resource requests the API verb (get, list, watch, create, update, patch,
            delete, deletecollection, or a special one such as impersonate, bind, escalate, use);
            for non-resource requests the lower-cased HTTP method (get, post, put, ...).
        resource_request: True for requests on API resources, False for non-resource URLs.
        namespace: The request's namespace; empty for cluster-scoped resources, for requests
            across all namespaces, and for non-resource requests.
        api_group: The API group; empty for the core ("legacy") group.
        api_version: The API version, e.g. ``v1``.
        resource: The resource, e.g. ``pods``.
        subresource: The subresource, e.g. ``exec`` or ``status``; empty if none.
        name: The object's name, if the request names one.
        path: The URL path of a non-resource request, e.g. ``/version``.
    """

    user: UserInfo
    verb: str
    resource_request: bool
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The authorizer's answer.

    Attributes:
        allowed: True if the request is allowed. False means "no opinion", which the API server
            treats as forbidden (RBAC never denies outright).
        reason: Upstream's reason text: for an allow, e.g.
            ``RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "alice"``; for a
            denial, empty unless a binding referred to a role that could not be resolved.
    """

    allowed: bool
    reason: str


# --- rule matching (pkg/apis/rbac/v1/evaluation_helpers.go) --------------------------------------


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    """One of a PolicyRule's string lists; JSON null and absence both mean empty."""
    value = rule.get(key)
    return list(value) if value else []


def _verb_matches(rule: Mapping[str, Any], verb: str) -> bool:
    return any(v in {"*", verb} for v in _strings(rule, "verbs"))


def _api_group_matches(rule: Mapping[str, Any], group: str) -> bool:
    return any(g in {"*", group} for g in _strings(rule, "apiGroups"))


def _resource_matches(rule: Mapping[str, Any], combined: str, subresource: str) -> bool:
    for rule_resource in _strings(rule, "resources"):
        if rule_resource in {"*", combined}:
            return True
        # "*/scale" matches the scale subresource of any resource. Upstream has no other
        # wildcard form: "pods/*" is not a wildcard and only matches itself.
        if (
            subresource
            and len(rule_resource) == len(subresource) + 2
            and rule_resource.startswith("*/")
            and rule_resource.endswith(subresource)
        ):
            return True
    return False


def _resource_name_matches(rule: Mapping[str, Any], name: str) -> bool:
    # A rule without resourceNames matches any name; a rule with them matches only those names,
    # so it never matches a request without a name (list, watch, create, deletecollection).
    names = _strings(rule, "resourceNames")
    return not names or name in names


def _non_resource_url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for rule_url in _strings(rule, "nonResourceURLs"):
        if rule_url in {"*", path}:
            return True
        # A trailing "*" is a prefix match: "/apis/*" matches "/apis/apps/v1".
        if rule_url.endswith("*") and path.startswith(rule_url.rstrip("*")):
            return True
    return False


def rule_allows(attributes: Attributes, rule: Mapping[str, Any]) -> bool:
    """Whether one PolicyRule allows a request (upstream ``rbac.RuleAllows``).

    Args:
        attributes: The request.
        rule: A PolicyRule as JSON (``verbs``, ``apiGroups``, ``resources``, ``resourceNames``,
            ``nonResourceURLs``).

    Returns:
        True if the rule covers the request.
    """
    if attributes.resource_request:
        combined = attributes.resource
        if attributes.subresource:
            combined = f"{attributes.resource}/{attributes.subresource}"
        return (
            _verb_matches(rule, attributes.verb)
            and _api_group_matches(rule, attributes.api_group)
            and _resource_matches(rule, combined, attributes.subresource)
            and _resource_name_matches(rule, attributes.name)
        )
    return _verb_matches(rule, attributes.verb) and _non_resource_url_matches(rule, attributes.path)


# --- aggregation (pkg/controller/clusterroleaggregation) -----------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _rule_key(rule: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    """A PolicyRule's identity for de-duplication (``equality.Semantic.DeepEqual``: null == [])."""
    return tuple(
        tuple(_strings(rule, key))
        for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs")
    )


class _Aggregator:
    """Aggregated rules of ClusterRoles, from one snapshot of all ClusterRoles."""

    def __init__(self, cluster_roles: Iterable[Mapping[str, Any]]) -> None:
        self._roles = list(cluster_roles)
        self._done: dict[str, list[Mapping[str, Any]]] = {}

    def rules(self, role: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The effective rules of a ClusterRole: its own, or aggregated if it aggregates."""
        if role.get("aggregationRule") is None:
            return list(role.get("rules") or [])
        name = _name(role)
        if name not in self._done:
            # The root of a walk collects everything reachable from it even through cycles, so
            # its result is final whether or not the walk was cut short somewhere below.
            self._done[name] = self._aggregate(role, (name,))[0]
        return self._done[name]

    def _aggregate(
        self, role: Mapping[str, Any], path: tuple[str, ...]
    ) -> tuple[list[Mapping[str, Any]], bool]:
        """Rules for an aggregating role, and whether no cycle cut the walk short."""
        name = _name(role)
        if name in self._done:
            return self._done[name], True
        selectors: list[list[Requirement]] = []
        for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
            try:
                selectors.append(requirements_from_selector(selector))
            except InvalidSelector:
                # The controller's sync fails on an invalid selector and leaves the rules alone.
                return list(role.get("rules") or []), True
        collected: list[Mapping[str, Any]] = []
        seen: set[tuple[tuple[str, ...], ...]] = set()
        complete = True
        for requirements in selectors:
            for other in sorted(
                (r for r in self._roles if labels_match(requirements, _labels(r))), key=_name
            ):
                other_name = _name(other)
                if other_name == name:
                    continue  # a role never aggregates itself
                if other.get("aggregationRule") is None:
                    rules: list[Mapping[str, Any]] = list(other.get("rules") or [])
                elif other_name in path:
                    # A cycle: the role further up this walk is already collecting what this one
                    # would add, so contribute nothing here and do not cache the partial result.
                    rules, complete = [], False
                else:
                    rules, other_complete = self._aggregate(other, (*path, other_name))
                    complete = complete and other_complete
                for rule in rules:
                    key = _rule_key(rule)
                    if key not in seen:
                        seen.add(key)
                        collected.append(rule)
        if complete:
            self._done[name] = collected
        return collected, complete


def aggregate_cluster_role_rules(
    cluster_role: Mapping[str, Any], cluster_roles: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The rules a ClusterRole has once the clusterrole-aggregation controller has settled.

    The API server can use this to show aggregated roles (``admin``, ``edit``, ``view``) with the
    rules a real cluster's controller would have written into them.

    Args:
        cluster_role: The ClusterRole. Without an ``aggregationRule`` its own rules are returned.
        cluster_roles: Every ClusterRole in the cluster (it may include ``cluster_role``).

    Returns:
        Copies of the effective rules, in the controller's order.
    """
    return [dict(rule) for rule in _Aggregator(cluster_roles).rules(cluster_role)]


# --- rule resolution (pkg/registry/rbac/validation/rule.go) --------------------------------------


def _applies_to(user: UserInfo, subject: Mapping[str, Any], namespace: str) -> bool:
    """Whether a binding subject is the user (upstream ``appliesToUser``)."""
    kind = subject.get("kind")
    name = str(subject.get("name") or "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        # A ServiceAccount subject without a namespace means the binding's own namespace; in a
        # ClusterRoleBinding (namespace "") it matches nobody.
        sa_namespace = str(subject.get("namespace") or "") or namespace
        if not sa_namespace:
            return False
        return user.name == f"{_SERVICE_ACCOUNT_PREFIX}{sa_namespace}:{name}"
    return False  # the subject's apiGroup is not consulted upstream, only its kind


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    kind = str(subject.get("kind") or "")
    name = str(subject.get("name") or "")
    if kind == "ServiceAccount":
        namespace = str(subject.get("namespace") or "") or binding_namespace
        return f"{kind} {go_quote(f'{name}/{namespace}')}"
    return f"{kind} {go_quote(name)}"


def _aggregate_errors(errors: list[str]) -> str:
    """Join errors as ``utilerrors.NewAggregate(...).Error()`` does (one bare, else [a, b])."""
    if len(errors) == 1:
        return errors[0]
    unique = list(dict.fromkeys(errors))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


@dataclass(frozen=True, slots=True)
class _Visit:
    """One step of rule resolution: a rule with its source, or a resolution error."""

    source: str = ""
    rule: Mapping[str, Any] | None = None
    error: str = ""


class _Resolution:
    """One evaluation's view of the RBAC objects, read lazily through the lister."""

    def __init__(self, lister: ObjectLister) -> None:
        self._lister = lister
        self._cluster_roles: dict[str, Mapping[str, Any]] | None = None
        self._aggregator: _Aggregator | None = None

    def _cluster_role_index(self) -> tuple[dict[str, Mapping[str, Any]], _Aggregator]:
        if self._cluster_roles is None or self._aggregator is None:
            roles = list(self._lister("clusterroles", None))
            self._cluster_roles = {_name(role): role for role in roles}
            self._aggregator = _Aggregator(roles)
        return self._cluster_roles, self._aggregator

    def _role_ref_rules(
        self, role_ref: Mapping[str, Any], namespace: str
    ) -> tuple[list[Mapping[str, Any]], str]:
        """Rules of a binding's roleRef, or an error message (upstream GetRoleReferenceRules)."""
        kind = role_ref.get("kind")
        name = str(role_ref.get("name") or "")
        if kind == "Role":
            # The messages are the informer listers' NotFound errors, whose resource is the
            # singular "role"/"clusterrole".
            if namespace:
                for role in self._lister("roles", namespace):
                    meta = role.get("metadata") or {}
                    if meta.get("name") == name and meta.get("namespace", namespace) == namespace:
                        return list(role.get("rules") or []), ""
            return [], f"role.{_RBAC_GROUP} {go_quote(name)} not found"
        if kind == "ClusterRole":
            roles, aggregator = self._cluster_role_index()
            cluster_role = roles.get(name)
            if cluster_role is None:
                return [], f"clusterrole.{_RBAC_GROUP} {go_quote(name)} not found"
            return aggregator.rules(cluster_role), ""
        return [], f"unsupported role reference kind: {go_quote(str(kind or ''))}"

    def visit(self, user: UserInfo, namespace: str) -> Iterator[_Visit]:
        """Every rule that applies to the user in the namespace (upstream VisitRulesFor)."""
        for binding in self._lister("clusterrolebindings", None):
            subject = next(
                (s for s in binding.get("subjects") or [] if _applies_to(user, s, "")), None
            )
            if subject is None:
                continue
            role_ref = binding.get("roleRef") or {}
            rules, error = self._role_ref_rules(role_ref, "")
            if error:
                yield _Visit(error=error)
                continue
            source = (
                f"ClusterRoleBinding {go_quote(_name(binding))} of {role_ref.get('kind', '')} "
                f"{go_quote(str(role_ref.get('name') or ''))} to {_describe_subject(subject, '')}"
            )
            for rule in rules:
                yield _Visit(source=source, rule=rule)

        if not namespace:
            return  # RoleBindings only ever apply inside their namespace
        for binding in self._lister("rolebindings", namespace):
            binding_namespace = (binding.get("metadata") or {}).get("namespace", namespace)
            if binding_namespace != namespace:
                continue
            subject = next(
                (s for s in binding.get("subjects") or [] if _applies_to(user, s, namespace)),
                None,
            )
            if subject is None:
                continue
            role_ref = binding.get("roleRef") or {}
            rules, error = self._role_ref_rules(role_ref, namespace)
            if error:
                yield _Visit(error=error)
                continue
            source = (
                f"RoleBinding {go_quote(f'{_name(binding)}/{namespace}')} of "
                f"{role_ref.get('kind', '')} {go_quote(str(role_ref.get('name') or ''))} "
                f"to {_describe_subject(subject, namespace)}"
            )
            for rule in rules:
                yield _Visit(source=source, rule=rule)


def _forbidden_detail(attributes: Attributes) -> str:
    """Upstream ``responsewriters.forbiddenMessage``."""
    user = go_quote(attributes.user.name)
    if not attributes.resource_request:
        return f"User {user} cannot {attributes.verb} path {go_quote(attributes.path)}"
    resource = attributes.resource
    if attributes.subresource:
        resource = f"{resource}/{attributes.subresource}"
    scope = (
        f"in the namespace {go_quote(attributes.namespace)}"
        if attributes.namespace
        else "at the cluster scope"
    )
    return (
        f"User {user} cannot {attributes.verb} resource {go_quote(resource)} "
        f"in API group {go_quote(attributes.api_group)} {scope}"
    )


# responsewriters' sanitizer: keep error text from looking like HTML. Quotes are left alone.
_SANITIZE: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _forbidden_status_message(attributes: Attributes, reason: str) -> str:
    """The message of ``apierrors.NewForbidden`` as ``responsewriters.Forbidden`` calls it.

    The text is kept literally. (Releases that hand it to ``fmt.Errorf`` as a format string would
    turn a ``%`` in a user or path name into ``%!x(MISSING)``; that quirk is not reproduced.)
    """
    detail = _forbidden_detail(attributes).translate(_SANITIZE)
    if reason:
        detail = f"{detail}: {reason}"
    group, resource = attributes.api_group, attributes.resource
    if not group and not resource:
        return f"forbidden: {detail}"
    qualified = f"{resource}.{group}" if group else resource  # schema.GroupResource.String()
    if not attributes.name:
        return f"{qualified} is forbidden: {detail}"
    return f"{qualified} {go_quote(attributes.name)} is forbidden: {detail}"


class Authorizer:
    """kube-apiserver's authorization as a pure function of the stored RBAC objects.

    Every call reads the objects afresh through the lister, so the answer always reflects the
    current store.
    """

    def __init__(self, lister: ObjectLister) -> None:
        """Create an authorizer.

        Args:
            lister: Reads the stored Roles, RoleBindings, ClusterRoles and ClusterRoleBindings.
        """
        self._lister = lister

    def authorize(self, attributes: Attributes) -> Decision:
        """Decide a request.

        Args:
            attributes: The request.

        Returns:
            Allowed with upstream's reason, or not allowed ("no opinion") with an empty reason or
            the errors met resolving the user's bindings. A ``system:masters`` user is allowed
            with the reason ``system:masters``; upstream's privileged-group authorizer gives an
            empty reason, which only shows in a SubjectAccessReview's ``status.reason``.
        """
        if SYSTEM_MASTERS in attributes.user.groups:
            return Decision(allowed=True, reason=SYSTEM_MASTERS)
        errors: list[str] = []
        for step in _Resolution(self._lister).visit(attributes.user, attributes.namespace):
            if step.rule is not None and rule_allows(attributes, step.rule):
                return Decision(allowed=True, reason=f"RBAC: allowed by {step.source}")
            if step.error:
                errors.append(step.error)
        reason = f"RBAC: {_aggregate_errors(errors)}" if errors else ""
        return Decision(allowed=False, reason=reason)

    def rules_for(
        self, user: UserInfo, namespace: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rules a user has in a namespace, as a SelfSubjectRulesReview reports them.

        As upstream ``RBACAuthorizer.RulesFor``: rules from ClusterRoleBindings, then from
        RoleBindings in the namespace (none if it is empty), in binding order, not de-duplicated.
        A rule with resources becomes a resource rule, one with nonResourceURLs a non-resource
        rule. ``system:masters`` is not special here (upstream's privileged-group authorizer has
        no rules); such users see what the ``cluster-admin`` binding gives them.

        Args:
            user: The user.
            namespace: The namespace; empty for cluster-wide rules only.

        Returns:
            ``(resourceRules, nonResourceRules)`` in SelfSubjectRulesReview ``status`` form: dicts
            with ``verbs`` and, when non-empty, ``apiGroups``, ``resources``, ``resourceNames``
            (or ``nonResourceURLs``), matching the JSON field omission of ``authorization/v1``.
        """
        resource_rules: list[dict[str, Any]] = []
        non_resource_rules: list[dict[str, Any]] = []
        for step in _Resolution(self._lister).visit(user, namespace):
            if step.rule is None:
                continue
            rule = step.rule
            if _strings(rule, "resources"):
                entry: dict[str, Any] = {"verbs": _strings(rule, "verbs")}
                for key in ("apiGroups", "resources", "resourceNames"):
                    if values := _strings(rule, key):
                        entry[key] = values
                resource_rules.append(entry)
            if urls := _strings(rule, "nonResourceURLs"):
                non_resource_rules.append(
                    {"verbs": _strings(rule, "verbs"), "nonResourceURLs": urls}
                )
        return resource_rules, non_resource_rules

    def forbidden_message(self, attributes: Attributes) -> str:
        """The ``message`` of the 403 Status the API server returns for a denied request.

        Byte-for-byte as upstream, for example
        ``pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the
        namespace "default"``, with ``: <reason>`` appended when resolving the user's bindings
        failed (``: RBAC: role.rbac.authorization.k8s.io "x" not found``).

        Args:
            attributes: The denied request.

        Returns:
            The message text.
        """
        decision = self.authorize(attributes)
        return _forbidden_status_message(attributes, "" if decision.allowed else decision.reason)


# --- bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy) --------------------------

# Verb sets of bootstrappolicy.Read, Write and ReadWrite; strings here are space-separated lists.
_READ: Final = "get list watch"
_WRITE: Final = "create update patch delete deletecollection"
_READ_WRITE: Final = f"{_READ} {_WRITE}"
_CORE: Final = ("",)


def _rule(
    verbs: str, groups: tuple[str, ...] = (), resources: str = "", urls: str = ""
) -> dict[str, Any]:
    """A PolicyRule as upstream's rule builder makes it: every list sorted, empty ones omitted.

    Keys are in the Go struct's order, which is the order of its JSON serialisation.

    Args:
        verbs: Space-separated verbs.
        groups: API groups ("" is the core group).
        resources: Space-separated resources.
        urls: Space-separated non-resource URLs.
    """
    rule: dict[str, Any] = {"verbs": sorted(verbs.split())}
    if groups:
        rule["apiGroups"] = sorted(groups)
    if resources:
        rule["resources"] = sorted(resources.split())
    if urls:
        rule["nonResourceURLs"] = sorted(urls.split())
    return rule


def _metadata(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    # addDefaultMetadata: every bootstrap object carries this label and annotation, the latter
    # telling the reconciler at each start to restore anything a user removed.
    return {
        "name": name,
        "labels": {**(labels or {}), "kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }


def _cluster_role(
    name: str,
    rules: list[dict[str, Any]],
    *,
    aggregate_into: str = "",
    aggregate_from: str = "",
) -> dict[str, Any]:
    labels = {f"{_RBAC_GROUP}/aggregate-to-{aggregate_into}": "true"} if aggregate_into else None
    role: dict[str, Any] = {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": _metadata(name, labels),
        "rules": rules,
    }
    if aggregate_from:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [
                {"matchLabels": {f"{_RBAC_GROUP}/aggregate-to-{aggregate_from}": "true"}}
            ]
        }
    return role


def _cluster_role_binding(name: str, *groups: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name),
        "roleRef": {"apiGroup": _RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": _RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


def _aggregate_to_edit_rules() -> list[dict[str, Any]]:
    return [
        # Read access to escalating resources: secrets and the ways into pods.
        _rule(
            _READ,
            _CORE,
            "pods/attach pods/proxy pods/exec pods/portforward secrets services/proxy",
        ),
        _rule("impersonate", _CORE, "serviceaccounts"),
        _rule(_WRITE, _CORE, "pods pods/attach pods/proxy pods/exec pods/portforward"),
        _rule("create", _CORE, "pods/eviction"),
        _rule(
            _WRITE,
            _CORE,
            "replicationcontrollers replicationcontrollers/scale serviceaccounts services"
            " services/proxy persistentvolumeclaims configmaps secrets",
        ),
        _rule("create", _CORE, "serviceaccounts/token"),
        _rule(_WRITE, ("", "events.k8s.io"), "events"),
        _rule(
            _WRITE,
            ("apps",),
            "statefulsets statefulsets/scale daemonsets deployments deployments/scale"
            " deployments/rollback replicasets replicasets/scale",
        ),
        _rule(_WRITE, ("autoscaling",), "horizontalpodautoscalers"),
        _rule(_WRITE, ("batch",), "jobs cronjobs"),
        _rule(
            _WRITE,
            ("extensions",),
            "daemonsets deployments deployments/scale deployments/rollback ingresses"
            " replicasets replicasets/scale replicationcontrollers/scale networkpolicies",
        ),
        _rule(_WRITE, ("policy",), "poddisruptionbudgets"),
        _rule(_WRITE, ("networking.k8s.io",), "networkpolicies ingresses"),
        _rule(_READ_WRITE, ("coordination.k8s.io",), "leases"),
        _rule(_WRITE, ("resource.k8s.io",), "resourceclaims resourceclaimtemplates"),
    ]


def _aggregate_to_view_rules() -> list[dict[str, Any]]:
    return [
        _rule(
            _READ,
            _CORE,
            "pods replicationcontrollers replicationcontrollers/scale serviceaccounts services"
            " services/status endpoints persistentvolumeclaims persistentvolumeclaims/status"
            " configmaps",
        ),
        _rule(
            _READ,
            _CORE,
            "limitranges resourcequotas bindings pods/status resourcequotas/status"
            " namespaces/status replicationcontrollers/status pods/log",
        ),
        # Reading namespaces at namespace scope lets a user read *this* namespace, which tells
        # them which namespaces they have access to.
        _rule(_READ, _CORE, "namespaces"),
        _rule(_READ, ("", "events.k8s.io"), "events"),
        _rule(_READ, ("discovery.k8s.io",), "endpointslices"),
        _rule(
            _READ,
            ("apps",),
            "controllerrevisions statefulsets statefulsets/status statefulsets/scale daemonsets"
            " daemonsets/status deployments deployments/status deployments/scale replicasets"
            " replicasets/status replicasets/scale",
        ),
        _rule(_READ, ("autoscaling",), "horizontalpodautoscalers horizontalpodautoscalers/status"),
        _rule(_READ, ("batch",), "jobs cronjobs cronjobs/status jobs/status"),
        _rule(
            _READ,
            ("extensions",),
            "daemonsets daemonsets/status deployments deployments/scale deployments/status"
            " ingresses ingresses/status replicasets replicasets/scale replicasets/status"
            " replicationcontrollers/scale networkpolicies",
        ),
        _rule(_READ, ("policy",), "poddisruptionbudgets poddisruptionbudgets/status"),
        _rule(_READ, ("networking.k8s.io",), "ingresses ingresses/status networkpolicies"),
        _rule(
            _READ,
            ("resource.k8s.io",),
            "resourceclaims resourceclaims/status resourceclaimtemplates",
        ),
    ]


def bootstrap_policy() -> list[dict[str, Any]]:
    """The default RBAC objects kube-apiserver creates at startup.

    ClusterRoles first, then ClusterRoleBindings, as upstream's bootstrap policy defines them:
    ``cluster-admin`` (bound to ``system:masters``); the aggregated user-facing roles ``admin``,
    ``edit`` and ``view`` with the ``system:aggregate-to-*`` roles that carry their rules;
    ``system:discovery`` and ``system:basic-user`` (bound to ``system:authenticated``);
    ``system:public-info-viewer`` (bound to ``system:authenticated`` and
    ``system:unauthenticated``); ``system:monitoring`` (bound to the group of that name);
    ``system:service-account-issuer-discovery`` (bound to ``system:serviceaccounts``); and
    ``system:auth-delegator`` (unbound, for add-on API servers to be bound to).

    The aggregated roles are stored with empty rules, as created; their effective rules come from
    aggregation (see :func:`aggregate_cluster_role_rules`).

    Returns:
        Fresh JSON dicts, safe for the caller to modify and store.
    """
    roles = [
        # A "root" role which can do absolutely anything.
        _cluster_role("cluster-admin", [_rule("*", ("*",), "*"), _rule("*", urls="*")]),
        # Just enough to tell whether the server is ready and to discover API versions.
        _cluster_role(
            "system:discovery",
            [
                _rule(
                    "get",
                    urls="/livez /readyz /healthz /version /version/ /openapi /openapi/*"
                    " /api /api/* /apis /apis/*",
                )
            ],
        ),
        _cluster_role(
            "system:monitoring",
            [
                _rule(
                    "get",
                    urls="/metrics /metrics/slis /livez /readyz /healthz /livez/* /readyz/*"
                    " /healthz/* /statusz",
                ),
                _rule("get", _CORE, "nodes/metrics"),
            ],
        ),
        # Lets any user learn about themselves.
        _cluster_role(
            "system:basic-user",
            [
                _rule(
                    "create",
                    ("authorization.k8s.io",),
                    "selfsubjectaccessreviews selfsubjectrulesreviews",
                ),
                _rule("create", ("authentication.k8s.io",), "selfsubjectreviews"),
            ],
        ),
        # Insensitive cluster information, readable even without credentials.
        _cluster_role(
            "system:public-info-viewer",
            [_rule("get", urls="/livez /readyz /healthz /version /version/")],
        ),
        # The user-facing roles, filled by aggregation. edit is labelled to aggregate into admin
        # and view into edit, so admin includes edit, which includes view.
        _cluster_role("admin", [], aggregate_from="admin"),
        _cluster_role("edit", [], aggregate_into="admin", aggregate_from="edit"),
        _cluster_role("view", [], aggregate_into="edit", aggregate_from="view"),
        _cluster_role(
            "system:aggregate-to-admin",
            [
                _rule("create", ("authorization.k8s.io",), "localsubjectaccessreviews"),
                _rule(_READ_WRITE, (_RBAC_GROUP,), "roles rolebindings"),
            ],
            aggregate_into="admin",
        ),
        _cluster_role(
            "system:aggregate-to-edit", _aggregate_to_edit_rules(), aggregate_into="edit"
        ),
        _cluster_role(
            "system:aggregate-to-view", _aggregate_to_view_rules(), aggregate_into="view"
        ),
        # For add-on API servers that delegate authentication and authorization.
        _cluster_role(
            "system:auth-delegator",
            [
                _rule("create", ("authentication.k8s.io",), "tokenreviews"),
                _rule("create", ("authorization.k8s.io",), "subjectaccessreviews"),
            ],
        ),
        _cluster_role(
            "system:service-account-issuer-discovery",
            [
                _rule(
                    "get",
                    urls="/.well-known/openid-configuration /.well-known/openid-configuration/"
                    " /openid/v1/jwks /openid/v1/jwks/",
                )
            ],
        ),
    ]
    bindings = [
        _cluster_role_binding("cluster-admin", SYSTEM_MASTERS),
        _cluster_role_binding("system:monitoring", "system:monitoring"),
        _cluster_role_binding("system:discovery", "system:authenticated"),
        _cluster_role_binding("system:basic-user", "system:authenticated"),
        _cluster_role_binding(
            "system:public-info-viewer", "system:authenticated", "system:unauthenticated"
        ),
        # Every in-cluster workload may fetch the service-account issuer's OIDC discovery.
        _cluster_role_binding("system:service-account-issuer-discovery", "system:serviceaccounts"),
    ]
    return roles + bindings
