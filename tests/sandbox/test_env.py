"""A container's environment, resolv.conf and hosts file, as kubelet builds them.

Each case is what a program in a pod would read (``os.environ``, ``/etc/resolv.conf``,
``/etc/hosts``) for a pod and the objects around it, kept in a bare store: these builders
are pure functions, so no server runs.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sandbox.apiserver.store import Store
from sandbox.node.env import (
    EnvError,
    command_and_args,
    container_env,
    expand,
    hostname,
    hosts_file,
    pod_hostname,
    quantity,
    resolv_conf,
    service_links,
)

pytestmark = pytest.mark.timeout(10)

Obj = dict[str, Any]
KUBERNETES_LINKS = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


def service(name: str, namespace: str, cluster_ip: str | None, *ports: Obj) -> Obj:
    spec: Obj = {"ports": list(ports)}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def put(store: Store, plural: str, obj: Obj) -> None:
    store.create(("", plural), obj)


@pytest.fixture
def store() -> Store:
    store = Store()
    put(
        store,
        "services",
        service("kubernetes", "default", "10.96.0.1", {"name": "https", "port": 443}),
    )
    return store


def pod(namespace: str = "shop", **spec: Any) -> Obj:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": namespace,
            "uid": "5f0c1b9e-0000-4000-8000-000000000001",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "builder",
            "enableServiceLinks": True,
            "containers": [{"name": "app", "image": "app"}],
            **spec,
        },
    }


def env_of(store: Store, the_pod: Obj, container: Obj | None = None) -> dict[str, str]:
    return container_env(
        the_pod,
        container if container is not None else the_pod["spec"]["containers"][0],
        store=store,
        pod_ip="10.244.1.7",
        host_ip="172.20.0.2",
        node_name="node-1",
    )


def with_env(*env: Obj, env_from: list[Obj] | None = None, **container: Any) -> Obj:
    spec_container: Obj = {"name": "app", "image": "app", "env": list(env), **container}
    if env_from is not None:
        spec_container["envFrom"] = env_from
    return pod(containers=[spec_container])


# -- service links ---------------------------------------------------------------------------


def test_every_service_of_the_namespace_gets_docker_link_variables(store: Store) -> None:
    put(
        store,
        "services",
        service(
            "cart-api",
            "shop",
            "10.96.0.20",
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "metrics-udp", "port": 9125, "protocol": "UDP"},
        ),
    )
    env = env_of(store, pod())
    assert {k: v for k, v in env.items() if k.startswith("CART_API")} == {
        "CART_API_SERVICE_HOST": "10.96.0.20",
        "CART_API_SERVICE_PORT": "80",
        "CART_API_SERVICE_PORT_HTTP": "80",
        "CART_API_SERVICE_PORT_METRICS_UDP": "9125",
        "CART_API_PORT": "tcp://10.96.0.20:80",
        "CART_API_PORT_80_TCP": "tcp://10.96.0.20:80",
        "CART_API_PORT_80_TCP_PROTO": "tcp",
        "CART_API_PORT_80_TCP_PORT": "80",
        "CART_API_PORT_80_TCP_ADDR": "10.96.0.20",
        "CART_API_PORT_9125_UDP": "udp://10.96.0.20:9125",
        "CART_API_PORT_9125_UDP_PROTO": "udp",
        "CART_API_PORT_9125_UDP_PORT": "9125",
        "CART_API_PORT_9125_UDP_ADDR": "10.96.0.20",
    }
    assert {k: v for k, v in env.items() if k.startswith("KUBERNETES_")} == KUBERNETES_LINKS


def test_services_without_a_cluster_ip_or_elsewhere_give_nothing(store: Store) -> None:
    put(store, "services", service("headless", "shop", "None", {"port": 80}))
    put(store, "services", service("external", "shop", None))
    put(store, "services", service("elsewhere", "other", "10.96.0.9", {"port": 80}))
    assert env_of(store, pod()) == KUBERNETES_LINKS


def test_service_links_off_still_gives_the_kubernetes_service(store: Store) -> None:
    put(store, "services", service("cart", "shop", "10.96.0.20", {"port": 80}))
    assert env_of(store, pod(enableServiceLinks=False)) == KUBERNETES_LINKS


def test_a_kubernetes_service_of_the_pods_namespace_takes_the_place_of_defaults() -> None:
    services = [
        service("kubernetes", "shop", "10.96.0.50", {"port": 8443}),
        service("kubernetes", "default", "10.96.0.1", {"name": "https", "port": 443}),
    ]
    links = service_links(services, "shop", enable_service_links=True)
    assert links["KUBERNETES_SERVICE_HOST"] == "10.96.0.50"
    assert "KUBERNETES_SERVICE_PORT_HTTPS" not in links
    assert service_links(services, "shop", enable_service_links=False)[
        "KUBERNETES_SERVICE_HOST"
    ] == ("10.96.0.1")


# -- $(VAR) expansion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x-$(A)-$(B)-y", "x-a-b-y"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(A", "$(A"),
        ("$A and $", "$A and $"),
        ("$()", "$()"),
        ("100$", "100$"),
    ],
)
def test_expansion_follows_the_kubernetes_rules(text: str, expected: str) -> None:
    known = {"A": "a", "B": "b"}
    assert expand(text, lambda name: known.get(name, f"$({name})")) == expected


def test_values_expand_what_is_defined_before_them_and_service_links(store: Store) -> None:
    the_pod = with_env(
        {"name": "HOST", "value": "db"},
        {"name": "URL", "value": "postgres://$(HOST):$(PORT)/$(KUBERNETES_SERVICE_HOST)"},
        {"name": "PORT", "value": "5432"},
        {"name": "ESCAPED", "value": "$$(HOST)"},
        {"name": "EMPTY"},
    )
    env = env_of(store, the_pod)
    assert env["URL"] == "postgres://db:$(PORT)/10.96.0.1"
    assert env["ESCAPED"] == "$(HOST)"
    assert env["EMPTY"] == ""


def test_command_and_args_expand_the_environment() -> None:
    container = {
        "name": "app",
        "command": ["/bin/echo", "$(GREETING)"],
        "args": ["$(NAME)", "$$(NAME)", "$(UNSET)"],
    }
    assert command_and_args(container, {"GREETING": "hello", "NAME": "web"}) == (
        ["/bin/echo", "hello"],
        ["web", "$(NAME)", "$(UNSET)"],
    )
    assert command_and_args({"name": "app"}, {}) == ([], [])


# -- valueFrom -------------------------------------------------------------------------------


def field(path: str) -> Obj:
    return {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def test_field_references(store: Store) -> None:
    paths = {
        "NAME": "metadata.name",
        "NAMESPACE": "metadata.namespace",
        "UID": "metadata.uid",
        "APP": "metadata.labels['app']",
        "MISSING_LABEL": "metadata.labels['nope']",
        "NOTE": "metadata.annotations['note']",
        "NODE": "spec.nodeName",
        "ACCOUNT": "spec.serviceAccountName",
        "HOST_IP": "status.hostIP",
        "HOST_IPS": "status.hostIPs",
        "POD_IP": "status.podIP",
        "POD_IPS": "status.podIPs",
    }
    the_pod = with_env(*({"name": name, **field(path)} for name, path in paths.items()))
    env = env_of(store, the_pod)
    assert {name: env[name] for name in paths} == {
        "NAME": "web-0",
        "NAMESPACE": "shop",
        "UID": "5f0c1b9e-0000-4000-8000-000000000001",
        "APP": "web",
        "MISSING_LABEL": "",
        "NOTE": 'say "hi"',
        "NODE": "node-1",
        "ACCOUNT": "builder",
        "HOST_IP": "172.20.0.2",
        "HOST_IPS": "172.20.0.2",
        "POD_IP": "10.244.1.7",
        "POD_IPS": "10.244.1.7",
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("spec.containers", "field label not supported: spec.containers"),
        ("metadata.name['x']", "field label does not support subscript: metadata.name['x']"),
        ("status.phase", "unsupported fieldPath: status.phase"),
    ],
)
def test_unsupported_field_references_fail(store: Store, path: str, message: str) -> None:
    with pytest.raises(EnvError) as raised:
        env_of(store, with_env({"name": "X", **field(path)}))
    assert str(raised.value) == message


def resource(name: str, resource_name: str, divisor: str = "0", container: str = "") -> Obj:
    selector = {"resource": resource_name, "divisor": divisor}
    if container:
        selector["containerName"] = container
    return {"name": name, "valueFrom": {"resourceFieldRef": selector}}


def test_resource_references_divide_and_round_up(store: Store) -> None:
    limited = {
        "name": "app",
        "image": "app",
        "resources": {
            "limits": {"cpu": "1500m", "memory": "300Mi"},
            "requests": {"cpu": "250m", "memory": "100Mi"},
        },
        "env": [
            resource("CPU", "limits.cpu"),
            resource("CPU_MILLI", "limits.cpu", "1m"),
            resource("MEMORY", "limits.memory"),
            resource("MEMORY_MI", "limits.memory", "1Mi"),
            resource("MEMORY_GI", "limits.memory", "1Gi"),
            resource("CPU_REQUEST", "requests.cpu", "1m"),
            resource("SIDE_MEMORY", "limits.memory", "1Mi", container="side"),
            resource("SIDE_CPU_REQUEST", "requests.cpu", container="side"),
        ],
    }
    the_pod = pod(containers=[limited, {"name": "side", "image": "side"}])
    env = env_of(store, the_pod, limited)
    assert {k: env[k] for k in ("CPU", "CPU_MILLI", "MEMORY", "MEMORY_MI", "MEMORY_GI")} == {
        "CPU": "2",
        "CPU_MILLI": "1500",
        "MEMORY": str(300 * 2**20),
        "MEMORY_MI": "300",
        "MEMORY_GI": "1",
    }
    assert env["CPU_REQUEST"] == "250"
    # A container without limits sees the node's allocatable resources; no request is 0.
    assert env["SIDE_MEMORY"] == str(8 * 1024)
    assert env["SIDE_CPU_REQUEST"] == "0"


def test_unknown_resources_and_containers_fail(store: Store) -> None:
    with pytest.raises(EnvError, match=r"^unsupported container resource : limits\.gpu$"):
        env_of(store, with_env(resource("X", "limits.gpu")))
    with pytest.raises(EnvError, match=r"^container ghost not found$"):
        env_of(store, with_env(resource("X", "limits.cpu", container="ghost")))


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("250m", 0.25), ("1.5Gi", 1.5 * 2**30), ("2k", 2000), ("1e3", 1000), ("-1", -1)],
)
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == value


def secret(name: str, **data: str) -> Obj:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name, "namespace": "shop"}, "data": encoded}


def config_map(name: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "shop"}, "data": data}


def key_ref(kind: str, name: str, key: str, *, optional: bool | None = None) -> Obj:
    ref: Obj = {"name": name, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"valueFrom": {kind: ref}}


def test_config_map_and_secret_keys(store: Store) -> None:
    put(store, "configmaps", config_map("settings", mode="fast"))
    put(store, "secrets", secret("db", password="s3cr\u00e9t"))
    the_pod = with_env(
        {"name": "MODE", **key_ref("configMapKeyRef", "settings", "mode")},
        {"name": "PASSWORD", **key_ref("secretKeyRef", "db", "password")},
        {"name": "GONE", **key_ref("configMapKeyRef", "settings", "absent", optional=True)},
        {"name": "ALSO_GONE", **key_ref("secretKeyRef", "missing", "x", optional=True)},
    )
    env = env_of(store, the_pod)
    assert env["MODE"] == "fast"
    assert env["PASSWORD"] == "s3cr\u00e9t"
    assert "GONE" not in env
    assert "ALSO_GONE" not in env


def test_secret_bytes_reach_the_process_unchanged(store: Store) -> None:
    raw = b"\xff\x00binary"
    put(
        store,
        "secrets",
        {
            "metadata": {"name": "blob", "namespace": "shop"},
            "data": {"k": base64.b64encode(raw).decode()},
        },
    )
    env = env_of(store, with_env({"name": "BLOB", **key_ref("secretKeyRef", "blob", "k")}))
    assert env["BLOB"].encode("utf-8", "surrogateescape") == raw


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (key_ref("configMapKeyRef", "absent", "k"), 'configmap "absent" not found'),
        (key_ref("secretKeyRef", "absent", "k"), 'secret "absent" not found'),
        (
            key_ref("configMapKeyRef", "settings", "nope"),
            "couldn't find key nope in ConfigMap shop/settings",
        ),
        (key_ref("secretKeyRef", "db", "nope"), "couldn't find key nope in Secret shop/db"),
        (
            key_ref("configMapKeyRef", "settings", "nope", optional=False),
            "couldn't find key nope in ConfigMap shop/settings",
        ),
    ],
)
def test_missing_references_fail_as_kubelet_reports_them(
    store: Store, var: Obj, message: str
) -> None:
    put(store, "configmaps", config_map("settings", mode="fast"))
    put(store, "secrets", secret("db", password="x"))
    with pytest.raises(EnvError) as raised:
        env_of(store, with_env({"name": "X", **var}))
    assert str(raised.value) == message


def test_env_from_with_prefixes_and_precedence(store: Store) -> None:
    put(store, "configmaps", config_map("settings", MODE="fast", LEVEL="3"))
    put(store, "secrets", secret("db", PASSWORD="pw", MODE="from-secret"))
    put(store, "services", service("cache", "shop", "10.96.0.30", {"port": 6379}))
    put(
        store,
        "configmaps",
        config_map("clash", CACHE_SERVICE_HOST="overridden", **{"bad=key": "x", "ok.key": "y"}),
    )
    the_pod = with_env(
        {"name": "LEVEL", "value": "9"},
        {"name": "COPY", "value": "$(DB_PASSWORD)"},
        env_from=[
            {"configMapRef": {"name": "settings"}},
            {"secretRef": {"name": "db"}, "prefix": "DB_"},
            {"secretRef": {"name": "db"}},
            {"configMapRef": {"name": "clash"}},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
    )
    env = env_of(store, the_pod)
    assert env["MODE"] == "from-secret"  # a later source wins
    assert env["LEVEL"] == "9"  # env wins over envFrom
    assert env["DB_PASSWORD"] == "pw"
    assert env["COPY"] == "pw"
    assert env["CACHE_SERVICE_HOST"] == "overridden"  # envFrom wins over service links
    assert env["ok.key"] == "y"
    assert "bad=key" not in env
    with pytest.raises(EnvError, match=r'^configmap "absent" not found$'):
        env_of(store, with_env(env_from=[{"configMapRef": {"name": "absent"}}]))


# -- resolv.conf -----------------------------------------------------------------------------

HOST_RESOLV = "# the node's\nnameserver 192.0.2.53\nsearch corp.example. .\noptions timeout:2\n"


def resolv(the_pod: Obj, **kwargs: Any) -> str:
    return resolv_conf(the_pod, nameserver="10.96.0.10", cluster_domain="cluster.local", **kwargs)


def test_cluster_first() -> None:
    assert resolv(pod()) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )
    with_host = resolv(pod(dnsPolicy="ClusterFirst"), host_resolv_conf=HOST_RESOLV)
    assert with_host.splitlines()[0] == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example"
    )


def test_default_policy_uses_the_nodes_settings() -> None:
    # Without a node resolv.conf (kubelet --resolv-conf=""), lookups go nowhere.
    assert resolv(pod(dnsPolicy="Default")) == "search .\nnameserver 127.0.0.1\n"
    assert resolv(pod(dnsPolicy="Default"), host_resolv_conf=HOST_RESOLV) == (
        "search corp.example\nnameserver 192.0.2.53\noptions timeout:2\n"
    )
    host_network = pod(dnsPolicy="ClusterFirst", hostNetwork=True)
    assert resolv(host_network) == "search .\nnameserver 127.0.0.1\n"
    with_host_net = pod(dnsPolicy="ClusterFirstWithHostNet", hostNetwork=True)
    assert "nameserver 10.96.0.10\n" in resolv(with_host_net)


def test_none_policy_and_dns_config() -> None:
    config = {
        "nameservers": ["1.1.1.1", "10.96.0.10"],
        "searches": ["extra.example", "svc.cluster.local"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    assert resolv(pod(dnsPolicy="None", dnsConfig=config)) == (
        "search extra.example svc.cluster.local\n"
        "nameserver 1.1.1.1\n"
        "nameserver 10.96.0.10\n"
        "options ndots:2 edns0\n"
    )
    merged = resolv(pod(dnsConfig=config))
    assert merged == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local extra.example\n"
        "nameserver 10.96.0.10\n"
        "nameserver 1.1.1.1\n"
        "options ndots:2 edns0\n"
    )
    many = {"nameservers": ["1.0.0.1", "1.0.0.2", "1.0.0.3"]}
    assert resolv(pod(dnsConfig=many)).count("nameserver") == 3


# -- hosts and host names --------------------------------------------------------------------

LOCALHOST = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def test_hosts_file() -> None:
    hosts = hosts_file(pod(), pod_ip="10.244.1.7", cluster_domain="cluster.local")
    assert hosts == LOCALHOST + "10.244.1.7\tweb-0\n"
    named = pod(
        hostname="db-0",
        subdomain="db",
        hostAliases=[{"ip": "192.0.2.1", "hostnames": ["foo.local", "bar.local"]}],
    )
    assert hosts_file(named, pod_ip="10.244.1.7", cluster_domain="cluster.local") == (
        LOCALHOST + "10.244.1.7\tdb-0.db.shop.svc.cluster.local\tdb-0\n"
        "\n# Entries added by HostAliases.\n192.0.2.1\tfoo.local\tbar.local\n"
    )


def test_host_names() -> None:
    long = pod()
    long["metadata"]["name"] = "a" * 62 + "-b"
    assert pod_hostname(long, cluster_domain="cluster.local") == ("a" * 62, "")
    fqdn = pod(subdomain="web", setHostnameAsFQDN=True)
    assert hostname(fqdn, cluster_domain="cluster.local") == "web-0.web.shop.svc.cluster.local"
    assert hostname(pod(subdomain="web"), cluster_domain="cluster.local") == "web-0"
    with pytest.raises(EnvError, match='pod Subdomain "Bad_Name" is not a valid DNS label'):
        pod_hostname(pod(subdomain="Bad_Name"), cluster_domain="cluster.local")
    with pytest.raises(EnvError, match=r"FQDN .* is too long"):
        hostname(pod(subdomain="x" * 40, setHostnameAsFQDN=True), cluster_domain="cluster.local")
