"""The ``Manager`` gRPC service: the control API's edge, where requests and errors are mapped.

Each method takes its request, calls the part of the manager that does the work, and answers.
This is the one place where the manager's errors become gRPC statuses, with messages meant
for the person at the laptop:

| error | status |
|---|---|
| unknown, expired or departed session | ``NOT_FOUND``: arrive again |
| credentials missing or rejected by the cluster | ``UNAUTHENTICATED`` |
| the user lacks ``create pods/portforward`` in the manager's namespace | ``PERMISSION_DENIED`` |
| the cluster could not be asked | ``UNAVAILABLE`` |
| a malformed request | ``INVALID_ARGUMENT`` |

The client's deadline (grpclib applies it around every handler) bounds each call; lookups
in the cluster have their own, shorter, bound.

Intercepts and agents arrive in a later milestone: ``ArriveAsAgent`` answers
``UNIMPLEMENTED`` until then, and the methods the proto reserves for them will be added here.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

import anyio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status

import telepresence
from manager import auth
from manager.dns import SERVFAIL
from manager.sessions import SessionKind, UnknownSession
from telepresence.wire.mux import VERSION as MUX_VERSION
from telepresence.wire.proto import manager_grpc
from telepresence.wire.proto import manager_pb2 as pb

if TYPE_CHECKING:
    from grpclib.server import Stream

    from manager.changes import Latest
    from manager.cluster_info import ClusterFacts
    from manager.config import ClientConfig, IPNetwork
    from manager.dns import ClusterDNS
    from manager.sessions import Session, SessionRegistry

log = logging.getLogger(__name__)

PRODUCT = "traffic-manager"
#: Seconds the cluster DNS has to answer one LookupDNS.
LOOKUP_TIMEOUT = 5.0
#: Limits on the free-form fields of an arrival.
MAX_NAME = 256
#: The user a client is taken for that came in through a port-forward without a token.
PORT_FORWARD_USER = "system:port-forward"
MAX_DNS_NAME = 254
NOT_FOUND_MESSAGE = "unknown session (never created, expired or departed): arrive again"


class ManagerService(manager_grpc.ManagerBase):
    """The traffic-manager's control API.

    Args:
        sessions: The session registry.
        authenticator: Checks arriving clients' credentials with the cluster.
        cluster: The cluster's facts, as discovered.
        client_config: The chart's ``client`` block.
        dns: Resolves names in the cluster for clients.
        version: The version this manager reports.
        trust_port_forward: Let a client that arrives without a token through the pod's
            loopback in: only a port-forward (or the manager itself) connects there, and the
            API server authorized the port-forward already. In a pod only.
    """

    def __init__(
        self,
        *,
        sessions: SessionRegistry,
        authenticator: auth.Authenticator,
        cluster: Latest[ClusterFacts],
        client_config: ClientConfig,
        dns: ClusterDNS,
        version: str = telepresence.__version__,
        trust_port_forward: bool = False,
    ) -> None:
        self._trust_port_forward = trust_port_forward
        self._sessions = sessions
        self._authenticator = authenticator
        self._cluster = cluster
        self._client_config = client_config_message(client_config)
        self._dns = dns
        self._version = version

    async def Version(self, stream: Stream[Empty, pb.VersionInfo]) -> None:
        await _request(stream)
        await stream.send_message(pb.VersionInfo(name=PRODUCT, version=self._version))

    async def ArriveAsClient(self, stream: Stream[pb.ClientInfo, pb.SessionInfo]) -> None:
        info = await _request(stream)
        for field, value in (("name", info.name), ("install_id", info.install_id)):
            if len(value) > MAX_NAME:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, f"ClientInfo.{field} is longer than {MAX_NAME}"
                )
        token = info.bearer_token if info.WhichOneof("credentials") == "bearer_token" else ""
        try:
            if not token and self._trust_port_forward and _through_loopback(stream):
                # A kubeconfig user without a token (a client certificate): the API server
                # authenticated them and authorized the port-forward that this came through.
                user = auth.User(name=PORT_FORWARD_USER)
            else:
                user = await self._authenticator.authenticate(token)
        except auth.Unauthenticated as error:
            raise GRPCError(Status.UNAUTHENTICATED, str(error)) from None
        except auth.PermissionDenied as error:
            raise GRPCError(Status.PERMISSION_DENIED, str(error)) from None
        except auth.ReviewFailed as error:
            log.warning("cannot authenticate %s: %s", info.name or "a client", error)
            raise GRPCError(Status.UNAVAILABLE, str(error)) from None
        session = self._sessions.arrive(
            SessionKind.CLIENT,
            name=info.name,
            user=user,
            namespace=info.namespace,
            install_id=info.install_id,
        )
        await stream.send_message(pb.SessionInfo(session_id=session.id))

    async def ArriveAsAgent(self, stream: Stream[pb.AgentInfo, pb.SessionInfo]) -> None:
        # Intercepts milestone: authenticate the pod's service-account token as for clients
        # (the right to check is the agent's own), then SessionKind.AGENT with AGENT_TTL.
        await _request(stream)
        raise GRPCError(
            Status.UNIMPLEMENTED,
            "traffic-agents are not served by this traffic-manager version (they arrive with"
            " intercepts)",
        )

    async def Remain(self, stream: Stream[pb.RemainRequest, Empty]) -> None:
        request = await _request(stream)
        try:
            self._sessions.remain(request.session.session_id)
        except UnknownSession:
            raise GRPCError(Status.NOT_FOUND, NOT_FOUND_MESSAGE) from None
        await stream.send_message(Empty())

    async def Depart(self, stream: Stream[pb.SessionInfo, Empty]) -> None:
        request = await _request(stream)
        try:
            self._sessions.depart(request.session_id)
        except UnknownSession:
            raise GRPCError(Status.NOT_FOUND, NOT_FOUND_MESSAGE) from None
        await stream.send_message(Empty())

    async def WatchClusterInfo(self, stream: Stream[pb.SessionInfo, pb.ClusterInfo]) -> None:
        session = self._session(await _request(stream))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_cancel_when_ended, session, tasks.cancel_scope)
            async for facts in self._cluster.follow():
                await stream.send_message(cluster_info_message(facts))

    async def GetClientConfig(self, stream: Stream[Empty, pb.ClientConfig]) -> None:
        await _request(stream)
        await stream.send_message(self._client_config)

    async def LookupDNS(self, stream: Stream[pb.DNSRequest, pb.DNSResponse]) -> None:
        request = await _request(stream)
        self._session(request.session)
        name = request.name
        if not name.endswith(".") or len(name) > MAX_DNS_NAME or not name.isascii():
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"DNSRequest.name must be a fully qualified ASCII name, with its final dot:"
                f" {name!r}",
            )
        if not 0 < request.type <= 0xFFFF:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"DNSRequest.type {request.type} is not a type"
            )
        with anyio.move_on_after(LOOKUP_TIMEOUT):
            answer = await self._dns.lookup(name, request.type)
            await stream.send_message(
                pb.DNSResponse(
                    rcode=answer.rcode,
                    answers=[
                        pb.ResourceRecord(
                            name=record.name,
                            type=record.type,
                            record_class=record.record_class,
                            ttl=record.ttl,
                            rdata=record.rdata,
                        )
                        for record in answer.records
                    ],
                )
            )
            return
        log.debug("LookupDNS %s type %d: no answer in %g s", name, request.type, LOOKUP_TIMEOUT)
        await stream.send_message(pb.DNSResponse(rcode=SERVFAIL))

    def _session(self, info: pb.SessionInfo) -> Session:
        try:
            return self._sessions.get(info.session_id)
        except UnknownSession:
            raise GRPCError(Status.NOT_FOUND, NOT_FOUND_MESSAGE) from None


async def _request[Request](stream: Stream[Request, Any]) -> Request:
    request = await stream.recv_message()
    if request is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "no request message")
    return request


def _through_loopback(stream: Stream[Any, Any]) -> bool:
    """Whether the call came in on the pod's loopback (through a port-forward)."""
    address = stream.peer.addr()
    if not address:
        return False
    try:
        peer = ipaddress.ip_address(address[0])
    except ValueError:
        return False
    # A dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
    mapped = getattr(peer, "ipv4_mapped", None)
    return (mapped or peer).is_loopback


async def _cancel_when_ended(session: Session, scope: anyio.CancelScope) -> None:
    await session.ended.wait()
    scope.cancel()


def cluster_info_message(facts: ClusterFacts) -> pb.ClusterInfo:
    """``ClusterInfo`` for the cluster's facts."""
    return pb.ClusterInfo(
        pod_subnets=[ip_net(net) for net in facts.pod_subnets],
        service_subnet=ip_net(facts.service_subnet) if facts.service_subnet else None,
        cluster_dns_ip=facts.dns_ip.packed if facts.dns_ip else b"",
        cluster_domain=facts.domain,
        manager_pod_ip=facts.manager_pod_ip.packed if facts.manager_pod_ip else b"",
        manager_port=facts.api_port,
        data_plane=pb.DataPlaneEndpoint(
            mux_port=facts.mux_port, mux_version=MUX_VERSION, ca_certificate=facts.mux_ca
        ),
    )


def client_config_message(config: ClientConfig) -> pb.ClientConfig:
    """``ClientConfig`` for the chart's ``client`` block."""
    message = pb.ClientConfig(
        dns=pb.DNSConfig(
            include_suffixes=config.dns.include_suffixes,
            exclude_suffixes=config.dns.exclude_suffixes,
        ),
        routing=pb.RoutingConfig(
            also_proxy_subnets=[ip_net(n) for n in config.routing.also_proxy_subnets],
            never_proxy_subnets=[ip_net(n) for n in config.routing.never_proxy_subnets],
            allow_conflicting_subnets=[ip_net(n) for n in config.routing.allow_conflicting_subnets],
        ),
    )
    message.timeouts.SetInParent()  # present, like dns and routing, even when empty
    if config.dns.lookup_timeout is not None:
        message.dns.lookup_timeout.CopyFrom(duration(config.dns.lookup_timeout))
    # The Helm keys map to the proto's fields by name: trafficManagerAPI, traffic_manager_api.
    fields = {
        "clusterConnect": message.timeouts.cluster_connect,
        "trafficManagerConnect": message.timeouts.traffic_manager_connect,
        "trafficManagerAPI": message.timeouts.traffic_manager_api,
        "endpointDial": message.timeouts.endpoint_dial,
        "roundtripLatency": message.timeouts.roundtrip_latency,
        "intercept": message.timeouts.intercept,
        "agentInstall": message.timeouts.agent_install,
    }
    for key, seconds in config.timeouts.items():
        if key in fields:
            fields[key].CopyFrom(duration(seconds))
    return message


def ip_net(network: IPNetwork) -> pb.IPNet:
    return pb.IPNet(ip=network.network_address.packed, mask=network.prefixlen)


def duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
