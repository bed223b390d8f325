"""The control API of a running manager, through grpclib's client over loopback.

The manager runs in this process against the sandbox API server; the callers authenticate
with real service-account tokens (TokenRequest), which the manager checks with real
TokenReviews and SubjectAccessReviews against RBAC objects the tests create.
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import TYPE_CHECKING

import anyio
import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status

import telepresence
from manager import rdata
from telepresence.wire.mux import VERSION as MUX_VERSION
from telepresence.wire.proto import manager_pb2 as pb

from .harness import MANAGER_NAMESPACE, Cluster, ManagerClient, start_manager

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from telepresence.wire import tls

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def subnet(text: str) -> pb.IPNet:
    network = ipaddress.ip_network(text)
    return pb.IPNet(ip=network.network_address.packed, mask=network.prefixlen)


@pytest.fixture
async def manager(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> AsyncIterator[ManagerClient]:
    async with start_manager(cluster, tmp_path, manager_identity, ca) as manager:
        yield manager


@pytest.fixture
async def alice(cluster: Cluster) -> str:
    """A token of a user who may port-forward in the manager's namespace."""
    return await cluster.service_account_token("alice", may_port_forward=True)


async def test_version(manager: ManagerClient) -> None:
    version = await manager.version()
    assert (version.name, version.version) == ("traffic-manager", telepresence.__version__)


async def test_probes_say_ready_and_healthy(manager: ManagerClient) -> None:
    assert await manager.probe("/healthz") == 200
    assert await manager.probe("/readyz") == 200
    assert await manager.probe("/metrics") == 404


async def test_arrive_remain_depart(manager: ManagerClient, alice: str) -> None:
    session = await manager.arrive(alice)
    assert len(session.session_id) >= 32
    assert len(manager.running.sessions) == 1

    await manager.stub.Remain(pb.RemainRequest(session=session), timeout=5)
    await manager.stub.Depart(session, timeout=5)

    with pytest.raises(GRPCError) as raised:
        await manager.stub.Remain(pb.RemainRequest(session=session), timeout=5)
    assert raised.value.status is Status.NOT_FOUND
    assert "arrive again" in (raised.value.message or "")
    with pytest.raises(GRPCError) as raised:
        await manager.stub.Depart(session, timeout=5)
    assert raised.value.status is Status.NOT_FOUND


async def test_two_sessions_are_distinct(manager: ManagerClient, alice: str) -> None:
    first = await manager.arrive(alice, name="alice@laptop")
    second = await manager.arrive(alice, name="alice@desktop")
    assert first.session_id != second.session_id
    await manager.stub.Depart(first, timeout=5)
    await manager.stub.Remain(pb.RemainRequest(session=second), timeout=5)


async def test_a_session_not_renewed_expires(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity, alice: str
) -> None:
    files = {"client.yaml": {"connectionTTL": "1s"}}
    async with start_manager(cluster, tmp_path, manager_identity, ca, files=files) as manager:
        session = await manager.arrive(alice)
        # The session's streams end with it: the watch ends once the TTL has passed.
        with anyio.fail_after(10):
            async with manager.stub.WatchClusterInfo.open() as call:
                await call.send_message(session, end=True)
                messages = [info async for info in call]
        assert len(messages) >= 1
        with pytest.raises(GRPCError) as raised:
            await manager.stub.Remain(pb.RemainRequest(session=session), timeout=5)
        assert raised.value.status is Status.NOT_FOUND


async def test_unknown_sessions_are_not_found(manager: ManagerClient) -> None:
    bogus = pb.SessionInfo(session_id="not-a-session")
    for call in (
        manager.stub.Remain(pb.RemainRequest(session=bogus), timeout=5),
        manager.stub.LookupDNS(pb.DNSRequest(session=bogus, name="a.", type=1), timeout=5),
    ):
        with pytest.raises(GRPCError) as raised:
            await call
        assert raised.value.status is Status.NOT_FOUND


async def test_an_invalid_token_is_unauthenticated(manager: ManagerClient) -> None:
    with pytest.raises(GRPCError) as raised:
        await manager.arrive("not-a-token")
    assert raised.value.status is Status.UNAUTHENTICATED
    assert "the cluster rejected the credentials" in (raised.value.message or "")
    assert "not-a-token" not in (raised.value.message or "")


async def test_no_credentials_is_unauthenticated(manager: ManagerClient) -> None:
    with pytest.raises(GRPCError) as raised:
        await manager.stub.ArriveAsClient(pb.ClientInfo(name="anonymous"), timeout=5)
    assert raised.value.status is Status.UNAUTHENTICATED
    assert "bearer_token" in (raised.value.message or "")


async def test_in_a_pod_no_token_through_the_loopback_is_a_port_forward(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    # In a pod (trust_port_forward), only a port-forward reaches the loopback, which the API
    # server authorized: a client without a token (a client certificate's user) arrives.
    async with start_manager(
        cluster, tmp_path, manager_identity, ca, trust_port_forward=True
    ) as manager:
        session = await manager.stub.ArriveAsClient(pb.ClientInfo(name="cert-user"), timeout=5)
        assert session.session_id
        arrived = manager.running.sessions.get(session.session_id)
        assert arrived.user.name == "system:port-forward"
        # A token is still checked when there is one.
        with pytest.raises(GRPCError) as raised:
            await manager.stub.ArriveAsClient(
                pb.ClientInfo(name="x", bearer_token="not-a-token"), timeout=5
            )
        assert raised.value.status is Status.UNAUTHENTICATED


async def test_a_user_without_port_forward_is_denied(
    manager: ManagerClient, cluster: Cluster
) -> None:
    bob = await cluster.service_account_token("bob", may_port_forward=False)
    with pytest.raises(GRPCError) as raised:
        await manager.arrive(bob)
    assert raised.value.status is Status.PERMISSION_DENIED
    message = raised.value.message or ""
    assert f"system:serviceaccount:{MANAGER_NAMESPACE}:bob" in message
    assert f'may not create pods/portforward in namespace "{MANAGER_NAMESPACE}"' in message
    assert len(manager.running.sessions) == 0


async def test_the_right_must_be_in_the_managers_namespace(
    manager: ManagerClient, cluster: Cluster
) -> None:
    await cluster.create_namespace("dev")
    carol = await cluster.service_account_token("carol", "dev", may_port_forward=True)
    with pytest.raises(GRPCError) as raised:
        await manager.arrive(carol)
    assert raised.value.status is Status.PERMISSION_DENIED


async def test_agents_are_not_served_yet(manager: ManagerClient, alice: str) -> None:
    with pytest.raises(GRPCError) as raised:
        await manager.stub.ArriveAsAgent(pb.AgentInfo(name="echo", bearer_token=alice), timeout=5)
    assert raised.value.status is Status.UNIMPLEMENTED


async def test_cluster_info_is_streamed_and_streamed_again_on_change(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity, alice: str
) -> None:
    await cluster.create_node("node-0", "10.244.0.0/24")
    await cluster.create_node("node-1", "10.244.1.0/24")
    await cluster.create_service("kube-dns", "kube-system", cluster_ip="10.96.0.10", port=53)
    async with start_manager(cluster, tmp_path, manager_identity, ca) as manager:
        session = await manager.arrive(alice)
        with anyio.fail_after(20):
            async with manager.stub.WatchClusterInfo.open() as call:
                await call.send_message(session, end=True)
                first = await call.recv_message()
                assert first is not None
                assert list(first.pod_subnets) == [subnet("10.244.0.0/23")]
                # From the API server's refusal of a ClusterIP outside its range (dry run).
                assert first.service_subnet == subnet("10.96.0.0/12")
                assert first.cluster_dns_ip == ipaddress.ip_address("10.96.0.10").packed
                assert first.cluster_domain == "cluster.local."
                assert first.manager_pod_ip == ipaddress.ip_address("127.0.0.1").packed
                assert first.manager_port == manager.running.api_port
                assert first.data_plane == pb.DataPlaneEndpoint(
                    mux_port=manager.running.data_port,
                    mux_version=MUX_VERSION,
                    ca_certificate=manager.ca.certificate_pem,
                )

                await cluster.create_node("node-5", "10.244.5.0/24")
                second = await call.recv_message()
                assert second is not None
                assert list(second.pod_subnets) == [
                    subnet("10.244.0.0/23"),
                    subnet("10.244.5.0/24"),
                ]
                assert second.cluster_dns_ip == first.cluster_dns_ip

                # The stream ends with the session.
                await manager.stub.Depart(session, timeout=5)
                assert await call.recv_message() is None


async def test_client_config_comes_from_client_yaml(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    client = {
        "connectionTTL": "1h",
        "dns": {"includeSuffixes": [".private"], "excludeSuffixes": [".com", ".io"]},
        "routing": {
            "alsoProxySubnets": ["192.168.50.0/24"],
            "neverProxySubnets": ["10.244.0.128/25"],
        },
        "timeouts": {"trafficManagerAPI": "15s", "roundtripLatency": "500ms", "helm": "30s"},
        "images": {"registry": "ignored.example"},
    }
    async with start_manager(
        cluster, tmp_path, manager_identity, ca, files={"client.yaml": client}
    ) as manager:
        config = await manager.stub.GetClientConfig(Empty(), timeout=5)
    assert list(config.dns.include_suffixes) == [".private"]
    assert list(config.dns.exclude_suffixes) == [".com", ".io"]
    assert not config.dns.HasField("lookup_timeout")
    assert list(config.routing.also_proxy_subnets) == [subnet("192.168.50.0/24")]
    assert list(config.routing.never_proxy_subnets) == [subnet("10.244.0.128/25")]
    assert config.timeouts.traffic_manager_api.seconds == 15
    assert config.timeouts.roundtrip_latency.nanos == 500_000_000
    assert not config.timeouts.HasField("endpoint_dial")


async def test_client_config_without_a_file_is_empty(manager: ManagerClient) -> None:
    config = await manager.stub.GetClientConfig(Empty(), timeout=5)
    assert config == pb.ClientConfig(
        dns=pb.DNSConfig(), routing=pb.RoutingConfig(), timeouts=pb.Timeouts()
    )


async def lookup(
    manager: ManagerClient, session: pb.SessionInfo, name: str, rtype: int
) -> pb.DNSResponse:
    response: pb.DNSResponse = await manager.stub.LookupDNS(
        pb.DNSRequest(session=session, name=name, type=rtype), timeout=10
    )
    return response


async def test_lookup_dns_with_the_managers_search_path(
    manager: ManagerClient, cluster: Cluster, alice: str
) -> None:
    ip = await cluster.create_service("echo", "default", cluster_ip="10.96.7.7")
    session = await manager.arrive(alice)

    short = await lookup(manager, session, "echo.default.", rdata.A)
    assert short.rcode == 0
    # The answer is for the name the client asked, as the laptop's DNS server needs it.
    assert [(r.name, r.type, r.record_class, r.rdata) for r in short.answers] == [
        ("echo.default.", rdata.A, 1, ipaddress.ip_address(ip).packed)
    ]
    assert short.answers[0].ttl == 5

    full = await lookup(manager, session, "echo.default.svc.cluster.local.", rdata.A)
    assert [r.name for r in full.answers] == ["echo.default.svc.cluster.local."]

    srv = await lookup(manager, session, "_tcp._tcp.echo.default.svc.cluster.local.", rdata.SRV)
    assert srv.rcode == 0
    assert srv.answers[0].rdata.endswith(rdata.encode_name("echo.default.svc.cluster.local."))

    reverse = await lookup(manager, session, "7.7.96.10.in-addr.arpa.", rdata.PTR)
    assert reverse.answers[0].rdata == rdata.encode_name("echo.default.svc.cluster.local.")

    nodata = await lookup(manager, session, "echo.default.", rdata.AAAA)
    assert (nodata.rcode, list(nodata.answers)) == (0, [])
    missing = await lookup(manager, session, "nothing.default.", rdata.A)
    assert (missing.rcode, list(missing.answers)) == (3, [])


async def test_lookup_dns_rejects_malformed_names(manager: ManagerClient, alice: str) -> None:
    session = await manager.arrive(alice)
    for name, rtype in (("no-final-dot", 1), ("ok.", 0), ("é.", 1)):
        with pytest.raises(GRPCError) as raised:
            await lookup(manager, session, name, rtype)
        assert raised.value.status is Status.INVALID_ARGUMENT


async def test_a_namespaced_manager_resolves_only_its_namespaces(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity, alice: str
) -> None:
    for namespace in ("dev", "other"):
        await cluster.create_namespace(namespace)
        await cluster.create_service("echo", namespace)
    files = {"namespaces.yaml": {"namespaces": ["dev"]}}
    async with start_manager(cluster, tmp_path, manager_identity, ca, files=files) as manager:
        session = await manager.arrive(alice)
        assert (await lookup(manager, session, "echo.dev.", rdata.A)).rcode == 0
        for name in ("echo.other.", "echo.other.svc.cluster.local.", "example.com."):
            refused = await lookup(manager, session, name, rdata.A)
            assert (refused.rcode, list(refused.answers)) == (5, []), name


async def test_cluster_info_of_a_namespaced_manager_covers_its_pods(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity, alice: str
) -> None:
    await cluster.create_node("node-0", "10.244.0.0/24")  # a namespaced manager ignores nodes
    for namespace in ("dev", "staging", "other"):
        await cluster.create_namespace(namespace)
    await cluster.create_pod("web", "dev", "10.244.3.7")
    await cluster.create_pod("db", "staging", "10.244.9.1")
    await cluster.create_pod("x", "other", "10.244.200.1")
    files = {
        "namespaces.yaml": {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["dev", "staging"],
                    }
                ]
            }
        }
    }
    async with start_manager(cluster, tmp_path, manager_identity, ca, files=files) as manager:
        session = await manager.arrive(alice)
        with anyio.fail_after(20):
            async with manager.stub.WatchClusterInfo.open() as call:
                await call.send_message(session, end=True)
                first = await call.recv_message()
                assert first is not None
                assert list(first.pod_subnets) == [subnet("10.244.3.0/24"), subnet("10.244.9.0/24")]
                await cluster.create_pod("api", "dev", "10.244.2.9")
                second = await call.recv_message()
                assert second is not None
                assert list(second.pod_subnets) == [
                    subnet("10.244.2.0/23"),
                    subnet("10.244.9.0/24"),
                ]
                with contextlib.suppress(GRPCError):
                    await manager.stub.Depart(session, timeout=5)
