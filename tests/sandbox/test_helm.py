"""The API server as Helm 4 sees it, through helm-sdkpy (the real Helm engine, unchanged).

Helm discovers the API, applies with server-side apply (or a three-way strategic merge patch
for releases installed without it), keeps its releases in Secrets, installs CRDs before the
resources that use them, and deletes what an upgrade no longer renders.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import helm_sdkpy
import pytest
from kubernetes_asyncio import client

from tests.sandbox.test_client import api_client, manifest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sandbox.apiserver.run import Running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

CHART = str(Path(__file__).parent / "charts" / "demo")
NAMESPACE = "demo"


@pytest.fixture
def helm(apiserver: Running) -> helm_sdkpy.Configuration:
    return helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=str(apiserver.kubeconfig))


@pytest.fixture
async def api(apiserver: Running) -> AsyncIterator[client.ApiClient]:
    async with api_client(apiserver) as api:
        yield api


def decode_release(secret: client.V1Secret) -> dict[str, Any]:
    """Helm's release record: base64 (Secret data) of base64 of gzipped JSON."""
    data = base64.b64decode(base64.b64decode(secret.data["release"]))
    release: dict[str, Any] = json.loads(gzip.decompress(data))
    return release


async def names(api: client.ApiClient) -> dict[str, list[str]]:
    core, apps, rbac = (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.RbacAuthorizationV1Api(api),
    )
    custom = client.CustomObjectsApi(api)
    greetings = await custom.list_namespaced_custom_object(
        "demo.example.com", "v1", NAMESPACE, "greetings"
    )
    found: dict[str, Any] = {
        "deployments": await apps.list_namespaced_deployment(NAMESPACE),
        "services": await core.list_namespaced_service(NAMESPACE),
        "configmaps": await core.list_namespaced_config_map(NAMESPACE),
        "secrets": await core.list_namespaced_secret(NAMESPACE),
        "serviceaccounts": await core.list_namespaced_service_account(NAMESPACE),
        "roles": await rbac.list_namespaced_role(NAMESPACE),
        "rolebindings": await rbac.list_namespaced_role_binding(NAMESPACE),
    }
    result = {
        kind: sorted(item.metadata.name for item in listed.items) for kind, listed in found.items()
    }
    result["greetings"] = sorted(item["metadata"]["name"] for item in greetings["items"])
    return result


@pytest.mark.parametrize("server_side", [True, False], ids=["server-side-apply", "three-way-merge"])
async def test_install_upgrade_list_status_uninstall(
    helm: helm_sdkpy.Configuration, api: client.ApiClient, server_side: bool
) -> None:
    installed = await helm_sdkpy.Install(helm).run(
        "shop",
        CHART,
        values={"greeting": "hi"},
        create_namespace=True,
        wait=False,
        server_side_apply=server_side,
    )
    assert installed["info"]["status"] == "deployed"
    assert installed["version"] == 1

    assert await names(api) == {
        "deployments": ["shop-web"],
        "services": ["shop-web"],
        "configmaps": ["kube-root-ca.crt", "shop-settings"],
        "secrets": ["sh.helm.release.v1.shop.v1", "shop-token"],
        "serviceaccounts": ["default", "shop"],
        "roles": ["shop-reader"],
        "rolebindings": ["shop-reader"],
        "greetings": ["shop"],
    }
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    settings = await core.read_namespaced_config_map("shop-settings", NAMESPACE)
    assert settings.data == {"greeting": "hi"}
    assert settings.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert settings.metadata.annotations["meta.helm.sh/release-name"] == "shop"
    service = await core.read_namespaced_service("shop-web", NAMESPACE)
    assert service.spec.cluster_ip  # allocated by the server
    token = await core.read_namespaced_secret("shop-token", NAMESPACE)
    assert base64.b64decode(token.data["token"]) == b"s3cret"
    # Helm's own release record, in a Secret, is what `helm list` reads back.
    record = decode_release(
        await core.read_namespaced_secret("sh.helm.release.v1.shop.v1", NAMESPACE)
    )
    assert record["name"] == "shop"
    assert record["config"] == {"greeting": "hi"}

    # Someone scales the deployment by hand, so they own .spec.replicas now.
    await apps.patch_namespaced_deployment_scale("shop-web", NAMESPACE, {"spec": {"replicas": 4}})
    values = {"greeting": "hello again", "token": {"enabled": False}}
    version = 2
    if server_side:
        # Server-side apply refuses to take the field back without --force-conflicts, as on a
        # real cluster; Helm records the failed revision.
        with pytest.raises(helm_sdkpy.UpgradeError) as raised:
            await helm_sdkpy.Upgrade(helm).run("shop", CHART, values=values, wait=False)
        assert (
            'Apply failed with 1 conflict: conflict with "OpenAPI-Generator" with subresource'
            ' "scale" using apps/v1: .spec.replicas'
        ) in str(raised.value)
        version = 3
    upgraded = await helm_sdkpy.Upgrade(helm).run(
        "shop", CHART, values=values, reuse_values=True, wait=False, force_conflicts=server_side
    )
    assert upgraded["version"] == version
    settings = await core.read_namespaced_config_map("shop-settings", NAMESPACE)
    assert settings.data == {"greeting": "hello again"}
    deployment = await apps.read_namespaced_deployment("shop-web", NAMESPACE)
    # Either way the chart's replicas win again: forced over, or by the three-way patch.
    assert deployment.spec.replicas == 1
    assert deployment.metadata.generation == 3  # the scale, then replicas and the checksum
    assert deployment.spec.template.metadata.annotations["checksum/config"]
    # Helm's field manager is its program's name (here Python's): an Apply entry under
    # server-side apply, an Update entry under a three-way merge patch.
    operations = {
        entry.operation
        for entry in deployment.metadata.managed_fields
        if entry.manager != "OpenAPI-Generator"
    }
    assert operations == {"Apply" if server_side else "Update"}
    # Nobody else owns replicas any more: the scaler's entry is gone.
    assert not any(entry.subresource == "scale" for entry in deployment.metadata.managed_fields)
    listed = await names(api)
    assert listed["secrets"] == [  # the Secret the chart no longer renders is gone
        *(f"sh.helm.release.v1.shop.v{n}" for n in range(1, version + 1)),
    ]
    custom = client.CustomObjectsApi(api)
    greeting = await custom.get_namespaced_custom_object(
        "demo.example.com", "v1", NAMESPACE, "greetings", "shop"
    )
    assert greeting["spec"] == {"text": "hello again"}

    releases = await helm_sdkpy.List(helm).run()
    assert [(r["name"], r["version"], r["info"]["status"]) for r in releases] == [
        ("shop", version, "deployed")
    ]
    status = await helm_sdkpy.Status(helm).run("shop")
    assert status["info"]["status"] == "deployed"
    assert "shop greets with hello again." in status["info"]["notes"]

    await helm_sdkpy.Uninstall(helm).run("shop", wait=False)
    assert not await helm_sdkpy.List(helm).run()  # helm-sdkpy gives None for no releases
    assert await names(api) == {
        "deployments": [],
        "services": [],
        "configmaps": ["kube-root-ca.crt"],
        "secrets": [],
        "serviceaccounts": ["default"],
        "roles": [],
        "rolebindings": [],
        "greetings": [],  # CRDs outlive releases, as in Helm; their objects do not
    }
    with pytest.raises(helm_sdkpy.HelmError):
        await helm_sdkpy.Status(helm).run("shop")


async def test_a_release_that_conflicts_with_an_existing_object_fails_cleanly(
    helm: helm_sdkpy.Configuration, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespace(manifest({"metadata": {"name": NAMESPACE}}))
    await core.create_namespaced_config_map(
        NAMESPACE, manifest({"metadata": {"name": "shop-settings"}, "data": {"mine": "yes"}})
    )
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        await helm_sdkpy.Install(helm).run("shop", CHART, wait=False)
    assert "shop-settings" in str(raised.value)
    assert "exists" in str(raised.value)
    # The object that was there first is untouched.
    mine = await core.read_namespaced_config_map("shop-settings", NAMESPACE)
    assert mine.data == {"mine": "yes"}
