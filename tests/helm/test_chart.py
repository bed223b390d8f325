"""The telepresence-oss chart as Helm renders and installs it: the traffic-manager's objects,
its namespace scope and RBAC, the values' schema, and the generated values reference.

Every rendered object is checked against the Kubernetes 1.32 schemas (kubernetes-validate,
strict: no unknown fields), and what the RBAC grants is asked of the API server's own
authorizer with SubjectAccessReviews, as the traffic-manager asks it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import helm_sdkpy
import jsonschema  # type: ignore[import-untyped]  # no stubs in the typecheck group
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client

from tests.helm.conftest import CHART, MANAGER_NAMESPACE, Cluster, Release

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
JANE = {"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}
DEVELOPERS = {"kind": "Group", "name": "developers", "apiGroup": "rbac.authorization.k8s.io"}
STATIC = {"namespaces": ["dev", "staging"]}
STATIC_SELECTOR = {
    "namespaceSelector": {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["dev", "staging"]}
        ]
    }
}
DYNAMIC = {"namespaceSelector": {"matchLabels": {"team": "blue"}}}
MANAGER = f"system:serviceaccount:{MANAGER_NAMESPACE}:traffic-manager"

#: The value sets of the issue, each rendered and validated. The namespaces they bind roles in
#: are created first, as the chart requires.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "static-namespaces": {**STATIC, "clientRbac": {"create": True, "subjects": [JANE]}},
    "static-selector": STATIC_SELECTOR,
    "dynamic-selector": {**DYNAMIC, "clientRbac": {"create": True, "subjects": [JANE]}},
    "client-rbac-namespaces": {
        **DYNAMIC,
        "clientRbac": {"create": True, "subjects": [JANE, DEVELOPERS], "namespaces": ["dev"]},
    },
    "rbac-only": {
        **STATIC,
        "rbac": {"only": True},
        "clientRbac": {"create": True, "subjects": [JANE]},
    },
    "everything-set": {
        "image": {"registry": "registry.example.com/team", "tag": "9.9.9", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "logLevel": "debug",
        "apiPort": 9081,
        "dataPort": 9082,
        "healthPort": 9083,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": 256e6}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "tp", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "podAnnotations": {"example.com/owner": "platform"},
        "podLabels": {"team": "platform"},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 2000,
            "readOnlyRootFilesystem": True,
        },
        "client": {
            "connectionTTL": "1h",
            "dns": {
                "includeSuffixes": [".private"],
                "excludeSuffixes": [".com", ".io"],
                "lookupTimeout": "3s",
            },
            "routing": {"alsoProxySubnets": ["10.200.0.0/16"], "neverProxySubnets": ["fd00::/8"]},
            "timeouts": {"intercept": "10s", "helm": 60, "trafficManagerAPI": 1.5},
        },
        "intercept": {"environment": {"excluded": ["DATABASE_PASSWORD", "API_KEY"]}},
        "workloads": {"argoRollouts": {"enabled": True}, "replicaSets": {"enabled": False}},
        "trafficManager": {"serviceMesh": {"type": "istio"}},
        "agent": {
            "logLevel": "trace",
            "resources": {"limits": {"cpu": 1}},
            "appProtocolStrategy": "portName",
        },
        "agentInjector": {"enabled": False},
    },
}


async def render(cluster: Cluster, values: dict[str, Any] | None = None) -> Release:
    """Install into a new cluster whose namespaces dev, staging and prod exist."""
    await cluster.create_namespaces("dev", "staging", "prod")
    return await cluster.install(values)


def container(release: Release) -> dict[str, Any]:
    deployment = release.find("Deployment", "traffic-manager", MANAGER_NAMESPACE)
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["traffic-manager"]
    return containers[0]


def config(release: Release) -> dict[str, Any]:
    """The traffic-manager's ConfigMap, each key parsed as the YAML it is."""
    data = release.find("ConfigMap", "traffic-manager", MANAGER_NAMESPACE)["data"]
    return {key: yaml.safe_load(text) for key, text in data.items()}


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(api group, resource, verb) of every rule of a role, for comparing grants."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def allowed(
    cluster: Cluster,
    user: str,
    verb: str,
    resource: str,
    namespace: str = "",
    *,
    group: str = "",
    subresource: str = "",
    groups: tuple[str, ...] = ("system:authenticated",),
) -> bool:
    """Whether the API server's authorizer lets a user do something: a SubjectAccessReview."""
    if user.startswith("system:serviceaccount:"):
        groups = (*groups, "system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}")
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": list(groups),
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "subresource": subresource,
                "namespace": namespace,
            },
        },
    }
    answer = await client.AuthorizationV1Api(cluster.api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def schema_nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of the values schema (definitions' included), with its path."""
    if not isinstance(schema, dict):
        return
    for name, child in schema.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from schema_nodes(child, f"{path}.{name}")
    for keyword in ("items", "additionalProperties"):
        yield from schema_nodes(schema.get(keyword), f"{path}[]")
    for name, definition in schema.get("definitions", {}).items():
        yield from schema_nodes(definition, f"#{name}")


# -- the chart itself ------------------------------------------------------------------------


async def test_lint_is_clean(cluster: Cluster) -> None:
    result = await helm_sdkpy.Lint(cluster.helm(MANAGER_NAMESPACE)).run(str(CHART))
    # helm-sdkpy reports each message's path and severity (its Go error does not survive JSON).
    assert result["Messages"] in (None, []), result["Messages"]
    assert result["Errors"] in (None, [])


def test_every_value_has_a_description_and_a_schema_that_refuses_typos() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    undescribed = [path for path, node in schema_nodes(schema) if not node.get("description")]
    assert not undescribed
    open_objects = [
        path
        for path, node in [("", schema), *schema_nodes(schema)]
        if "properties" in node and node.get("additionalProperties") is not False
    ]
    assert not open_objects


def test_the_values_reference_is_up_to_date() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "generate_values_doc", CHART.parent / "generate_values_doc.py"
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.PAGE.read_text() == generator.render(), (
        "docs/reference/chart-values.md is stale: run `uv run python helm/generate_values_doc.py`"
    )


@pytest.mark.parametrize("name", VALUE_SETS)
async def test_every_rendered_object_is_valid_for_kubernetes_1_32(
    cluster: Cluster, name: str
) -> None:
    release = await render(cluster, VALUE_SETS[name])
    assert release.objects
    for obj in release.objects:
        # Strict: an unknown field anywhere (a typo in a template) fails too.
        kubernetes_validate.validate(obj, "1.32", strict=True)
    assert release.record["info"]["status"] == "deployed"


# -- the traffic-manager's objects -------------------------------------------------------------


async def test_the_deployment_runs_the_traffic_manager_as_the_manager_expects(
    cluster: Cluster,
) -> None:
    release = await render(cluster)
    assert release.kinds() == {
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        *RBAC_KINDS,
    }
    deployment = release.find("Deployment", "traffic-manager", MANAGER_NAMESPACE)
    selector = {"app": "traffic-manager", "telepresence": "manager"}
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert deployment["metadata"]["labels"].items() >= selector.items()
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"] == selector
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    assert pod["spec"]["serviceAccountName"] == "traffic-manager"
    manager = container(release)
    assert manager["image"] == f"ghcr.io/telepresenceio/tel2:{APP_VERSION}"
    assert manager["imagePullPolicy"] == "IfNotPresent"
    assert "command" not in manager  # the image's default: python -m manager
    assert "args" not in manager
    ports = {port["name"]: port["containerPort"] for port in manager["ports"]}
    assert ports == {"api": 8081, "data": 8082, "health": 8083}
    assert manager["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert manager["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {variable["name"]: variable for variable in manager["env"]}
    assert {name: variable.get("value") for name, variable in env.items()} == {
        "LOG_LEVEL": "info",
        "MANAGER_NAMESPACE": None,
        "POD_IP": None,
        "API_PORT": "8081",
        "DATA_PORT": "8082",
        "HEALTH_PORT": "8083",
        "CONFIG_DIR": "/etc/traffic-manager",
        "TLS_DIR": "/var/run/secrets/traffic-manager-tls",
    }
    assert env["MANAGER_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert manager["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in manager["volumeMounts"]}
    assert mounts == {
        "/etc/traffic-manager": "config",
        "/var/run/secrets/traffic-manager-tls": "tls",
        "/tmp": "tmp",
    }
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "traffic-manager"
    assert volumes["tls"]["secret"]["secretName"] == "traffic-manager-tls"


async def test_values_reach_the_deployment(cluster: Cluster) -> None:
    values = VALUE_SETS["everything-set"]
    release = await render(cluster, values)
    manager = container(release)
    assert manager["image"] == "registry.example.com/team/tel2:9.9.9"
    assert manager["imagePullPolicy"] == "Always"
    assert manager["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": 256e6},
    }
    # Helm merges a map value over the default's: the rest of the default context stays.
    assert manager["securityContext"]["runAsUser"] == 2000
    assert manager["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {variable["name"]: variable.get("value") for variable in manager["env"]}
    assert (env["LOG_LEVEL"], env["API_PORT"], env["DATA_PORT"], env["HEALTH_PORT"]) == (
        "debug",
        "9081",
        "9082",
        "9083",
    )
    pod = release.find("Deployment", "traffic-manager", MANAGER_NAMESPACE)["spec"]["template"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert pod["spec"][key] == values[key]
    assert pod["metadata"]["annotations"]["example.com/owner"] == "platform"
    assert pod["metadata"]["labels"] == {
        "app": "traffic-manager",
        "telepresence": "manager",
        "team": "platform",
    }
    service = release.find("Service", "traffic-manager", MANAGER_NAMESPACE)
    assert [(port["name"], port["port"]) for port in service["spec"]["ports"]] == [
        ("api", 9081),
        ("data", 9082),
    ]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"registry": ""}, f"tel2:{APP_VERSION}"),
        (
            {"registry": "localhost:5000/", "name": "telepresence"},
            f"localhost:5000/telepresence:{APP_VERSION}",
        ),
        ({"tag": "1.2.3"}, "ghcr.io/telepresenceio/tel2:1.2.3"),
    ],
)
async def test_the_image_reference(cluster: Cluster, image: dict[str, str], expected: str) -> None:
    assert container(await render(cluster, {"image": image}))["image"] == expected


async def test_pod_labels_cannot_take_the_selector_away(cluster: Cluster) -> None:
    release = await render(cluster, {"podLabels": {"app": "mine", "tier": "tools"}})
    pod = release.find("Deployment", "traffic-manager", MANAGER_NAMESPACE)["spec"]["template"]
    assert pod["metadata"]["labels"] == {
        "app": "traffic-manager",
        "telepresence": "manager",
        "tier": "tools",
    }


async def test_the_service_is_headless_with_the_api_and_data_ports(cluster: Cluster) -> None:
    service = (await render(cluster)).find("Service", "traffic-manager", MANAGER_NAMESPACE)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"app": "traffic-manager", "telepresence": "manager"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("api", 8081, "api"),
        ("data", 8082, "data"),
    ]


async def test_the_tls_secret_holds_a_server_certificate_for_the_service_names(
    cluster: Cluster,
) -> None:
    secret = (await render(cluster)).find("Secret", "traffic-manager-tls", MANAGER_NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    pem = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    certificate = x509.load_pem_x509_certificate(pem["tls.crt"])
    authority = x509.load_pem_x509_certificate(pem["ca.crt"])
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "traffic-manager"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "traffic-manager",
        "traffic-manager.ambassador",
        "traffic-manager.ambassador.svc",
        "traffic-manager.ambassador.svc.cluster.local",
    ]
    assert certificate.issuer == authority.subject
    public_key = authority.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert certificate.signature_hash_algorithm is not None
    public_key.verify(
        certificate.signature,
        certificate.tbs_certificate_bytes,
        padding.PKCS1v15(),
        certificate.signature_hash_algorithm,
    )
    key = serialization.load_pem_private_key(pem["tls.key"], password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki)


async def test_an_upgrade_keeps_the_certificates_and_a_config_change_rolls_the_pod(
    cluster: Cluster,
) -> None:
    first = await render(cluster)
    core = client.CoreV1Api(cluster.api)
    before = (await core.read_namespaced_secret("traffic-manager-tls", MANAGER_NAMESPACE)).data

    logged = await cluster.upgrade({"logLevel": "debug"}, reuse_values=True)
    after = (await core.read_namespaced_secret("traffic-manager-tls", MANAGER_NAMESPACE)).data
    assert after == before
    assert (
        logged.find("Secret", "traffic-manager-tls", MANAGER_NAMESPACE)["data"]
        == first.find("Secret", "traffic-manager-tls", MANAGER_NAMESPACE)["data"]
    )
    assert {e["name"]: e.get("value") for e in container(logged)["env"]}["LOG_LEVEL"] == "debug"

    def checksum(release: Release) -> str:
        deployment = release.find("Deployment", "traffic-manager", MANAGER_NAMESPACE)
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    # The agents' log level follows the manager's, so the configuration changed too.
    assert config(logged)["agent.yaml"]["agent"]["logLevel"] == "debug"
    assert checksum(logged) != checksum(first)
    annotated = await cluster.upgrade({"podAnnotations": {"a": "b"}}, reuse_values=True)
    assert checksum(annotated) == checksum(logged)  # the ConfigMap did not change
    configured = await cluster.upgrade(
        {"client": {"dns": {"excludeSuffixes": [".com"]}}}, reuse_values=True
    )
    assert checksum(configured) != checksum(annotated)
    deployment = await client.AppsV1Api(cluster.api).read_namespaced_deployment(
        "traffic-manager", MANAGER_NAMESPACE
    )
    assert deployment.spec.template.metadata.annotations["checksum/config"] == checksum(configured)
    assert deployment.spec.template.spec.containers[0].env[0].value == "debug"  # reused


# -- the configuration the traffic-manager reads -------------------------------------------------


async def test_the_default_configuration(cluster: Cluster) -> None:
    assert config(await render(cluster)) == {
        "client.yaml": {},  # nothing set, nothing pushed: clients keep their own settings
        "namespaces.yaml": {},  # all namespaces
        "intercept.yaml": {"environment": {"excluded": []}},
        "workloads.yaml": {
            "deployments": {"enabled": True},
            "replicaSets": {"enabled": True},
            "statefulSets": {"enabled": True},
            "argoRollouts": {"enabled": False},
        },
        "service-mesh.yaml": {"type": "none"},
        "agent.yaml": {
            "agent": {
                "image": {
                    "registry": "ghcr.io/telepresenceio",
                    "name": "tel2",
                    "tag": APP_VERSION,
                    "pullPolicy": "IfNotPresent",
                },
                "logLevel": "info",
                "port": 9900,
                "resources": {},
                "initResources": {},
                "appProtocolStrategy": "http2Probe",
                "envoy": {"logLevel": "warning", "serverPort": 18000, "adminPort": 19000},
            },
            "agentInjector": {
                "enabled": True,
                "name": "agent-injector",
                "webhook": {
                    "name": "agent-injector-webhook",
                    "port": 8443,
                    "servicePath": "/traffic-agent",
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 5,
                },
            },
        },
    }


async def test_the_configuration_carries_the_values(cluster: Cluster) -> None:
    values = VALUE_SETS["everything-set"]
    configured = config(await render(cluster, values))
    assert configured["client.yaml"] == {
        "connectionTTL": "1h",
        "dns": {
            "includeSuffixes": [".private"],
            "excludeSuffixes": [".com", ".io"],
            "lookupTimeout": "3s",
        },
        # The empty allowConflictingSubnets is not pushed.
        "routing": {"alsoProxySubnets": ["10.200.0.0/16"], "neverProxySubnets": ["fd00::/8"]},
        "timeouts": {"intercept": "10s", "helm": 60, "trafficManagerAPI": 1.5},
    }
    assert configured["intercept.yaml"] == {
        "environment": {"excluded": ["DATABASE_PASSWORD", "API_KEY"]}
    }
    assert configured["workloads.yaml"] == {
        "deployments": {"enabled": True},
        "replicaSets": {"enabled": False},
        "statefulSets": {"enabled": True},
        "argoRollouts": {"enabled": True},
    }
    assert configured["service-mesh.yaml"] == {"type": "istio"}
    agent = configured["agent.yaml"]["agent"]
    assert agent["image"] == {
        "registry": "registry.example.com/team",
        "name": "tel2",
        "tag": "9.9.9",
        "pullPolicy": "IfNotPresent",
    }
    assert (agent["logLevel"], agent["resources"], agent["appProtocolStrategy"]) == (
        "trace",
        {"limits": {"cpu": 1}},
        "portName",
    )
    assert configured["agent.yaml"]["agentInjector"]["enabled"] is False


@pytest.mark.parametrize(
    ("values", "recorded"),
    [
        (STATIC, {"namespaces": ["dev", "staging"]}),
        (STATIC_SELECTOR, {"namespaces": ["dev", "staging"]}),
        (
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}},
            {"namespaces": ["dev"]},
        ),
        (DYNAMIC, {"namespaceSelector": {"matchLabels": {"team": "blue"}}}),
        ({"namespaceSelector": {}}, {}),
    ],
    ids=[
        "namespaces",
        "name-in-selector",
        "name-label-selector",
        "label-selector",
        "empty-selector",
    ],
)
async def test_the_selection_is_recorded_as_static_or_dynamic(
    cluster: Cluster, values: dict[str, Any], recorded: dict[str, Any]
) -> None:
    assert config(await render(cluster, values))["namespaces.yaml"] == recorded


# -- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [STATIC, STATIC_SELECTOR], ids=["namespaces", "static-selector"])
async def test_static_selection_gives_role_pairs_in_exactly_those_namespaces(
    cluster: Cluster, values: dict[str, Any]
) -> None:
    release = await render(cluster, values)
    managed = {("dev", "traffic-manager"), ("staging", "traffic-manager")}
    own = {(MANAGER_NAMESPACE, "traffic-manager-config")}
    assert release.named("Role") == managed | own
    assert release.named("RoleBinding") == managed | own
    role = release.find("Role", "traffic-manager", "staging")
    assert {
        ("", "pods", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "get"),
        ("apps", "deployments", "watch"),
    } <= rules(role)
    binding = release.find("RoleBinding", "traffic-manager", "dev")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "traffic-manager", "namespace": MANAGER_NAMESPACE}
    ]
    # Cluster-wide, only what is always cluster-wide: reviews and nodes.
    cluster_role = release.find("ClusterRole", f"traffic-manager-{MANAGER_NAMESPACE}")
    assert rules(cluster_role) == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
    }
    # What the API server grants the traffic-manager's ServiceAccount with those objects.
    assert await allowed(cluster, MANAGER, "list", "pods", "dev")
    assert await allowed(
        cluster, MANAGER, "watch", "endpointslices", "staging", group="discovery.k8s.io"
    )
    assert not await allowed(cluster, MANAGER, "list", "pods", "prod")
    assert not await allowed(cluster, MANAGER, "list", "namespaces")
    assert await allowed(cluster, MANAGER, "create", "tokenreviews", group="authentication.k8s.io")
    assert await allowed(
        cluster, MANAGER, "create", "subjectaccessreviews", group="authorization.k8s.io"
    )
    assert await allowed(cluster, MANAGER, "list", "nodes")
    assert await allowed(cluster, MANAGER, "watch", "configmaps", MANAGER_NAMESPACE)
    assert not await allowed(cluster, MANAGER, "get", "configmaps", "dev")
    # The service-range probe: a dry-run create in its own namespace, nowhere else.
    assert await allowed(cluster, MANAGER, "create", "services", MANAGER_NAMESPACE)
    assert not await allowed(cluster, MANAGER, "create", "services", "dev")


async def test_dynamic_selection_gives_cluster_roles(cluster: Cluster) -> None:
    release = await render(cluster, DYNAMIC)
    assert release.named("Role") == {(MANAGER_NAMESPACE, "traffic-manager-config")}
    assert release.named("ClusterRole") == {(None, f"traffic-manager-{MANAGER_NAMESPACE}")}
    assert release.named("ClusterRoleBinding") == {(None, f"traffic-manager-{MANAGER_NAMESPACE}")}
    granted = rules(release.find("ClusterRole", f"traffic-manager-{MANAGER_NAMESPACE}"))
    for resource in ("namespaces", "services", "pods"):
        assert {("", resource, verb) for verb in ("get", "list", "watch")} <= granted
    assert ("discovery.k8s.io", "endpointslices", "watch") in granted
    assert await allowed(cluster, MANAGER, "list", "pods", "prod")
    assert await allowed(cluster, MANAGER, "watch", "namespaces")


async def test_workload_kinds_select_the_managers_rules(cluster: Cluster) -> None:
    release = await render(
        cluster,
        {"workloads": {"argoRollouts": {"enabled": True}, "deployments": {"enabled": False}}},
    )
    granted = rules(release.find("ClusterRole", f"traffic-manager-{MANAGER_NAMESPACE}"))
    workloads = {
        (group, resource) for group, resource, _ in granted if group in ("apps", "argoproj.io")
    }
    assert workloads == {
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("argoproj.io", "rollouts"),
    }


async def test_rbac_only_renders_only_rbac(cluster: Cluster) -> None:
    release = await render(cluster, VALUE_SETS["rbac-only"])
    assert release.kinds() == RBAC_KINDS
    assert "traffic-manager-connect" in {name for _, name in release.named("Role")}
    apps = client.AppsV1Api(cluster.api)
    assert not (await apps.list_namespaced_deployment(MANAGER_NAMESPACE)).items


async def test_rbac_only_without_manager_rbac_renders_only_the_clients(cluster: Cluster) -> None:
    release = await render(
        cluster,
        {
            "rbac": {"only": True},
            "managerRbac": {"create": False},
            "clientRbac": {"create": True, "subjects": [JANE]},
        },
    )
    assert release.kinds() == RBAC_KINDS
    assert release.named("ClusterRole") == {(None, f"telepresence-client-{MANAGER_NAMESPACE}")}
    assert release.named("Role") == {(MANAGER_NAMESPACE, "traffic-manager-connect")}


async def test_no_rbac_at_all(cluster: Cluster) -> None:
    release = await render(cluster, {"managerRbac": {"create": False}})
    assert not release.kinds() & RBAC_KINDS


async def test_client_rbac_binds_its_subjects_in_the_static_namespaces(cluster: Cluster) -> None:
    release = await render(cluster, VALUE_SETS["static-namespaces"])
    client_role = f"telepresence-client-{MANAGER_NAMESPACE}"
    assert {name for _, name in release.named("ClusterRole")} == {
        f"traffic-manager-{MANAGER_NAMESPACE}"
    }
    assert {(ns, name) for ns, name in release.named("RoleBinding") if name == client_role} == {
        ("dev", client_role),
        ("staging", client_role),
    }
    for namespace in ("dev", "staging"):
        assert release.find("RoleBinding", client_role, namespace)["subjects"] == [JANE]
    assert release.find("RoleBinding", "traffic-manager-connect", MANAGER_NAMESPACE)[
        "subjects"
    ] == [JANE]
    # Jane may connect (port-forward to the manager, as it checks) and work in dev; Bob may not.
    for namespace in (MANAGER_NAMESPACE, "dev"):
        assert await allowed(
            cluster, "jane", "create", "pods", namespace, subresource="portforward"
        )
        assert not await allowed(
            cluster, "bob", "create", "pods", namespace, subresource="portforward"
        )
    assert await allowed(cluster, "jane", "get", "pods", "staging", subresource="log")
    assert not await allowed(cluster, "jane", "list", "pods", "prod")
    assert not await allowed(cluster, "jane", "list", "namespaces")


async def test_client_rbac_is_cluster_wide_with_dynamic_selection(cluster: Cluster) -> None:
    release = await render(cluster, VALUE_SETS["dynamic-selector"])
    client_role = f"telepresence-client-{MANAGER_NAMESPACE}"
    assert release.find("ClusterRoleBinding", client_role)["subjects"] == [JANE]
    assert ("", "namespaces", "list") in rules(release.find("ClusterRole", client_role))
    assert await allowed(cluster, "jane", "list", "namespaces")
    assert await allowed(cluster, "jane", "create", "pods", "prod", subresource="portforward")
    assert not await allowed(cluster, "bob", "list", "namespaces")


async def test_client_rbac_namespaces_are_taken_as_given(cluster: Cluster) -> None:
    release = await render(cluster, VALUE_SETS["client-rbac-namespaces"])
    client_role = f"telepresence-client-{MANAGER_NAMESPACE}"
    assert (None, client_role) not in release.named("ClusterRole")
    assert release.find("RoleBinding", client_role, "dev")["subjects"] == [JANE, DEVELOPERS]
    assert await allowed(cluster, "sam", "list", "pods", "dev", groups=("developers",))
    assert not await allowed(cluster, "sam", "list", "pods", "staging", groups=("developers",))


# -- values that are refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"namespaces": ["dev"], "namespaceSelector": {"matchLabels": {"team": "blue"}}},
            "namespaces and namespaceSelector are mutually exclusive",
        ),
        ({"logLevl": "debug"}, "at '': additional properties 'logLevl' not allowed"),
        ({"image": {"tga": "1.0"}}, "at '/image': additional properties 'tga' not allowed"),
        (
            {"clientRbac": {"subject": [JANE]}},
            "at '/clientRbac': additional properties 'subject' not allowed",
        ),
        ({"apiPort": "api"}, "at '/apiPort': got string, want integer"),
        ({"namespaces": "dev"}, "at '/namespaces': got string, want array"),
        ({"rbac": {"only": "yes"}}, "at '/rbac/only': got string, want boolean"),
        ({"namespaces": ["Dev"]}, "at '/namespaces/0': 'Dev' does not match pattern"),
        ({"logLevel": "verbose"}, "at '/logLevel': value must be one of"),
        (
            {"trafficManager": {"serviceMesh": {"type": "linkerd"}}},
            "value must be one of 'none', 'istio'",
        ),
        (
            {"client": {"routing": {"alsoProxySubnets": ["10.0.0.0"]}}},
            "at '/client/routing/alsoProxySubnets/0'",
        ),
        ({"client": {"timeouts": {"intercept": "ten seconds"}}}, "at '/client/timeouts/intercept'"),
        (
            {"clientRbac": {"create": True}},
            "clientRbac.subjects must list the users, groups or service accounts",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}},
            'namespaceSelector: the In requirement on "team" needs at least one value',
        ),
    ],
    ids=[
        "namespaces-and-selector",
        "top-level-typo",
        "nested-typo",
        "client-rbac-typo",
        "port-type",
        "namespaces-type",
        "bool-type",
        "namespace-name",
        "log-level",
        "service-mesh",
        "cidr",
        "duration",
        "client-rbac-without-subjects",
        "in-without-values",
    ],
)
async def test_bad_values_are_refused_with_a_clear_error(
    cluster: Cluster, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_sdkpy.InstallError) as raised:
        await render(cluster, values)
    assert message in str(raised.value)
    # Refused before anything is applied: no release record, not even the namespace.
    core = client.CoreV1Api(cluster.api)
    assert not (await core.list_secret_for_all_namespaces(label_selector="owner=helm")).items
    namespaces = {item.metadata.name for item in (await core.list_namespace()).items}
    assert MANAGER_NAMESPACE not in namespaces
