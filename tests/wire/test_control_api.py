"""The control API: every Manager RPC through grpclib, and the generated code's freshness.

The service tests run a small but real manager (a session registry, fixed cluster facts, a
one-name DNS zone) behind grpclib's in-memory ``ChannelFor`` and call it through the generated
stub, so they exercise the generated messages, the service paths and status mapping end to end.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from grpclib.testing import ChannelFor

from telepresence.wire.proto import generate, manager_grpc
from telepresence.wire.proto import manager_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from grpclib.server import Stream

MANAGER_VERSION = "2.21.0"
VALID_TOKEN = "token-of-alice"
WEB_NAME = "web.default.svc.cluster.local."
DNS_TYPE_A = 1
DNS_TYPE_AAAA = 28
DNS_CLASS_IN = 1
DNS_NOERROR = 0
DNS_NXDOMAIN = 3


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def subnet(text: str) -> pb.IPNet:
    network = ipaddress.ip_network(text)
    return pb.IPNet(ip=network.network_address.packed, mask=network.prefixlen)


CLUSTER_UPDATES = [
    pb.ClusterInfo(
        pod_subnets=[subnet("10.244.0.0/24")],
        service_subnet=subnet("10.96.0.0/12"),
        cluster_dns_ip=ip("10.96.0.10"),
        cluster_domain="cluster.local.",
        manager_pod_ip=ip("10.244.0.5"),
        manager_port=8081,
        data_plane=pb.DataPlaneEndpoint(mux_port=8082, mux_version=1),
    ),
    # A node joined: its pod subnet is added.
    pb.ClusterInfo(
        pod_subnets=[subnet("10.244.0.0/24"), subnet("fd00:10:244:1::/64")],
        service_subnet=subnet("10.96.0.0/12"),
        cluster_dns_ip=ip("10.96.0.10"),
        cluster_domain="cluster.local.",
        manager_pod_ip=ip("10.244.0.5"),
        manager_port=8081,
        data_plane=pb.DataPlaneEndpoint(mux_port=8082, mux_version=1),
    ),
]

CLIENT_CONFIG = pb.ClientConfig(
    dns=pb.DNSConfig(
        include_suffixes=[".private"],
        exclude_suffixes=[".com", ".io"],
        lookup_timeout=Duration(seconds=8),
    ),
    routing=pb.RoutingConfig(
        also_proxy_subnets=[subnet("192.168.50.0/24")],
        never_proxy_subnets=[subnet("10.244.0.128/25")],
    ),
    timeouts=pb.Timeouts(
        traffic_manager_api=Duration(seconds=15),
        intercept=Duration(seconds=10),
        roundtrip_latency=Duration(nanos=500_000_000),
    ),
)


async def receive[Request](stream: Stream[Request, Any]) -> Request:
    """The single request of a unary or server-streaming call."""
    request = await stream.recv_message()
    assert request is not None
    return request


class InMemoryManager(manager_grpc.ManagerBase):
    """A minimal manager: a session registry, fixed cluster facts and a one-name DNS zone."""

    def __init__(self) -> None:
        self.sessions: dict[str, pb.ClientInfo | pb.AgentInfo] = {}

    def known(self, session: pb.SessionInfo) -> pb.ClientInfo | pb.AgentInfo:
        try:
            return self.sessions[session.session_id]
        except KeyError:
            raise GRPCError(Status.NOT_FOUND, "unknown session: arrive again") from None

    def open_session(self, arrival: pb.ClientInfo | pb.AgentInfo) -> pb.SessionInfo:
        # The real manager asks a TokenReview; this one knows one token.
        if arrival.WhichOneof("credentials") != "bearer_token" or (
            arrival.bearer_token != VALID_TOKEN
        ):
            raise GRPCError(Status.UNAUTHENTICATED, "the cluster rejected these credentials")
        session_id = secrets.token_urlsafe(16)
        self.sessions[session_id] = arrival
        return pb.SessionInfo(session_id=session_id)

    async def Version(self, stream: Stream[Empty, pb.VersionInfo]) -> None:
        await receive(stream)
        await stream.send_message(pb.VersionInfo(name="traffic-manager", version=MANAGER_VERSION))

    async def ArriveAsClient(self, stream: Stream[pb.ClientInfo, pb.SessionInfo]) -> None:
        arrival = await receive(stream)
        await stream.send_message(self.open_session(arrival))

    async def ArriveAsAgent(self, stream: Stream[pb.AgentInfo, pb.SessionInfo]) -> None:
        arrival = await receive(stream)
        await stream.send_message(self.open_session(arrival))

    async def Remain(self, stream: Stream[pb.RemainRequest, Empty]) -> None:
        self.known((await receive(stream)).session)
        await stream.send_message(Empty())

    async def Depart(self, stream: Stream[pb.SessionInfo, Empty]) -> None:
        session = await receive(stream)
        self.known(session)
        del self.sessions[session.session_id]
        await stream.send_message(Empty())

    async def WatchClusterInfo(self, stream: Stream[pb.SessionInfo, pb.ClusterInfo]) -> None:
        self.known(await receive(stream))
        for update in CLUSTER_UPDATES:
            await stream.send_message(update)

    async def GetClientConfig(self, stream: Stream[Empty, pb.ClientConfig]) -> None:
        await receive(stream)
        await stream.send_message(CLIENT_CONFIG)

    async def LookupDNS(self, stream: Stream[pb.DNSRequest, pb.DNSResponse]) -> None:
        request = await receive(stream)
        self.known(request.session)
        if request.name != WEB_NAME:
            await stream.send_message(pb.DNSResponse(rcode=DNS_NXDOMAIN))
            return
        answers = []
        if request.type == DNS_TYPE_A:
            answers.append(
                pb.ResourceRecord(
                    name=WEB_NAME,
                    type=DNS_TYPE_A,
                    record_class=DNS_CLASS_IN,
                    ttl=5,
                    rdata=ip("10.96.0.12"),
                )
            )
        await stream.send_message(pb.DNSResponse(rcode=DNS_NOERROR, answers=answers))


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """grpclib runs on asyncio only, so these tests do not run on trio."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def manager() -> InMemoryManager:
    return InMemoryManager()


@pytest.fixture
async def stub(manager: InMemoryManager) -> AsyncIterator[manager_grpc.ManagerStub]:
    async with ChannelFor([manager]) as channel:
        yield manager_grpc.ManagerStub(channel)


def alice() -> pb.ClientInfo:
    return pb.ClientInfo(
        name="alice@laptop",
        install_id="5f0c4a1e-8a43-4f7e-9d6b-3c1d2e4f5a6b",
        product="telepresence",
        version="2.21.0",
        namespace="default",
        bearer_token=VALID_TOKEN,
    )


@pytest.mark.anyio
async def test_version(stub: manager_grpc.ManagerStub) -> None:
    version = await stub.Version(Empty())

    assert version == pb.VersionInfo(name="traffic-manager", version=MANAGER_VERSION)


@pytest.mark.anyio
async def test_client_arrives_remains_and_departs(
    stub: manager_grpc.ManagerStub, manager: InMemoryManager
) -> None:
    session = await stub.ArriveAsClient(alice())
    assert session.session_id
    assert manager.sessions[session.session_id] == alice()

    await stub.Remain(pb.RemainRequest(session=session))
    await stub.Depart(session)

    assert manager.sessions == {}
    with pytest.raises(GRPCError) as raised:
        await stub.Remain(pb.RemainRequest(session=session))
    assert raised.value.status is Status.NOT_FOUND


@pytest.mark.anyio
async def test_remain_with_an_unknown_session_is_not_found(stub: manager_grpc.ManagerStub) -> None:
    with pytest.raises(GRPCError) as raised:
        await stub.Remain(pb.RemainRequest(session=pb.SessionInfo(session_id="never-issued")))

    assert raised.value.status is Status.NOT_FOUND
    assert raised.value.message == "unknown session: arrive again"


@pytest.mark.anyio
async def test_arrival_with_rejected_credentials_is_unauthenticated(
    stub: manager_grpc.ManagerStub,
) -> None:
    stranger = alice()
    stranger.bearer_token = "forged"
    anonymous = alice()
    anonymous.ClearField("credentials")

    for arrival in (stranger, anonymous):
        with pytest.raises(GRPCError) as raised:
            await stub.ArriveAsClient(arrival)
        assert raised.value.status is Status.UNAUTHENTICATED


@pytest.mark.anyio
async def test_agent_arrives_with_its_containers(
    stub: manager_grpc.ManagerStub, manager: InMemoryManager
) -> None:
    agent = pb.AgentInfo(
        name="web",
        namespace="default",
        pod_name="web-7c9f8d6b5-x2x4q",
        pod_ip=ip("10.244.0.17"),
        product="traffic-agent",
        version="2.21.0",
        containers=[
            pb.ContainerInfo(
                name="app",
                ports=[
                    pb.ContainerPort(name="http", port=8080, protocol=pb.PROTOCOL_TCP),
                    pb.ContainerPort(port=5353, protocol=pb.PROTOCOL_UDP),
                ],
            )
        ],
        bearer_token=VALID_TOKEN,
    )

    session = await stub.ArriveAsAgent(agent)

    received = manager.sessions[session.session_id]
    assert received == agent
    assert isinstance(received, pb.AgentInfo)
    assert ipaddress.ip_address(received.pod_ip) == ipaddress.ip_address("10.244.0.17")


@pytest.mark.anyio
async def test_watch_cluster_info_streams_each_update(stub: manager_grpc.ManagerStub) -> None:
    session = await stub.ArriveAsClient(alice())

    async with stub.WatchClusterInfo.open() as stream:
        await stream.send_message(session, end=True)
        updates = [update async for update in stream]

    assert updates == CLUSTER_UPDATES
    assert [len(update.pod_subnets) for update in updates] == [1, 2]
    added = updates[1].pod_subnets[1]
    assert ipaddress.ip_network((added.ip, added.mask)) == ipaddress.ip_network(
        "fd00:10:244:1::/64"
    )


@pytest.mark.anyio
async def test_watch_cluster_info_with_an_unknown_session_is_not_found(
    stub: manager_grpc.ManagerStub,
) -> None:
    with pytest.raises(GRPCError) as raised:
        await stub.WatchClusterInfo(pb.SessionInfo(session_id="never-issued"))

    assert raised.value.status is Status.NOT_FOUND


@pytest.mark.anyio
async def test_client_config(stub: manager_grpc.ManagerStub) -> None:
    config = await stub.GetClientConfig(Empty())

    assert config == CLIENT_CONFIG
    assert config.dns.lookup_timeout.ToTimedelta().total_seconds() == 8
    assert not config.timeouts.HasField("agent_install")


@pytest.mark.anyio
async def test_lookup_dns(stub: manager_grpc.ManagerStub) -> None:
    session = await stub.ArriveAsClient(alice())

    found = await stub.LookupDNS(pb.DNSRequest(session=session, name=WEB_NAME, type=DNS_TYPE_A))
    no_data = await stub.LookupDNS(
        pb.DNSRequest(session=session, name=WEB_NAME, type=DNS_TYPE_AAAA)
    )
    missing = await stub.LookupDNS(
        pb.DNSRequest(session=session, name="nope.default.svc.cluster.local.", type=DNS_TYPE_A)
    )

    assert found.rcode == DNS_NOERROR
    [answer] = found.answers
    assert (answer.name, answer.type, answer.record_class, answer.ttl) == (
        WEB_NAME,
        DNS_TYPE_A,
        DNS_CLASS_IN,
        5,
    )
    assert ipaddress.ip_address(answer.rdata) == ipaddress.ip_address("10.96.0.12")
    assert (no_data.rcode, list(no_data.answers)) == (DNS_NOERROR, [])
    assert (missing.rcode, list(missing.answers)) == (DNS_NXDOMAIN, [])


@pytest.mark.anyio
async def test_lookup_dns_needs_a_session(stub: manager_grpc.ManagerStub) -> None:
    with pytest.raises(GRPCError) as raised:
        await stub.LookupDNS(pb.DNSRequest(name=WEB_NAME, type=DNS_TYPE_A))

    assert raised.value.status is Status.NOT_FOUND


def copy_of_proto_tree(root: Path) -> Path:
    """Copy the .proto files and generated modules into ``root``, at the same package path."""
    proto_dir = root.joinpath(*generate.PROTO_DIR.relative_to(generate.SOURCE_ROOT).parts)
    proto_dir.mkdir(parents=True)
    for path in generate.PROTO_DIR.iterdir():
        if path.suffix == ".proto" or path.name.endswith(generate.GENERATED_SUFFIXES):
            shutil.copy2(path, proto_dir / path.name)
    return proto_dir


def test_checked_in_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telepresence.wire.proto.generate", "--check"],
        cwd=generate.SOURCE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_check_names_each_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proto_dir = copy_of_proto_tree(tmp_path)
    with (proto_dir / "manager_grpc.py").open("a") as edited:
        edited.write("# edited by hand\n")
    (proto_dir / "manager_pb2.pyi").unlink()
    (proto_dir / "removed_pb2.py").write_text("# generated from a .proto that is gone\n")

    status = generate.main(["--check"], proto_dir=proto_dir, source_root=tmp_path)

    assert status == 1
    assert generate.check(proto_dir, tmp_path) == [
        generate.Difference("manager_grpc.py", "out of date"),
        generate.Difference("manager_pb2.pyi", "missing"),
        generate.Difference("removed_pb2.py", "not generated from any .proto file"),
    ]
    errors = capsys.readouterr().err
    for name in ("manager_grpc.py", "manager_pb2.pyi", "removed_pb2.py"):
        assert name in errors
    assert "uv run nox -s proto" in errors


def test_generating_repairs_a_stale_tree(tmp_path: Path) -> None:
    proto_dir = copy_of_proto_tree(tmp_path)
    (proto_dir / "manager_pb2.py").write_bytes(b"")
    (proto_dir / "manager_grpc.py").unlink()
    (proto_dir / "removed_grpc.py").write_text("# generated from a .proto that is gone\n")

    assert generate.main([], proto_dir=proto_dir, source_root=tmp_path) == 0

    assert generate.check(proto_dir, tmp_path) == []
    assert not (proto_dir / "removed_grpc.py").exists()
    for name in ("manager_pb2.py", "manager_pb2.pyi", "manager_grpc.py"):
        assert (proto_dir / name).read_bytes() == (generate.PROTO_DIR / name).read_bytes()
