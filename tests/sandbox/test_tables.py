"""Server-side printing: the columns and cells ``kubectl get`` shows, at a fixed time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sandbox.apiserver.tables import human_duration, to_table

type Obj = dict[str, Any]

NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
CREATED = "2024-06-01T11:55:00Z"  # five minutes before NOW


def meta(name: str = "web", **extra: Any) -> Obj:
    return {
        "name": name,
        "namespace": "default",
        "uid": "u-1",
        "resourceVersion": "42",
        "creationTimestamp": CREATED,
        **extra,
    }


def table(group: str, kind: str, *objects: Obj, **options: Any) -> dict[str, Any]:
    return to_table(group, kind, list(objects), now=NOW, **options)


def columns(result: dict[str, Any], *, wide: bool = True) -> list[str]:
    return [c["name"] for c in result["columnDefinitions"] if wide or c["priority"] == 0]


def cells(result: dict[str, Any]) -> list[list[Any]]:
    return [row["cells"] for row in result["rows"]]


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 30 * 60, "5h30m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (2 * 365 * 86400 + 10 * 86400, "2y10d"),
        (3 * 365 * 86400, "3y"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(dt.timedelta(seconds=seconds)) == text


# --- the Table envelope and includeObject ---------------------------------------------------


def test_table_envelope_and_metadata_rows() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"), "data": {"a": "1"}}
    result = table("", "ConfigMap", cm)
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert result["metadata"] == {"resourceVersion": "42"}
    assert result["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": result["columnDefinitions"][0]["description"],
        "priority": 0,
    }
    assert result["columnDefinitions"][0]["description"].startswith("Name must be unique")
    assert result["rows"] == [
        {
            "cells": ["cfg", 1, "5m"],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta("cfg"),
            },
        }
    ]


def test_include_object_none_and_object() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg")}
    assert "object" not in table("", "ConfigMap", cm, include_object="None")["rows"][0]
    assert table("", "ConfigMap", cm, include_object="Object")["rows"][0]["object"] == cm
    with pytest.raises(ValueError, match="includeObject"):
        table("", "ConfigMap", cm, include_object="Everything")


def test_list_meta_and_no_headers() -> None:
    objs = [{"metadata": meta("a")}, {"metadata": meta("b")}]
    result = table("", "ConfigMap", *objs, list_meta={"resourceVersion": "7", "continue": "x"})
    assert result["metadata"] == {"resourceVersion": "7", "continue": "x"}
    assert [r[0] for r in cells(result)] == ["a", "b"]
    assert table("", "ConfigMap", *objs)["metadata"] == {}
    assert table("", "ConfigMap", *objs, no_headers=True)["columnDefinitions"] is None
    assert table("", "ConfigMap")["rows"] == []


# --- pods -----------------------------------------------------------------------------------


def running_pod(**status: Any) -> Obj:
    return {
        "metadata": meta("web-1"),
        "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.0.0.5"}],
            "containerStatuses": [
                {"name": "web", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
            **status,
        },
    }


def test_pod_columns_and_running_row() -> None:
    result = table("", "Pod", running_pod())
    assert columns(result, wide=False) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert columns(result) == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert cells(result) == [
        ["web-1", "1/1", "Running", "0", "5m", "10.0.0.5", "node-a", "<none>", "<none>"]
    ]


def test_pod_waiting_reason_and_restarts() -> None:
    pod = running_pod()
    pod["status"]["containerStatuses"] = [
        {
            "name": "web",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"finishedAt": "2024-06-01T11:58:00Z", "exitCode": 1}},
        }
    ]
    [row] = cells(table("", "Pod", pod))
    assert row[1:4] == ["0/1", "CrashLoopBackOff", "3 (2m ago)"]


def test_pending_and_init_and_terminating_pods() -> None:
    pending = {
        "metadata": meta("p"),
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Pending"},
    }
    assert cells(table("", "Pod", pending))[0][:5] == ["p", "0/2", "Pending", "0", "5m"]
    assert cells(table("", "Pod", pending))[0][5:7] == ["<none>", "<none>"]
    init = running_pod(
        phase="Pending",
        initContainerStatuses=[{"name": "setup", "state": {"running": {}}, "restartCount": 0}],
    )
    init["spec"]["initContainers"] = [{"name": "setup"}]
    assert cells(table("", "Pod", init))[0][2] == "Init:0/1"
    terminating = running_pod()
    terminating["metadata"]["deletionTimestamp"] = "2024-06-01T11:59:00Z"
    assert cells(table("", "Pod", terminating))[0][2] == "Terminating"


def test_completed_pod_row_condition() -> None:
    done = running_pod(phase="Succeeded")
    done["status"]["containerStatuses"] = [
        {"name": "web", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    ]
    [row] = table("", "Pod", done)["rows"]
    assert row["cells"][1:3] == ["0/1", "Completed"]
    assert row["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]


# --- workloads ------------------------------------------------------------------------------


def workload_spec(**extra: Any) -> Obj:
    return {
        "replicas": 3,
        "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
        },
        "template": {
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1.27"},
                    {"name": "log", "image": "busybox"},
                ]
            }
        },
        **extra,
    }


def test_deployment_row() -> None:
    obj = {
        "metadata": meta(),
        "spec": workload_spec(),
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    result = table("apps", "Deployment", obj)
    assert columns(result) == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert [c["type"] for c in result["columnDefinitions"][1:4]] == ["string", "integer", "integer"]
    assert cells(result) == [
        ["web", "2/3", 3, 2, "5m", "web,log", "nginx:1.27,busybox", "app=web,tier in (a,b)"]
    ]


def test_replica_set_stateful_set_daemon_set_rows() -> None:
    rs = {"metadata": meta("web-abc"), "spec": workload_spec(), "status": {"replicas": 3}}
    assert cells(table("apps", "ReplicaSet", rs)) == [
        ["web-abc", 3, 3, 0, "5m", "web,log", "nginx:1.27,busybox", "app=web,tier in (a,b)"]
    ]
    sts = {"metadata": meta("db"), "spec": workload_spec(), "status": {"readyReplicas": 1}}
    result = table("apps", "StatefulSet", sts)
    assert columns(result) == ["Name", "Ready", "Age", "Containers", "Images"]
    assert cells(result) == [["db", "1/3", "5m", "web,log", "nginx:1.27,busybox"]]
    ds_spec = workload_spec()
    ds_spec["template"]["spec"]["nodeSelector"] = {"kubernetes.io/os": "linux"}
    ds = {
        "metadata": meta("agent"),
        "spec": ds_spec,
        "status": {
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberReady": 1,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
        },
    }
    result = table("apps", "DaemonSet", ds)
    assert columns(result, wide=False) == [
        "Name",
        "Desired",
        "Current",
        "Ready",
        "Up-to-date",
        "Available",
        "Node Selector",
        "Age",
    ]
    assert cells(result)[0][:8] == ["agent", 2, 2, 1, 2, 1, "kubernetes.io/os=linux", "5m"]


def test_job_and_cron_job_rows() -> None:
    job = {
        "metadata": meta("migrate"),
        "spec": {"completions": 1, "template": {"spec": {"containers": []}}},
        "status": {
            "succeeded": 1,
            "startTime": "2024-06-01T11:56:00Z",
            "completionTime": "2024-06-01T11:56:30Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    assert cells(table("batch", "Job", job))[0][:5] == ["migrate", "Complete", "1/1", "30s", "5m"]
    cron = {"metadata": meta("nightly"), "spec": {"schedule": "0 3 * * *", "suspend": False}}
    assert cells(table("batch", "CronJob", cron))[0][:7] == [
        "nightly",
        "0 3 * * *",
        "<none>",
        "False",
        0,
        "<none>",
        "5m",
    ]


# --- services and networking ----------------------------------------------------------------


def test_service_rows() -> None:
    cluster_ip = {
        "metadata": meta("web"),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}],
            "selector": {"app": "web"},
        },
    }
    node_port = {
        "metadata": meta("np"),
        "spec": {
            "type": "NodePort",
            "clusterIPs": ["10.96.0.11"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
        },
    }
    balancer = {
        "metadata": meta("lb"),
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": []},
    }
    external = {"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "a.io"}}
    result = table("", "Service", cluster_ip, node_port, balancer, external)
    assert columns(result) == [
        "Name",
        "Type",
        "Cluster-IP",
        "External-IP",
        "Port(s)",
        "Age",
        "Selector",
    ]
    assert cells(result) == [
        ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP,443/TCP", "5m", "app=web"],
        ["np", "NodePort", "10.96.0.11", "<none>", "80:30080/TCP", "5m", "<none>"],
        ["lb", "LoadBalancer", "10.96.0.12", "<pending>", "<none>", "5m", "<none>"],
        ["ext", "ExternalName", "<none>", "a.io", "<none>", "5m", "<none>"],
    ]


def test_endpoints_and_endpoint_slice_rows() -> None:
    endpoints = {
        "metadata": meta("web"),
        "subsets": [
            {
                "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                "ports": [{"port": 80}],
            }
        ],
    }
    empty = {"metadata": meta("none")}
    assert cells(table("", "Endpoints", endpoints, empty)) == [
        ["web", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...", "5m"],
        ["none", "<none>", "5m"],
    ]
    eps = {
        "metadata": meta("web-xyz"),
        "addressType": "IPv4",
        "ports": [{"port": 80}, {"name": "metrics"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    }
    bare = {"metadata": meta("bare"), "addressType": "IPv4"}
    result = table("discovery.k8s.io", "EndpointSlice", eps, bare)
    assert columns(result) == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert cells(result) == [
        ["web-xyz", "IPv4", "80,metrics", "10.0.0.1,10.0.0.2", "5m"],
        ["bare", "IPv4", "<unset>", "<unset>", "5m"],
    ]


# --- config, identity, cluster objects ------------------------------------------------------


def test_config_and_identity_rows() -> None:
    secret = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"a": "", "b": ""}}
    result = table("", "Secret", secret)
    assert columns(result) == ["Name", "Type", "Data", "Age"]
    assert cells(result) == [["tls", "kubernetes.io/tls", 2, "5m"]]
    namespace = {"metadata": meta("team"), "status": {"phase": "Active"}}
    assert cells(table("", "Namespace", namespace)) == [["team", "Active", "5m"]]
    account = {"metadata": meta("default")}
    result = table("", "ServiceAccount", account)
    assert columns(result) == ["Name", "Secrets", "Age"]
    assert cells(result) == [["default", 0, "5m"]]
    lease = {"metadata": meta("leader"), "spec": {"holderIdentity": "node-a_1234"}}
    assert cells(table("coordination.k8s.io", "Lease", lease)) == [["leader", "node-a_1234", "5m"]]


def test_event_row() -> None:
    event = {
        "metadata": meta("web.17a"),
        "type": "Warning",
        "reason": "BackOff",
        "message": " Back-off restarting failed container \n",
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": "2024-06-01T11:00:00Z",
        "lastTimestamp": "2024-06-01T11:59:30Z",
        "count": 7,
    }
    result = table("", "Event", event)
    assert columns(result, wide=False) == ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert cells(result) == [
        [
            "30s",
            "Warning",
            "BackOff",
            "pod/web",
            "spec.containers{web}",
            "kubelet, node-a",
            "Back-off restarting failed container",
            "60m",
            7,
            "web.17a",
        ]
    ]
    new_api = {
        "metadata": meta("e2"),
        "eventTime": "2024-06-01T11:59:00.000000Z",
        "type": "Normal",
        "reason": "Scheduled",
        "note": "assigned",
        "regarding": {"kind": "Pod", "name": "web"},
        "reportingController": "default-scheduler",
    }
    assert cells(table("events.k8s.io", "Event", new_api))[0][:7] == [
        "60s",
        "Normal",
        "Scheduled",
        "pod/web",
        "",
        "default-scheduler",
        "assigned",
    ]


def test_node_row() -> None:
    node = {
        "metadata": meta("node-a", labels={"node-role.kubernetes.io/control-plane": ""}),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.36.0"},
        },
    }
    assert cells(table("", "Node", node)) == [
        [
            "node-a",
            "Ready,SchedulingDisabled",
            "control-plane",
            "5m",
            "v1.36.0",
            "172.18.0.2",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>",
        ]
    ]


def test_rbac_rows() -> None:
    role = {"metadata": meta("reader")}
    result = table("rbac.authorization.k8s.io", "ClusterRole", role)
    assert columns(result) == ["Name", "Created At"]
    assert result["columnDefinitions"][1]["type"] == "date"
    assert cells(result) == [["reader", "2024-06-01T11:55:00Z"]]
    binding = {
        "metadata": meta("view-all"),
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "User", "name": "bob"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "ci", "namespace": "build"},
        ],
    }
    result = table("rbac.authorization.k8s.io", "ClusterRoleBinding", binding)
    assert columns(result) == ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    assert cells(result) == [
        ["view-all", "ClusterRole/view", "5m", "alice, bob", "devs", "build/ci"]
    ]


def test_webhook_configuration_row() -> None:
    config = {"metadata": meta("hooks"), "webhooks": [{}, {}]}
    result = table("admissionregistration.k8s.io", "MutatingWebhookConfiguration", config)
    assert columns(result) == ["Name", "Webhooks", "Age"]
    assert cells(result) == [["hooks", 2, "5m"]]


# --- generic and custom resources -----------------------------------------------------------


def test_unknown_kinds_and_crds_print_name_and_created_at() -> None:
    crd = {"metadata": meta("widgets.example.com")}
    result = table("apiextensions.k8s.io", "CustomResourceDefinition", crd)
    assert columns(result) == ["Name", "Created At"]
    assert cells(result) == [["widgets.example.com", "2024-06-01T11:55:00Z"]]
    no_time = {"metadata": {"name": "x"}}
    assert cells(table("example.com", "Gadget", no_time)) == [["x", "0001-01-01T00:00:00Z"]]


def test_custom_resource_without_columns_shows_age() -> None:
    widget = {"metadata": meta("w1")}
    result = table("example.com", "Widget", widget, printer_columns=[])
    assert columns(result) == ["Name", "Age"]
    assert result["columnDefinitions"][1]["type"] == "date"
    assert cells(result) == [["w1", "5m"]]


def test_custom_resource_printer_columns() -> None:
    printer_columns = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Ports", "type": "string", "jsonPath": ".spec.ports", "priority": 1},
        {"name": "Ratio", "type": "number", "jsonPath": ".spec.replicas"},
        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
        {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
        {"name": "Label", "type": "string", "jsonPath": ".metadata.labels['app.io/name']"},
        {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
    ]
    widget = {
        "metadata": meta("w1", labels={"app.io/name": "widget"}),
        "spec": {"replicas": 3, "ports": [80, 443], "paused": False},
        "status": {
            "conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "startedAt": "2024-06-01T10:00:00Z",
        },
    }
    result = table("example.com", "Widget", widget, printer_columns=printer_columns)
    assert columns(result) == [
        "Name",
        "Replicas",
        "Ready",
        "Ports",
        "Ratio",
        "Paused",
        "Missing",
        "Label",
        "Started",
    ]
    assert result["columnDefinitions"][1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    )
    assert result["columnDefinitions"][3]["priority"] == 1
    assert cells(result) == [["w1", 3, "True", "[80 443]", 3.0, False, None, "widget", "120m"]]
