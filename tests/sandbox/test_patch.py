"""The four PATCH types of the sandbox API server (sandbox/apiserver/patch.py).

Expected results come from Kubernetes' own documentation and tests: the "Update API Objects in
Place Using kubectl patch" task, the strategic-merge-patch and preserve-order design documents,
the test tables of k8s.io/apimachinery/pkg/util/strategicpatch, and the server-side apply
documentation (managedFields format, conflict messages).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from sandbox.apiserver.patch import (
    PatchError,
    json_patch,
    merge_patch,
    server_side_apply,
    strategic_merge_patch,
    supports_strategic_merge,
)

NOW = "2024-05-01T10:00:00Z"
LATER = "2024-05-01T11:00:00Z"


def deployment() -> dict[str, Any]:
    """The patch-demo Deployment of the kubectl patch task, with a few more fields."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "patch-demo",
            "namespace": "default",
            "labels": {"app": "nginx", "tier": "web"},
            "finalizers": ["example.com/a", "example.com/b"],
            "resourceVersion": "7",
            "uid": "1111",
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [
                        {
                            "name": "patch-demo-ctr",
                            "image": "nginx",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80}, {"containerPort": 443}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        },
                        {"name": "sidecar", "image": "busybox"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [
                        {"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}
                    ],
                },
            },
        },
        "status": {"conditions": [{"type": "Available", "status": "True"}]},
    }


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod_spec(obj)["containers"] if c["name"] == name)
    return found


def names(items: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


def smp(obj: dict[str, Any], patch: Any, kind: str = "Deployment") -> dict[str, Any]:
    group = {"Deployment": "apps", "CronJob": "batch"}.get(kind, "")
    return strategic_merge_patch(obj, patch, group=group, kind=kind)


def directive_keys(value: Any) -> list[str]:
    """Every key starting with "$" anywhere in a value."""
    if isinstance(value, dict):
        own = [key for key in value if key.startswith("$")]
        return own + [k for item in value.values() for k in directive_keys(item)]
    if isinstance(value, list):
        return [k for item in value for k in directive_keys(item)]
    return []


# --- JSON patch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operations", "check"),
    [
        pytest.param(
            [{"op": "add", "path": "/metadata/labels/env", "value": "prod"}],
            lambda o: o["metadata"]["labels"]["env"] == "prod",
            id="add",
        ),
        pytest.param(
            [{"op": "remove", "path": "/metadata/labels/tier"}],
            lambda o: "tier" not in o["metadata"]["labels"],
            id="remove",
        ),
        pytest.param(
            [{"op": "replace", "path": "/spec/replicas", "value": 5}],
            lambda o: o["spec"]["replicas"] == 5,
            id="replace",
        ),
        pytest.param(
            [
                {"op": "test", "path": "/spec/replicas", "value": 2},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
            ],
            lambda o: o["spec"]["replicas"] == 3,
            id="test-then-replace",
        ),
        pytest.param(
            [{"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "x"}}],
            lambda o: names(pod_spec(o)["containers"]) == ["patch-demo-ctr", "sidecar", "x"],
            id="append-to-list",
        ),
        pytest.param(
            [{"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/layer"}],
            lambda o: o["metadata"]["labels"] == {"app": "nginx", "layer": "web"},
            id="move",
        ),
        pytest.param([], lambda o: o == deployment(), id="empty"),
    ],
)
def test_json_patch_applies_operations(operations: list[dict[str, Any]], check: Any) -> None:
    obj = deployment()
    result = json_patch(obj, operations)
    assert check(result)
    assert obj == deployment()  # the input is untouched


@pytest.mark.parametrize(
    "operations",
    [
        pytest.param([{"op": "test", "path": "/spec/replicas", "value": 3}], id="test-fails"),
        pytest.param([{"op": "test", "path": "/spec/nope", "value": 3}], id="test-missing"),
        pytest.param([{"op": "remove", "path": "/metadata/labels/nope"}], id="remove-missing"),
        pytest.param([{"op": "replace", "path": "/spec/nope", "value": 1}], id="replace-missing"),
        pytest.param([{"op": "add", "path": "/spec/a/b", "value": 1}], id="add-under-missing"),
        pytest.param([{"op": "add", "path": "spec", "value": 1}], id="pointer-without-slash"),
        pytest.param([{"op": "frobnicate", "path": "/spec"}], id="unknown-op"),
        pytest.param([{"op": "add", "path": "/spec/x"}], id="add-without-value"),
        pytest.param([{"op": "replace", "path": "", "value": [1]}], id="root-not-an-object"),
    ],
)
def test_json_patch_that_cannot_be_applied_is_422(operations: list[dict[str, Any]]) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(deployment(), operations)
    assert caught.value.status == 422
    assert caught.value.reason == "Invalid"


def test_json_patch_failed_test_names_the_path() -> None:
    with pytest.raises(PatchError, match="testing value /spec/replicas failed"):
        json_patch(deployment(), [{"op": "test", "path": "/spec/replicas", "value": 9}])


@pytest.mark.parametrize(
    "body",
    [{"op": "add", "path": "/a", "value": 1}, ["add"], "[]", None, [[{"op": "add"}]]],
    ids=["object", "strings", "string", "null", "nested-list"],
)
def test_json_patch_body_that_is_not_a_list_of_operations_is_400(body: Any) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(deployment(), body)
    assert caught.value.status == 400
    assert caught.value.causes == []


# --- JSON merge patch ------------------------------------------------------------------------


def test_merge_patch_null_deletes_and_maps_merge() -> None:
    obj = deployment()
    result = merge_patch(obj, {"metadata": {"labels": {"tier": None, "env": "prod"}}})
    assert result["metadata"]["labels"] == {"app": "nginx", "env": "prod"}
    assert result["metadata"]["name"] == "patch-demo"
    assert obj == deployment()


def test_merge_patch_replaces_lists_whole() -> None:
    # RFC 7386 has no list merging: the containers list becomes the patch's one element.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}}
    result = merge_patch(deployment(), patch)
    assert pod_spec(result)["containers"] == [{"name": "only", "image": "x"}]
    assert pod_spec(result)["tolerations"] == pod_spec(deployment())["tolerations"]


def test_merge_patch_scalar_replaces_map_and_map_replaces_scalar() -> None:
    result = merge_patch(deployment(), {"spec": {"strategy": "Recreate", "replicas": {"n": 1}}})
    assert result["spec"]["strategy"] == "Recreate"
    assert result["spec"]["replicas"] == {"n": 1}


def test_merge_patch_creates_missing_maps_and_drops_their_nulls() -> None:
    result = merge_patch(
        deployment(), {"spec": {"template": {"spec": {"nodeSelector": {"a": "b", "c": None}}}}}
    )
    assert pod_spec(result)["nodeSelector"] == {"a": "b"}


def test_merge_patch_empty_is_an_identical_copy() -> None:
    obj = deployment()
    result = merge_patch(obj, {})
    assert result == obj
    assert result is not obj
    result["metadata"]["labels"]["x"] = "y"
    assert "x" not in obj["metadata"]["labels"]


def test_merge_patch_null_for_a_missing_key_is_a_no_op() -> None:
    assert merge_patch(deployment(), {"spec": {"paused": None}}) == deployment()


@pytest.mark.parametrize("body", [[1, 2], "x", None, 3], ids=["list", "string", "null", "number"])
def test_merge_patch_body_that_is_not_an_object_is_400(body: Any) -> None:
    with pytest.raises(PatchError) as caught:
        merge_patch(deployment(), body)
    assert caught.value.status == 400


# --- Strategic merge patch: which kinds ------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kind", "supported"),
    [
        ("", "Pod", True),
        ("", "ConfigMap", True),
        ("", "Node", True),
        ("apps", "Deployment", True),
        ("batch", "CronJob", True),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding", True),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", True),
        ("apiextensions.k8s.io", "CustomResourceDefinition", True),
        ("networking.k8s.io", "NetworkPolicy", True),
        ("getambassador.io", "Mapping", False),
        ("example.com", "Widget", False),
        ("", "Deployment", False),  # the right kind in the wrong group
    ],
)
def test_supports_strategic_merge(group: str, kind: str, supported: bool) -> None:
    assert supports_strategic_merge(group, kind) is supported


def test_strategic_merge_patch_of_a_custom_resource_is_415() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(widget, {"spec": {"a": 1}}, group="example.com", kind="Widget")
    assert caught.value.status == 415
    assert caught.value.reason == "UnsupportedMediaType"
    # The real server lists the patch types a custom resource does accept.
    assert "application/merge-patch+json" in caught.value.message
    assert "application/json-patch+json" in caught.value.message


# --- Strategic merge patch: merging ----------------------------------------------------------


def test_smp_adds_a_container_by_name_as_in_the_kubectl_patch_task() -> None:
    # The task's output lists patch-demo-ctr-2 (redis) before patch-demo-ctr (nginx): an item
    # the live list lacks is placed ahead of the live items the patch does not mention.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "redis"}]}}}}
    result = smp(deployment(), patch)
    assert names(pod_spec(result)["containers"]) == ["new", "patch-demo-ctr", "sidecar"]
    assert container(result, "patch-demo-ctr") == container(deployment(), "patch-demo-ctr")


def test_smp_changes_one_containers_image_and_keeps_the_other() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "b:2"}]}}}}
    result = smp(deployment(), patch)
    assert container(result, "sidecar") == {"name": "sidecar", "image": "b:2"}
    assert container(result, "patch-demo-ctr") == container(deployment(), "patch-demo-ctr")
    assert names(pod_spec(result)["containers"]) == ["patch-demo-ctr", "sidecar"]


def test_smp_merges_env_by_name() -> None:
    env = [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr", "env": env}]}}}
    }
    result = smp(deployment(), patch)
    assert container(result, "patch-demo-ctr")["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
        {"name": "C", "value": "3"},
    ]


def test_smp_merges_ports_by_container_port() -> None:
    ports = [{"containerPort": 443, "name": "https"}, {"containerPort": 8080}]
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr", "ports": ports}]}}}
    }
    result = smp(deployment(), patch)
    assert container(result, "patch-demo-ctr")["ports"] == [
        {"containerPort": 80},
        {"containerPort": 443, "name": "https"},
        {"containerPort": 8080},
    ]


def test_smp_merges_volumes_by_name_and_volume_mounts_by_mount_path() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}],
                    "containers": [
                        {
                            "name": "patch-demo-ctr",
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data", "readOnly": True},
                                {"name": "cache", "mountPath": "/cache"},
                            ],
                        }
                    ],
                }
            }
        }
    }
    result = smp(deployment(), patch)
    assert names(pod_spec(result)["volumes"]) == ["cache", "data"]
    assert container(result, "patch-demo-ctr")["volumeMounts"] == [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cache", "mountPath": "/cache"},
    ]


def test_smp_deletes_a_container_with_patch_delete() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}
    }
    result = smp(deployment(), patch)
    assert names(pod_spec(result)["containers"]) == ["patch-demo-ctr"]


def test_smp_delete_directive_for_a_missing_list_adds_nothing() -> None:
    patch = {
        "spec": {"template": {"spec": {"initContainers": [{"name": "x", "$patch": "delete"}]}}}
    }
    result = smp(deployment(), patch)
    assert pod_spec(result)["initContainers"] == []
    assert directive_keys(result) == []


def test_smp_set_element_order_reorders_containers_as_kubectl_sends_it() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "sidecar"},
                        {"name": "patch-demo-ctr"},
                    ],
                    "containers": [{"name": "sidecar", "image": "busybox:2"}],
                }
            }
        }
    }
    result = smp(deployment(), patch)
    assert names(pod_spec(result)["containers"]) == ["sidecar", "patch-demo-ctr"]
    assert container(result, "sidecar")["image"] == "busybox:2"
    assert directive_keys(result) == []


def test_smp_set_element_order_with_additions_follows_the_directive() -> None:
    # strategicpatch test "merge lists of maps": current [1, 2], order [4, 1, 2, 3].
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "1"}, {"name": "2"}]}}
    patch = {
        "spec": {
            "$setElementOrder/containers": [
                {"name": "4"},
                {"name": "1"},
                {"name": "2"},
                {"name": "3"},
            ],
            "containers": [{"name": "4", "image": "four"}, {"name": "3", "image": "three"}],
        }
    }
    result = smp(pod, patch, kind="Pod")
    assert result["spec"]["containers"] == [
        {"name": "4", "image": "four"},
        {"name": "1"},
        {"name": "2"},
        {"name": "3", "image": "three"},
    ]


def test_smp_set_element_order_that_contradicts_the_patch_is_400() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "1"}, {"name": "3"}]}}
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "1"}, {"name": "3"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}],
        }
    }
    with pytest.raises(PatchError, match="doesn't match") as caught:
        smp(pod, patch, kind="Pod")
    assert caught.value.status == 400


def test_smp_without_order_directive_keeps_the_patch_order_among_patch_items() -> None:
    # The preserve-order design document: live [B, C, A], patch [A', B', D] -> [C, A', B', D].
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "env": [{"name": n} for n in "BCA"]}]},
    }
    env = [{"name": "A", "value": "a"}, {"name": "B", "value": "b"}, {"name": "D"}]
    result = smp(pod, {"spec": {"containers": [{"name": "c", "env": env}]}}, kind="Pod")
    assert result["spec"]["containers"][0]["env"] == [
        {"name": "C"},
        {"name": "A", "value": "a"},
        {"name": "B", "value": "b"},
        {"name": "D"},
    ]


def test_smp_retain_keys_clears_the_other_strategy_fields() -> None:
    # What kubectl apply sends when a Deployment's strategy switches to Recreate.
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = smp(deployment(), patch)
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_retain_keys_must_list_every_field_the_patch_sets() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}
    with pytest.raises(PatchError, match="retainKeys") as caught:
        smp(deployment(), patch)
    assert caught.value.status == 400


def test_smp_retain_keys_on_a_volume_switches_its_source() -> None:
    volume = {"name": "data", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}
    result = smp(deployment(), {"spec": {"template": {"spec": {"volumes": [volume]}}}})
    assert pod_spec(result)["volumes"] == [{"name": "data", "configMap": {"name": "cm"}}]


def test_smp_delete_from_primitive_list_removes_a_finalizer() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}}
    result = smp(deployment(), patch)
    assert result["metadata"]["finalizers"] == ["example.com/b"]
    assert directive_keys(result) == []


def test_smp_delete_from_primitive_list_with_order_as_in_the_strategicpatch_tests() -> None:
    # "delete items in lists of scalars": current [1, 2, 3, 4], order [1, 2], delete [3].
    obj = {"metadata": {"name": "x", "finalizers": ["1", "2", "3", "4"]}}
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["1", "2"],
            "$deleteFromPrimitiveList/finalizers": ["3"],
        }
    }
    result = smp(obj, patch, kind="ConfigMap")
    assert result["metadata"]["finalizers"] == ["1", "2", "4"]


def test_smp_finalizers_are_a_union() -> None:
    # "unique scalars when merging lists": [1, 2] patched with [2, 3] is [1, 2, 3].
    patch = {"metadata": {"finalizers": ["example.com/b", "example.com/c"]}}
    result = smp(deployment(), patch)
    assert result["metadata"]["finalizers"] == ["example.com/a", "example.com/b", "example.com/c"]


def test_smp_null_deletes_a_label() -> None:
    result = smp(deployment(), {"metadata": {"labels": {"tier": None}}})
    assert result["metadata"]["labels"] == {"app": "nginx"}


def test_smp_null_for_a_missing_key_is_dropped() -> None:
    result = smp(deployment(), {"metadata": {"annotations": {"a": None, "b": "1"}}})
    assert result["metadata"]["annotations"] == {"b": "1"}


@pytest.mark.parametrize(
    ("patch", "path", "expected"),
    [
        pytest.param(
            {
                "spec": {
                    "template": {"spec": {"tolerations": [{"key": "disktype", "value": "ssd"}]}}
                }
            },
            lambda o: pod_spec(o)["tolerations"],
            [{"key": "disktype", "value": "ssd"}],
            id="tolerations",
        ),
        pytest.param(
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "patch-demo-ctr", "args": ["--c"]}]}
                    }
                }
            },
            lambda o: container(o, "patch-demo-ctr")["args"],
            ["--c"],
            id="args",
        ),
        pytest.param(
            {"spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}},
            lambda o: o["spec"]["selector"],
            {
                "matchLabels": {"app": "nginx"},
                "matchExpressions": [{"key": "k", "operator": "Exists"}],
            },
            id="untagged-map-merges",
        ),
    ],
)
def test_smp_lists_without_a_merge_strategy_are_replaced(
    patch: dict[str, Any], path: Any, expected: Any
) -> None:
    assert path(smp(deployment(), patch)) == expected


def test_smp_node_taints_are_atomic() -> None:
    node = {
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}], "podCIDRs": ["10.0.0.0/24"]},
    }
    patch = {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}], "podCIDRs": ["fd00::/64"]}}
    result = smp(node, patch, kind="Node")
    assert result["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
    # podCIDRs merges (a primitive list): the new value goes ahead of the untouched live one.
    assert result["spec"]["podCIDRs"] == ["fd00::/64", "10.0.0.0/24"]


def test_smp_service_ports_merge_by_port() -> None:
    service = {
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]},
    }
    patch = {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}
    result = smp(service, patch, kind="Service")
    assert result["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_smp_pod_status_conditions_merge_by_type() -> None:
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
            ],
        },
    }
    patch = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    result = smp(pod, patch, kind="Pod")
    assert result["status"] == {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    }


def test_smp_deployment_status_conditions_merge_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}
    result = smp(deployment(), patch)
    assert names(result["status"]["conditions"], "type") == ["Progressing", "Available"]


def test_smp_owner_references_merge_by_uid() -> None:
    obj = deployment()
    obj["metadata"]["ownerReferences"] = [{"uid": "u1", "kind": "A", "name": "a"}]
    patch = {
        "metadata": {
            "ownerReferences": [{"uid": "u1", "controller": True}, {"uid": "u2", "name": "b"}]
        }
    }
    result = smp(obj, patch)
    assert result["metadata"]["ownerReferences"] == [
        {"uid": "u1", "kind": "A", "name": "a", "controller": True},
        {"uid": "u2", "name": "b"},
    ]


def test_smp_cron_job_template_containers_merge_by_name() -> None:
    cron = {
        "metadata": {"name": "c"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}
                    }
                }
            },
        },
    }
    template = {"spec": {"containers": [{"name": "a", "image": "2"}]}}
    result = smp(cron, {"spec": {"jobTemplate": {"spec": {"template": template}}}}, kind="CronJob")
    assert result["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "2"},
        {"name": "b"},
    ]


def test_smp_webhooks_merge_by_name_and_rbac_rules_are_atomic() -> None:
    hooks = {"metadata": {"name": "h"}, "webhooks": [{"name": "a", "x": 1}, {"name": "b"}]}
    result = strategic_merge_patch(
        hooks,
        {"webhooks": [{"name": "a", "x": 2}]},
        group="admissionregistration.k8s.io",
        kind="ValidatingWebhookConfiguration",
    )
    assert result["webhooks"] == [{"name": "a", "x": 2}, {"name": "b"}]
    role = {"metadata": {"name": "r"}, "rules": [{"verbs": ["get"]}, {"verbs": ["list"]}]}
    result = strategic_merge_patch(
        role, {"rules": [{"verbs": ["watch"]}]}, group="rbac.authorization.k8s.io", kind="Role"
    )
    assert result["rules"] == [{"verbs": ["watch"]}]


def test_smp_patch_replace_on_a_map_replaces_it() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    assert smp(deployment(), patch)["metadata"]["labels"] == {"only": "this"}


def test_smp_patch_delete_on_a_map_empties_it() -> None:
    # strategicpatch test "delete map from nested map".
    assert (
        smp(deployment(), {"metadata": {"labels": {"$patch": "delete"}}})["metadata"]["labels"]
        == {}
    )


def test_smp_patch_replace_inside_a_list_replaces_the_list() -> None:
    containers = [{"$patch": "replace"}, {"name": "solo", "image": "x"}]
    result = smp(deployment(), {"spec": {"template": {"spec": {"containers": containers}}}})
    assert pod_spec(result)["containers"] == [{"name": "solo", "image": "x"}]


def test_smp_patch_replace_alone_empties_a_merging_list() -> None:
    # strategicpatch test "delete all items from merging list".
    result = smp(
        deployment(), {"spec": {"template": {"spec": {"volumes": [{"$patch": "replace"}]}}}}
    )
    assert pod_spec(result)["volumes"] == []


def test_smp_creates_missing_nested_maps() -> None:
    patch = {"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd", "gone": None}}}}}
    result = smp(deployment(), patch)
    assert pod_spec(result)["nodeSelector"] == {"disk": "ssd"}


def test_smp_empty_patch_is_an_identical_copy() -> None:
    obj = deployment()
    result = smp(obj, {})
    assert result == obj
    assert result is not obj


def test_smp_does_not_mutate_its_inputs() -> None:
    obj = deployment()
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]},
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "sidecar"},
                        {"name": "patch-demo-ctr"},
                    ],
                    "containers": [{"name": "sidecar", "image": "b:3"}],
                }
            },
        },
    }
    before = copy.deepcopy(patch)
    result = smp(obj, patch)
    assert obj == deployment()
    assert patch == before
    assert directive_keys(result) == []


def test_smp_of_untagged_kinds_merges_maps() -> None:
    cm = {"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}}
    result = smp(cm, {"data": {"b": None, "c": "3"}}, kind="ConfigMap")
    assert result["data"] == {"a": "1", "c": "3"}


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        pytest.param([{"spec": {}}], 400, id="list-body"),
        pytest.param("spec", 400, id="string-body"),
        pytest.param(None, 400, id="null-body"),
        pytest.param(
            {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
            400,
            id="missing-merge-key",
        ),
        pytest.param({"metadata": {"labels": {"$patch": "frobnicate"}}}, 400, id="bad-directive"),
        pytest.param(
            {"spec": {"template": {"spec": {"containers": [{"name": "x", "$patch": "merge"}]}}}},
            400,
            id="merge-directive-in-list",
        ),
        pytest.param({"metadata": {"finalizers": [["a"]]}}, 422, id="list-of-lists"),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList": ["a"]}}, 400, id="delete-list-without-field"
        ),
        pytest.param({"spec": {"strategy": {"$retainKeys": "type"}}}, 400, id="retain-keys-string"),
        pytest.param(
            {"spec": {"template": {"spec": {"$setElementOrder/containers": "x"}}}},
            400,
            id="order-not-a-list",
        ),
    ],
)
def test_smp_malformed_patches(patch: Any, status: int) -> None:
    with pytest.raises(PatchError) as caught:
        smp(deployment(), patch)
    assert caught.value.status == status


# --- Server-side apply -----------------------------------------------------------------------


def config(**spec: Any) -> dict[str, Any]:
    """An apply configuration for the Deployment "web"."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec,
    }


def apply(
    live: dict[str, Any] | None,
    applied: Any,
    manager: str = "kubectl",
    *,
    force: bool = False,
    now: str = NOW,
    group: str = "apps",
    kind: str = "Deployment",
) -> dict[str, Any]:
    return server_side_apply(
        live, applied, group=group, kind=kind, manager=manager, force=force, now=now
    )


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """What the store adds on create."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid="u-1", resourceVersion="1", creationTimestamp="2024-05-01T09:00:00Z")
    return out


def entry(obj: dict[str, Any], manager: str, operation: str = "Apply") -> dict[str, Any]:
    found: dict[str, Any] = next(
        e
        for e in obj["metadata"]["managedFields"]
        if e["manager"] == manager and e["operation"] == operation
    )
    return found


WEB = {"name": "web", "image": "nginx:1.25"}


def test_ssa_create_records_the_managed_fields_in_fields_v1_format() -> None:
    applied = config(replicas=3, template={"spec": {"containers": [WEB]}})
    applied["metadata"]["labels"] = {"app": "web"}
    result = apply(None, applied)
    assert result["spec"] == applied["spec"]
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["metadata"]["managedFields"] == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}
                            }
                        }
                    },
                },
            },
        }
    ]


def test_ssa_keys_ports_by_port_and_protocol_and_finalizers_by_value() -> None:
    applied = config(template={"spec": {"containers": [{**WEB, "ports": [{"containerPort": 80}]}]}})
    applied["metadata"]["finalizers"] = ["example.com/f"]
    fields = apply(None, applied)["metadata"]["managedFields"][0]["fieldsV1"]
    web = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    # The protocol key defaults to TCP, as the OpenAPI schema says.
    assert web["f:ports"] == {
        'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}
    }
    assert fields["f:metadata"] == {"f:finalizers": {'v:"example.com/f"': {}}}


def test_ssa_create_drops_status_of_a_kind_with_a_status_subresource() -> None:
    applied = config(replicas=1)
    applied["status"] = {"replicas": 5}
    result = apply(None, applied)
    assert "status" not in result
    assert "f:status" not in result["metadata"]["managedFields"][0]["fieldsV1"]


def test_ssa_reapply_removes_fields_the_manager_no_longer_applies() -> None:
    first = config(replicas=3, template={"spec": {"containers": [WEB, {"name": "log"}]}})
    first["metadata"]["labels"] = {"app": "web", "team": "a"}
    live = stored(apply(None, first))
    second = config(template={"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}})
    second["metadata"]["labels"] = {"app": "web"}
    result = apply(live, second, now=LATER)
    assert "replicas" not in result["spec"]
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx:1.26"}
    ]
    mine = entry(result, "kubectl")
    assert mine["time"] == LATER
    assert "f:replicas" not in mine["fieldsV1"]["f:spec"]


def test_ssa_reapply_removing_the_last_label_drops_the_labels_map() -> None:
    first = config(replicas=1)
    first["metadata"]["labels"] = {"app": "web"}
    result = apply(stored(apply(None, first)), config(replicas=1))
    assert "labels" not in result["metadata"]


def test_ssa_keeps_server_set_metadata_from_the_live_object() -> None:
    live = stored(apply(None, config(replicas=1)))
    applied = config(replicas=2)
    applied["metadata"]["uid"] = "forged"
    result = apply(live, applied)
    assert result["metadata"]["uid"] == "u-1"
    assert result["metadata"]["resourceVersion"] == "1"
    assert result["metadata"]["creationTimestamp"] == "2024-05-01T09:00:00Z"


def test_ssa_leaves_a_configured_resource_version_as_a_precondition() -> None:
    live = stored(apply(None, config(replicas=1)))
    applied = config(replicas=2)
    applied["metadata"]["resourceVersion"] = "0"
    assert apply(live, applied)["metadata"]["resourceVersion"] == "0"


def test_ssa_conflict_with_another_appliers_field_is_409() -> None:
    live = stored(apply(None, config(replicas=3), manager="helm"))
    with pytest.raises(PatchError) as caught:
        apply(live, config(replicas=5))
    error = caught.value
    assert error.status == 409
    assert error.reason == "Conflict"
    assert error.message == 'Apply failed with 1 conflict: conflict with "helm": .spec.replicas'
    assert error.causes == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "helm"',
            "field": ".spec.replicas",
        }
    ]


def test_ssa_conflict_inside_a_keyed_list_names_the_item() -> None:
    live = stored(apply(None, config(template={"spec": {"containers": [WEB]}}), manager="helm"))
    applied = config(template={"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}})
    with pytest.raises(PatchError) as caught:
        apply(live, applied)
    assert caught.value.causes[0]["field"] == '.spec.template.spec.containers[name="web"].image'


def test_ssa_several_conflicts_are_listed_per_manager() -> None:
    live = stored(apply(None, config(replicas=3, paused=False), manager="helm"))
    with pytest.raises(PatchError) as caught:
        apply(live, config(replicas=5, paused=True))
    assert caught.value.message == (
        'Apply failed with 2 conflicts: conflicts with "helm":\n- .spec.paused\n- .spec.replicas'
    )
    assert len(caught.value.causes) == 2


def test_ssa_force_takes_ownership_over() -> None:
    live = stored(apply(None, config(replicas=3, paused=False), manager="helm"))
    result = apply(live, config(replicas=5), force=True, now=LATER)
    assert result["spec"]["replicas"] == 5
    assert entry(result, "kubectl")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert entry(result, "helm")["fieldsV1"] == {"f:spec": {"f:paused": {}}}
    assert entry(result, "helm")["time"] == NOW  # helm's entry is otherwise untouched
    # helm no longer owns replicas, so it may now leave it out without removing it.
    after = apply(result, config(paused=False), manager="helm")
    assert after["spec"]["replicas"] == 5


def test_ssa_force_removes_a_manager_left_with_nothing() -> None:
    live = stored(apply(None, config(replicas=3), manager="helm"))
    result = apply(live, config(replicas=5), force=True)
    assert [e["manager"] for e in result["metadata"]["managedFields"]] == ["kubectl"]


def test_ssa_same_value_is_shared_ownership_not_a_conflict() -> None:
    live = stored(apply(None, config(replicas=3), manager="helm"))
    result = apply(live, config(replicas=3))
    assert entry(result, "helm")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert entry(result, "kubectl")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    # A co-owned field stays when one of its owners stops applying it.
    after = apply(result, config(paused=True))
    assert after["spec"]["replicas"] == 3


def test_ssa_merges_containers_by_name_with_another_managers() -> None:
    live = stored(apply(None, config(template={"spec": {"containers": [WEB]}}), manager="helm"))
    applied = config(template={"spec": {"containers": [{"name": "istio-proxy", "image": "p"}]}})
    result = apply(live, applied, manager="istio")
    assert result["spec"]["template"]["spec"]["containers"] == [
        WEB,
        {"name": "istio-proxy", "image": "p"},
    ]
    # Removing its container again leaves helm's alone.
    after = apply(result, config(template={"spec": {"containers": []}}), manager="istio")
    assert after["spec"]["template"]["spec"]["containers"] == [WEB]


def test_ssa_conflict_with_an_update_manager_names_its_api_version() -> None:
    live = stored(apply(None, config(replicas=3)))
    live["metadata"]["managedFields"].append(
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:paused": {}}},
        }
    )
    live["spec"]["paused"] = True
    with pytest.raises(PatchError) as caught:
        apply(live, config(replicas=3, paused=False))
    assert caught.value.message == (
        'Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1: '
        ".spec.paused"
    )


def test_ssa_object_without_managed_fields_belongs_to_before_first_apply() -> None:
    live = stored(config(replicas=3))
    with pytest.raises(
        PatchError, match=re.escape('"before-first-apply" using apps/v1: .spec.replicas')
    ):
        apply(live, config(replicas=4))
    result = apply(live, config(replicas=4), force=True)
    assert [(e["manager"], e["operation"]) for e in result["metadata"]["managedFields"]] == [
        ("kubectl", "Apply")
    ]


def test_ssa_apply_that_changes_nothing_keeps_the_entry_time() -> None:
    live = stored(apply(None, config(replicas=3)))
    result = apply(live, config(replicas=3), now=LATER)
    assert result == live


def test_ssa_ignores_status_on_the_main_resource() -> None:
    live = stored(apply(None, config(replicas=1)))
    live["status"] = {"replicas": 1}
    applied = config(replicas=1)
    applied["status"] = {"replicas": 9}
    assert apply(live, applied)["status"] == {"replicas": 1}


def test_ssa_custom_resource_lists_are_atomic() -> None:
    widget: dict[str, Any] = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"items": [{"name": "a"}], "size": 1},
    }
    live = stored(apply(None, widget, group="example.com", kind="Widget"))
    changed = copy.deepcopy(widget)
    changed["spec"]["items"] = [{"name": "b"}]
    result = apply(live, changed, group="example.com", kind="Widget")
    assert result["spec"]["items"] == [{"name": "b"}]
    assert entry(result, "kubectl")["fieldsV1"] == {"f:spec": {"f:items": {}, "f:size": {}}}


def test_ssa_does_not_mutate_its_inputs() -> None:
    live = stored(apply(None, config(replicas=3, template={"spec": {"containers": [WEB]}})))
    applied = config(replicas=4)
    live_before, applied_before = copy.deepcopy(live), copy.deepcopy(applied)
    apply(live, applied)
    assert live == live_before
    assert applied == applied_before


@pytest.mark.parametrize(
    "applied",
    [
        pytest.param([config()], id="list"),
        pytest.param("apiVersion: v1", id="string"),
        pytest.param(
            {**config(), "metadata": {"name": "web", "managedFields": []}}, id="managed-fields"
        ),
        pytest.param(config(template={"spec": {"containers": [{"image": "x"}]}}), id="no-key"),
        pytest.param(
            config(template={"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}),
            id="duplicate-key",
        ),
    ],
)
def test_ssa_malformed_configurations_are_400(applied: Any) -> None:
    live = stored(apply(None, config(replicas=1)))
    with pytest.raises(PatchError) as caught:
        apply(live, applied)
    assert caught.value.status == 400
