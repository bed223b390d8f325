"""Namespace collision detection: two traffic-managers may not manage the same namespace.

The chart finds the other traffic-managers with `lookup` (their ConfigMaps' namespaces.yaml),
which only answers against a cluster, so these tests install releases into the sandbox's API
server and check with its API that a refused release left nothing behind.
"""

from __future__ import annotations

from typing import Any

import helm_sdkpy
import pytest
from kubernetes_asyncio import client

from tests.helm.conftest import RELEASE, Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

DEV_AND_STAGING = {"namespaces": ["dev", "staging"]}
STAGING_AND_PROD = {"namespaces": ["staging", "prod"]}


async def leftovers(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    """What a release installed in a namespace would have made there and cluster-wide."""
    core, apps, rbac = (
        client.CoreV1Api(cluster.api),
        client.AppsV1Api(cluster.api),
        client.RbacAuthorizationV1Api(cluster.api),
    )

    def names(listed: Any) -> list[str]:
        return sorted(item.metadata.name for item in listed.items)

    def ours(listed: Any) -> list[str]:
        """Objects whose Helm release lives in `namespace`."""
        return sorted(
            f"{item.metadata.namespace or ''}/{item.metadata.name}"
            for item in listed.items
            if (item.metadata.annotations or {}).get("meta.helm.sh/release-namespace") == namespace
        )

    return {
        "releases": names(
            await core.list_namespaced_secret(namespace, label_selector="owner=helm")
        ),
        "secrets": [
            n for n in names(await core.list_namespaced_secret(namespace)) if "helm" not in n
        ],
        "configmaps": [
            n
            for n in names(await core.list_namespaced_config_map(namespace))
            if n != "kube-root-ca.crt"
        ],
        "serviceaccounts": [
            n
            for n in names(await core.list_namespaced_service_account(namespace))
            if n != "default"
        ],
        "services": names(await core.list_namespaced_service(namespace)),
        "deployments": names(await apps.list_namespaced_deployment(namespace)),
        "roles": ours(await rbac.list_role_for_all_namespaces()),
        "rolebindings": ours(await rbac.list_role_binding_for_all_namespaces()),
        "clusterroles": ours(await rbac.list_cluster_role()),
        "clusterrolebindings": ours(await rbac.list_cluster_role_binding()),
    }


NOTHING: dict[str, list[str]] = {
    "releases": [],
    "secrets": [],
    "configmaps": [],
    "serviceaccounts": [],
    "services": [],
    "deployments": [],
    "roles": [],
    "rolebindings": [],
    "clusterroles": [],
    "clusterrolebindings": [],
}


async def test_the_reference_scenario_fails_with_its_message_and_leaves_nothing(
    cluster: Cluster,
) -> None:
    await cluster.create_namespaces("dev", "staging", "prod")
    # telepresence helm install --namespace dev --set 'namespaces={dev,staging}'
    first = await cluster.install(DEV_AND_STAGING, namespace="dev")
    made_by_first = await leftovers(cluster, "dev")
    assert made_by_first["deployments"] == ["traffic-manager"]

    # telepresence helm install --namespace prod --set 'namespaces={staging,prod}'
    with pytest.raises(helm_sdkpy.InstallError) as raised:
        await cluster.install(STAGING_AND_PROD, namespace="prod")
    assert str(raised.value).endswith(
        "traffic-manager in namespace dev already manages namespace staging"
    )
    assert "execution error at (telepresence-oss/templates/" in str(raised.value)
    assert await leftovers(cluster, "prod") == NOTHING
    assert not await helm_sdkpy.List(cluster.helm("prod")).run(all=True)
    # The first traffic-manager is untouched, its Role in staging included.
    assert await leftovers(cluster, "dev") == made_by_first
    statuses = await helm_sdkpy.List(cluster.helm("dev")).run(all=True)
    assert [(r["name"], r["version"], r["info"]["status"]) for r in statuses] == [
        (RELEASE, first.record["version"], "deployed")
    ]

    # Fixing the overlap, as the reference says, lets the second one in.
    await cluster.install({"namespaces": ["prod"]}, namespace="prod")
    assert (await leftovers(cluster, "prod"))["deployments"] == ["traffic-manager"]


async def test_an_upgrade_into_another_managers_namespace_fails_and_keeps_the_release(
    cluster: Cluster,
) -> None:
    await cluster.create_namespaces("dev", "staging", "prod")
    await cluster.install(DEV_AND_STAGING, namespace="dev")
    await cluster.install({"namespaces": ["prod"]}, namespace="prod")
    before = await leftovers(cluster, "prod")

    with pytest.raises(helm_sdkpy.UpgradeError) as raised:
        await cluster.upgrade(STAGING_AND_PROD, namespace="prod")
    assert str(raised.value).endswith(
        "traffic-manager in namespace dev already manages namespace staging"
    )
    assert await leftovers(cluster, "prod") == before
    statuses = await helm_sdkpy.List(cluster.helm("prod")).run(all=True)
    assert [(r["version"], r["info"]["status"]) for r in statuses] == [(1, "deployed")]
    config = await client.CoreV1Api(cluster.api).read_namespaced_config_map(
        "traffic-manager", "prod"
    )
    assert config.data["namespaces.yaml"] == "namespaces:\n- prod\n"

    # A release never collides with itself: the first one may grow into prod's neighbour.
    await cluster.create_namespaces("qa")
    upgraded = await cluster.upgrade({"namespaces": ["dev", "staging", "qa"]}, namespace="dev")
    assert upgraded.record["version"] == 2
    # And once the second one is gone, staging's neighbour prod is free to take.
    await helm_sdkpy.Uninstall(cluster.helm("prod")).run(RELEASE, wait=False)
    await cluster.upgrade({"namespaces": ["dev", "staging", "prod"]}, namespace="dev")


# (first's values, first's namespace, second's values, second's namespace, the error or None).
# The namespaces dev, staging, prod (labelled env=<name>, and team=blue for dev and staging)
# exist; `team` is made by the second install's --create-namespace.
SCENARIOS: dict[str, tuple[dict[str, Any], str, dict[str, Any], str, str | None]] = {
    "static-static-overlap": (DEV_AND_STAGING, "dev", STAGING_AND_PROD, "prod", "dev:staging"),
    "static-static-disjoint": (DEV_AND_STAGING, "dev", {"namespaces": ["prod"]}, "prod", None),
    "static-selector-overlap": (
        DEV_AND_STAGING,
        "dev",
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["prod", "staging"],
                    }
                ]
            }
        },
        "prod",
        "dev:staging",
    ),
    "static-vs-dynamic": (
        {"namespaces": ["prod"]},
        "prod",
        {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
        "dev",
        "prod:prod",
    ),
    "dynamic-vs-static": (
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        "dev",
        {"namespaces": ["prod", "staging"]},
        "prod",
        "dev:staging",
    ),
    "dynamic-vs-static-disjoint": (
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        "dev",
        {"namespaces": ["prod"]},
        "prod",
        None,
    ),
    "dynamic-dynamic-overlap": (
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        "dev",
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]
            }
        },
        "prod",
        "dev:staging",
    ),
    "dynamic-dynamic-disjoint": (
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        "dev",
        {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}},
        "prod",
        None,
    ),
    "all-vs-static": ({}, "dev", {"namespaces": ["prod"]}, "prod", "dev:prod"),
    "static-vs-all": ({"namespaces": ["prod"]}, "prod", {}, "dev", "prod:prod"),
    "all-vs-all": ({}, "dev", {}, "prod", "dev:default"),
    "all-vs-a-namespace-not-created-yet": ({}, "dev", {"namespaces": ["team"]}, "team", "dev:team"),
    "selector-vs-a-namespace-not-created-yet": (
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        "dev",
        {"namespaces": ["team"]},
        "team",
        None,
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_collision_rules(cluster: Cluster, scenario: str) -> None:
    first, first_namespace, second, second_namespace, collision = SCENARIOS[scenario]
    await cluster.create_namespaces("dev", env="dev", team="blue")
    await cluster.create_namespaces("staging", env="staging", team="blue")
    await cluster.create_namespaces("prod", env="prod")
    await cluster.install(first, namespace=first_namespace)
    if collision is None:
        await cluster.install(second, namespace=second_namespace)
        return
    theirs, shared = collision.split(":")
    with pytest.raises(helm_sdkpy.InstallError) as raised:
        await cluster.install(second, namespace=second_namespace)
    assert str(raised.value).endswith(
        f"traffic-manager in namespace {theirs} already manages namespace {shared}"
    )
    records = await client.CoreV1Api(cluster.api).list_secret_for_all_namespaces(
        label_selector="owner=helm"
    )
    assert {item.metadata.namespace for item in records.items} == {first_namespace}


async def test_a_static_namespace_must_exist(cluster: Cluster) -> None:
    with pytest.raises(helm_sdkpy.InstallError) as raised:
        await cluster.install({"namespaces": ["nowhere"]})
    assert str(raised.value).endswith(
        "namespace nowhere does not exist: create it before installing a traffic-manager whose "
        "roles are bound in it"
    )
