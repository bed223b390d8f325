"""Admission webhooks end to end: configured through the API, called by the server on writes.

test_admission.py checks the admission chain itself; here a client creates the webhook
configurations and the objects, and sees what kube-apiserver would give it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.sandbox.test_admission import (
    add_label,
    ca,
    dead_url,
    identity,
    mutating,
    server,
    validating,
    webhook,
)
from tests.sandbox.test_client import api, manifest, status_of

if TYPE_CHECKING:
    from telepresence.wire.tls import Identity
    from tests.sandbox.test_admission import WebhookServer

__all__ = ["api", "ca", "dead_url", "identity", "server"]  # fixtures used here

pytestmark = pytest.mark.anyio

CONFIGMAP_RULE = {
    "operations": ["CREATE", "UPDATE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["configmaps"],
    "scope": "Namespaced",
}
# Only the test's own objects: the server's bootstrap writes (kube-root-ca.crt) stay out.
SELECTED = {"objectSelector": {"matchLabels": {"webhook-test": "yes"}}}


def configmap(name: str) -> Any:
    return manifest(
        {"metadata": {"name": name, "labels": {"webhook-test": "yes"}}, "data": {"a": "1"}}
    )


async def test_a_mutating_webhook_mutates_the_created_object(
    api: client.ApiClient, server: WebhookServer
) -> None:
    url = server.route("/inject", add_label("injected", "yes"))
    hook = webhook("inject.example.com", url, server.ca, rules=[CONFIGMAP_RULE], **SELECTED)
    admission = client.AdmissionregistrationV1Api(api)
    await admission.create_mutating_webhook_configuration(manifest(mutating("injector", hook)))
    core = client.CoreV1Api(api)

    created = await core.create_namespaced_config_map("default", configmap("settings"))

    assert created.metadata.labels == {"webhook-test": "yes", "injected": "yes"}
    stored = await core.read_namespaced_config_map("settings", "default")
    assert stored.metadata.labels == {"webhook-test": "yes", "injected": "yes"}
    [review] = server.reviews["/inject"]
    request = review["request"]
    assert (request["operation"], request["namespace"], request["name"]) == (
        "CREATE",
        "default",
        "settings",
    )
    assert request["userInfo"]["username"] == "kubernetes-admin"
    assert request["object"]["data"] == {"a": "1"}

    # An object the objectSelector leaves out is not sent to the webhook.
    await core.create_namespaced_config_map("default", manifest({"metadata": {"name": "other"}}))
    assert len(server.reviews["/inject"]) == 1


@pytest.mark.parametrize("kind", ["mutating", "validating"])
async def test_a_dead_webhook_rejects_under_fail_and_admits_under_ignore(
    api: client.ApiClient, dead_url: str, ca: Identity, kind: str
) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    core = client.CoreV1Api(api)
    make, create = (
        (mutating, admission.create_mutating_webhook_configuration)
        if kind == "mutating"
        else (validating, admission.create_validating_webhook_configuration)
    )
    hook = webhook("dead.example.com", dead_url, ca, rules=[CONFIGMAP_RULE], **SELECTED)
    await create(manifest(make("dead", {**hook, "failurePolicy": "Fail"})))

    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_config_map("default", configmap("refused"))
    assert raised.value.status == 500
    status = status_of(raised.value)
    assert status["reason"] == "InternalError"
    assert status["message"].startswith(
        'Internal error occurred: failed calling webhook "dead.example.com"'
    )
    assert status["message"].endswith("connect: connection refused")
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_config_map("refused", "default")
    assert missing.value.status == 404

    if kind == "mutating":
        await admission.patch_mutating_webhook_configuration(
            "dead", [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
        )
    else:
        await admission.patch_validating_webhook_configuration(
            "dead", [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
        )
    admitted = await core.create_namespaced_config_map("default", configmap("admitted"))
    assert admitted.data == {"a": "1"}


async def test_a_validating_webhook_denies_with_its_message(
    api: client.ApiClient, server: WebhookServer
) -> None:
    async def deny(review: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": review["request"]["uid"],
                "allowed": False,
                "status": {"code": 403, "message": "configmaps need an owner label"},
            },
        }

    url = server.route("/deny", deny)
    hook = webhook("policy.example.com", url, server.ca, rules=[CONFIGMAP_RULE], **SELECTED)
    await client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration(
        manifest(validating("policy", hook))
    )
    with pytest.raises(ApiException) as raised:
        await client.CoreV1Api(api).create_namespaced_config_map("default", configmap("x"))
    assert raised.value.status == 403
    assert status_of(raised.value)["message"] == (
        'admission webhook "policy.example.com" denied the request: configmaps need an owner label'
    )
