"""The ServiceAccount admission plugin: what a created pod looks like once the API server
has stored it (its account, its ``kube-api-access`` volume and mounts), and the pods it
refuses, as kubectl and the API server's own write path see them."""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.apiserver import errors
from sandbox.apiserver.rbac import UserInfo

if TYPE_CHECKING:
    from sandbox.apiserver.run import Running
    from sandbox.apiserver.server import APIServer
    from tests.sandbox.conftest import Kubectl

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Obj = dict[str, Any]
ADMIN = UserInfo("kubernetes-admin", groups=("system:masters", "system:authenticated"))
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
#: generateName's alphabet: the volume's suffix is made the same way.
VOLUME_NAME = re.compile(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}")


def token_volume(name: str) -> Obj:
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
            "defaultMode": 420,
        },
    }


@pytest.fixture
def api(apiserver: Running) -> APIServer:
    return apiserver.server


async def create(api: APIServer, plural: str, obj: Obj, group: str = "") -> Obj:
    resource = api.registry.lookup(group, "v1", plural)
    assert resource is not None
    return await api.objects.create(resource, "default", copy.deepcopy(obj), ADMIN)


def pod(*containers: Obj, init: tuple[Obj, ...] = (), **spec: Any) -> Obj:
    body: Obj = {"containers": list(containers or ({"name": "app", "image": "app"},)), **spec}
    if init:
        body["initContainers"] = list(init)
    return {"metadata": {"name": "web"}, "spec": body}


def mounts(container: Obj) -> list[Obj]:
    return list(container.get("volumeMounts") or [])


async def test_every_container_mounts_the_api_access_volume(api: APIServer) -> None:
    created = await create(
        api,
        "pods",
        pod(
            {"name": "app", "image": "app", "volumeMounts": [{"name": "d", "mountPath": "/d"}]},
            {"name": "side", "image": "side"},
            init=({"name": "setup", "image": "setup"},),
            volumes=[{"name": "d", "emptyDir": {}}],
        ),
    )
    spec = created["spec"]
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    volumes = spec["volumes"]
    assert [v["name"] for v in volumes[:1]] == ["d"]
    name = volumes[1]["name"]
    assert VOLUME_NAME.fullmatch(name)
    assert volumes[1:] == [token_volume(name)]
    mount = {"name": name, "readOnly": True, "mountPath": TOKEN_PATH}
    app, side = spec["containers"]
    assert mounts(app) == [{"name": "d", "mountPath": "/d"}, mount]
    assert mounts(side) == [mount]
    assert mounts(spec["initContainers"][0]) == [mount]


@pytest.mark.parametrize(
    ("pod_says", "account_says", "mounted"),
    [
        (None, None, True),
        (False, None, False),
        (None, False, False),
        (True, False, True),
        (False, True, False),
    ],
)
async def test_opting_out_the_pod_first_then_its_account(
    api: APIServer, pod_says: bool | None, account_says: bool | None, mounted: bool
) -> None:
    account: Obj = {"metadata": {"name": "robot"}}
    if account_says is not None:
        account["automountServiceAccountToken"] = account_says
    await create(api, "serviceaccounts", account)
    spec: Obj = {"serviceAccountName": "robot"}
    if pod_says is not None:
        spec["automountServiceAccountToken"] = pod_says
    created = await create(api, "pods", pod(**spec))
    assert bool(created["spec"].get("volumes")) == mounted
    assert bool(mounts(created["spec"]["containers"][0])) == mounted
    assert created["spec"]["serviceAccountName"] == "robot"


async def test_a_container_with_its_own_mount_there_keeps_it(api: APIServer) -> None:
    own = {"name": "mine", "mountPath": TOKEN_PATH}
    created = await create(
        api,
        "pods",
        pod(
            {"name": "app", "image": "app", "volumeMounts": [own]},
            {"name": "side", "image": "side"},
            volumes=[{"name": "mine", "secret": {"secretName": "creds"}}],
        ),
    )
    app, side = created["spec"]["containers"]
    assert mounts(app) == [own]
    assert mounts(side)[0]["mountPath"] == TOKEN_PATH
    alone = await create(
        api,
        "pods",
        {
            "metadata": {"name": "alone"},
            "spec": {
                "containers": [{"name": "app", "image": "app", "volumeMounts": [own]}],
                "volumes": [{"name": "mine", "secret": {"secretName": "creds"}}],
            },
        },
    )
    assert [v["name"] for v in alone["spec"]["volumes"]] == ["mine"]


async def test_a_copied_pod_keeps_its_api_access_volume(api: APIServer) -> None:
    first = await create(api, "pods", pod())
    second = await create(api, "pods", {"metadata": {"name": "copy"}, "spec": first["spec"]})
    assert second["spec"]["volumes"] == first["spec"]["volumes"]
    assert second["spec"]["containers"] == first["spec"]["containers"]


async def test_image_pull_secrets_come_from_the_account(api: APIServer) -> None:
    await create(
        api,
        "serviceaccounts",
        {"metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "registry"}]},
    )
    created = await create(api, "pods", pod(serviceAccountName="puller"))
    assert created["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    own = await create(
        api,
        "pods",
        {
            "metadata": {"name": "own"},
            "spec": {
                **pod()["spec"],
                "serviceAccountName": "puller",
                "imagePullSecrets": [{"name": "mine"}],
            },
        },
    )
    assert own["spec"]["imagePullSecrets"] == [{"name": "mine"}]
    plain = await create(api, "pods", {"metadata": {"name": "plain"}, "spec": pod()["spec"]})
    assert "imagePullSecrets" not in plain["spec"]


async def test_a_pod_of_a_missing_account_is_forbidden(api: APIServer) -> None:
    with pytest.raises(errors.APIError) as raised:
        await create(
            api,
            "pods",
            {
                "metadata": {"generateName": "web-"},
                "spec": {**pod()["spec"], "serviceAccountName": "ghost"},
            },
        )
    assert raised.value.code == 403
    assert raised.value.message == (
        'pods "web-" is forbidden: error looking up service account default/ghost: '
        'serviceaccount "ghost" not found'
    )


async def test_only_pods_are_admitted(api: APIServer) -> None:
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"]},
        },
    }
    created = await create(api, "deployments", deployment, group="apps")
    template = created["spec"]["template"]["spec"]
    assert "volumes" not in template
    assert "serviceAccountName" not in template


async def test_kubectl_sees_the_volume_and_the_refusal(kubectl: Kubectl) -> None:
    await kubectl("run", "web", "--image=nginx")
    created = await kubectl.json("get", "pod", "web")
    (volume,) = created["spec"]["volumes"]
    assert volume == token_volume(volume["name"])
    assert created["spec"]["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "readOnly": True, "mountPath": TOKEN_PATH}
    ]
    overrides = json.dumps({"spec": {"serviceAccountName": "ghost"}})
    refused = await kubectl(
        "run", "other", "--image=nginx", f"--overrides={overrides}", check=False
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): pods "other" is forbidden: error looking up service '
        'account default/ghost: serviceaccount "ghost" not found'
    )
