"""How the manager learns the cluster's network, and which namespaces it serves.

The rules (subnets from addresses, the Service range from the API server's refusal) are tested
as functions; the discovery is tested against the sandbox API server, as the admin and as a
manager whose RBAC does not let it read nodes.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest

from manager import kube
from manager.changes import Signal
from manager.cluster_info import (
    ClusterInfo,
    Endpoints,
    NodeSubnets,
    covering_subnets,
    derive_service_subnet,
    parse_service_range,
    probe_service_subnet,
)
from manager.inventory import Inventory
from manager.policy import ScopePolicy
from manager.resolv import ResolvConf
from manager.scope import LabelSelector, NamespaceSelection, Requirement

from .harness import RBAC, Cluster

if TYPE_CHECKING:
    from collections.abc import Sequence

pytestmark = pytest.mark.timeout(30)

CLUSTER_ROLES = kube.Kind(RBAC, "v1", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDINGS = kube.Kind(RBAC, "v1", "clusterrolebindings", namespaced=False)
# What kube-apiserver answers for a ClusterIP outside its range (Kubernetes 1.29 to 1.32).
REFUSAL = (
    'Service "t2-tst-dummy" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}:'
    " failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range."
    " The range of valid IPs is 10.96.0.0/12"
)


def ips(*texts: str) -> list[Any]:
    return [ipaddress.ip_address(text) for text in texts]


def nets(*texts: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


def test_the_service_range_from_the_api_servers_refusal() -> None:
    assert parse_service_range(REFUSAL) == ipaddress.ip_network("10.96.0.0/12")
    assert parse_service_range("The range of valid IPs is 10.43.0.0/16, fd00:43::/112") == (
        ipaddress.ip_network("10.43.0.0/16")
    )
    assert parse_service_range("spec.clusterIPs: Invalid value: something else") is None


def test_pod_addresses_are_covered_by_merged_subnets() -> None:
    assert covering_subnets(ips("10.244.0.5", "10.244.1.9", "10.244.7.1", "fd00:10:244::5")) == (
        nets("10.244.0.0/23", "10.244.7.0/24", "fd00:10:244::/64")
    )
    assert covering_subnets([]) == ()


@pytest.mark.parametrize(
    ("addresses", "subnet"),
    [
        (("10.96.0.1", "10.96.0.10"), "10.96.0.0/16"),
        (("10.96.0.1", "10.100.3.4"), "10.96.0.0/13"),
        (("fd00:96::1",), "fd00:96::/64"),
        (("10.96.0.1", "fd00::1"), "10.96.0.0/16"),  # the first address's family
    ],
)
def test_a_derived_service_subnet(addresses: Sequence[str], subnet: str) -> None:
    assert derive_service_subnet(ips(*addresses)) == ipaddress.ip_network(subnet)


def test_no_addresses_no_derived_subnet() -> None:
    assert derive_service_subnet([]) is None


class RefusingCluster:
    """An API server that refuses the probe as kube-apiserver does."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.created: list[tuple[Any, Any, Any, Any]] = []

    async def create(
        self, kind: Any, body: Any, namespace: Any = None, *, dry_run: bool = False
    ) -> Any:
        self.created.append((kind, body, namespace, dry_run))
        raise self.error


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "subnet"),
    [
        (kube.Invalid(422, "Invalid", REFUSAL), ipaddress.ip_network("10.96.0.0/12")),
        (kube.Forbidden(403, "Forbidden", "services is forbidden"), None),
        (kube.Unreachable("no answer"), None),
    ],
)
async def test_the_service_range_probe_is_a_dry_run(error: Exception, subnet: Any) -> None:
    refusing = RefusingCluster(error)
    assert await probe_service_subnet(cast("kube.Kubernetes", refusing), "ambassador") == subnet
    ((kind, body, namespace, dry_run),) = refusing.created
    assert (kind, namespace, dry_run) == (kube.SERVICES, "ambassador", True)
    assert body["spec"]["clusterIP"] == "1.1.1.1"


async def limited_manager_token(cluster: Cluster) -> str:
    """A token for a manager that may read pods and Services but not nodes, nor kube-system."""
    await cluster.kubernetes.create(
        CLUSTER_ROLES,
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "limited-manager"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
            ],
        },
    )
    await cluster.kubernetes.create(
        CLUSTER_ROLE_BINDINGS,
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "limited-manager"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "limited-manager"},
            "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": "ambassador"}],
        },
    )
    return await cluster.service_account_token("limited", may_port_forward=False)


@pytest.mark.anyio
async def test_without_nodes_the_pods_addresses_give_the_subnets(cluster: Cluster) -> None:
    await cluster.create_node("node-0", "10.244.0.0/24")
    await cluster.create_namespace("dev")
    await cluster.create_pod("web", "dev", "10.244.3.7")
    token = await limited_manager_token(cluster)
    async with cluster.as_token(token) as limited, anyio.create_task_group() as tasks:
        changed = Signal()
        nodes = NodeSubnets(limited, changed)
        assert await tasks.start(nodes.run) is False
        inventory = Inventory(limited, NamespaceSelection(), changed, watch_pods=True)
        await tasks.start(inventory.run)
        info = ClusterInfo(
            limited,
            namespace="ambassador",
            inventory=inventory,
            nodes=None,
            resolv=ResolvConf.parse("nameserver 10.96.0.10\nsearch svc.k8s.internal\n"),
            endpoints=Endpoints(None, 8081, 8082, b""),
            kubernetes_service_host="10.96.0.1",
            changed=changed,
        )
        await tasks.start(info.run)
        facts = await info.latest.get()
        assert facts.pod_subnets == nets("10.244.3.0/24")
        # kube-system/kube-dns is forbidden: the DNS address is resolv.conf's nameserver.
        assert facts.dns_ip == ipaddress.ip_address("10.96.0.10")
        assert facts.domain == "k8s.internal."
        # The API server's refusal of a ClusterIP outside its range names the range.
        assert facts.service_subnet == ipaddress.ip_network("10.96.0.0/12")
        tasks.cancel_scope.cancel()


@pytest.mark.anyio
async def test_nodes_without_pod_cidrs_are_not_used(cluster: Cluster) -> None:
    await cluster.create_node("node-0")
    async with anyio.create_task_group() as tasks:
        assert await tasks.start(NodeSubnets(cluster.kubernetes, Signal()).run) is False


@pytest.mark.anyio
async def test_a_dynamic_selection_follows_the_namespaces_labels(cluster: Cluster) -> None:
    await cluster.create_namespace("team-a", {"team": "a"})
    await cluster.create_namespace("team-b", {"team": "b"})
    a_ip = await cluster.create_service("echo", "team-a")
    b_ip = await cluster.create_service("echo", "team-b")
    await cluster.create_pod("web", "team-a", "10.244.1.5")
    selection = NamespaceSelection(selector=LabelSelector((Requirement("team", "In", ("a",)),)))
    changed = Signal()
    inventory = Inventory(cluster.kubernetes, selection, changed)
    policy = ScopePolicy(inventory, lambda: "cluster.local.")
    async with anyio.create_task_group() as tasks:
        await tasks.start(inventory.run)
        assert inventory.managed_namespaces() == frozenset({"team-a"})
        assert policy.check(ipaddress.ip_address(a_ip)) is None
        assert policy.check(ipaddress.ip_address("10.244.1.5")) is None
        denied = policy.check(ipaddress.ip_address(b_ip))
        assert denied is not None
        assert "namespaces selected by team in (a)" in denied
        assert policy.allows_name("web.team-a.svc.cluster.local.")
        assert policy.allows_name("10-244-1-5.team-a.pod.cluster.local.")
        assert not policy.allows_name("web.team-b.svc.cluster.local.")
        assert not policy.allows_name("team-a.svc.cluster.local.")
        assert not policy.allows_name("example.com.")
        reverse_a = ".".join(reversed(a_ip.split("."))) + ".in-addr.arpa."
        assert policy.allows_name(reverse_a)

        # team-b joins: its addresses and names are served from the next change on.
        async with cluster.api() as api:
            from kubernetes_asyncio import client as k8s_client

            await k8s_client.CoreV1Api(api).patch_namespace(
                "team-b", {"metadata": {"labels": {"team": "a"}}}
            )
        with anyio.fail_after(10):
            while policy.check(ipaddress.ip_address(b_ip)) is not None:
                await changed.wait()
        assert inventory.managed_namespaces() == frozenset({"team-a", "team-b"})
        assert policy.allows_name("web.team-b.svc.cluster.local.")
        assert policy.check(ipaddress.ip_address("127.0.0.1")) is not None  # never loopback
        tasks.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_cluster_wide_policy_allows_all_but_the_managers_own_pod(cluster: Cluster) -> None:
    inventory = Inventory(cluster.kubernetes, NamespaceSelection(), Signal())
    policy = ScopePolicy(inventory, lambda: "cluster.local.")
    assert policy.check(ipaddress.ip_address("10.1.2.3")) is None
    assert policy.check(ipaddress.ip_address("::1")) is not None
    assert policy.check(ipaddress.ip_address("0.0.0.0")) is not None
    assert policy.allows_name("example.com.")


@pytest.mark.anyio
async def test_a_static_namespace_that_does_not_exist_yet_is_empty(cluster: Cluster) -> None:
    await cluster.create_namespace("dev")
    await cluster.create_pod("web", "dev", "10.244.3.7")
    selection = NamespaceSelection(names=frozenset({"dev", "ghost"}))
    inventory = Inventory(cluster.kubernetes, selection, Signal())
    async with anyio.create_task_group() as tasks:
        with anyio.fail_after(10):
            await tasks.start(inventory.run)
        assert inventory.pod_ips() == set(ips("10.244.3.7"))
        tasks.cancel_scope.cancel()
