"""The API server as kubernetes-asyncio sees it: the client the product itself is built on."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from sandbox.apiserver.run import Running, serve
from sandbox.apiserver.selectors import format_label_selector

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def api_client(running: Running) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(running.kubeconfig),
        client_configuration=configuration,
        persist_config=False,
    )
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
async def api(apiserver: Running) -> AsyncIterator[client.ApiClient]:
    async with api_client(apiserver) as api:
        yield api


def manifest(obj: dict[str, Any]) -> Any:
    """A plain dict as a request body: kubernetes-asyncio sends dicts as they are, though its
    signatures ask for its model classes."""
    return obj


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status object an API error carries."""
    status: dict[str, Any] = json.loads(error.body or "null")
    return status


def configmap(name: str, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data)


async def test_configmap_create_read_update_delete(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map("default", configmap("settings", a="1"))
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None

    read = await core.read_namespaced_config_map("settings", "default")
    assert read.data == {"a": "1"}
    read.data["b"] = "2"
    updated = await core.replace_namespaced_config_map("settings", "default", read)
    assert updated.data == {"a": "1", "b": "2"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    listed = await core.list_namespaced_config_map("default", label_selector="")
    assert "settings" in [item.metadata.name for item in listed.items]

    await core.delete_namespaced_config_map("settings", "default")
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_config_map("settings", "default")
    assert raised.value.status == 404


async def test_generate_name_and_already_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="run-"))
    first = await core.create_namespaced_config_map("default", body)
    second = await core.create_namespaced_config_map("default", body)
    assert first.metadata.name.startswith("run-")
    assert first.metadata.name != second.metadata.name

    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_config_map("default", configmap(first.metadata.name))
    assert raised.value.status == 409
    assert status_of(raised.value)["reason"] == "AlreadyExists"


async def test_stale_update_is_a_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", configmap("shared", v="0"))
    mine = await core.read_namespaced_config_map("shared", "default")
    theirs = await core.read_namespaced_config_map("shared", "default")
    theirs.data["v"] = "theirs"
    await core.replace_namespaced_config_map("shared", "default", theirs)

    mine.data["v"] = "mine"
    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_config_map("shared", "default", mine)
    assert raised.value.status == 409
    assert status_of(raised.value)["reason"] == "Conflict"
    stored = await core.read_namespaced_config_map("shared", "default")
    assert stored.data == {"v": "theirs"}


async def test_list_then_watch_from_its_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", configmap("before", x="0"))
    listed = await core.list_namespaced_config_map("default")
    assert [item.metadata.name for item in listed.items] == ["before", "kube-root-ca.crt"]

    seen: list[tuple[str, str, dict[str, str] | None]] = []

    async def observe() -> None:
        stream = watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=10,
        )
        async with stream:
            async for event in stream:
                item = event["object"]
                seen.append((event["type"], item.metadata.name, item.data))
                if len(seen) == 3:
                    return

    # The changes happen before the watch starts: it must replay them from the version.
    await core.create_namespaced_config_map("default", configmap("after", x="1"))
    await core.patch_namespaced_config_map("after", "default", {"data": {"x": "2"}})
    await core.delete_namespaced_config_map("before", "default")
    with anyio.fail_after(10):
        await observe()
    assert seen == [
        ("ADDED", "after", {"x": "1"}),
        ("MODIFIED", "after", {"x": "2"}),
        ("DELETED", "before", {"x": "0"}),
    ]


@pytest.fixture
async def short_history(tmp_path: Path) -> AsyncIterator[Running]:
    """A server that keeps only five changes per resource, so old versions expire quickly."""
    async with anyio.create_task_group() as tasks:
        running: Running = await tasks.start(
            lambda task_status: serve(
                tmp_path / "short", port=0, history=5, task_status=task_status
            )
        )
        yield running
        tasks.cancel_scope.cancel()


async def test_a_watch_from_an_expired_version_gets_410_and_a_relist_recovers(
    short_history: Running,
) -> None:
    async with api_client(short_history) as api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_config_map("default", configmap("counter", n="0"))
        old = (await core.list_namespaced_config_map("default")).metadata.resource_version
        for n in range(1, 11):
            await core.patch_namespaced_config_map("counter", "default", {"data": {"n": str(n)}})

        # kubernetes-asyncio raises the 410 that arrives as an ERROR event.
        async def watch_from_old() -> None:
            stream = watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=old,
                timeout_seconds=5,
            )
            async with stream:
                async for _ in stream:
                    pass

        with anyio.fail_after(10), pytest.raises(ApiException) as raised:
            await watch_from_old()
        assert raised.value.status == 410

        # What an informer does next: relist, and watch from the new list's version.
        relisted = await core.list_namespaced_config_map("default")
        assert relisted.items[0].data == {"n": "10"}
        got: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            stream = watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=relisted.metadata.resource_version,
                timeout_seconds=5,
            )
            async with stream:
                await core.patch_namespaced_config_map("counter", "default", {"data": {"n": "11"}})
                async for event in stream:
                    got.append({"type": event["type"], "data": event["object"].data})
                    break
        assert got == [{"type": "MODIFIED", "data": {"n": "11"}}]


def deployment() -> Any:
    return manifest(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "sandbox/http-echo:1",
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                            },
                            {"name": "sidecar", "image": "sandbox/tcp-echo:1"},
                        ]
                    },
                },
            },
        }
    )


async def test_strategic_merge_patch_of_a_deployments_containers(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment())
    # kubernetes-asyncio sends a dict body to a patch method as a strategic merge patch.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "sandbox/http-echo:2",
                            "env": [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}],
                        },
                        {"name": "agent", "image": "ghcr.io/telepresenceio/tel2:2"},
                    ]
                }
            }
        }
    }
    patched = await apps.patch_namespaced_deployment("web", "default", patch)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert list(containers) == ["web", "agent", "sidecar"]
    web = containers["web"]
    assert web.image == "sandbox/http-echo:2"
    assert [(e.name, e.value) for e in web.env] == [("A", "1"), ("B", "changed"), ("C", "3")]
    assert [p.container_port for p in web.ports] == [8080]  # untouched list kept
    assert containers["sidecar"].image == "sandbox/tcp-echo:1"
    assert patched.metadata.generation == 2

    # Delete one container by its key with the $patch directive.
    removed = await apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "agent", "$patch": "delete"}]}}}},
    )
    assert [c.name for c in removed.spec.template.spec.containers] == ["web", "sidecar"]


async def test_scale_subresource_and_status(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment())
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 1
    assert scale.status.selector == "app=web"  # a built-in's spec.selector, as a string
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    assert (await apps.read_namespaced_deployment("web", "default")).spec.replicas == 3

    # The status subresource changes the status only, and the main resource ignores it.
    await apps.patch_namespaced_deployment_status(
        "web", "default", {"status": {"replicas": 3, "readyReplicas": 2}}
    )
    status = (await apps.read_namespaced_deployment_status("web", "default")).status
    assert (status.replicas, status.ready_replicas) == (3, 2)


def bound_pod(name: str, *finalizers: str) -> Any:
    """A pod its node's kubelet runs: deleting it gives the kubelet a grace period."""
    return manifest(
        {
            "metadata": {"name": name, "finalizers": list(finalizers)},
            "spec": {
                "nodeName": "node-0",
                "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "main", "image": "sandbox/http-echo"}],
            },
        }
    )


async def test_a_pod_terminating_gracefully_stays_through_updates(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod("default", bound_pod("stopping"))
    await core.delete_namespaced_pod("stopping", "default", grace_period_seconds=10)
    deleting = await core.read_namespaced_pod("stopping", "default")
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.deletion_grace_period_seconds == 10

    # What the kubelet (its status) and a user (kubectl label) write meanwhile keeps it...
    deleting.status.phase = "Running"
    await core.replace_namespaced_pod_status("stopping", "default", deleting)
    await core.patch_namespaced_pod("stopping", "default", {"metadata": {"labels": {"a": "b"}}})
    kept = await core.read_namespaced_pod("stopping", "default")
    assert kept.metadata.labels == {"a": "b"}
    assert kept.status.phase == "Running"
    assert kept.metadata.deletion_timestamp == deleting.metadata.deletion_timestamp
    assert kept.metadata.deletion_grace_period_seconds == 10

    # ...until the kubelet, its containers stopped, deletes it without a grace period.
    await core.delete_namespaced_pod("stopping", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_pod("stopping", "default")
    assert raised.value.status == 404


async def test_a_terminating_pod_with_a_finalizer_goes_with_the_last_one(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod("default", bound_pod("held", "example.com/a", "example.com/b"))
    await core.delete_namespaced_pod("held", "default", grace_period_seconds=10)
    await core.delete_namespaced_pod("held", "default", grace_period_seconds=0)
    held = await core.read_namespaced_pod("held", "default")
    assert held.metadata.deletion_grace_period_seconds == 0
    assert held.metadata.finalizers == ["example.com/a", "example.com/b"]

    remove_first = [{"op": "remove", "path": "/metadata/finalizers/0"}]
    await core.patch_namespaced_pod("held", "default", remove_first)
    assert (await core.read_namespaced_pod("held", "default")).metadata.finalizers == [
        "example.com/b"
    ]
    await core.patch_namespaced_pod("held", "default", remove_first)
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_pod("held", "default")
    assert raised.value.status == 404


async def test_a_foreground_delete_still_lets_the_kubelet_stop_the_pod(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_pod("default", bound_pod("fg"))
    version = created.metadata.resource_version
    await core.delete_namespaced_pod(
        "fg", "default", grace_period_seconds=10, propagation_policy="Foreground"
    )
    # The garbage collector drops its finalizer (the pod has no dependents)...
    with anyio.fail_after(10):
        stream = watch.Watch().stream(
            core.list_namespaced_pod,
            "default",
            field_selector="metadata.name=fg",
            resource_version=version,
        )
        async with stream:
            async for event in stream:
                if not event["object"].metadata.finalizers:
                    break
    # ...but the pod stays for its grace period: its kubelet deletes it once stopped.
    kept = await core.read_namespaced_pod("fg", "default")
    assert kept.metadata.deletion_timestamp is not None
    await core.delete_namespaced_pod("fg", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_pod("fg", "default")
    assert raised.value.status == 404


@pytest.mark.parametrize("dry_run", [None, "All"])
async def test_a_cluster_ip_outside_the_range_is_refused_naming_it(
    api: client.ApiClient, dry_run: str | None
) -> None:
    core = client.CoreV1Api(api)
    body = manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "probe"},
            "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 80}]},
        }
    )
    create = (
        core.create_namespaced_service("default", body, dry_run=dry_run)
        if dry_run
        else core.create_namespaced_service("default", body)
    )
    with pytest.raises(ApiException) as raised:
        await create
    assert raised.value.status == 422
    assert "The range of valid IPs is 10.96.0.0/12" in status_of(raised.value)["message"]


async def test_label_selector_list_and_field_selector(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, tier in [("a", "front"), ("b", "back"), ("c", "front")]:
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"tier": tier}))
        await core.create_namespaced_config_map("default", body)
    front = await core.list_namespaced_config_map("default", label_selector="tier=front")
    assert [item.metadata.name for item in front.items] == ["a", "c"]
    named = await core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [item.metadata.name for item in named.items] == ["b"]
    with pytest.raises(ApiException) as raised:
        await core.list_namespaced_config_map("default", label_selector="tier in (front")
    assert raised.value.status == 400


async def test_a_collection_in_a_namespace_that_does_not_exist_is_empty(
    api: client.ApiClient,
) -> None:
    # As kube-apiserver answers: a list, not a 404 (clients look for a manager pod this way).
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_pod("ghost")
    assert listed.items == []
    assert listed.metadata.resource_version
    with pytest.raises(ApiException) as raised:
        await core.read_namespaced_pod("web", "ghost")
    assert raised.value.status == 404


async def test_paged_list_with_limit_and_continue(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for n in range(7):
        await core.create_namespaced_config_map("default", configmap(f"page-{n}"))
    names: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await core.list_namespaced_config_map("default", limit=3, _continue=token or "")
        pages += 1
        names += [item.metadata.name for item in page.items]
        token = page.metadata._continue
        if not token:
            break
    # kube-root-ca.crt is in every namespace too.
    assert names == sorted(names)
    assert [name for name in names if name.startswith("page-")] == [f"page-{n}" for n in range(7)]
    assert pages == 3


async def test_rbac_objects_and_a_limited_user(apiserver: Running, api: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    authz = client.AuthorizationV1Api(api)
    await client.CoreV1Api(api).create_namespace(manifest({"metadata": {"name": "team"}}))
    await rbac.create_namespaced_role(
        "team",
        manifest(
            {
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            }
        ),
    )
    review = manifest(
        {
            "spec": {
                "user": "developer",
                "resourceAttributes": {"namespace": "team", "verb": "list", "resource": "pods"},
            }
        }
    )
    before = await authz.create_subject_access_review(review)
    assert before.status.allowed is False
    await rbac.create_namespaced_role_binding(
        "team",
        manifest(
            {
                "metadata": {"name": "reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "reader",
                },
                "subjects": [{"kind": "User", "name": "developer"}],
            }
        ),
    )
    after = await authz.create_subject_access_review(review)
    assert after.status.allowed is True


#: kubernetes-asyncio sends a patch body as a server-side apply with this content type.
APPLY: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}


def owners(obj: Any) -> dict[tuple[str, str, str | None], Any]:
    return {
        (entry.manager, entry.operation, entry.subresource): entry.fields_v1
        for entry in obj.metadata.managed_fields or []
    }


async def test_managed_fields_record_who_wrote_what(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map("default", configmap("owned", a="1"))
    # (A real server also records ".": {} for a map the write added; this one owns leaves.)
    assert owners(created) == {
        ("OpenAPI-Generator", "Update", None): {"f:data": {"f:a": {}}},
    }
    patched = await core.patch_namespaced_config_map(
        "owned", "default", {"data": {"b": "2"}}, field_manager="tuner"
    )
    assert owners(patched) == {
        ("OpenAPI-Generator", "Update", None): {"f:data": {"f:a": {}}},
        ("tuner", "Update", None): {"f:data": {"f:b": {}}},
    }
    # An apply that changes a field another manager owns conflicts, naming it...
    config = manifest({"apiVersion": "v1", "kind": "ConfigMap", "data": {"b": "3"}})
    with pytest.raises(ApiException) as raised:
        await core.patch_namespaced_config_map(
            "owned",
            "default",
            config,
            field_manager="applier",
            **APPLY,
        )
    assert raised.value.status == 409
    assert status_of(raised.value)["message"] == (
        'Apply failed with 1 conflict: conflict with "tuner" using v1: .data.b'
    )
    # ...and force takes it over.
    forced = await core.patch_namespaced_config_map(
        "owned",
        "default",
        config,
        field_manager="applier",
        force=True,
        **APPLY,
    )
    assert forced.data == {"a": "1", "b": "3"}
    assert set(owners(forced)) == {
        ("OpenAPI-Generator", "Update", None),
        ("applier", "Apply", None),
    }
    # An update may clear managedFields with one empty entry (an empty list changes nothing).
    before = owners(forced)
    forced.metadata.managed_fields = []
    kept = await core.replace_namespaced_config_map("owned", "default", forced)
    assert owners(kept) == before
    kept.metadata.managed_fields = [client.V1ManagedFieldsEntry()]
    cleared = await core.replace_namespaced_config_map("owned", "default", kept)
    assert cleared.metadata.managed_fields is None


async def test_paged_lists_across_namespaces_and_with_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    # etcd's key order is "namespace/name" as one string: "a-b/..." sorts before "a/...".
    for namespace in ("a", "a-b"):
        await core.create_namespace(manifest({"metadata": {"name": namespace}}))
        for n in range(3):
            labels = {"parity": "even" if n % 2 == 0 else "odd"}
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{n}", labels=labels))
            await core.create_namespaced_config_map(namespace, body)

    async def pages(selector: str) -> tuple[list[str], list[int | None]]:
        seen: list[str] = []
        counts: list[int | None] = []
        token = ""
        while True:
            page = await core.list_config_map_for_all_namespaces(
                limit=2, _continue=token, label_selector=selector
            )
            seen += [f"{i.metadata.namespace}/{i.metadata.name}" for i in page.items]
            counts.append(page.metadata.remaining_item_count)
            token = page.metadata._continue
            if not token:
                return seen, counts

    everything, counts = await pages("")
    ours = [name for name in everything if not name.endswith("kube-root-ca.crt")]
    assert ours == ["a-b/c0", "a-b/c1", "a-b/c2", "a/c0", "a/c1", "a/c2"]
    assert everything == sorted(everything)
    assert counts[0] == len(everything) - 2  # counted without selectors...
    even, counts = await pages("parity=even")
    assert even == ["a-b/c0", "a-b/c2", "a/c0", "a/c2"]
    assert counts == [None, None]  # ...and not with them, as upstream


async def test_a_watch_with_bookmarks_gets_them_between_events(
    apiserver: Running, api: client.ApiClient
) -> None:
    apiserver.server.bookmark_interval = 0.05
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_config_map("default")
    kinds: list[str] = []
    with anyio.fail_after(10):
        stream = watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        )
        async with stream:
            async for event in stream:
                kinds.append(event["type"])
                if kinds == ["BOOKMARK"]:
                    await core.create_namespaced_config_map("default", configmap("marked"))
                if "ADDED" in kinds and kinds[-1] == "BOOKMARK":
                    break
    assert kinds[0] == "BOOKMARK"
    assert kinds.count("ADDED") == 1


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        (
            {
                "matchLabels": {"tier": "web"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "zone", "operator": "NotIn", "values": ["x"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "app", "operator": "Exists"},
                ],
            },
            "app,!canary,env in (dev,prod),tier=web,zone notin (x)",
        ),
        (None, ""),
    ],
)
def test_label_selectors_format_as_go_prints_them(selector: Any, text: str) -> None:
    assert format_label_selector(selector) == text
