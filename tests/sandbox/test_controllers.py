"""The workload controllers as a user sees them through kubectl and kubernetes-asyncio.

Nothing runs pods here, so each test is its own kubelet: it writes a pod's status (Running,
an IP, the Ready condition) through ``pods/status``, either for every new pod at once
(:class:`Kubelet` with ``automatic=True``) or pod by pod, to walk a rollout step by step.
What the controllers do is observed through a watch on the pods (:class:`PodWatch`), which
sees every state in order, so bounds such as "never more than replicas + maxSurge pods" are
checked at every step, not sampled.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from kubernetes_asyncio import client, watch

from sandbox.controllers import run_controllers
from tests.sandbox.test_client import api_client, manifest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anyio.abc import TaskStatus

    from sandbox.apiserver.run import Running
    from tests.sandbox.conftest import Kubectl

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]
DEADLINE = 20
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
_addresses = itertools.count(2)


@pytest.fixture
async def cluster(apiserver: Running) -> AsyncIterator[Running]:
    async with anyio.create_task_group() as tasks:
        await tasks.start(run_controllers, apiserver.server.objects)
        yield apiserver
        tasks.cancel_scope.cancel()


@pytest.fixture
async def api(cluster: Running) -> AsyncIterator[client.ApiClient]:
    async with api_client(cluster) as api:
        yield api


def present(name: str) -> Callable[[dict[str, Obj]], bool]:
    return lambda pods: name in pods


def labels(pod: Obj) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}


def is_ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


class PodWatch:
    """The pods of a namespace as a watch shows them, with checks run on every event."""

    def __init__(self, api: client.ApiClient, namespace: str = "default") -> None:
        self.core = client.CoreV1Api(api)
        self.api = api
        self.namespace = namespace
        self.pods: dict[str, Obj] = {}
        self.events: list[tuple[str, str]] = []
        self.checks: list[Callable[[dict[str, Obj]], str | None]] = []
        self.violations: list[str] = []
        self._changed = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listed = await self.core.list_namespaced_pod(self.namespace)
        for item in listed.items:
            pod = self.api.sanitize_for_serialization(item)
            self.pods[pod["metadata"]["name"]] = pod
        stream = watch.Watch().stream(
            self.core.list_namespaced_pod,
            self.namespace,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=300,
        )
        task_status.started()
        async with stream:
            async for event in stream:
                pod = self.api.sanitize_for_serialization(event["object"])
                name = pod["metadata"]["name"]
                self.events.append((event["type"], name))
                if event["type"] == "DELETED":
                    self.pods.pop(name, None)
                else:
                    self.pods[name] = pod
                for check in self.checks:
                    if (problem := check(self.pods)) is not None:
                        self.violations.append(f"after {event['type']} {name}: {problem}")
                self._changed.set()
                self._changed = anyio.Event()

    async def until(self, predicate: Callable[[dict[str, Obj]], bool]) -> dict[str, Obj]:
        """Wait until the pods satisfy ``predicate`` (the caller sets the deadline)."""
        while not predicate(self.pods):
            await self._changed.wait()
        return self.pods

    def live(self, **selector: str) -> list[Obj]:
        """Pods not being deleted whose labels include ``selector``, by name."""
        return sorted(
            (
                pod
                for pod in self.pods.values()
                if not pod["metadata"].get("deletionTimestamp")
                and all(labels(pod).get(k) == v for k, v in selector.items())
            ),
            key=lambda pod: pod["metadata"]["name"],
        )


class Kubelet:
    """What a kubelet reports: a pod Running with an IP, Ready or not."""

    def __init__(self, api: client.ApiClient, pods: PodWatch) -> None:
        self.core = client.CoreV1Api(api)
        self.pods = pods

    async def run_pod(self, name: str, *, ready: bool = True, namespace: str = "default") -> str:
        address = self.pods.pods.get(name, {}).get("status", {}).get("podIP")
        address = address or f"10.244.{next(_addresses) // 250}.{next(_addresses) % 250 + 2}"
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "phase": "Running",
            "podIP": address,
            "podIPs": [{"ip": address}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": stamp,
                }
            ],
        }
        # A merge patch: the conditions given replace those there.
        await self.core.patch_namespaced_pod_status(
            name, namespace, manifest({"status": status}), **MERGE_PATCH
        )
        return address

    async def automatic(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every new pod, Ready, as soon as it is seen."""
        started: set[str] = set()
        task_status.started()
        while True:
            waiting = [
                pod["metadata"]["name"]
                for pod in self.pods.live()
                if pod["metadata"]["uid"] not in started
            ]
            for name in waiting:
                started.add(self.pods.pods[name]["metadata"]["uid"])
                await self.run_pod(name)
            if not waiting:
                await self.pods.until(
                    lambda pods: any(p["metadata"]["uid"] not in started for p in pods.values())
                )


@pytest.fixture
async def pods(api: client.ApiClient) -> AsyncIterator[PodWatch]:
    watcher = PodWatch(api)
    async with anyio.create_task_group() as tasks:
        await tasks.start(watcher.run)
        yield watcher
        tasks.cancel_scope.cancel()
    assert watcher.violations == []


@pytest.fixture
def kubelet(api: client.ApiClient, pods: PodWatch) -> Kubelet:
    return Kubelet(api, pods)


@pytest.fixture
async def automatic_kubelet(kubelet: Kubelet) -> AsyncIterator[Kubelet]:
    async with anyio.create_task_group() as tasks:
        await tasks.start(kubelet.automatic)
        yield kubelet
        tasks.cancel_scope.cancel()


class Writes:
    """Reads through the API again after each write the API server stores, until one
    satisfies a predicate (for what the pod watch does not show)."""

    def __init__(self, running: Running) -> None:
        self._written = anyio.Event()
        running.server.objects.store.listeners.append(self._on_write)

    def _on_write(self, key: object, change: object) -> None:
        self._written.set()
        self._written = anyio.Event()

    async def until(self, read: Callable[[], Any], predicate: Callable[[Any], object]) -> Any:
        """The first result of ``read`` that satisfies ``predicate`` (the caller's deadline
        bounds the wait)."""
        while True:
            written = self._written
            if predicate(value := await read()):
                return value
            await written.wait()


@pytest.fixture
def writes(cluster: Running) -> Writes:
    return Writes(cluster)


def deployment(name: str = "web", replicas: int = 3, **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "echo",
                            "image": "sandbox/http-echo:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
            **spec,
        },
    }


async def apply(kubectl: Kubectl, obj: Obj) -> None:
    await kubectl("apply", "-f", "-", stdin=json.dumps(obj))


async def replica_sets(kubectl: Kubectl, app: str) -> list[Obj]:
    listed = await kubectl.json("get", "replicasets", "-l", f"app={app}")
    return sorted(
        listed["items"],
        key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
    )


# -- ReplicaSet ------------------------------------------------------------------------------


async def test_replicaset_keeps_its_replicas_adopts_releases_and_reports(
    writes: Writes, api: client.ApiClient, pods: PodWatch, kubelet: Kubelet
) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    body = deployment("cache", replicas=3)
    body["kind"] = "ReplicaSet"
    with anyio.fail_after(DEADLINE):
        await apps.create_namespaced_replica_set("default", manifest(body))
        await pods.until(lambda _: len(pods.live(app="cache")) == 3)
        created = pods.live(app="cache")
        for pod in created:
            name = pod["metadata"]["name"]
            assert name.startswith("cache-")
            assert len(name) == len("cache-") + 5
            (owner,) = pod["metadata"]["ownerReferences"]
            assert owner["kind"] == "ReplicaSet"
            assert owner["name"] == "cache"
            assert owner["controller"] is True
        first, second, third = (pod["metadata"]["name"] for pod in created)
        await kubelet.run_pod(first)
        await kubelet.run_pod(second)
        await kubelet.run_pod(third, ready=False)

        rs = await writes.until(
            lambda: apps.read_namespaced_replica_set("cache", "default"),
            lambda rs: rs.status.ready_replicas == 2,
        )
        assert rs.status.replicas == 3
        assert rs.status.available_replicas == 2
        assert rs.status.fully_labeled_replicas == 3
        assert rs.status.observed_generation == rs.metadata.generation

        # Scaling down removes the pod that is not ready first.
        await apps.patch_namespaced_replica_set("cache", "default", {"spec": {"replicas": 2}})
        await pods.until(lambda _: len(pods.live(app="cache")) == 2)
        assert third not in pods.pods
        rs = await writes.until(
            lambda: apps.read_namespaced_replica_set("cache", "default"),
            lambda rs: rs.status.replicas == 2 and rs.status.observed_generation == 2,
        )

        # An orphan that matches is adopted, making one too many: the unready one goes.
        orphan = {
            "metadata": {"name": "stray", "labels": {"app": "cache"}},
            "spec": {"containers": [{"name": "c", "image": "sandbox/tcp-echo"}]},
        }
        await core.create_namespaced_pod("default", manifest(orphan))
        await pods.until(lambda p: "stray" not in p and len(pods.live(app="cache")) == 2)
        assert {p["metadata"]["name"] for p in pods.live(app="cache")} == {first, second}

        # A pod relabelled out of the selector is released and replaced.
        await core.patch_namespaced_pod(first, "default", {"metadata": {"labels": {"app": "x"}}})
        await pods.until(
            lambda p: (
                not p[first]["metadata"].get("ownerReferences") and len(pods.live(app="cache")) == 2
            )
        )
        assert labels(pods.pods[first])["app"] == "x"
        replacement = {p["metadata"]["name"] for p in pods.live(app="cache")} - {second}
        assert len(replacement) == 1
        assert first not in replacement


# -- Deployment ------------------------------------------------------------------------------


async def test_deployment_makes_a_replicaset_and_pods_and_rollout_status_succeeds(
    kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=3))
        result = await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
    assert 'deployment "web" successfully rolled out' in result.stdout

    (rs,) = await replica_sets(kubectl, "web")
    template_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{template_hash}"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert rs["spec"]["selector"]["matchLabels"] == {
        "app": "web",
        "pod-template-hash": template_hash,
    }
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    live = pods.live(app="web")
    assert len(live) == 3
    assert all(labels(p)["pod-template-hash"] == template_hash for p in live)
    assert all(p["metadata"]["name"].startswith(f"web-{template_hash}-") for p in live)

    d = await kubectl.json("get", "deployment", "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    status = d["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (3, 3, 3)
    assert status["availableReplicas"] == 3
    assert status["observedGeneration"] == d["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    events = await kubectl.json("get", "events", "--field-selector", "involvedObject.name=web")
    assert f"Scaled up replica set web-{template_hash} from 0 to 3" in [
        e["message"] for e in events["items"] if e["reason"] == "ScalingReplicaSet"
    ]


def surge_bounds(
    app: str, *, most: int, fewest_available: int
) -> Callable[[dict[str, Obj]], str | None]:
    def check(pods: dict[str, Obj]) -> str | None:
        live = [
            p
            for p in pods.values()
            if labels(p).get("app") == app and not p["metadata"].get("deletionTimestamp")
        ]
        available = sum(1 for p in live if is_ready(p))
        if len(live) > most:
            return f"{len(live)} pods, more than {most}"
        if available < fewest_available:
            return f"{available} pods available, fewer than {fewest_available}"
        return None

    return check


async def test_rolling_update_keeps_within_max_surge_and_max_unavailable_at_every_step(
    kubectl: Kubectl, pods: PodWatch, kubelet: Kubelet
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=4, strategy=strategy))
        await pods.until(lambda _: len(pods.live(app="web")) == 4)
        for pod in pods.live(app="web"):
            await kubelet.run_pod(pod["metadata"]["name"])
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        (old,) = await replica_sets(kubectl, "web")
        old_hash = old["metadata"]["labels"]["pod-template-hash"]

        pods.checks.append(surge_bounds("web", most=5, fewest_available=3))
        await kubectl("set", "image", "deployment/web", "echo=sandbox/http-echo:2")

        def counts() -> tuple[int, int]:
            live = pods.live(app="web")
            old_pods = sum(1 for p in live if labels(p)["pod-template-hash"] == old_hash)
            return old_pods, len(live) - old_pods

        # Each step: (old pods, new pods) once the controllers are done with the last change.
        for expected in [(3, 2), (2, 3), (1, 4), (0, 4)]:

            def reached(_: dict[str, Obj], expected: tuple[int, int] = expected) -> bool:
                return counts() == expected

            await pods.until(reached)
            pending = [
                p["metadata"]["name"]
                for p in pods.live(app="web")
                if labels(p)["pod-template-hash"] != old_hash and not is_ready(p)
            ]
            await kubelet.run_pod(pending[0])
        result = await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
    assert "successfully rolled out" in result.stdout
    old_rs, new_rs = await replica_sets(kubectl, "web")
    assert old_rs["spec"]["replicas"] == 0
    assert new_rs["spec"]["replicas"] == 4
    assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert new_rs["spec"]["template"]["spec"]["containers"][0]["image"] == "sandbox/http-echo:2"
    d = await kubectl.json("get", "deployment", "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_rollout_restart_replaces_every_pod_through_a_new_replicaset(
    kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=3))
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        before = {p["metadata"]["name"] for p in pods.live(app="web")}
        pods.checks.append(surge_bounds("web", most=4, fewest_available=3))

        await kubectl("rollout", "restart", "deployment/web")
        result = await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        assert "successfully rolled out" in result.stdout
        after = await pods.until(lambda _: len(pods.live(app="web")) == 3)
    assert not before & set(after)
    old, new = await replica_sets(kubectl, "web")
    annotations = new["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert old["spec"]["replicas"] == 0
    history = await kubectl("rollout", "history", "deployment/web")
    assert "1 " in history.stdout
    assert "2 " in history.stdout


async def test_rollout_undo_makes_the_old_replicaset_new_again(
    kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=2))
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        await kubectl("set", "image", "deployment/web", "echo=sandbox/http-echo:2")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        await kubectl("rollout", "undo", "deployment/web")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
    found = await replica_sets(kubectl, "web")
    newest, second = reversed(found)
    annotations = newest["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "3"
    assert annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert newest["spec"]["template"]["spec"]["containers"][0]["image"] == "sandbox/http-echo:1"
    assert (newest["spec"]["replicas"], second["spec"]["replicas"]) == (2, 0)
    images = {p["spec"]["containers"][0]["image"] for p in pods.live(app="web")}
    assert images == {"sandbox/http-echo:1"}


async def test_kubectl_scale_goes_through_the_scale_subresource(
    writes: Writes, kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=2))
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        await kubectl("scale", "deployment/web", "--replicas=5")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        await pods.until(lambda _: len(pods.live(app="web")) == 5)
        await kubectl("scale", "deployment/web", "--replicas=1")
        await pods.until(lambda _: len(pods.live(app="web")) == 1)
        d = await writes.until(
            lambda: kubectl.json("get", "deployment", "web"),
            lambda d: d["status"].get("replicas") == 1,
        )
    assert d["status"]["availableReplicas"] == 1
    (rs,) = await replica_sets(kubectl, "web")
    assert rs["spec"]["replicas"] == 1
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "1"


async def test_revision_history_limit_deletes_the_oldest_replicasets(
    writes: Writes, kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=1, revisionHistoryLimit=1))
        for version in range(2, 5):
            await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
            await kubectl("set", "image", "deployment/web", f"echo=sandbox/http-echo:{version}")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        remaining = await writes.until(
            lambda: replica_sets(kubectl, "web"), lambda found: len(found) == 2
        )
    revisions = [
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in remaining
    ]
    assert revisions == ["3", "4"]


async def test_recreate_removes_every_old_pod_before_making_new_ones(
    kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=2, strategy={"type": "Recreate"}))
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")

        def one_template_at_a_time(pods: dict[str, Obj]) -> str | None:
            hashes = {labels(p).get("pod-template-hash") for p in pods.values()}
            return f"pods of {len(hashes)} templates" if len(hashes) > 1 else None

        pods.checks.append(one_template_at_a_time)
        await kubectl("set", "image", "deployment/web", "echo=sandbox/http-echo:2")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
    images = {p["spec"]["containers"][0]["image"] for p in pods.live(app="web")}
    assert images == {"sandbox/http-echo:2"}


async def test_a_paused_deployment_does_not_roll_until_resumed(
    writes: Writes, kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, deployment("web", replicas=2))
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
        await kubectl("rollout", "pause", "deployment/web")
        await writes.until(
            lambda: kubectl.json("get", "deployment", "web"),
            lambda d: any(c["reason"] == "DeploymentPaused" for c in d["status"]["conditions"]),
        )
        await kubectl("set", "image", "deployment/web", "echo=sandbox/http-echo:2")
        await writes.until(
            lambda: kubectl.json("get", "deployment", "web"),
            lambda d: d["status"]["observedGeneration"] == d["metadata"]["generation"],
        )
        assert len(await replica_sets(kubectl, "web")) == 1
        await kubectl("rollout", "resume", "deployment/web")
        await kubectl("rollout", "status", "deployment/web", "--timeout=15s")
    assert len(await replica_sets(kubectl, "web")) == 2
    assert {p["spec"]["containers"][0]["image"] for p in pods.live(app="web")} == {
        "sandbox/http-echo:2"
    }


# -- StatefulSet -----------------------------------------------------------------------------


def stateful_set(name: str = "db", replicas: int = 3, **spec: Any) -> Obj:
    body = deployment(name, replicas)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    body["spec"].update(spec)
    return body


def headless_service(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


async def test_statefulset_creates_in_order_names_pods_and_scales_down_from_the_top(
    kubectl: Kubectl, pods: PodWatch, kubelet: Kubelet
) -> None:
    def ordered(pods: dict[str, Obj]) -> str | None:
        # A pod exists only once every lower ordinal is Running and Ready.
        for ordinal in range(1, 3):
            if f"db-{ordinal}" in pods:
                lower = pods.get(f"db-{ordinal - 1}")
                if lower is None or not is_ready(lower):
                    return f"db-{ordinal} before db-{ordinal - 1} was ready"
        return None

    pods.checks.append(ordered)
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, stateful_set("db", replicas=3))
        for ordinal in range(3):
            await pods.until(present(f"db-{ordinal}"))
            await kubelet.run_pod(f"db-{ordinal}")
        result = await kubectl("rollout", "status", "statefulset/db", "--timeout=15s")
        assert "roll out complete: 3 new pods have been updated" in result.stdout
        pods.checks.remove(ordered)
        assert [e for e in pods.events if e[0] == "ADDED"] == [
            ("ADDED", "db-0"),
            ("ADDED", "db-1"),
            ("ADDED", "db-2"),
        ]
        pod = pods.pods["db-1"]
        assert pod["spec"]["hostname"] == "db-1"
        assert pod["spec"]["subdomain"] == "db"
        assert labels(pod)["statefulset.kubernetes.io/pod-name"] == "db-1"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
        sts = await kubectl.json("get", "statefulset", "db")
        status = sts["status"]
        assert (status["replicas"], status["readyReplicas"], status["currentReplicas"]) == (3, 3, 3)
        assert status["updatedReplicas"] == 3
        assert status["currentRevision"] == status["updateRevision"]
        assert labels(pod)["controller-revision-hash"] == status["updateRevision"]
        assert status["observedGeneration"] == sts["metadata"]["generation"]

        await kubectl("scale", "statefulset/db", "--replicas=1")
        await pods.until(lambda p: set(p) == {"db-0"})
    deleted = [name for kind, name in pods.events if kind == "DELETED"]
    assert deleted == ["db-2", "db-1"]


async def test_statefulset_rolling_update_replaces_the_highest_ordinal_first(
    kubectl: Kubectl, pods: PodWatch, automatic_kubelet: Kubelet
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, stateful_set("db", replicas=3))
        await kubectl("rollout", "status", "statefulset/db", "--timeout=15s")
        pods.events.clear()
        await kubectl("set", "image", "statefulset/db", "echo=sandbox/http-echo:2")
        await pods.until(
            lambda p: (
                len(p) == 3
                and all(
                    q["spec"]["containers"][0]["image"] == "sandbox/http-echo:2" for q in p.values()
                )
            )
        )
        await kubectl("rollout", "status", "statefulset/db", "--timeout=15s")
    deleted = [name for kind, name in pods.events if kind == "DELETED"]
    assert deleted == ["db-2", "db-1", "db-0"]
    sts = await kubectl.json("get", "statefulset", "db")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]


async def test_parallel_statefulset_creates_all_pods_at_once(
    kubectl: Kubectl, pods: PodWatch
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, stateful_set("db", replicas=3, podManagementPolicy="Parallel"))
        await pods.until(lambda p: set(p) == {"db-0", "db-1", "db-2"})
    assert not any(is_ready(p) for p in pods.pods.values())


# -- Endpoints and EndpointSlices -----------------------------------------------------------


def pod_manifest(name: str, app: str, port_name: str = "web", port: int = 8080) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "sandbox/http-echo",
                    "ports": [{"name": port_name, "containerPort": port}],
                }
            ]
        },
    }


async def test_endpoints_and_slices_follow_readiness_ports_and_deletion(
    writes: Writes, api: client.ApiClient, pods: PodWatch, kubelet: Kubelet
) -> None:
    core = client.CoreV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    service = {
        "metadata": {"name": "echo", "labels": {"tier": "front"}},
        "spec": {
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    }

    async def endpoints() -> Obj:
        read = await core.read_namespaced_endpoints("echo", "default")
        return dict(api.sanitize_for_serialization(read))

    async def slices() -> list[Obj]:
        listed = await discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=echo"
        )
        return [api.sanitize_for_serialization(s) for s in listed.items]

    def addresses(ep: Obj, field: str = "addresses") -> list[str]:
        return sorted(a["ip"] for s in ep.get("subsets") or [] for a in s.get(field) or [])

    with anyio.fail_after(DEADLINE):
        await core.create_namespaced_service("default", manifest(service))
        await core.create_namespaced_pod("default", manifest(pod_manifest("a", "echo", port=8080)))
        await core.create_namespaced_pod("default", manifest(pod_manifest("b", "echo", port=9090)))
        # A pod without the named port is left out of that port's endpoints.
        await core.create_namespaced_pod(
            "default", manifest(pod_manifest("c", "echo", port_name="other"))
        )
        await pods.until(lambda p: {"a", "b", "c"} <= set(p))
        ip_a = await kubelet.run_pod("a")
        ip_b = await kubelet.run_pod("b", ready=False)
        ip_c = await kubelet.run_pod("c")

        ep = await writes.until(
            endpoints, lambda ep: addresses(ep) and addresses(ep, "notReadyAddresses")
        )
        assert addresses(ep) == [ip_a]
        assert addresses(ep, "notReadyAddresses") == [ip_b]
        ports = {
            a["ip"]: s["ports"]
            for s in ep["subsets"]
            for a in s.get("addresses", []) + s.get("notReadyAddresses", [])
        }
        assert ports[ip_a] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        assert ports[ip_b] == [{"name": "http", "port": 9090, "protocol": "TCP"}]
        assert ep["metadata"]["labels"] == {"tier": "front"}

        found = await writes.until(
            slices, lambda found: sum(len(s["endpoints"] or []) for s in found) == 3
        )
        for endpoint_slice in found:
            metadata = endpoint_slice["metadata"]
            assert metadata["name"].startswith("echo-")
            assert metadata["labels"]["endpointslice.kubernetes.io/managed-by"] == (
                "endpointslice-controller.k8s.io"
            )
            assert metadata["ownerReferences"][0]["kind"] == "Service"
            assert endpoint_slice["addressType"] == "IPv4"
        by_ip = {
            e["addresses"][0]: (e["conditions"], s["ports"]) for s in found for e in s["endpoints"]
        }
        assert by_ip[ip_a][0] == {"ready": True, "serving": True, "terminating": False}
        assert by_ip[ip_b][0] == {"ready": False, "serving": False, "terminating": False}
        assert by_ip[ip_a][1] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        assert by_ip[ip_b][1] == [{"name": "http", "port": 9090, "protocol": "TCP"}]
        assert by_ip[ip_c][1] in ([], None)

        # Readiness moves an address; deletion removes it.
        await kubelet.run_pod("b", ready=True)
        ep = await writes.until(endpoints, lambda ep: addresses(ep) == sorted([ip_a, ip_b]))
        await core.delete_namespaced_pod("a", "default")
        ep = await writes.until(endpoints, lambda ep: addresses(ep) == [ip_b])
        assert addresses(ep, "notReadyAddresses") == []
        await writes.until(
            slices,
            lambda found: (
                sorted(e["addresses"][0] for s in found for e in s["endpoints"] or [])
                == sorted([ip_b, ip_c])
            ),
        )

        # The Service goes, and its Endpoints and slices with it.
        await core.delete_namespaced_service("echo", "default")
        await writes.until(slices, lambda found: found == [])
        listed = await writes.until(
            lambda: core.list_namespaced_endpoints("default"),
            lambda listed: "echo" not in [e.metadata.name for e in listed.items],
        )
        assert "echo" not in [e.metadata.name for e in listed.items]


async def test_a_service_without_selector_keeps_the_endpoints_someone_wrote(
    writes: Writes, api: client.ApiClient, pods: PodWatch, kubelet: Kubelet
) -> None:
    core = client.CoreV1Api(api)
    manual = {"metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}}
    written = {
        "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}],
    }
    with anyio.fail_after(DEADLINE):
        await core.create_namespaced_service("default", manifest(manual))
        await core.create_namespaced_endpoints("default", manifest(written))
        # A Service with a selector queued after it: once its endpoints exist, the
        # controllers have been past the first one.
        marker = {
            "metadata": {"name": "marker"},
            "spec": {"selector": {"app": "marker"}, "ports": [{"port": 80}]},
        }
        await core.create_namespaced_service("default", manifest(marker))
        await writes.until(
            lambda: core.list_namespaced_endpoints("default"),
            lambda listed: "marker" in [e.metadata.name for e in listed.items],
        )
    kept = await core.read_namespaced_endpoints("external", "default")
    assert [a.ip for a in kept.subsets[0].addresses] == ["192.0.2.10"]
    slices = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=external"
    )
    assert slices.items == []


async def test_headless_service_endpoints_name_statefulset_pods(
    writes: Writes,
    kubectl: Kubectl,
    api: client.ApiClient,
    pods: PodWatch,
    automatic_kubelet: Kubelet,
) -> None:
    with anyio.fail_after(DEADLINE):
        await apply(kubectl, headless_service("db"))
        await apply(kubectl, stateful_set("db", replicas=2))
        await kubectl("rollout", "status", "statefulset/db", "--timeout=15s")
        ep = await writes.until(
            lambda: kubectl.json("get", "endpoints", "db"),
            lambda ep: (
                len([a for s in ep.get("subsets") or [] for a in s.get("addresses", [])]) == 2
            ),
        )
        slices = await writes.until(
            lambda: kubectl.json("get", "endpointslices", "-l", "kubernetes.io/service-name=db"),
            lambda listed: sum(len(s.get("endpoints") or []) for s in listed["items"]) == 2,
        )
    hostnames = sorted(a["hostname"] for s in ep["subsets"] for a in s["addresses"])
    assert hostnames == ["db-0", "db-1"]
    assert ep["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert sorted(e["hostname"] for s in slices["items"] for e in s["endpoints"]) == [
        "db-0",
        "db-1",
    ]
    assert {p["port"] for s in ep["subsets"] for p in s["ports"]} == {8080}
