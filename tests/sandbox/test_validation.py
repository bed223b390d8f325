"""Validation and defaulting: the causes a real API server would return, field by field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sandbox.apiserver.validation import (
    Cause,
    decode_error,
    default,
    invalid_message,
    is_dns1123_label,
    is_qualified_name,
    validate,
    validate_name,
)

type Obj = dict[str, Any]

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def meta(name: str = "web", namespace: str | None = "default", **extra: Any) -> Obj:
    out: Obj = {"name": name, **extra}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def pod_spec(**extra: Any) -> Obj:
    return {"containers": [{"name": "web", "image": "nginx:1.27"}], **extra}


def pod(**spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(), "spec": pod_spec(**spec)}


def deployment(selector: Any = None, labels: Any = None, **spec: Any) -> Obj:
    labels = {"app": "web"} if labels is None else labels
    body: Obj = {
        "template": {"metadata": {"labels": labels}, "spec": pod_spec()},
        **spec,
    }
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(), "spec": body}


def service(**spec: Any) -> Obj:
    body = {"ports": [{"port": 80}], "selector": {"app": "web"}, **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(), "spec": body}


def crd(**spec: Any) -> Obj:
    body: Obj = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object"}},
            }
        ],
        **spec,
    }
    return {"metadata": {"name": "widgets.example.com"}, "spec": body}


def webhook_config(**hook: Any) -> Obj:
    body = {
        "name": "check.example.com",
        "clientConfig": {"service": {"name": "hook", "namespace": "default"}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        **hook,
    }
    return {"metadata": {"name": "hooks"}, "webhooks": [body]}


def check(group: str, kind: str, obj: Obj, old: Obj | None = None) -> list[tuple[str, str]]:
    """Defaults, then validates, as the server does; returns (field, reason) pairs."""
    default(group, kind, obj)
    if old is not None:
        default(group, kind, old)
    return [(c.field, c.reason) for c in validate(group, kind, obj, old)]


REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
NOT_FOUND = "FieldValueNotFound"

with_volume = pod_spec(
    volumes=[{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
)
with_volume["containers"][0]["volumeMounts"] = [{"name": "missing", "mountPath": "/x"}]

CASES: list[Any] = [
    # Valid objects of every modelled kind.
    pytest.param("", "Pod", pod(), [], id="pod-valid"),
    pytest.param(
        "apps", "Deployment", deployment({"matchLabels": {"app": "web"}}), [], id="deploy"
    ),
    pytest.param("", "Service", service(), [], id="service-valid"),
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": meta(), "data": {"a.b": "1", "KEY_2": "x"}},
        [],
        id="configmap-valid",
    ),
    pytest.param("", "Namespace", {"metadata": meta("team-a", None)}, [], id="namespace-valid"),
    pytest.param("apiextensions.k8s.io", "CustomResourceDefinition", crd(), [], id="crd-valid"),
    pytest.param(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        webhook_config(),
        [],
        id="webhook-valid",
    ),
    pytest.param(
        "example.com", "Widget", {"metadata": meta("w1"), "spec": {"x": 1}}, [], id="custom-valid"
    ),
    # Metadata.
    pytest.param(
        "", "ConfigMap", {"metadata": meta("Bad_Name")}, [("metadata.name", INVALID)], id="name"
    ),
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": {"namespace": "default"}},
        [("metadata.name", REQUIRED)],
        id="name-required",
    ),
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": meta(namespace=None)},
        [("metadata.namespace", REQUIRED)],
        id="namespace-required",
    ),
    pytest.param(
        "",
        "Namespace",
        {"metadata": meta("team", "default")},
        [("metadata.namespace", FORBIDDEN)],
        id="namespace-on-cluster-scoped",
    ),
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": meta(labels={"app": "x y", "-bad": "ok"})},
        [("metadata.labels", INVALID), ("metadata.labels", INVALID)],
        id="labels",
    ),
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": meta(annotations={"big": "x" * (256 * 1024)})},
        [("metadata.annotations", TOO_LONG)],
        id="annotations-size",
    ),
    pytest.param(
        "",
        "Service",
        {"metadata": meta("1web"), "spec": {"ports": [{"port": 80}]}},
        [("metadata.name", INVALID)],
        id="service-name-rfc1035",
    ),
    pytest.param(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        {"metadata": meta("system:view/x", None), "rules": []},
        [("metadata.name", INVALID)],
        id="rbac-name-path-segment",
    ),
    # Pods.
    pytest.param(
        "", "Pod", {"metadata": meta(), "spec": {}}, [("spec.containers", REQUIRED)], id="no-ctrs"
    ),
    pytest.param(
        "",
        "Pod",
        {"metadata": meta(), "spec": {"containers": [{"name": "Web_1"}]}},
        [("spec.containers[0].name", INVALID), ("spec.containers[0].image", REQUIRED)],
        id="container-name-image",
    ),
    pytest.param(
        "",
        "Pod",
        pod(
            initContainers=[{"name": "web", "image": "busybox"}],
            restartPolicy="Sometimes",
        ),
        [("spec.initContainers[0].name", DUPLICATE), ("spec.restartPolicy", NOT_SUPPORTED)],
        id="duplicate-init-and-restart-policy",
    ),
    pytest.param(
        "",
        "Pod",
        {
            "metadata": meta(),
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx",
                        "ports": [{"containerPort": 70000, "protocol": "HTTP"}],
                        "env": [{"name": "A=B", "value": "1"}],
                    }
                ]
            },
        },
        [
            ("spec.containers[0].ports[0].containerPort", INVALID),
            ("spec.containers[0].ports[0].protocol", NOT_SUPPORTED),
            ("spec.containers[0].env[0].name", INVALID),
        ],
        id="ports-and-env",
    ),
    pytest.param(
        "",
        "Pod",
        {"metadata": meta(), "spec": with_volume},
        [
            ("spec.volumes[1].name", DUPLICATE),
            ("spec.containers[0].volumeMounts[0].name", NOT_FOUND),
        ],
        id="volumes",
    ),
    # Workloads.
    pytest.param(
        "apps",
        "Deployment",
        deployment(),
        [("spec.selector", REQUIRED), ("spec.template.metadata.labels", INVALID)],
        id="deploy-no-selector",
    ),
    pytest.param(
        "apps",
        "Deployment",
        deployment({"matchLabels": {"app": "api"}}, replicas=-1),
        [("spec.replicas", INVALID), ("spec.template.metadata.labels", INVALID)],
        id="deploy-mismatch",
    ),
    pytest.param(
        "apps",
        "Deployment",
        deployment({"matchLabels": {"app": "web"}}, strategy={"type": "BlueGreen"}),
        [("spec.strategy", NOT_SUPPORTED)],
        id="deploy-strategy",
    ),
    pytest.param(
        "apps",
        "Deployment",
        {
            "metadata": meta(),
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{}]}},
            },
        },
        [
            ("spec.template.spec.containers[0].name", REQUIRED),
            ("spec.template.spec.containers[0].image", REQUIRED),
        ],
        id="deploy-template-spec-prefix",
    ),
    pytest.param(
        "apps",
        "ReplicaSet",
        {
            "metadata": meta(),
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": pod_spec(restartPolicy="Never"),
                },
            },
        },
        [("spec.template.spec.restartPolicy", NOT_SUPPORTED)],
        id="replicaset-restart-policy",
    ),
    pytest.param(
        "apps",
        "StatefulSet",
        {
            "metadata": meta(),
            "spec": {
                "selector": {},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec()},
            },
        },
        [("spec.selector", INVALID)],
        id="statefulset-empty-selector",
    ),
    pytest.param(
        "apps",
        "DaemonSet",
        {
            "metadata": meta(),
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec()},
            },
        },
        [],
        id="daemonset-valid",
    ),
    pytest.param(
        "batch",
        "Job",
        {"metadata": meta(), "spec": {"template": {"spec": pod_spec()}}},
        [("spec.template.spec.restartPolicy", NOT_SUPPORTED)],
        id="job-restart-always",
    ),
    # Services.
    pytest.param(
        "",
        "Service",
        {"metadata": meta(), "spec": {}},
        [("spec.ports", REQUIRED)],
        id="service-no-ports",
    ),
    pytest.param(
        "",
        "Service",
        {"metadata": meta(), "spec": {"clusterIP": "None"}},
        [],
        id="service-headless-no-ports",
    ),
    pytest.param(
        "",
        "Service",
        service(ports=[{"port": 80}, {"port": 0, "name": "b", "protocol": "ICMP"}]),
        [
            ("spec.ports[0].name", REQUIRED),
            ("spec.ports[1].port", INVALID),
            ("spec.ports[1].protocol", NOT_SUPPORTED),
            ("spec.ports[1].targetPort", INVALID),
        ],
        id="service-ports",
    ),
    pytest.param(
        "",
        "Service",
        service(type="Magic"),
        [("spec.type", NOT_SUPPORTED)],
        id="service-type",
    ),
    pytest.param(
        "",
        "Service",
        {"metadata": meta(), "spec": {"type": "ExternalName"}},
        [("spec.externalName", REQUIRED)],
        id="service-external-name",
    ),
    pytest.param(
        "",
        "Service",
        service(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 80}]),
        [("spec.ports[1].name", DUPLICATE), ("spec.ports[1]", DUPLICATE)],
        id="service-duplicate-ports",
    ),
    # Config.
    pytest.param(
        "",
        "ConfigMap",
        {"metadata": meta(), "data": {"bad key": "x", "..": "y"}},
        [("data[..]", INVALID), ("data[bad key]", INVALID)],
        id="configmap-keys",
    ),
    pytest.param(
        "",
        "Secret",
        {"metadata": meta(), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}},
        [("data[tls.key]", REQUIRED)],
        id="secret-tls",
    ),
    # RBAC.
    pytest.param(
        "rbac.authorization.k8s.io",
        "Role",
        {"metadata": meta(), "rules": [{"apiGroups": [""], "resources": ["pods"]}]},
        [("rules[0].verbs", REQUIRED)],
        id="role-verbs",
    ),
    pytest.param(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        {"metadata": meta(), "subjects": [{"kind": "Robot", "name": "r2"}]},
        [
            ("roleRef.kind", NOT_SUPPORTED),
            ("roleRef.name", REQUIRED),
            ("subjects[0].kind", NOT_SUPPORTED),
        ],
        id="rolebinding-required",
    ),
    pytest.param(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        {
            "metadata": meta("admins", None),
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
        },
        [("subjects[0].namespace", REQUIRED)],
        id="clusterrolebinding-sa-namespace",
    ),
    # CRDs and webhooks.
    pytest.param(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        {**crd(), "metadata": {"name": "widgets.other.com"}},
        [("metadata.name", INVALID)],
        id="crd-name",
    ),
    pytest.param(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        crd(names={"kind": "Widget"}, versions=[]),
        [
            ("metadata.name", INVALID),
            ("spec.versions", REQUIRED),
            ("spec.names.plural", REQUIRED),
        ],
        id="crd-required",
    ),
    pytest.param(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        crd(
            versions=[
                {"name": "v1", "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v2", "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}},
            ]
        ),
        [("spec.versions", INVALID)],
        id="crd-two-storage-versions",
    ),
    pytest.param(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        webhook_config(
            name="check",
            clientConfig={"url": "https://x", "service": {"name": "s", "namespace": "n"}},
            sideEffects=None,
            admissionReviewVersions=[],
        ),
        [
            ("webhooks[0].name", INVALID),
            ("webhooks[0].sideEffects", REQUIRED),
            ("webhooks[0].clientConfig", REQUIRED),
            ("webhooks[0].admissionReviewVersions", REQUIRED),
        ],
        id="webhook-invalid",
    ),
    # Coordination, events, discovery.
    pytest.param(
        "coordination.k8s.io",
        "Lease",
        {"metadata": meta(), "spec": {"leaseDurationSeconds": 0}},
        [("spec.leaseDurationSeconds", INVALID)],
        id="lease",
    ),
    pytest.param(
        "",
        "Event",
        {
            "metadata": meta("web.1"),
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"},
        },
        [("involvedObject.namespace", INVALID)],
        id="event-namespace",
    ),
    pytest.param(
        "discovery.k8s.io",
        "EndpointSlice",
        {"metadata": meta(), "endpoints": [{"addresses": ["10.0.0.300"]}]},
        [("addressType", REQUIRED)],
        id="endpointslice-address-type",
    ),
    pytest.param(
        "discovery.k8s.io",
        "EndpointSlice",
        {
            "metadata": meta(),
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.300"]}, {"addresses": []}],
        },
        [("endpoints[0].addresses[0]", INVALID), ("endpoints[1].addresses", REQUIRED)],
        id="endpointslice-addresses",
    ),
    pytest.param(
        "discovery.k8s.io",
        "EndpointSlice",
        {
            "metadata": meta(),
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.3"]}, {"addresses": ["224.0.0.5"]}],
        },
        [("endpoints[1].addresses[0]", INVALID)],
        id="endpointslice-ordinary-and-multicast-addresses",
    ),
    pytest.param(
        "discovery.k8s.io",
        "EndpointSlice",
        {
            "metadata": meta(),
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::3"]}, {"addresses": ["ff02::1"]}],
        },
        [("endpoints[1].addresses[0]", INVALID)],
        id="endpointslice-ipv6-link-local-multicast",
    ),
]


@pytest.mark.parametrize(("group", "kind", "obj", "expected"), CASES)
def test_validate_cases(group: str, kind: str, obj: Obj, expected: list[tuple[str, str]]) -> None:
    assert check(group, kind, copy.deepcopy(obj)) == expected


def test_invalid_name_message_is_upstream_text() -> None:
    causes = validate("", "ConfigMap", {"metadata": meta("Foo_bar")})
    assert causes == [
        Cause("FieldValueInvalid", f'Invalid value: "Foo_bar": {SUBDOMAIN_MSG}', "metadata.name")
    ]


def test_selector_mismatch_renders_labels_as_json() -> None:
    obj = deployment({"matchLabels": {"app": "api"}}, labels={"tier": "x", "app": "web"})
    default("apps", "Deployment", obj)
    [cause] = validate("apps", "Deployment", obj)
    assert cause.message == (
        'Invalid value: {"app":"web","tier":"x"}: `selector` does not match template `labels`'
    )


def test_missing_template_labels_render_as_null() -> None:
    obj = deployment({"matchLabels": {"app": "web"}})
    del obj["spec"]["template"]["metadata"]
    default("apps", "Deployment", obj)
    messages = [c.message for c in validate("apps", "Deployment", obj)]
    assert messages == ["Invalid value: null: `selector` does not match template `labels`"]


@pytest.mark.parametrize(
    ("cause_args", "message"),
    [
        (("spec.restartPolicy",), 'Unsupported value: "Sometimes": supported values: "Always", '),
        (("spec.containers[0].ports[0].containerPort",), "Invalid value: 70000: must be between"),
    ],
)
def test_messages_of_simple_values(cause_args: tuple[str], message: str) -> None:
    spec = pod_spec(restartPolicy="Sometimes")
    spec["containers"][0]["ports"] = [{"containerPort": 70000}]
    obj = {"metadata": meta(), "spec": spec}
    default("", "Pod", obj)
    by_field = {c.field: c.message for c in validate("", "Pod", obj)}
    assert by_field[cause_args[0]].startswith(message)


def test_container_name_with_dots_says_so() -> None:
    assert is_dns1123_label("web.1") == ["must not contain dots"]
    assert is_dns1123_label("Web") == [LABEL_MSG]


def test_qualified_name_messages() -> None:
    assert is_qualified_name("example.com/app") == []
    assert is_qualified_name("/app") == ["prefix part must be non-empty"]
    assert is_qualified_name("a/b/c")[0].startswith("a valid label key must consist of")


@pytest.mark.parametrize(
    ("group", "kind", "name", "ok"),
    [
        ("", "ConfigMap", "a.b-c", True),
        ("", "ConfigMap", "x" * 254, False),
        ("", "Namespace", "a.b", False),
        ("", "Namespace", "x" * 64, False),
        ("", "Service", "web-1", True),
        ("", "Service", "1web", False),
        ("rbac.authorization.k8s.io", "ClusterRole", "system:controller:foo", True),
        ("rbac.authorization.k8s.io", "Role", "..", False),
        ("rbac.authorization.k8s.io", "Role", "a%b", False),
    ],
)
def test_validate_name_rules(group: str, kind: str, name: str, ok: bool) -> None:
    assert (validate_name(group, kind, name) == []) is ok


def test_generate_name_prefix_may_end_with_dash() -> None:
    assert validate_name("", "Pod", "web-", prefix=True) == []
    assert validate_name("", "Pod", "web-") != []


# --- updates -------------------------------------------------------------------------------


def test_deployment_selector_is_immutable() -> None:
    old = deployment({"matchLabels": {"app": "web"}})
    new = deployment({"matchLabels": {"app": "web", "v": "2"}}, labels={"app": "web", "v": "2"})
    default("apps", "Deployment", old)
    default("apps", "Deployment", new)
    causes = validate("apps", "Deployment", new, old)
    assert [(c.field, c.message) for c in causes] == [
        (
            "spec.selector",
            'Invalid value: {"matchLabels":{"app":"web","v":"2"}}: field is immutable',
        )
    ]


def test_rolebinding_role_ref_cannot_change() -> None:
    def binding(role: str) -> Obj:
        return {"metadata": meta("b"), "roleRef": {"kind": "ClusterRole", "name": role}}

    causes = validate_update(
        "rbac.authorization.k8s.io", "RoleBinding", binding("edit"), binding("view")
    )
    assert [(c.field, c.message) for c in causes] == [
        (
            "roleRef",
            'Invalid value: {"APIGroup":"rbac.authorization.k8s.io","Kind":"ClusterRole",'
            '"Name":"edit"}: cannot change roleRef',
        )
    ]


def validate_update(group: str, kind: str, new: Obj, old: Obj) -> list[Cause]:
    default(group, kind, old)
    default(group, kind, new)
    return validate(group, kind, new, old)


def test_service_cluster_ip_may_not_change() -> None:
    old = service(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    new = service(clusterIP="10.96.0.11", clusterIPs=["10.96.0.11"])
    causes = validate_update("", "Service", new, old)
    assert [(c.field, c.message) for c in causes] == [
        ("spec.clusterIPs[0]", 'Invalid value: ["10.96.0.11"]: may not change once set')
    ]


def test_pod_updates_may_change_only_images() -> None:
    old = pod()
    changed_image = pod()
    changed_image["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert validate_update("", "Pod", changed_image, old) == []
    changed_port = pod()
    changed_port["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    [cause] = validate_update("", "Pod", changed_port, pod())
    assert cause.field == "spec"
    assert cause.reason == "FieldValueForbidden"
    assert cause.message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    )
    more = pod(initContainers=[{"name": "init", "image": "busybox"}])
    [cause] = validate_update("", "Pod", more, pod())
    assert (cause.field, cause.message) == (
        "spec.initContainers",
        "Forbidden: pod updates may not add or remove containers",
    )


def test_metadata_name_and_uid_are_immutable() -> None:
    old = {"metadata": meta("a", uid="1")}
    new = {"metadata": meta("b", uid="2")}
    causes = validate("", "ConfigMap", new, old)
    assert [(c.field, c.message) for c in causes] == [
        ("metadata.name", 'Invalid value: "b": field is immutable'),
        ("metadata.uid", 'Invalid value: "2": field is immutable'),
    ]


def test_secret_type_and_immutable_data() -> None:
    old = {"metadata": meta(), "type": "Opaque", "data": {"a": "eA=="}, "immutable": True}
    new = {"metadata": meta(), "type": "kubernetes.io/tls", "data": {"a": "eQ=="}}
    causes = validate("", "Secret", new, old)
    assert [(c.field, c.reason) for c in causes][:3] == [
        ("type", INVALID),
        ("immutable", FORBIDDEN),
        ("data", FORBIDDEN),
    ]
    assert causes[0].message == 'Invalid value: "kubernetes.io/tls": field is immutable'


def test_statefulset_spec_fields_are_forbidden_to_change() -> None:
    def sts(service_name: str) -> Obj:
        return {
            "metadata": meta("db"),
            "spec": {
                "serviceName": service_name,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec()},
            },
        }

    assert validate_update("apps", "StatefulSet", sts("db"), sts("db")) == []
    [cause] = validate_update("apps", "StatefulSet", sts("db2"), sts("db"))
    assert (cause.field, cause.reason) == ("spec", FORBIDDEN)


def test_no_new_finalizers_while_deleting() -> None:
    old = {"metadata": meta(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["a.io/x"])}
    new = {"metadata": meta(finalizers=["a.io/x", "b.io/y"])}
    [cause] = validate("", "ConfigMap", new, old)
    assert cause.field == "metadata.finalizers"
    assert cause.message == (
        "Forbidden: no new finalizers can be added if the object is being deleted, found new "
        'finalizers []string{"b.io/y"}'
    )


# --- invalid_message ------------------------------------------------------------------------


def test_invalid_message_single_cause_has_no_brackets() -> None:
    causes = validate("", "ConfigMap", {"metadata": meta("Bad_Name")})
    assert invalid_message("ConfigMap", "Bad_Name", causes) == (
        f'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        f"{SUBDOMAIN_MSG}"
    )


def test_invalid_message_several_causes_are_bracketed_and_qualified() -> None:
    obj = deployment()
    default("apps", "Deployment", obj)
    causes = validate("apps", "Deployment", obj)
    message = invalid_message("Deployment", "web", causes, group="apps")
    assert message == (
        'Deployment.apps "web" is invalid: [spec.selector: Required value, '
        'spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match '
        "template `labels`]"
    )
    assert invalid_message("Deployment.apps", "web", causes) == message


def test_invalid_message_drops_repeated_causes_and_handles_none() -> None:
    cause = Cause("FieldValueRequired", "Required value", "spec.x")
    assert (
        invalid_message("Thing", "t", [cause, cause])
        == 'Thing "t" is invalid: spec.x: Required value'
    )
    assert invalid_message("Thing", "t", []) == 'Thing "t" is invalid'


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "offset"),
    [("aGVsbG8=", None), ("aGVsbG8", 4), ("ab!d", 2), ("abc", 0), ("aGVs\nbG8=", None)],
)
def test_secret_data_must_be_base64(value: str, offset: int | None) -> None:
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": meta(), "data": {"k": value}}
    error = decode_error("", "Secret", obj)
    if offset is None:
        assert error is None
    else:
        assert error == (
            f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input '
            f"byte {offset}"
        )


# --- defaulting -----------------------------------------------------------------------------


def test_pod_defaults() -> None:
    obj = {
        "metadata": meta(),
        "spec": {
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "registry:5000/app:1.0"},
                {"name": "c", "image": "app@sha256:abc"},
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch"}],
        },
    }
    default("", "Pod", obj)
    spec = obj["spec"]
    assert {k: spec[k] for k in spec if k not in ("containers", "volumes", "tolerations")} == {
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {},
        "enableServiceLinks": True,
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    first = spec["containers"][0]
    assert first == {
        "name": "a",
        "image": "nginx",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "imagePullPolicy": "Always",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
    }
    assert [c["imagePullPolicy"] for c in spec["containers"]] == [
        "Always",
        "IfNotPresent",
        "IfNotPresent",
    ]
    assert spec["volumes"] == [
        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
        {"name": "scratch", "emptyDir": {}},
    ]
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    assert validate("", "Pod", obj) == []
    before = copy.deepcopy(obj)
    default("", "Pod", obj)
    assert obj == before


def test_pod_limits_become_requests_and_sa_is_kept() -> None:
    obj = pod(serviceAccountName="builder")
    obj["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    default("", "Pod", obj)
    assert obj["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "1"},
        "requests": {"cpu": "1"},
    }
    assert obj["spec"]["serviceAccount"] == "builder"


def test_deployment_defaults() -> None:
    obj = deployment({"matchLabels": {"app": "web"}})
    default("apps", "Deployment", obj)
    spec = obj["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    template_spec = spec["template"]["spec"]
    assert template_spec["restartPolicy"] == "Always"
    assert template_spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # Admission's service account and the pod-only defaults stay out of templates.
    assert "serviceAccountName" not in template_spec
    assert "enableServiceLinks" not in template_spec


def test_recreate_deployment_gets_no_rolling_update() -> None:
    obj = deployment({"matchLabels": {"app": "web"}}, strategy={"type": "Recreate"})
    default("apps", "Deployment", obj)
    assert obj["spec"]["strategy"] == {"type": "Recreate"}


def test_other_workload_defaults() -> None:
    sts = {"metadata": meta(), "spec": {"template": {"spec": pod_spec()}}}
    default("apps", "StatefulSet", sts)
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 0},
    }
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    ds = {"metadata": meta(), "spec": {"template": {"spec": pod_spec()}}}
    default("apps", "DaemonSet", ds)
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    job = {"metadata": meta(), "spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}
    default("batch", "Job", job)
    assert (
        job["spec"]["completions"],
        job["spec"]["parallelism"],
        job["spec"]["backoffLimit"],
    ) == (
        1,
        1,
        6,
    )
    assert job["metadata"]["labels"] == {"a": "b"}


def test_service_defaults() -> None:
    obj = service(ports=[{"port": 80}, {"port": 443, "targetPort": "https"}])
    default("", "Service", obj)
    spec = obj["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [
        {"port": 80, "protocol": "TCP", "targetPort": 80},
        {"port": 443, "targetPort": "https", "protocol": "TCP"},
    ]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "clusterIP" not in spec
    external = {"metadata": meta(), "spec": {"type": "ExternalName", "externalName": "a.b"}}
    default("", "Service", external)
    assert "ipFamilies" not in external["spec"]
    assert validate("", "Service", external) == []


def test_secret_and_namespace_defaults() -> None:
    secret = {"metadata": meta(), "stringData": {"password": "hunter2"}}
    default("", "Secret", secret)
    assert secret == {"metadata": meta(), "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"}
    namespace: Obj = {"metadata": {"name": "team"}}
    default("", "Namespace", namespace)
    assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    assert namespace["spec"] == {"finalizers": ["kubernetes"]}
    assert namespace["status"] == {"phase": "Active"}


def test_binding_and_crd_defaults() -> None:
    binding: Obj = {
        "metadata": meta(),
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}],
    }
    default("rbac.authorization.k8s.io", "RoleBinding", binding)
    assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert [s["apiGroup"] for s in binding["subjects"]] == ["rbac.authorization.k8s.io", ""]
    assert validate("rbac.authorization.k8s.io", "RoleBinding", binding) == []
    obj = crd()
    default("apiextensions.k8s.io", "CustomResourceDefinition", obj)
    assert obj["spec"]["names"]["singular"] == "widget"
    assert obj["spec"]["names"]["listKind"] == "WidgetList"
    assert obj["status"]["storedVersions"] == ["v1"]


def test_unknown_kinds_are_left_alone() -> None:
    obj = {"metadata": meta(), "spec": {"anything": True}}
    default("example.com", "Widget", obj)
    assert obj == {"metadata": meta(), "spec": {"anything": True}}


def test_cause_as_status_cause() -> None:
    cause = Cause("FieldValueRequired", "Required value", "spec.selector")
    assert cause.as_status_cause() == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.selector",
    }
