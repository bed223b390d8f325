"""Tests for the RBAC authorizer of the API server emulator (sandbox/apiserver/rbac.py).

Expected texts (reasons, Forbidden messages) are upstream's, as kube-apiserver produces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from sandbox.apiserver.rbac import (
    Attributes,
    Authorizer,
    Decision,
    UserInfo,
    aggregate_cluster_role_rules,
    bootstrap_policy,
    go_quote,
    rule_allows,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

RBAC = "rbac.authorization.k8s.io"
ALICE = UserInfo("alice", groups=("system:authenticated",))


class Store:
    """A minimal object store with the lister the authorizer reads through."""

    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects: list[Mapping[str, Any]] = list(objects)

    def add(self, *objects: Mapping[str, Any]) -> None:
        self.objects.extend(objects)

    def lister(self, resource: str, namespace: str | None) -> Iterable[Mapping[str, Any]]:
        kind = {
            "roles": "Role",
            "rolebindings": "RoleBinding",
            "clusterroles": "ClusterRole",
            "clusterrolebindings": "ClusterRoleBinding",
        }[resource]
        return [
            o
            for o in self.objects
            if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]


def rule(
    verbs: list[str],
    groups: list[str] | None = None,
    resources: list[str] | None = None,
    names: list[str] | None = None,
    urls: list[str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": verbs}
    if groups is not None:
        out["apiGroups"] = groups
    if resources is not None:
        out["resources"] = resources
    if names is not None:
        out["resourceNames"] = names
    if urls is not None:
        out["nonResourceURLs"] = urls
    return out


def role(name: str, namespace: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": list(rules),
    }


def cluster_role(
    name: str,
    *rules: dict[str, Any],
    labels: dict[str, str] | None = None,
    selectors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": list(rules),
    }
    if selectors is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return obj


def user(name: str) -> dict[str, Any]:
    return {"apiGroup": RBAC, "kind": "User", "name": name}


def group(name: str) -> dict[str, Any]:
    return {"apiGroup": RBAC, "kind": "Group", "name": name}


def service_account(name: str, namespace: str | None = None) -> dict[str, Any]:
    subject: dict[str, Any] = {"kind": "ServiceAccount", "name": name}
    if namespace is not None:
        subject["namespace"] = namespace
    return subject


def role_binding(
    name: str, namespace: str, ref_kind: str, ref_name: str, *subjects: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": ref_kind, "name": ref_name},
        "subjects": list(subjects),
    }


def cluster_role_binding(name: str, ref_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": ref_name},
        "subjects": list(subjects),
    }


def req(
    verb: str,
    resource: str,
    *,
    namespace: str = "",
    group: str = "",
    name: str = "",
    subresource: str = "",
    who: UserInfo = ALICE,
) -> Attributes:
    return Attributes(
        user=who,
        verb=verb,
        resource_request=True,
        namespace=namespace,
        api_group=group,
        api_version="v1",
        resource=resource,
        subresource=subresource,
        name=name,
    )


def path_req(verb: str, path: str, *, who: UserInfo = ALICE) -> Attributes:
    return Attributes(user=who, verb=verb, resource_request=False, path=path)


def grant(*rules: dict[str, Any]) -> Authorizer:
    """An authorizer in which alice holds exactly these rules cluster-wide."""
    store = Store(cluster_role("r", *rules), cluster_role_binding("b", "r", user("alice")))
    return Authorizer(store.lister)


# --- value types ---------------------------------------------------------------------------------


def test_user_info_is_frozen_and_hashable() -> None:
    # Lists are accepted at run time and stored as tuples.
    groups: Any = ["g1", "g2"]
    extra: Any = {"scopes": ["a", "b"]}
    info = UserInfo("bob", groups=groups, extra=extra)
    assert info.groups == ("g1", "g2")
    assert info.extra["scopes"] == ("a", "b")
    assert hash(info) == hash(UserInfo("bob", groups=("g1", "g2")))
    with pytest.raises(TypeError):
        info.extra["scopes"] = ()  # type: ignore[index]
    assert UserInfo("bob").extra == {}


# --- rule shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "request_", "allowed"),
    [
        # verbs
        (rule(["get"], [""], ["pods"]), req("get", "pods", namespace="ns"), True),
        (rule(["get"], [""], ["pods"]), req("list", "pods", namespace="ns"), False),
        (rule(["*"], [""], ["pods"]), req("deletecollection", "pods", namespace="ns"), True),
        (rule(["get", "list"], [""], ["pods"]), req("list", "pods"), True),
        # apiGroups
        (rule(["get"], ["apps"], ["deployments"]), req("get", "deployments", group="apps"), True),
        (rule(["get"], [""], ["deployments"]), req("get", "deployments", group="apps"), False),
        (rule(["get"], ["*"], ["deployments"]), req("get", "deployments", group="apps"), True),
        (rule(["get"], ["apps"], ["pods"]), req("get", "pods"), False),
        # resources
        (rule(["get"], [""], ["*"]), req("get", "secrets", namespace="ns"), True),
        (rule(["get"], [""], ["*"]), req("get", "pods", subresource="log", name="p"), True),
        (rule(["get"], [""], ["pods"]), req("get", "pods", subresource="log", name="p"), False),
        (rule(["get"], [""], ["pods/log"]), req("get", "pods", subresource="log", name="p"), True),
        (rule(["get"], [""], ["pods/log"]), req("get", "pods", name="p"), False),
        (rule(["get"], [""], ["pods/log"]), req("get", "pods", subresource="exec"), False),
        (rule(["get"], ["*"], ["*/scale"]), req("get", "deployments", subresource="scale"), True),
        (rule(["get"], ["*"], ["*/scale"]), req("get", "deployments"), False),
        (rule(["get"], ["*"], ["*/scale"]), req("get", "pods", subresource="status"), False),
        (rule(["get"], ["*"], ["*/status"]), req("get", "pods", subresource="xstatus"), False),
        # "*/log" needs the "*/" prefix: "x/log" is just another resource
        (rule(["get"], [""], ["x/log"]), req("get", "pods", subresource="log"), False),
        # Upstream has no "resource/*" wildcard: "pods/*" is a literal resource name.
        (rule(["get"], [""], ["pods/*"]), req("get", "pods", subresource="exec"), False),
        (rule(["get"], [""], ["pods/*"]), req("get", "pods"), False),
        # a resource rule never matches a non-resource request, and the reverse
        (rule(["*"], ["*"], ["*"]), path_req("get", "/healthz"), False),
        (rule(["*"], urls=["*"]), req("get", "pods"), False),
    ],
)
def test_resource_rule_shapes(granted: dict[str, Any], request_: Attributes, allowed: bool) -> None:
    assert rule_allows(request_, granted) is allowed
    assert grant(granted).authorize(request_).allowed is allowed


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        (req("get", "configmaps", namespace="ns", name="cfg"), True),
        (req("update", "configmaps", namespace="ns", name="cfg"), True),
        (req("get", "configmaps", namespace="ns", name="other"), False),
        # A rule with resourceNames cannot match a request that names nothing.
        (req("list", "configmaps", namespace="ns"), False),
        (req("watch", "configmaps", namespace="ns"), False),
        (req("create", "configmaps", namespace="ns"), False),
        (req("deletecollection", "configmaps", namespace="ns"), False),
    ],
)
def test_resource_names(request_: Attributes, allowed: bool) -> None:
    authorizer = grant(
        rule(["get", "list", "watch", "create", "update"], [""], ["configmaps"], names=["cfg"])
    )
    assert authorizer.authorize(request_).allowed is allowed


def test_rule_without_resource_names_matches_any_name() -> None:
    authorizer = grant(rule(["get"], [""], ["configmaps"]))
    assert authorizer.authorize(req("get", "configmaps", namespace="ns", name="any")).allowed


@pytest.mark.parametrize(
    ("urls", "path", "allowed"),
    [
        (["/healthz"], "/healthz", True),
        (["/healthz"], "/healthz/etcd", False),
        (["/healthz/*"], "/healthz/etcd", True),
        (["/healthz/*"], "/healthz", False),
        (["/apis*"], "/apis", True),
        (["/apis*"], "/apisx/y", True),
        (["/api/*"], "/apis/apps", False),
        (["*"], "/anything/at/all", True),
        (["/version", "/version/"], "/version/", True),
    ],
)
def test_non_resource_urls(urls: list[str], path: str, allowed: bool) -> None:
    assert grant(rule(["get"], urls=urls)).authorize(path_req("get", path)).allowed is allowed


def test_non_resource_verbs() -> None:
    authorizer = grant(rule(["get"], urls=["/logs/*"]))
    assert authorizer.authorize(path_req("get", "/logs/x")).allowed
    assert not authorizer.authorize(path_req("post", "/logs/x")).allowed
    assert grant(rule(["*"], urls=["/logs/*"])).authorize(path_req("post", "/logs/x")).allowed


def test_null_rule_fields_are_empty() -> None:
    granted = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": None}
    assert grant(granted).authorize(req("get", "pods", name="p")).allowed


# --- bindings ------------------------------------------------------------------------------------


def test_role_via_role_binding_only_in_its_namespace() -> None:
    store = Store(
        role("reader", "team", rule(["get", "list"], [""], ["pods"])),
        role_binding("rb", "team", "Role", "reader", user("alice")),
    )
    authorizer = Authorizer(store.lister)
    assert authorizer.authorize(req("list", "pods", namespace="team")) == Decision(
        allowed=True,
        reason='RBAC: allowed by RoleBinding "rb/team" of Role "reader" to User "alice"',
    )
    assert not authorizer.authorize(req("list", "pods", namespace="other")).allowed
    assert not authorizer.authorize(req("list", "pods")).allowed  # all namespaces
    # Another user is not bound.
    bob = UserInfo("bob")
    assert not authorizer.authorize(req("list", "pods", namespace="team", who=bob)).allowed


def test_role_binding_cannot_reach_a_role_of_another_namespace() -> None:
    store = Store(
        role("reader", "elsewhere", rule(["get"], [""], ["pods"])),
        role_binding("rb", "team", "Role", "reader", user("alice")),
    )
    decision = Authorizer(store.lister).authorize(req("get", "pods", namespace="team"))
    assert decision == Decision(
        allowed=False, reason='RBAC: role.rbac.authorization.k8s.io "reader" not found'
    )


def test_cluster_role_via_role_binding_is_limited_to_the_namespace() -> None:
    store = Store(
        cluster_role(
            "pod-reader", rule(["get", "list"], [""], ["pods"]), rule(["get"], [""], ["nodes"])
        ),
        role_binding("rb", "team", "ClusterRole", "pod-reader", user("alice")),
    )
    authorizer = Authorizer(store.lister)
    assert authorizer.authorize(req("list", "pods", namespace="team")) == Decision(
        allowed=True,
        reason='RBAC: allowed by RoleBinding "rb/team" of ClusterRole "pod-reader" to User "alice"',
    )
    assert not authorizer.authorize(req("list", "pods", namespace="other")).allowed
    assert not authorizer.authorize(req("list", "pods")).allowed
    # Cluster-scoped resources are requested without a namespace, so a RoleBinding never
    # grants them.
    assert not authorizer.authorize(req("get", "nodes", name="n1")).allowed


def test_cluster_role_binding_applies_everywhere() -> None:
    store = Store(
        cluster_role("reader", rule(["get", "list"], [""], ["pods", "nodes"])),
        cluster_role_binding("crb", "reader", user("alice")),
    )
    authorizer = Authorizer(store.lister)
    reason = 'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "reader" to User "alice"'
    for namespace in ("a", "b", ""):
        assert authorizer.authorize(req("list", "pods", namespace=namespace)) == Decision(
            allowed=True, reason=reason
        )
    assert authorizer.authorize(req("get", "nodes", name="n1")).allowed
    assert not authorizer.authorize(req("delete", "pods", namespace="a", name="p")).allowed


def test_group_subjects() -> None:
    store = Store(
        cluster_role("reader", rule(["get"], [""], ["pods"])),
        cluster_role_binding("crb", "reader", group("devs")),
        role("writer", "team", rule(["create"], [""], ["pods"])),
        role_binding("rb", "team", "Role", "writer", group("devs")),
    )
    authorizer = Authorizer(store.lister)
    dev = UserInfo("carol", groups=("system:authenticated", "devs"))
    assert authorizer.authorize(req("get", "pods", namespace="x", who=dev)) == Decision(
        allowed=True,
        reason='RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "reader" to Group "devs"',
    )
    assert authorizer.authorize(req("create", "pods", namespace="team", who=dev)).allowed
    assert not authorizer.authorize(req("get", "pods", namespace="x")).allowed  # alice: no group
    # A user named like the group is not in it.
    devs_user = UserInfo("devs")
    assert not authorizer.authorize(req("get", "pods", namespace="x", who=devs_user)).allowed


def test_first_matching_subject_is_named_in_the_reason() -> None:
    store = Store(
        cluster_role("reader", rule(["get"], [""], ["pods"])),
        cluster_role_binding(
            "crb", "reader", group("nobody"), group("system:authenticated"), user("alice")
        ),
    )
    decision = Authorizer(store.lister).authorize(req("get", "pods", namespace="x"))
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "reader" '
        'to Group "system:authenticated"'
    )


SA_BUILDER = UserInfo(
    "system:serviceaccount:ci:builder",
    groups=("system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"),
)


def test_service_account_subject_with_namespace() -> None:
    store = Store(
        cluster_role("deployer", rule(["create"], ["apps"], ["deployments"])),
        role_binding("rb", "prod", "ClusterRole", "deployer", service_account("builder", "ci")),
        cluster_role_binding("crb", "deployer", service_account("builder", "ci")),
    )
    authorizer = Authorizer(store.lister)
    attributes = req("create", "deployments", group="apps", namespace="x", who=SA_BUILDER)
    assert authorizer.authorize(attributes) == Decision(
        allowed=True,
        reason='RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "deployer" '
        'to ServiceAccount "builder/ci"',
    )
    other = UserInfo("system:serviceaccount:other:builder")
    assert not authorizer.authorize(
        req("create", "deployments", group="apps", namespace="prod", who=other)
    ).allowed


def test_service_account_subject_namespace_defaults_to_the_role_binding() -> None:
    store = Store(
        role("r", "ci", rule(["get"], [""], ["secrets"])),
        role_binding("rb", "ci", "Role", "r", service_account("builder")),
        role("r", "other", rule(["get"], [""], ["secrets"])),
        role_binding("rb", "other", "Role", "r", service_account("builder")),
    )
    authorizer = Authorizer(store.lister)
    assert authorizer.authorize(req("get", "secrets", namespace="ci", who=SA_BUILDER)) == Decision(
        allowed=True,
        reason='RBAC: allowed by RoleBinding "rb/ci" of Role "r" to ServiceAccount "builder/ci"',
    )
    # In "other" the subject means system:serviceaccount:other:builder, not ci's builder.
    assert not authorizer.authorize(
        req("get", "secrets", namespace="other", who=SA_BUILDER)
    ).allowed


def test_service_account_subject_without_namespace_in_cluster_role_binding_matches_nobody() -> None:
    store = Store(
        cluster_role("r", rule(["get"], [""], ["secrets"])),
        cluster_role_binding("crb", "r", service_account("builder")),
    )
    authorizer = Authorizer(store.lister)
    assert not authorizer.authorize(req("get", "secrets", namespace="ci", who=SA_BUILDER)).allowed


def test_subjects_of_unknown_kind_match_nobody() -> None:
    store = Store(
        cluster_role("r", rule(["get"], [""], ["pods"])),
        cluster_role_binding("crb", "r", {"kind": "Robot", "name": "alice"}),
    )
    assert not Authorizer(store.lister).authorize(req("get", "pods")).allowed


def test_system_masters_is_always_allowed() -> None:
    admin = UserInfo("admin", groups=("system:masters", "system:authenticated"))
    authorizer = Authorizer(Store().lister)
    for attributes in (
        req("delete", "nodes", name="n1", who=admin),
        req("escalate", "clusterroles", group=RBAC, who=admin),
        path_req("post", "/anything", who=admin),
    ):
        assert authorizer.authorize(attributes) == Decision(allowed=True, reason="system:masters")


def test_special_verbs_are_ordinary_verbs() -> None:
    authorizer = grant(
        rule(["impersonate"], [""], ["users", "groups"]),
        rule(["bind", "escalate"], [RBAC], ["clusterroles"], names=["view"]),
    )
    assert authorizer.authorize(req("impersonate", "users", name="bob")).allowed
    assert authorizer.authorize(req("bind", "clusterroles", group=RBAC, name="view")).allowed
    assert not authorizer.authorize(req("bind", "clusterroles", group=RBAC, name="admin")).allowed
    assert not authorizer.authorize(req("impersonate", "serviceaccounts", namespace="x")).allowed


def test_denial_without_resolution_errors_has_no_reason() -> None:
    decision = grant(rule(["get"], [""], ["pods"])).authorize(req("delete", "pods"))
    assert decision == Decision(allowed=False, reason="")


# --- unresolvable roles --------------------------------------------------------------------------


def test_missing_roles_grant_nothing_and_explain_the_denial() -> None:
    store = Store(
        cluster_role_binding("crb", "gone", user("alice")),
        role_binding("rb", "team", "Role", "absent", user("alice")),
    )
    decision = Authorizer(store.lister).authorize(req("get", "pods", namespace="team"))
    assert decision == Decision(
        allowed=False,
        reason='RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
        'role.rbac.authorization.k8s.io "absent" not found]',
    )


def test_repeated_resolution_errors_are_reported_once() -> None:
    store = Store(
        cluster_role_binding("a", "gone", user("alice")),
        cluster_role_binding("b", "gone", user("alice")),
    )
    decision = Authorizer(store.lister).authorize(req("get", "pods"))
    assert decision.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'


def test_resolution_errors_do_not_matter_once_allowed() -> None:
    store = Store(
        cluster_role_binding("a", "gone", user("alice")),
        cluster_role("r", rule(["get"], [""], ["pods"])),
        cluster_role_binding("b", "r", user("alice")),
    )
    assert Authorizer(store.lister).authorize(req("get", "pods")).allowed


def test_unsupported_role_ref_kind() -> None:
    binding = cluster_role_binding("crb", "x", user("alice"))
    binding["roleRef"]["kind"] = "Policy"
    decision = Authorizer(Store(binding).lister).authorize(req("get", "pods"))
    assert decision.reason == 'RBAC: unsupported role reference kind: "Policy"'


def test_role_bindings_of_other_users_are_not_resolved() -> None:
    store = Store(cluster_role_binding("crb", "gone", user("bob")))
    assert Authorizer(store.lister).authorize(req("get", "pods")) == Decision(False, "")


# --- aggregation ---------------------------------------------------------------------------------

AGG = f"{RBAC}/aggregate-to-"


def aggregated(name: str, target: str, **extra: Any) -> dict[str, Any]:
    return cluster_role(name, selectors=[{"matchLabels": {f"{AGG}{target}": "true"}}], **extra)


def test_view_aggregates_system_aggregate_to_view_and_a_custom_role() -> None:
    view = aggregated("view", "view")
    store = Store(
        view,
        cluster_role(
            "system:aggregate-to-view",
            rule(["get", "list", "watch"], [""], ["pods"]),
            labels={f"{AGG}view": "true"},
        ),
        cluster_role(
            "widgets-view",
            rule(["get", "list"], ["example.com"], ["widgets"]),
            labels={f"{AGG}view": "true"},
        ),
        cluster_role("unlabelled", rule(["get"], [""], ["secrets"])),
        role_binding("rb", "team", "ClusterRole", "view", user("alice")),
    )
    authorizer = Authorizer(store.lister)
    assert authorizer.authorize(req("list", "pods", namespace="team")).allowed
    assert authorizer.authorize(
        req("list", "widgets", group="example.com", namespace="team")
    ) == Decision(
        allowed=True,
        reason='RBAC: allowed by RoleBinding "rb/team" of ClusterRole "view" to User "alice"',
    )
    assert not authorizer.authorize(req("get", "secrets", namespace="team", name="s")).allowed
    # The stored rules of an aggregated role are the controller's to write: they do not count.
    view["rules"] = [rule(["*"], ["*"], ["*"])]
    assert not authorizer.authorize(req("get", "secrets", namespace="team", name="s")).allowed


def test_aggregation_is_computed_at_evaluation_time() -> None:
    store = Store(aggregated("view", "view"), cluster_role_binding("crb", "view", user("alice")))
    authorizer = Authorizer(store.lister)
    attributes = req("get", "widgets", group="example.com", namespace="x")
    assert not authorizer.authorize(attributes).allowed
    labelled = cluster_role(
        "widgets", rule(["get"], ["example.com"], ["widgets"]), labels={f"{AGG}view": "true"}
    )
    store.add(labelled)
    assert authorizer.authorize(attributes).allowed
    labelled["metadata"]["labels"] = {}
    assert not authorizer.authorize(attributes).allowed


def test_aggregation_is_transitive() -> None:
    store = Store(
        aggregated("admin", "admin"),
        aggregated("edit", "edit", labels={f"{AGG}admin": "true"}),
        aggregated("view", "view", labels={f"{AGG}edit": "true"}),
        cluster_role("v", rule(["get"], [""], ["pods"]), labels={f"{AGG}view": "true"}),
        cluster_role("e", rule(["create"], [""], ["pods"]), labels={f"{AGG}edit": "true"}),
        cluster_role(
            "a", rule(["create"], [RBAC], ["rolebindings"]), labels={f"{AGG}admin": "true"}
        ),
        cluster_role_binding("crb", "admin", user("alice")),
    )
    authorizer = Authorizer(store.lister)
    assert authorizer.authorize(req("get", "pods", namespace="x")).allowed
    assert authorizer.authorize(req("create", "pods", namespace="x")).allowed
    assert authorizer.authorize(req("create", "rolebindings", group=RBAC, namespace="x")).allowed
    roles = [o for o in store.objects if o["kind"] == "ClusterRole"]
    assert aggregate_cluster_role_rules(roles[1], roles) == [
        rule(["create"], [""], ["pods"]),  # "e" sorts before "view"
        rule(["get"], [""], ["pods"]),
    ]


def test_aggregation_drops_repeated_rules_and_skips_itself() -> None:
    shared = rule(["get"], [""], ["pods"])
    roles = [
        aggregated("view", "view", labels={f"{AGG}view": "true"}),
        cluster_role("b", shared, rule(["list"], [""], ["pods"]), labels={f"{AGG}view": "true"}),
        cluster_role("a", dict(shared, resourceNames=None), labels={f"{AGG}view": "true"}),
    ]
    assert aggregate_cluster_role_rules(roles[0], roles) == [
        dict(shared, resourceNames=None),  # from "a", first by name; null == absent
        rule(["list"], [""], ["pods"]),
    ]


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({"matchLabels": {"tier": "web"}}, ["web"]),
        ({"matchLabels": {"tier": "web", "team": "x"}}, []),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]},
            ["db", "web"],
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]},
            ["db", "none"],
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, ["db", "web"]),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, ["none"]),
        (
            {
                "matchLabels": {"tier": "db"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}],
            },
            ["db"],
        ),
        # An empty selector selects every ClusterRole.
        ({}, ["db", "none", "web"]),
    ],
)
def test_aggregation_selectors(selector: dict[str, Any], selected: list[str]) -> None:
    roles = [
        cluster_role("agg", selectors=[selector]),
        cluster_role("web", rule(["get"], ["web"], ["x"]), labels={"tier": "web"}),
        cluster_role("db", rule(["get"], ["db"], ["x"]), labels={"tier": "db"}),
        cluster_role("none", rule(["get"], ["none"], ["x"])),
    ]
    rules = aggregate_cluster_role_rules(roles[0], roles)
    assert [r["apiGroups"][0] for r in rules] == selected


@pytest.mark.parametrize(
    "expression",
    [
        {"key": "tier", "operator": "In", "values": []},
        {"key": "tier", "operator": "Exists", "values": ["web"]},
        {"key": "tier", "operator": "Matches", "values": ["web"]},
    ],
)
def test_invalid_selector_leaves_the_rules_alone(expression: dict[str, Any]) -> None:
    stored = rule(["get"], [""], ["configmaps"])
    roles = [
        cluster_role("agg", stored, selectors=[{"matchExpressions": [expression]}]),
        cluster_role("web", rule(["get"], [""], ["pods"]), labels={"tier": "web"}),
    ]
    assert aggregate_cluster_role_rules(roles[0], roles) == [stored]


def test_aggregation_cycles_terminate_with_the_union() -> None:
    roles = [
        aggregated("a", "a", labels={f"{AGG}c": "true"}),
        aggregated("b", "b", labels={f"{AGG}a": "true"}),
        aggregated("c", "c", labels={f"{AGG}b": "true"}),
        cluster_role("ra", rule(["get"], ["a"], ["x"]), labels={f"{AGG}a": "true"}),
        cluster_role("rb", rule(["get"], ["b"], ["x"]), labels={f"{AGG}b": "true"}),
        cluster_role("rc", rule(["get"], ["c"], ["x"]), labels={f"{AGG}c": "true"}),
    ]
    for aggregator in roles[:3]:
        groups = {r["apiGroups"][0] for r in aggregate_cluster_role_rules(aggregator, roles)}
        assert groups == {"a", "b", "c"}
    store = Store(*roles, cluster_role_binding("crb", "b", user("alice")))
    assert Authorizer(store.lister).authorize(req("get", "x", group="c")).allowed


def test_aggregate_rules_of_a_plain_role_are_its_own() -> None:
    plain = cluster_role("p", rule(["get"], [""], ["pods"]))
    assert aggregate_cluster_role_rules(plain, [plain]) == [rule(["get"], [""], ["pods"])]


# --- bootstrap policy ----------------------------------------------------------------------------


def bootstrapped(*extra: Mapping[str, Any]) -> Authorizer:
    return Authorizer(Store(*bootstrap_policy(), *extra).lister)


ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))


def test_bootstrap_objects_carry_the_default_metadata() -> None:
    objects = bootstrap_policy()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in (
        ("ClusterRole", "cluster-admin"),
        ("ClusterRole", "admin"),
        ("ClusterRole", "edit"),
        ("ClusterRole", "view"),
        ("ClusterRole", "system:aggregate-to-admin"),
        ("ClusterRole", "system:aggregate-to-edit"),
        ("ClusterRole", "system:aggregate-to-view"),
        ("ClusterRole", "system:discovery"),
        ("ClusterRole", "system:basic-user"),
        ("ClusterRole", "system:public-info-viewer"),
        ("ClusterRoleBinding", "cluster-admin"),
        ("ClusterRoleBinding", "system:discovery"),
        ("ClusterRoleBinding", "system:basic-user"),
        ("ClusterRoleBinding", "system:public-info-viewer"),
    ):
        assert expected in names
    for obj in objects:
        assert obj["apiVersion"] == f"{RBAC}/v1"
        assert obj["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert obj["metadata"]["annotations"] == {
            f"{RBAC.replace('k8s.io', 'kubernetes.io')}/autoupdate": "true"
        }
    # Each call returns fresh objects.
    objects[0]["metadata"]["name"] = "changed"
    assert bootstrap_policy()[0]["metadata"]["name"] == "cluster-admin"


def test_bootstrap_bindings_are_upstreams() -> None:
    subjects = {
        o["metadata"]["name"]: [s["name"] for s in o["subjects"]]
        for o in bootstrap_policy()
        if o["kind"] == "ClusterRoleBinding"
    }
    assert subjects["cluster-admin"] == ["system:masters"]
    assert subjects["system:discovery"] == ["system:authenticated"]
    assert subjects["system:basic-user"] == ["system:authenticated"]
    assert subjects["system:public-info-viewer"] == [
        "system:authenticated",
        "system:unauthenticated",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/version",
        "/healthz",
        "/livez",
        "/readyz",
        "/openapi/v2",
    ],
)
def test_bootstrap_lets_authenticated_users_discover(path: str) -> None:
    decision = bootstrapped().authorize(path_req("get", path))
    assert decision.allowed
    assert decision.reason.startswith("RBAC: allowed by ClusterRoleBinding ")


def test_bootstrap_discovery_is_read_only_and_bounded() -> None:
    authorizer = bootstrapped()
    assert not authorizer.authorize(path_req("post", "/api")).allowed
    assert not authorizer.authorize(path_req("get", "/metrics")).allowed
    assert not authorizer.authorize(path_req("get", "/logs/")).allowed


def test_bootstrap_unauthenticated_users_see_only_public_info() -> None:
    authorizer = bootstrapped()
    assert authorizer.authorize(path_req("get", "/version", who=ANONYMOUS)) == Decision(
        allowed=True,
        reason='RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole '
        '"system:public-info-viewer" to Group "system:unauthenticated"',
    )
    assert authorizer.authorize(path_req("get", "/healthz", who=ANONYMOUS)).allowed
    assert not authorizer.authorize(path_req("get", "/api", who=ANONYMOUS)).allowed
    assert not authorizer.authorize(path_req("get", "/apis", who=ANONYMOUS)).allowed


def test_bootstrap_lets_authenticated_users_review_themselves() -> None:
    authorizer = bootstrapped()
    group = "authorization.k8s.io"
    assert authorizer.authorize(req("create", "selfsubjectaccessreviews", group=group)) == Decision(
        allowed=True,
        reason='RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole '
        '"system:basic-user" to Group "system:authenticated"',
    )
    assert authorizer.authorize(req("create", "selfsubjectrulesreviews", group=group)).allowed
    assert authorizer.authorize(
        req("create", "selfsubjectreviews", group="authentication.k8s.io")
    ).allowed
    assert not authorizer.authorize(req("create", "subjectaccessreviews", group=group)).allowed
    assert not authorizer.authorize(req("list", "pods", namespace="default")).allowed
    assert not authorizer.authorize(
        req("create", "selfsubjectaccessreviews", group=group, who=ANONYMOUS)
    ).allowed


def test_bootstrap_system_masters_may_do_anything() -> None:
    admin = UserInfo("kubernetes-admin", groups=("system:masters", "system:authenticated"))
    authorizer = bootstrapped()
    assert authorizer.authorize(req("delete", "namespaces", name="kube-system", who=admin)).allowed
    assert authorizer.authorize(path_req("put", "/anything", who=admin)).allowed
    # Its SelfSubjectRulesReview shows cluster-admin's rules, as upstream.
    resource_rules, non_resource_rules = authorizer.rules_for(admin, "default")
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in resource_rules
    assert {"verbs": ["*"], "nonResourceURLs": ["*"]} in non_resource_rules


def test_bootstrap_view_edit_admin_through_role_bindings() -> None:
    bob, carol = UserInfo("bob"), UserInfo("carol")
    authorizer = bootstrapped(
        role_binding("viewers", "team", "ClusterRole", "view", user("alice")),
        role_binding("editors", "team", "ClusterRole", "edit", user("bob")),
        role_binding("admins", "team", "ClusterRole", "admin", user("carol")),
    )
    # view: read most things, but not secrets
    assert authorizer.authorize(req("list", "pods", namespace="team")).allowed
    assert authorizer.authorize(req("watch", "deployments", group="apps", namespace="team")).allowed
    pod_log = req("get", "pods", subresource="log", name="p", namespace="team")
    assert authorizer.authorize(pod_log).allowed
    assert not authorizer.authorize(req("get", "secrets", name="s", namespace="team")).allowed
    assert not authorizer.authorize(req("create", "pods", namespace="team")).allowed
    # edit: view plus writes and secrets, but no RBAC
    assert authorizer.authorize(req("list", "pods", namespace="team", who=bob)).allowed
    assert authorizer.authorize(req("get", "secrets", name="s", namespace="team", who=bob)).allowed
    assert authorizer.authorize(
        req("create", "pods", subresource="exec", name="p", namespace="team", who=bob)
    ).allowed
    assert not authorizer.authorize(
        req("create", "rolebindings", group=RBAC, namespace="team", who=bob)
    ).allowed
    # admin: edit plus roles and rolebindings
    assert authorizer.authorize(req("list", "pods", namespace="team", who=carol)).allowed
    assert authorizer.authorize(
        req("create", "rolebindings", group=RBAC, namespace="team", who=carol)
    ).allowed
    # all of it only in "team"
    assert not authorizer.authorize(req("list", "pods", namespace="other", who=carol)).allowed


def test_bootstrap_aggregated_rules_are_the_controllers() -> None:
    objects = bootstrap_policy()
    roles = [o for o in objects if o["kind"] == "ClusterRole"]
    by_name = {o["metadata"]["name"]: o for o in roles}
    to_view = by_name["system:aggregate-to-view"]["rules"]
    to_edit = by_name["system:aggregate-to-edit"]["rules"]
    to_admin = by_name["system:aggregate-to-admin"]["rules"]
    assert aggregate_cluster_role_rules(by_name["view"], roles) == to_view
    # edit selects system:aggregate-to-edit and view (by name order), admin edit and
    # system:aggregate-to-admin.
    assert aggregate_cluster_role_rules(by_name["edit"], roles) == to_edit + to_view
    assert aggregate_cluster_role_rules(by_name["admin"], roles) == to_edit + to_view + to_admin


# --- Forbidden messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            req("list", "pods", namespace="default"),
            'pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
            'in the namespace "default"',
        ),
        (
            req("get", "deployments", group="apps", name="web", namespace="default"),
            'deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" '
            'in API group "apps" in the namespace "default"',
        ),
        (
            req("list", "nodes"),
            'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" '
            "at the cluster scope",
        ),
        (
            req("get", "nodes", name="n1"),
            'nodes "n1" is forbidden: User "alice" cannot get resource "nodes" in API group "" '
            "at the cluster scope",
        ),
        (
            req("create", "pods", subresource="exec", name="x", namespace="default"),
            'pods "x" is forbidden: User "alice" cannot create resource "pods/exec" '
            'in API group "" in the namespace "default"',
        ),
        (
            req("update", "deployments", group="apps", subresource="scale", name="web"),
            'deployments.apps "web" is forbidden: User "alice" cannot update resource '
            '"deployments/scale" in API group "apps" at the cluster scope',
        ),
        (
            path_req("get", "/foo"),
            'forbidden: User "alice" cannot get path "/foo"',
        ),
        (
            req("list", "customresourcedefinitions", group="apiextensions.k8s.io"),
            'customresourcedefinitions.apiextensions.k8s.io is forbidden: User "alice" cannot '
            'list resource "customresourcedefinitions" in API group "apiextensions.k8s.io" '
            "at the cluster scope",
        ),
        (
            req("get", "pods", namespace="default", who=UserInfo("system:serviceaccount:a:b")),
            'pods is forbidden: User "system:serviceaccount:a:b" cannot get resource "pods" '
            'in API group "" in the namespace "default"',
        ),
    ],
)
def test_forbidden_messages(attributes: Attributes, message: str) -> None:
    assert Authorizer(Store().lister).forbidden_message(attributes) == message


def test_forbidden_message_appends_resolution_errors() -> None:
    store = Store(role_binding("rb", "default", "ClusterRole", "pod-reader", user("alice")))
    message = Authorizer(store.lister).forbidden_message(req("list", "pods", namespace="default"))
    assert message == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the '
        'namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "pod-reader" not found'
    )


def test_forbidden_message_quotes_and_sanitizes_as_upstream() -> None:
    odd = UserInfo('we"ird<&>\\\n')
    message = Authorizer(Store().lister).forbidden_message(
        req("get", "pods", name='a"b', namespace="default", who=odd)
    )
    # %q escapes the quote, backslash and newline; the HTML sanitizer then rewrites <, & and >
    # in the authorizer's text, but not in the object name NewForbidden adds in front.
    assert message == (
        'pods "a\\"b" is forbidden: User "we\\"ird&lt;&amp;&gt;\\\\\\n" cannot get resource '
        '"pods" in API group "" in the namespace "default"'
    )


def test_go_quote() -> None:
    assert go_quote("plain") == '"plain"'
    assert go_quote("") == '""'
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\a\b\f\n\r\t\v") == '"\\a\\b\\f\\n\\r\\t\\v"'
    assert go_quote("\x00\x1f\x7f") == '"\\x00\\x1f\\x7f"'
    assert go_quote("héllo ✓ 日本") == '"héllo ✓ 日本"'
    assert go_quote("\u200b\u2028\U000e0001") == '"\\u200b\\u2028\\U000e0001"'
    assert go_quote(b"a\xffb".decode("utf-8", "surrogateescape")) == '"a\\xffb"'


# --- rules_for -----------------------------------------------------------------------------------


def test_rules_for_reports_rules_in_self_subject_rules_review_form() -> None:
    store = Store(
        cluster_role(
            "c",
            rule(["get"], urls=["/healthz", "/version"]),
            rule(["list", "watch"], [""], ["namespaces"]),
        ),
        cluster_role_binding("crb", "c", group("system:authenticated")),
        role(
            "r",
            "team",
            rule(["get", "update"], [""], ["configmaps"], names=["cfg"]),
            rule(["*"], ["apps"], ["deployments", "deployments/scale"]),
        ),
        role_binding("rb", "team", "Role", "r", user("alice")),
        role_binding("gone", "team", "Role", "absent", user("alice")),
        role("r", "other", rule(["*"], ["*"], ["*"])),
        role_binding("rb", "other", "Role", "r", user("alice")),
        cluster_role_binding("not-alice", "c", user("bob")),
    )
    authorizer = Authorizer(store.lister)
    resource_rules, non_resource_rules = authorizer.rules_for(ALICE, "team")
    assert resource_rules == [
        {"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["namespaces"]},
        {
            "verbs": ["get", "update"],
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["cfg"],
        },
        {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"]},
    ]
    assert non_resource_rules == [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/version"]}]
    # Without a namespace only cluster-wide rules apply.
    resource_rules, non_resource_rules = authorizer.rules_for(ALICE, "")
    assert resource_rules == [
        {"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["namespaces"]}
    ]
    assert non_resource_rules == [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/version"]}]


def test_rules_for_a_user_without_bindings_is_empty() -> None:
    assert bootstrapped().rules_for(UserInfo("nobody"), "default") == ([], [])


def test_rules_for_bootstrap_authenticated_user() -> None:
    resource_rules, non_resource_rules = bootstrapped().rules_for(ALICE, "default")
    assert resource_rules == [
        {
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        },
        {
            "verbs": ["create"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"],
        },
    ]
    urls = [u for r in non_resource_rules for u in r["nonResourceURLs"]]
    assert {"/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz"} <= set(urls)
