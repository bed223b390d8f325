"""The cluster DNS over loopback sockets, answering from objects in an API server store.

Every test starts the server on 127.0.0.1 port 0 and asks it with dnspython's own client, as
a pod's resolver would; the upstream resolver of the forwarding tests is a second instance
of the server, on loopback too (or a plain socket, where a test must control when it answers).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any

import anyio
import dns.asyncbackend
import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from hypothesis import given
from hypothesis import strategies as st

import sandbox.dns.server as dns_server
from sandbox.apiserver.store import Store
from sandbox.dns import ClusterIndex, DNSSettings, Responder, StoreView, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from anyio.abc import UDPSocket
    from anyio.streams.memory import MemoryObjectSendStream

    from sandbox.apiserver.run import Running

    from .conftest import Kubectl

pytestmark = pytest.mark.anyio

SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
SLICES = ("discovery.k8s.io", "endpointslices")
PODS = ("", "pods")
LOOPBACK = "127.0.0.1"
Obj = dict[str, Any]
Port = tuple[str, int, str]  # name, number, protocol
VALID_QUERY = dns.message.make_query("echo.default.svc.cluster.local", "A").to_wire()


# -- objects ----------------------------------------------------------------------------------


def service(
    name: str,
    namespace: str = "default",
    *,
    cluster_ip: str = "10.96.0.10",
    ports: Sequence[Port] = (("http", 80, "TCP"),),
    external_name: str | None = None,
    publish_not_ready: bool = False,
) -> Obj:
    spec: Obj = {"ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}
    if external_name is not None:
        spec |= {"type": "ExternalName", "externalName": external_name}
    else:
        spec |= {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip]}
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice(
    service_name: str,
    endpoints: Sequence[tuple[str, str | None, bool]],
    *,
    namespace: str = "default",
    name: str | None = None,
    ports: Sequence[Port] = (("http", 8080, "TCP"),),
) -> Obj:
    """A slice of ``(address, hostname, ready)`` endpoints, as the endpointslice controller
    writes it."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abcde",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": ready}}
            | ({"hostname": hostname} if hostname else {})
            for address, hostname, ready in endpoints
        ],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def pod(name: str, ip: str, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "sandbox/http-echo"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


# -- server and client ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(store: Store, settings: DNSSettings | None = None) -> AsyncIterator[int]:
    """The DNS server on loopback, answering from ``store``; yields its port."""
    async with anyio.create_task_group() as tasks:
        port: int = await tasks.start(
            lambda task_status: serve(
                StoreView(store), LOOPBACK, 0, settings=settings, task_status=task_status
            )
        )
        yield port
        tasks.cancel_scope.cancel()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
async def port(store: Store) -> AsyncIterator[int]:
    async with running(store) as port:
        yield port


async def ask(
    port: int, name: str, rdtype: str = "A", *, tcp: bool = False, payload: int | None = None
) -> dns.message.Message:
    if payload is None:
        query = dns.message.make_query(name, rdtype)
    else:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=payload)
    if tcp:
        return await dns.asyncquery.tcp(query, LOOPBACK, timeout=5, port=port)
    return await dns.asyncquery.udp(query, LOOPBACK, timeout=5, port=port)


def answers(response: dns.message.Message, rdtype: str = "A") -> set[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return {rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset}


def soa_in_authority(response: dns.message.Message) -> bool:
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


# -- services ---------------------------------------------------------------------------------


async def test_a_service_resolves_to_its_cluster_ip(store: Store, port: int) -> None:
    store.create(SERVICES, service("echo"))

    response = await ask(port, "echo.default.svc.cluster.local")

    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert answers(response) == {"10.96.0.10"}
    assert response.answer[0].ttl == 5
    shouted = await ask(port, "ECHO.Default.SVC.Cluster.Local")
    assert answers(shouted) == {"10.96.0.10"}
    assert shouted.answer[0].name == dns.name.from_text("ECHO.Default.SVC.Cluster.Local")


async def test_a_headless_service_resolves_to_its_ready_endpoints(store: Store, port: int) -> None:
    store.create(SERVICES, service("web", cluster_ip="None"))
    store.create(
        SLICES,
        endpoint_slice(
            "web",
            [
                ("10.244.0.5", "web-0", True),
                ("10.244.0.6", "web-1", True),
                ("10.244.0.7", None, False),
            ],
        ),
    )

    assert answers(await ask(port, "web.default.svc.cluster.local")) == {
        "10.244.0.5",
        "10.244.0.6",
    }
    assert answers(await ask(port, "web-0.web.default.svc.cluster.local")) == {"10.244.0.5"}
    assert answers(await ask(port, "web-1.web.default.svc.cluster.local")) == {"10.244.0.6"}
    not_ready = await ask(port, "10-244-0-7.web.default.svc.cluster.local")
    assert not_ready.rcode() == dns.rcode.NXDOMAIN


async def test_endpoints_without_a_hostname_are_named_by_their_dashed_address(
    store: Store, port: int
) -> None:
    store.create(SERVICES, service("db", cluster_ip="None", publish_not_ready=True))
    store.create(SLICES, endpoint_slice("db", [("10.244.1.9", None, False)]))

    response = await ask(port, "10-244-1-9.db.default.svc.cluster.local")

    assert answers(response) == {"10.244.1.9"}  # published though not ready


async def test_an_endpoints_object_serves_when_there_are_no_slices(store: Store, port: int) -> None:
    store.create(SERVICES, service("legacy", cluster_ip="None"))
    store.create(
        ENDPOINTS,
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "legacy", "namespace": "default"},
            "subsets": [
                {
                    "addresses": [{"ip": "10.244.2.1", "hostname": "legacy-0"}],
                    "notReadyAddresses": [{"ip": "10.244.2.2"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                }
            ],
        },
    )

    assert answers(await ask(port, "legacy.default.svc.cluster.local")) == {"10.244.2.1"}
    assert answers(await ask(port, "legacy-0.legacy.default.svc.cluster.local")) == {"10.244.2.1"}


async def test_an_external_name_service_is_a_cname(store: Store, port: int) -> None:
    store.create(SERVICES, service("search", external_name="search.example.com"))
    store.create(SERVICES, service("echo", cluster_ip="10.96.0.20"))
    store.create(
        SERVICES, service("alias", external_name="echo.default.svc.cluster.local", ports=())
    )

    outside = await ask(port, "search.default.svc.cluster.local")
    inside = await ask(port, "alias.default.svc.cluster.local")

    # The outside name is not resolved: the CNAME is the whole answer.
    assert outside.rcode() == dns.rcode.NOERROR
    assert answers(outside, "CNAME") == {"search.example.com."}
    assert answers(outside) == set()
    # A name inside the cluster is followed.
    assert answers(inside, "CNAME") == {"echo.default.svc.cluster.local."}
    assert answers(inside) == {"10.96.0.20"}
    assert answers(await ask(port, "search.default.svc.cluster.local", "CNAME"), "CNAME") == {
        "search.example.com."
    }


async def test_srv_records_name_the_service_or_each_endpoint(store: Store, port: int) -> None:
    ports = (("http", 80, "TCP"), ("dns", 53, "UDP"))
    store.create(SERVICES, service("echo", ports=ports))
    store.create(SERVICES, service("web", cluster_ip="None", ports=ports))
    store.create(
        SLICES,
        endpoint_slice(
            "web",
            [("10.244.0.5", "web-0", True), ("10.244.0.6", "web-1", True)],
            ports=(("http", 8080, "TCP"), ("dns", 5353, "UDP")),
        ),
    )

    http = await ask(port, "_http._tcp.echo.default.svc.cluster.local", "SRV")
    assert answers(http, "SRV") == {"0 100 80 echo.default.svc.cluster.local."}
    assert {rd.to_text() for rrset in http.additional for rd in rrset} == {"10.96.0.10"}
    assert answers(await ask(port, "_dns._udp.echo.default.svc.cluster.local", "SRV"), "SRV") == {
        "0 100 53 echo.default.svc.cluster.local."
    }
    assert answers(await ask(port, "echo.default.svc.cluster.local", "SRV"), "SRV") == {
        "0 50 80 echo.default.svc.cluster.local.",
        "0 50 53 echo.default.svc.cluster.local.",
    }
    headless = await ask(port, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert answers(headless, "SRV") == {
        "0 50 8080 web-0.web.default.svc.cluster.local.",
        "0 50 8080 web-1.web.default.svc.cluster.local.",
    }
    assert {rd.to_text() for rrset in headless.additional for rd in rrset} == {
        "10.244.0.5",
        "10.244.0.6",
    }
    assert len(answers(await ask(port, "web.default.svc.cluster.local", "SRV"), "SRV")) == 4
    wrong_protocol = await ask(port, "_http._udp.echo.default.svc.cluster.local", "SRV")
    assert wrong_protocol.rcode() == dns.rcode.NXDOMAIN
    empty_non_terminal = await ask(port, "_tcp.echo.default.svc.cluster.local", "SRV")
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR
    assert not empty_non_terminal.answer


# -- pods and reverse names -------------------------------------------------------------------


async def test_a_pod_name_carries_its_address(port: int) -> None:
    response = await ask(port, "10-244-3-4.default.pod.cluster.local")

    assert answers(response) == {"10.244.3.4"}
    assert (await ask(port, "10-244-3.default.pod.cluster.local")).rcode() == dns.rcode.NXDOMAIN


async def test_reverse_names_of_cluster_ips_endpoints_and_pods(store: Store, port: int) -> None:
    store.create(SERVICES, service("echo"))
    store.create(SERVICES, service("web", cluster_ip="None"))
    store.create(SLICES, endpoint_slice("web", [("10.244.0.5", "web-0", True)]))
    store.create(PODS, pod("web-0", "10.244.0.5"))
    store.create(PODS, pod("loner", "10.244.0.9"))

    async def ptr(address: str) -> set[str]:
        return answers(
            await ask(port, dns.reversename.from_address(address).to_text(), "PTR"), "PTR"
        )

    assert await ptr("10.96.0.10") == {"echo.default.svc.cluster.local."}
    assert await ptr("10.244.0.5") == {"web-0.web.default.svc.cluster.local."}
    assert await ptr("10.244.0.9") == {"10-244-0-9.default.pod.cluster.local."}
    # An address the cluster does not know is not its to answer.
    unknown = await ask(port, "1.0.0.10.in-addr.arpa", "PTR")
    assert unknown.rcode() == dns.rcode.REFUSED


# -- negative answers -------------------------------------------------------------------------


async def test_unknown_names_are_nxdomain_and_missing_types_nodata(store: Store, port: int) -> None:
    store.create(SERVICES, service("echo"))

    nxdomain = await ask(port, "nope.default.svc.cluster.local")
    nodata = await ask(port, "echo.default.svc.cluster.local", "AAAA")
    namespace = await ask(port, "default.svc.cluster.local")
    no_namespace = await ask(port, "elsewhere.svc.cluster.local")
    apex = await ask(port, "cluster.local", "SOA")

    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert soa_in_authority(nxdomain)
    assert nodata.rcode() == dns.rcode.NOERROR
    assert not nodata.answer
    assert soa_in_authority(nodata)
    assert namespace.rcode() == dns.rcode.NOERROR
    assert not namespace.answer
    assert no_namespace.rcode() == dns.rcode.NXDOMAIN
    assert answers(apex, "SOA") != set()


async def test_names_outside_the_cluster_are_refused_without_an_upstream(port: int) -> None:
    response = await ask(port, "example.com")

    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.RA


# -- changes ----------------------------------------------------------------------------------


async def test_answers_follow_the_objects(store: Store, port: int) -> None:
    name = "web.default.svc.cluster.local"
    assert (await ask(port, name)).rcode() == dns.rcode.NXDOMAIN

    store.create(SERVICES, service("web", cluster_ip="None"))
    store.create(SLICES, endpoint_slice("web", [("10.244.0.5", "web-0", False)]))
    assert answers(await ask(port, name)) == set()

    store.update(SLICES, endpoint_slice("web", [("10.244.0.5", "web-0", True)]))
    assert answers(await ask(port, name)) == {"10.244.0.5"}
    store.create(SLICES, endpoint_slice("web", [("10.244.1.5", None, True)], name="web-fghij"))
    assert answers(await ask(port, name)) == {"10.244.0.5", "10.244.1.5"}

    store.delete(SERVICES, "default", "web")
    assert (await ask(port, name)).rcode() == dns.rcode.NXDOMAIN
    reverse = dns.reversename.from_address("10.244.0.5").to_text()
    assert (await ask(port, reverse, "PTR")).rcode() == dns.rcode.REFUSED


async def test_a_service_made_through_the_api_server_resolves(
    apiserver: Running, kubectl: Kubectl
) -> None:
    await kubectl("create", "service", "clusterip", "echo", "--tcp=80:8080")
    allocated = (await kubectl.json("get", "service", "echo"))["spec"]["clusterIP"]

    async with running(apiserver.server.store) as port:
        echo = await ask(port, "echo.default.svc.cluster.local")
        kubernetes = await ask(port, "kubernetes.default.svc.cluster.local")
        await kubectl("delete", "service", "echo")
        deleted = await ask(port, "echo.default.svc.cluster.local")

    assert answers(echo) == {allocated}
    assert answers(kubernetes) == {"10.96.0.1"}
    assert deleted.rcode() == dns.rcode.NXDOMAIN


# -- size -------------------------------------------------------------------------------------


async def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(
    store: Store, port: int
) -> None:
    addresses = {f"10.244.{i // 250}.{i % 250 + 1}" for i in range(60)}
    store.create(SERVICES, service("many", cluster_ip="None"))
    store.create(SLICES, endpoint_slice("many", [(a, None, True) for a in addresses]))
    name = "many.default.svc.cluster.local"

    classic = await ask(port, name)  # no EDNS: 512 bytes at most
    with_edns = await ask(port, name, payload=1232)
    over_tcp = await ask(port, name, tcp=True)
    fallback, used_tcp = await dns.asyncquery.udp_with_fallback(
        dns.message.make_query(name, "A"), LOOPBACK, timeout=5, port=port
    )

    assert classic.flags & dns.flags.TC
    assert answers(with_edns) == addresses
    assert not with_edns.flags & dns.flags.TC
    assert answers(over_tcp) == addresses
    assert used_tcp
    assert answers(fallback) == addresses


# -- forwarding -------------------------------------------------------------------------------


async def test_outside_names_go_to_the_upstream(store: Store) -> None:
    corporate = Store()
    corporate.create(SERVICES, service("wiki", "intranet", cluster_ip="192.0.2.7"))
    async with running(corporate, DNSSettings(domain="corp.example")) as upstream_port:
        settings = DNSSettings(upstream=(LOOPBACK, upstream_port))
        async with running(store, settings) as port:
            found = await ask(port, "wiki.intranet.svc.corp.example")
            missing = await ask(port, "nope.intranet.svc.corp.example", tcp=True)

    assert found.rcode() == dns.rcode.NOERROR
    assert found.flags & dns.flags.RA
    assert answers(found) == {"192.0.2.7"}
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_an_external_name_target_outside_is_resolved_upstream(store: Store) -> None:
    corporate = Store()
    corporate.create(SERVICES, service("wiki", "intranet", cluster_ip="192.0.2.7"))
    store.create(SERVICES, service("wiki", external_name="wiki.intranet.svc.corp.example"))
    store.create(SERVICES, service("gone", external_name="gone.intranet.svc.corp.example"))
    async with running(corporate, DNSSettings(domain="corp.example")) as upstream_port:
        settings = DNSSettings(upstream=(LOOPBACK, upstream_port))
        async with running(store, settings) as port:
            found = await ask(port, "wiki.default.svc.cluster.local")
            missing = await ask(port, "gone.default.svc.cluster.local", tcp=True)
            cname_only = await ask(port, "wiki.default.svc.cluster.local", "CNAME")

    # The chain and the target's addresses in one answer: stub resolvers do not chase it.
    assert [rrset.rdtype for rrset in found.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert answers(found) == {"192.0.2.7"}
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in missing.answer] == [dns.rdatatype.CNAME]
    assert [rrset.rdtype for rrset in cname_only.answer] == [dns.rdatatype.CNAME]


async def test_a_silent_upstream_gives_servfail(store: Store) -> None:
    async with await anyio.create_udp_socket(local_host=LOOPBACK) as silent:
        upstream = (LOOPBACK, silent.extra(SocketAttribute.local_port))
        settings = DNSSettings(upstream=upstream, upstream_timeout=0.2)
        async with running(store, settings) as port:
            response = await ask(port, "example.com")

    assert response.rcode() == dns.rcode.SERVFAIL


# -- replies sent at once --------------------------------------------------------------------

FORWARDED = 20  # questions the upstream holds, then answers in one burst
DIRECT = 5  # questions from the zone, asked in the same burst


def upstream_answer(wire: bytes) -> bytes:
    """The fake upstream's answer: ``hostN.example.com`` is 198.51.100.N."""
    query = dns.message.from_wire(wire)
    name = query.question[0].name
    number = int(name.labels[0].removeprefix(b"host"))
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text(name, 5, dns.rdataclass.IN, dns.rdatatype.A, f"198.51.100.{number}")
    )
    return response.to_wire()


def loopback_socket() -> socket.socket:
    """A plain UDP socket, to send from without yielding to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((LOOPBACK, 0))
    return sock


async def receive_from(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    while True:
        await anyio.wait_readable(sock)
        with contextlib.suppress(BlockingIOError):
            return sock.recvfrom(65535)


@pytest.fixture
def own_dns_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython keeps the first async library it finds for every later query, the server's
    forwarding included: a test on another anyio backend lets it find its own, and leaves the
    one it had to the other tests."""
    monkeypatch.setattr(dns.asyncbackend, "_default_backend", None)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.usefixtures("own_dns_backend")
async def test_replies_ready_at_once_all_reach_their_clients(store: Store) -> None:
    """The tasks relaying forwarded answers and the loop answering from the zone share one UDP
    socket, on which anyio lets one task send at a time (another raises BusyResourceError).

    The fake upstream holds every forwarded question, then answers them all, and the zone
    questions are sent, in one step without yielding: the server finds them all ready at once,
    so its tasks want to send together, whatever the timing.
    """
    store.create(SERVICES, service("echo", cluster_ip="10.96.0.10"))
    with contextlib.ExitStack() as sockets:
        upstream = sockets.enter_context(loopback_socket())
        clients = [sockets.enter_context(loopback_socket()) for _ in range(DIRECT)]
        settings = DNSSettings(upstream=(LOOPBACK, upstream.getsockname()[1]), upstream_timeout=30)
        async with running(store, settings) as port:
            forwarded: dict[int, dns.message.Message] = {}

            async def ask_outside(number: int) -> None:
                forwarded[number] = await ask(port, f"host{number}.example.com")

            async with anyio.create_task_group() as tasks:
                for number in range(FORWARDED):
                    tasks.start_soon(ask_outside, number)
                with anyio.fail_after(10):
                    held = [await receive_from(upstream) for _ in range(FORWARDED)]
                queries = [
                    dns.message.make_query("echo.default.svc.cluster.local", "A") for _ in clients
                ]
                for wire, address in held:
                    upstream.sendto(upstream_answer(wire), address)
                for client, query in zip(clients, queries, strict=True):
                    client.sendto(query.to_wire(), (LOOPBACK, port))
                with anyio.fail_after(10):
                    direct = [
                        dns.message.from_wire((await receive_from(client))[0]) for client in clients
                    ]
            after = await ask(port, "echo.default.svc.cluster.local")  # and it goes on serving

    assert {number: answers(forwarded[number]) for number in range(FORWARDED)} == {
        number: {f"198.51.100.{number}"} for number in range(FORWARDED)
    }
    assert [(reply.id, answers(reply)) for reply in direct] == [
        (query.id, {"10.96.0.10"}) for query in queries
    ]
    assert answers(after) == {"10.96.0.10"}


class UnreachableClients:
    """The server's UDP socket, except that sending to the client ports in ``ports`` fails with
    ``error()``, as sending to a client the host cannot reach does; each failure is reported
    on ``failures``."""

    def __init__(
        self,
        udp: UDPSocket,
        ports: set[int],
        error: Callable[[], Exception],
        failures: MemoryObjectSendStream[int],
    ) -> None:
        self.udp, self.ports, self.error, self.failures = udp, ports, error, failures

    async def __aenter__(self) -> UnreachableClients:
        await self.udp.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.udp.__aexit__(*exc_info)

    def __aiter__(self) -> UDPSocket:
        return self.udp

    def extra(self, attribute: Any, *default: Any) -> Any:
        return self.udp.extra(attribute, *default)

    async def sendto(self, data: bytes, host: str, port: int) -> None:
        if port in self.ports:
            self.failures.send_nowait(port)
            raise self.error()
        await self.udp.sendto(data, host, port)


def unreachable() -> Exception:
    return OSError(errno.ENETUNREACH, "Network is unreachable")


def broken() -> Exception:
    """What anyio's trio backend raises for an OSError from ``sendto``."""
    error = anyio.BrokenResourceError()
    error.__cause__ = unreachable()
    return error


@pytest.mark.parametrize("error", [unreachable, broken])
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.usefixtures("own_dns_backend")
async def test_a_reply_that_cannot_be_sent_is_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]
) -> None:
    """A reply the host cannot send, from the zone or forwarded, is dropped, as UDP may drop
    it: the server goes on answering the others."""
    store.create(SERVICES, service("echo", cluster_ip="10.96.0.10"))
    corporate = Store()
    corporate.create(SERVICES, service("wiki", "intranet", cluster_ip="192.0.2.7"))
    ports: set[int] = set()
    failures, failed = anyio.create_memory_object_stream[int](10)
    bind = dns_server._bind

    async def bind_with_unreachable_clients(host: str, port: int) -> tuple[Any, Any]:
        udp, tcp = await bind(host, port)
        return UnreachableClients(udp, ports, error, failures), tcp

    async with (
        running(corporate, DNSSettings(domain="corp.example")) as upstream_port,
        failures,
        failed,
    ):
        monkeypatch.setattr(dns_server, "_bind", bind_with_unreachable_clients)
        settings = DNSSettings(upstream=(LOOPBACK, upstream_port))
        async with (
            running(store, settings) as port,
            await anyio.create_connected_udp_socket(LOOPBACK, port) as client,
        ):
            client_port = client.extra(SocketAttribute.local_port)
            ports.add(client_port)
            await client.send(VALID_QUERY)  # answered from the zone
            await client.send(
                dns.message.make_query("wiki.intranet.svc.corp.example", "A").to_wire()
            )
            with anyio.fail_after(5):
                dropped = [await failed.receive(), await failed.receive()]
            found = await ask(port, "echo.default.svc.cluster.local")
            outside = await ask(port, "wiki.intranet.svc.corp.example")

    assert dropped == [client_port] * 2  # the zone's answer and the forwarded one
    assert answers(found) == {"10.96.0.10"}
    assert answers(outside) == {"192.0.2.7"}


# -- bad input --------------------------------------------------------------------------------


async def test_malformed_messages_get_errors_and_the_server_goes_on(port: int) -> None:
    valid = dns.message.make_query("echo.default.svc.cluster.local", "A")
    header_and_junk = valid.to_wire()[:12] + b"\xff" * 7
    no_question = dns.message.Message()
    update = dns.message.make_query("cluster.local", "SOA")
    update.set_opcode(dns.opcode.UPDATE)
    edns_1 = dns.message.make_query("echo.default.svc.cluster.local", "A", use_edns=1)

    async with await anyio.create_connected_udp_socket(LOOPBACK, port) as udp:
        for garbage in (b"", b"\x00", b"\xde\xad" * 5, b"\x00\x01\x80" + b"\x00" * 9):
            await udp.send(garbage)  # too short, or a response: dropped
        await udp.send(header_and_junk)
        await udp.send(valid.to_wire())
        with anyio.fail_after(5):
            formerr = dns.message.from_wire(await udp.receive())
            answered = dns.message.from_wire(await udp.receive())

    assert formerr.id == valid.id
    assert formerr.rcode() == dns.rcode.FORMERR
    assert answered.id == valid.id
    assert answered.rcode() == dns.rcode.NXDOMAIN
    for query, rcode in (
        (no_question, dns.rcode.FORMERR),
        (update, dns.rcode.NOTIMP),
        (edns_1, dns.rcode.BADVERS),
    ):
        response = await dns.asyncquery.udp(query, LOOPBACK, timeout=5, port=port)
        assert response.rcode() == rcode


async def test_malformed_messages_over_tcp(port: int) -> None:
    valid = dns.message.make_query("echo.default.svc.cluster.local", "A").to_wire()
    junk = valid[:12] + b"\xff" * 7

    async with await anyio.connect_tcp(LOOPBACK, port) as stream:
        receiver = BufferedByteReceiveStream(stream)

        async def reply() -> dns.message.Message:
            length = int.from_bytes(await receiver.receive_exactly(2))
            return dns.message.from_wire(await receiver.receive_exactly(length))

        with anyio.fail_after(5):
            # Two messages in one write: the replies come in order.
            await stream.send(b"".join(len(m).to_bytes(2) + m for m in (junk, valid)))
            formerr, answered = await reply(), await reply()
            await stream.send(b"\x00\x00")  # an empty message ends the connection
            with pytest.raises(anyio.EndOfStream):
                await receiver.receive()

    assert formerr.rcode() == dns.rcode.FORMERR
    assert answered.rcode() == dns.rcode.NXDOMAIN
    assert (await ask(port, "echo.default.svc.cluster.local", tcp=True)).answer == []


@given(st.binary(max_size=600) | st.builds(lambda tail: VALID_QUERY[:12] + tail, st.binary()))
def test_the_responder_survives_any_bytes(wire: bytes) -> None:
    responder = Responder(ClusterIndex(), DNSSettings())
    reply = responder.respond(wire, over_udp=True)
    if isinstance(reply, bytes):
        assert dns.message.from_wire(reply).flags & dns.flags.QR
        assert len(reply) <= 512
