"""The API server as kubectl 1.32 sees it, unchanged and without extra flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
import yaml

if TYPE_CHECKING:
    from sandbox.apiserver.run import Running
    from tests.sandbox.conftest import Kubectl

pytestmark = pytest.mark.anyio

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
"""
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: sandbox/http-echo:1
          ports: [{containerPort: 8080}]
          env: [{name: GREETING, value: hello}]
        - name: sidecar
          image: sandbox/tcp-echo:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  mode: fast
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
  namespace: shop
stringData:
  password: s3cret
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
  namespace: shop
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
"""


def configmap(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: '1'\n"


async def test_version_and_api_resources(kubectl: Kubectl) -> None:
    version = json.loads((await kubectl("version", "-o", "json")).stdout)
    assert version["serverVersion"]["major"] == "1"
    assert version["serverVersion"]["minor"] == "32"
    resources = (await kubectl("api-resources")).stdout
    for line in ("deployments", "customresourcedefinitions", "selfsubjectaccessreviews", "leases"):
        assert line in resources
    names = (await kubectl("api-resources", "--namespaced=false", "-o", "name")).stdout.split()
    assert "namespaces" in names
    assert "pods" not in names


async def test_namespace_apply_get_and_reapply(kubectl: Kubectl) -> None:
    created = await kubectl("apply", "-f", "-", stdin=NAMESPACE)
    assert "namespace/shop created" in created.stdout
    applied = await kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert applied.stderr == ""
    for line in (
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
        "secret/credentials created",
        "role.rbac.authorization.k8s.io/reader created",
    ):
        assert line in applied.stdout
    deployment = await kubectl.json("get", "deployment", "web", "-n", "shop")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["generation"] == 1
    assert (
        "kubectl.kubernetes.io/last-applied-configuration" in deployment["metadata"]["annotations"]
    )
    service = yaml.safe_load(
        (await kubectl("get", "svc", "web", "-n", "shop", "-o", "yaml")).stdout
    )
    assert service["spec"]["clusterIP"].startswith("10.")
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    secret = await kubectl.json("get", "secret", "credentials", "-n", "shop")
    assert secret["data"] == {"password": "czNjcmV0"}
    table = (await kubectl("get", "deployments", "-n", "shop")).stdout
    assert table.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]

    # Apply again with one container changed: a strategic merge patch keeps the other.
    changed = MANIFEST.replace("sandbox/http-echo:1", "sandbox/http-echo:2")
    reapplied = await kubectl("apply", "-f", "-", stdin=changed)
    assert "deployment.apps/web configured" in reapplied.stdout
    assert "configmap/settings unchanged" in reapplied.stdout
    deployment = await kubectl.json("get", "deployment", "web", "-n", "shop")
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == ["sandbox/http-echo:2", "sandbox/tcp-echo:1"]
    assert deployment["metadata"]["generation"] == 2


async def test_label_annotate_and_the_three_patch_types(kubectl: Kubectl) -> None:
    await kubectl(
        "apply", "-f", "-", stdin=MANIFEST.replace("namespace: shop", "namespace: default")
    )
    await kubectl("label", "configmap", "settings", "tier=backend")
    await kubectl("annotate", "configmap", "settings", "owner=team-a")
    config = await kubectl.json("get", "configmap", "settings")
    assert config["metadata"]["labels"] == {"tier": "backend"}
    assert config["metadata"]["annotations"]["owner"] == "team-a"
    await kubectl("label", "configmap", "settings", "tier-")
    assert "labels" not in (await kubectl.json("get", "configmap", "settings"))["metadata"] or (
        (await kubectl.json("get", "configmap", "settings"))["metadata"]["labels"] == {}
    )

    await kubectl(
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"x:9"}]}}}}',
    )
    containers = (await kubectl.json("get", "deployment", "web"))["spec"]["template"]["spec"][
        "containers"
    ]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("web", "sandbox/http-echo:1"),
        ("sidecar", "x:9"),
    ]
    await kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":5}}')
    assert (await kubectl.json("get", "deployment", "web"))["spec"]["replicas"] == 5
    await kubectl(
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/replicas","value":1}]',
    )
    assert (await kubectl.json("get", "deployment", "web"))["spec"]["replicas"] == 1
    failed = await kubectl(
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        '[{"op":"test","path":"/spec/replicas","value":7}]',
        check=False,
    )
    assert failed.returncode != 0
    assert "/spec/replicas" in failed.stderr


async def test_errors_as_kubectl_prints_them(kubectl: Kubectl) -> None:
    missing = await kubectl("get", "configmap", "nope", check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): configmaps "nope" not found' in missing.stderr
    await kubectl("apply", "-f", "-", stdin=configmap("twice"))
    again = await kubectl("create", "-f", "-", stdin=configmap("twice"), check=False)
    assert "Error from server (AlreadyExists)" in again.stderr
    assert 'configmaps "twice" already exists' in again.stderr
    invalid = await kubectl("apply", "-f", "-", stdin=configmap("Bad_Name"), check=False)
    assert "is invalid" in invalid.stderr
    assert "metadata.name" in invalid.stderr


async def test_delete_and_watch(kubectl: Kubectl, apiserver: Running) -> None:
    await kubectl("apply", "-f", "-", stdin=configmap("watched"))
    watching = anyio.Event()
    apiserver.server.store.watch_listeners.append(
        lambda watcher: watching.set() if watcher.key == ("", "configmaps") else None
    )
    async with anyio.create_task_group() as tasks:
        output: list[str] = []

        async def watch() -> None:
            result = await kubectl(
                "get", "configmaps", "--watch", "--request-timeout=3s", "-o", "name", check=False
            )
            output.append(result.stdout)

        tasks.start_soon(watch)
        await watching.wait()
        await kubectl("apply", "-f", "-", stdin=configmap("later"))
        deleted = await kubectl("delete", "configmap", "watched")
        assert 'configmap "watched" deleted' in deleted.stdout
    seen = output[0].split()
    assert "configmap/watched" in seen
    assert "configmap/later" in seen
    gone = await kubectl("get", "configmap", "watched", check=False)
    assert "NotFound" in gone.stderr


ROLLOUTS_CRD = Path(__file__).parent / "manifests" / "rollouts-crd.yaml"
ROLLOUT = """\
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: web, image: sandbox/http-echo:1}]
  strategy:
    canary:
      maxSurge: 25%
      steps: [{setWeight: 20}, {pause: {duration: 10s}}]
"""


async def test_argo_rollouts_crd_installs_and_serves_rollouts(kubectl: Kubectl) -> None:
    installed = await kubectl("apply", "-f", str(ROLLOUTS_CRD))
    assert "customresourcedefinition.apiextensions.k8s.io/rollouts.argoproj.io created" in (
        installed.stdout
    )
    await kubectl(
        "wait", "--for=condition=Established", "crd/rollouts.argoproj.io", "--timeout=10s"
    )
    # kubectl refreshes its discovery cache on the unknown kind, as against a real cluster.
    created = await kubectl("apply", "-f", "-", stdin=ROLLOUT)
    assert "rollout.argoproj.io/web created" in created.stdout
    table = (await kubectl("get", "ro")).stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "2"]

    # The scale subresource follows the CRD's own paths (.status.HPAReplicas).
    scaled = await kubectl("scale", "rollout", "web", "--replicas=3")
    assert "rollout.argoproj.io/web scaled" in scaled.stdout
    rollout = await kubectl.json("get", "rollouts.argoproj.io", "web")
    assert rollout["spec"]["replicas"] == 3
    assert rollout["spec"]["strategy"]["canary"]["maxSurge"] == "25%"
    assert rollout["metadata"]["generation"] == 2
    await kubectl(
        "patch",
        "rollout",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"HPAReplicas":3,"replicas":3,"selector":"app=web"}}',
    )
    raw = await kubectl(
        "get", "--raw", "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web/scale"
    )
    scale = json.loads(raw.stdout)
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 3, "selector": "app=web"}
    # The selector is read from the CRD's labelSelectorPath only, never from spec.selector.
    await kubectl(
        "patch",
        "rollout",
        "web",
        "--subresource=status",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/status/selector"}]',
    )
    raw = await kubectl(
        "get", "--raw", "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web/scale"
    )
    assert "selector" not in json.loads(raw.stdout)["status"]

    # A custom resource has no strategic merge patch, as on a real server.
    refused = await kubectl(
        "patch", "rollout", "web", "--type=strategic", "-p", '{"spec":{"replicas":1}}', check=False
    )
    assert refused.returncode != 0
    assert "strategic-merge-patch+json is not supported" in refused.stderr

    deleted = await kubectl("delete", "crd", "rollouts.argoproj.io")
    assert "deleted" in deleted.stdout
    gone = await kubectl("get", "rollouts.argoproj.io", check=False)
    assert gone.returncode != 0
    # Its objects went with it: installing the CRD again starts empty.
    await kubectl("apply", "-f", str(ROLLOUTS_CRD))
    await kubectl(
        "wait", "--for=condition=Established", "crd/rollouts.argoproj.io", "--timeout=10s"
    )
    assert (await kubectl.json("get", "rollouts.argoproj.io"))["items"] == []
