"""The SOCKS5 and HTTP CONNECT proxy of ``telepresence connect --socks``, on loopback.

The cluster is played by :class:`FakeDialer`: it "dials" echo servers that the test runs on
127.0.0.1 and ::1, resolves a few names from a dict, and fails as the traffic-manager would on
some special ports. The SOCKS messages are built by hand with :mod:`struct`, so the byte
layout of RFC 1928 is what is checked; ``curl`` is the real client that proves it works with
software people use.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import shutil
import socket
import struct
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteStream

from telepresence import socks as socks_module
from telepresence.socks import HANDSHAKE_TIMEOUT, ClusterDialer, DialError, serve_socks
from telepresence.wire.mux import ResetReason
from telepresence.wire.shell import StreamResetError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3
#: Ports where the fake traffic-manager's dial fails, and how.
RESETS = {
    7001: ResetReason.REFUSED,
    7002: ResetReason.UNREACHABLE,
    7003: ResetReason.TIMEOUT,
    7004: ResetReason.POLICY,
    7005: ResetReason.INTERNAL,
}
REFUSED_PORT, UNREACHABLE_PORT, TIMEOUT_PORT, POLICY_PORT, INTERNAL_PORT = RESETS
#: Seconds to wait for what a test expects: a datagram that never comes fails the test rather
#: than hang it (pytest-timeout's signal does not reliably interrupt a test blocked in trio).
PATIENCE = 10
NAMES = {"echo.test": "127.0.0.1", "echo6.test": "::1"}
HTTP_BODY = b"hello from echo.test\n"
#: A name whose dial fails before it is tried, for a reason other than the name.
OFFLINE = "offline.test"


# --- The cluster: echo servers and a dialer --------------------------------------------------


class FakeFlow(anyio.abc.UnreliableObjectStream[bytes]):
    """A UDP flow "in the cluster": a connected loopback socket that records what it sent
    and whether it was closed."""

    def __init__(self, udp: anyio.abc.ConnectedUDPSocket) -> None:
        self.udp = udp
        self.sent: list[bytes] = []
        self.closed = anyio.Event()

    async def send(self, item: bytes) -> None:
        self.sent.append(item)
        await self.udp.send(item)

    async def receive(self) -> bytes:
        return await self.udp.receive()

    async def aclose(self) -> None:
        self.closed.set()
        await self.udp.aclose()


@dataclass
class FakeDialer:
    """Dials loopback for the proxy, as the traffic-manager would dial in the cluster."""

    tcp_dials: list[tuple[str, int]] = field(default_factory=list)
    flows: list[FakeFlow] = field(default_factory=list)

    async def open_tcp(self, host: str, port: int) -> anyio.abc.ByteStream:
        self.tcp_dials.append((host, port))
        address = resolve(host)
        if port in RESETS:
            raise StreamResetError(RESETS[port], f"dial tcp {address}:{port}", remote=True)
        return await anyio.connect_tcp(address, port)

    async def open_udp(self, host: str, port: int) -> anyio.abc.UnreliableObjectStream[bytes]:
        udp = await anyio.create_connected_udp_socket(resolve(host), port)
        flow = FakeFlow(udp)
        self.flows.append(flow)
        return flow


def resolve(host: str) -> str:
    if host == OFFLINE:
        raise DialError("the session with the traffic-manager is gone", reason="no session")
    if host in NAMES:
        return NAMES[host]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise DialError(f"no such host {host} in the cluster") from None


@dataclass(frozen=True)
class Servers:
    """Ports of the servers "in the cluster"; ``echo_ended`` gets one item per TCP echo
    connection that ended."""

    tcp4: int
    tcp6: int
    udp4: int
    udp6: int
    http: int
    echo_ended: MemoryObjectReceiveStream[None]


async def echo_tcp(ended: MemoryObjectSendStream[None], stream: anyio.abc.SocketStream) -> None:
    """Echo until the client half-closes, then half-close too."""
    async with stream:
        with contextlib.suppress(anyio.BrokenResourceError):
            async for chunk in stream:
                await stream.send(chunk)
            await stream.send_eof()
    ended.send_nowait(None)


async def echo_udp(udp: anyio.abc.UDPSocket) -> None:
    async for data, (host, port) in udp:
        await udp.sendto(data, host, port)


async def serve_http(stream: anyio.abc.SocketStream) -> None:
    """One HTTP/1.1 response to whatever request, then close."""
    async with stream:
        buffered = BufferedByteStream(stream)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.IncompleteRead):
            await buffered.receive_until(b"\r\n\r\n", 16384)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(HTTP_BODY)}\r\nConnection: close"
            await buffered.send(head.encode() + b"\r\n\r\n" + HTTP_BODY)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    ended_send, ended_receive = anyio.create_memory_object_stream[None](100)
    async with (
        ended_send,
        ended_receive,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp4,
        await anyio.create_tcp_listener(local_host="::1") as tcp6,
        await anyio.create_udp_socket(local_host="127.0.0.1") as udp4,
        await anyio.create_udp_socket(local_host="::1") as udp6,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as http,
        anyio.create_task_group() as tasks,
    ):
        for listener in (tcp4, tcp6):
            tasks.start_soon(listener.serve, functools.partial(echo_tcp, ended_send))
        for udp in (udp4, udp6):
            tasks.start_soon(echo_udp, udp)
        tasks.start_soon(http.serve, serve_http)
        yield Servers(
            tcp4=port(tcp4),
            tcp6=port(tcp6),
            udp4=port(udp4),
            udp6=port(udp6),
            http=port(http),
            echo_ended=ended_receive,
        )
        tasks.cancel_scope.cancel()


@pytest.fixture
def dialer() -> FakeDialer:
    return FakeDialer()


@asynccontextmanager
async def running_proxy(
    dialer: ClusterDialer, host: str = "127.0.0.1", handshake_timeout: float = HANDSHAKE_TIMEOUT
) -> AsyncIterator[int]:
    async with (
        await anyio.create_tcp_listener(local_host=host) as listener,
        anyio.create_task_group() as tasks,
    ):
        serve = functools.partial(serve_socks, handshake_timeout=handshake_timeout)
        await tasks.start(serve, listener, dialer)
        yield port(listener)
        tasks.cancel_scope.cancel()


@pytest.fixture
async def proxy(dialer: FakeDialer) -> AsyncIterator[int]:
    async with running_proxy(dialer) as proxy_port:
        yield proxy_port


def port(resource: anyio.TypedAttributeProvider) -> int:
    local_port: int = resource.extra(SocketAttribute.local_port)
    return local_port


# --- SOCKS5 messages, by hand ----------------------------------------------------------------


def greeting(*methods: int) -> bytes:
    """VER NMETHODS METHODS."""
    return struct.pack("!BB", 5, len(methods)) + bytes(methods)


def ipv4(text: str) -> bytes:
    """ATYP and DST.ADDR of an IPv4 address."""
    return b"\x01" + ipaddress.IPv4Address(text).packed


def ipv6(text: str) -> bytes:
    return b"\x04" + ipaddress.IPv6Address(text).packed


def name(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack("!BB", 3, len(encoded)) + encoded


def request(command: int, address: bytes, dst_port: int) -> bytes:
    """VER CMD RSV ATYP DST.ADDR DST.PORT."""
    return struct.pack("!BBB", 5, command, 0) + address + struct.pack("!H", dst_port)


def udp_header(address: bytes, dst_port: int, *, fragment: int = 0) -> bytes:
    """RSV FRAG ATYP DST.ADDR DST.PORT."""
    return struct.pack("!HB", 0, fragment) + address + struct.pack("!H", dst_port)


@dataclass(frozen=True)
class Reply:
    code: int
    host: str
    port: int


async def read_reply(stream: BufferedByteStream) -> Reply:
    """VER REP RSV ATYP BND.ADDR BND.PORT."""
    version, code, reserved, kind = await stream.receive_exactly(4)
    assert (version, reserved) == (5, 0)
    address = await stream.receive_exactly({1: 4, 4: 16}[kind])
    (bound_port,) = struct.unpack("!H", await stream.receive_exactly(2))
    return Reply(code, str(ipaddress.ip_address(address)), bound_port)


@asynccontextmanager
async def socks(
    proxy_port: int, command: int, address: bytes, dst_port: int, *, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[BufferedByteStream, Reply]]:
    """A SOCKS5 connection after its request was answered."""
    async with await anyio.connect_tcp(host, proxy_port) as tcp:
        stream = BufferedByteStream(tcp)
        await stream.send(greeting(0))
        assert await stream.receive_exactly(2) == b"\x05\x00"
        await stream.send(request(command, address, dst_port))
        yield stream, await read_reply(stream)


async def expect[T](awaitable: Awaitable[T]) -> T:
    """What the test expects to happen, within :data:`PATIENCE` seconds."""
    with anyio.fail_after(PATIENCE):
        return await awaitable


async def receive_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """Everything until the proxy ends the stream."""

    async def chunks() -> list[bytes]:
        return [chunk async for chunk in stream]

    return b"".join(await expect(chunks()))


async def datagram(udp: anyio.abc.UDPSocket) -> bytes:
    """The next datagram's bytes."""
    data, _ = await expect(udp.receive())
    return data


async def exchange(stream: anyio.abc.ByteStream, payload: bytes) -> bytes:
    """Send ``payload`` and half-close while reading everything that comes back until EOF."""

    received: list[bytes] = []

    async def receive() -> None:
        received.extend([chunk async for chunk in stream])

    with anyio.fail_after(PATIENCE):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            await stream.send(payload)
            await stream.send_eof()
    return b"".join(received)


# --- SOCKS5 CONNECT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "server"),
    [(ipv4("127.0.0.1"), "tcp4"), (name("echo.test"), "tcp4"), (ipv6("::1"), "tcp6")],
    ids=["ipv4", "domain-name", "ipv6"],
)
async def test_connect_relays_both_ways_with_half_close(
    proxy: int, servers: Servers, dialer: FakeDialer, address: bytes, server: str
) -> None:
    payload = os.urandom(512 * 1024)
    target_port = getattr(servers, server)
    async with socks(proxy, CONNECT, address, target_port) as (stream, reply):
        assert reply == Reply(0, "0.0.0.0", 0)
        assert await exchange(stream, payload) == payload
    host = {1: "127.0.0.1", 3: "echo.test", 4: "::1"}[address[0]]
    assert dialer.tcp_dials == [(host, target_port)]  # a name goes to the cluster as a name


async def test_connect_accepts_greeting_and_request_in_one_write(
    proxy: int, servers: Servers
) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as tcp:
        stream = BufferedByteStream(tcp)
        await stream.send(
            greeting(2, 0) + request(CONNECT, name("echo.test"), servers.tcp4) + b"early"
        )
        assert await stream.receive_exactly(2) == b"\x05\x00"
        assert (await read_reply(stream)).code == 0
        assert await exchange(stream, b" and late") == b"early and late"


@pytest.mark.parametrize(
    ("address", "dst_port", "code"),
    [
        (ipv4("127.0.0.1"), REFUSED_PORT, 0x05),
        (name("echo.test"), UNREACHABLE_PORT, 0x04),
        (ipv4("127.0.0.1"), TIMEOUT_PORT, 0x06),
        (ipv4("127.0.0.1"), POLICY_PORT, 0x02),
        (ipv4("127.0.0.1"), INTERNAL_PORT, 0x01),
        (name("nowhere.test"), 80, 0x04),
        (name(OFFLINE), 80, 0x01),
    ],
    ids=["refused", "unreachable", "timeout", "policy", "other-reset", "unknown-host", "offline"],
)
async def test_connect_failure_reply_codes(
    proxy: int, address: bytes, dst_port: int, code: int
) -> None:
    async with socks(proxy, CONNECT, address, dst_port) as (stream, reply):
        assert reply == Reply(code, "0.0.0.0", 0)
        assert await receive_all(stream) == b""  # and the proxy closes the connection


async def test_client_reset_closes_the_cluster_side(proxy: int, servers: Servers) -> None:
    async with socks(proxy, CONNECT, ipv4("127.0.0.1"), servers.tcp4) as (stream, reply):
        assert reply.code == 0
        await stream.send(b"ping")
        assert await stream.receive_exactly(4) == b"ping"
        raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    await expect(servers.echo_ended.receive())


@pytest.mark.parametrize("methods", [(2,), (), (1, 2, 0x80)], ids=["password", "none", "others"])
async def test_authentication_other_than_none_is_refused(
    proxy: int, methods: tuple[int, ...]
) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(greeting(*methods))
        assert await receive_all(stream) == b"\x05\xff"


@pytest.mark.parametrize("command", [BIND, 0x09], ids=["bind", "unknown"])
async def test_unsupported_command(proxy: int, command: int) -> None:
    async with socks(proxy, command, ipv4("127.0.0.1"), 80) as (stream, reply):
        assert reply == Reply(0x07, "0.0.0.0", 0)
        assert await receive_all(stream) == b""


async def test_unknown_address_type(proxy: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as tcp:
        stream = BufferedByteStream(tcp)
        await stream.send(greeting(0) + struct.pack("!BBBB", 5, CONNECT, 0, 2) + b"\x00" * 6)
        assert await stream.receive_exactly(2) == b"\x05\x00"
        assert (await read_reply(stream)).code == 0x08


@pytest.mark.parametrize(
    "first_bytes",
    [struct.pack("!BBH", 4, 1, 80) + bytes(4) + b"user\x00", b"\x00\x01\x02", b"\x16\x03\x01"],
    ids=["socks4", "garbage", "tls"],
)
async def test_other_protocols_are_closed_and_the_server_goes_on(
    proxy: int, servers: Servers, first_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telepresence.socks")
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(first_bytes)
        assert await receive_all(stream) == b""
    logged = [record for record in caplog.records if record.name == "telepresence.socks"]
    assert len(logged) == 1
    assert ("SOCKS4" if first_bytes[0] == 4 else "neither") in logged[0].getMessage()
    async with socks(proxy, CONNECT, name("echo.test"), servers.tcp4) as (stream, reply):
        assert reply.code == 0
        assert await exchange(stream, b"still serving") == b"still serving"


@pytest.mark.parametrize(
    ("partial", "answered"),
    [
        (b"", b""),
        (b"\x05", b""),
        (b"\x05\x01\x00\x05\x01", b"\x05\x00"),  # a greeting, then half a request
        (b"CONNECT echo.test:80 HTTP/1.1\r\n", b""),
    ],
    ids=["silent", "half-greeting", "half-request", "http"],
)
async def test_a_stalled_handshake_is_closed(
    dialer: FakeDialer, partial: bytes, answered: bytes
) -> None:
    async with (
        running_proxy(dialer, handshake_timeout=0.2) as proxy_port,
        await anyio.connect_tcp("127.0.0.1", proxy_port) as stream,
    ):
        if partial:
            await stream.send(partial)
        assert await receive_all(stream) == answered  # then the proxy closes the connection
    assert dialer.tcp_dials == []


# --- SOCKS5 UDP ASSOCIATE --------------------------------------------------------------------


@asynccontextmanager
async def udp_client(host: str = "127.0.0.1") -> AsyncIterator[anyio.abc.UDPSocket]:
    async with await anyio.create_udp_socket(local_host=host) as udp:
        yield udp


@pytest.mark.parametrize(
    ("address", "server"),
    [
        (ipv4("127.0.0.1"), "udp4"),
        (name("echo.test"), "udp4"),
        (ipv6("::1"), "udp6"),
        (name("echo6.test"), "udp6"),
    ],
    ids=["ipv4", "name", "ipv6", "name-of-ipv6"],
)
async def test_udp_associate_round_trip(
    proxy: int, servers: Servers, dialer: FakeDialer, address: bytes, server: str
) -> None:
    header = udp_header(address, getattr(servers, server))
    async with (
        udp_client() as udp,
        socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_control, reply),
    ):
        assert reply.code == 0
        assert reply.host == "127.0.0.1"  # the address the client reached the proxy on
        await udp.sendto(header + b"ping", reply.host, reply.port)
        assert await expect(udp.receive()) == (header + b"ping", (reply.host, reply.port))
    assert [flow.sent for flow in dialer.flows] == [[b"ping"]]


async def test_udp_replies_carry_the_header_the_client_used(
    proxy: int, servers: Servers, dialer: FakeDialer
) -> None:
    by_ip = udp_header(ipv4("127.0.0.1"), servers.udp4)
    by_name = udp_header(name("echo.test"), servers.udp4)
    async with (
        udp_client() as udp,
        socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_control, reply),
    ):
        await udp.sendto(by_ip + b"one", reply.host, reply.port)
        assert await datagram(udp) == by_ip + b"one"
        await udp.sendto(by_name + b"two", reply.host, reply.port)
        assert await datagram(udp) == by_name + b"two"
        await udp.sendto(by_ip + b"three", reply.host, reply.port)
        assert await datagram(udp) == by_ip + b"three"
    # One flow per destination as the client wrote it, though both reach the same server.
    assert [flow.sent for flow in dialer.flows] == [[b"one", b"three"], [b"two"]]


async def test_udp_from_another_port_than_requested_is_dropped(
    proxy: int, servers: Servers, dialer: FakeDialer
) -> None:
    header = udp_header(ipv4("127.0.0.1"), servers.udp4)
    async with udp_client() as client, udp_client() as stranger:
        client_port = port(client)
        async with socks(proxy, UDP_ASSOCIATE, ipv4("127.0.0.1"), client_port) as (_, reply):
            await stranger.sendto(header + b"stranger", reply.host, reply.port)
            await client.sendto(header + b"client", reply.host, reply.port)
            assert await datagram(client) == header + b"client"
    assert [flow.sent for flow in dialer.flows] == [[b"client"]]


async def test_udp_first_sender_port_is_remembered(
    proxy: int, servers: Servers, dialer: FakeDialer
) -> None:
    header = udp_header(ipv4("127.0.0.1"), servers.udp4)
    async with (
        udp_client() as client,
        udp_client() as stranger,
        socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_, reply),
    ):
        await client.sendto(header + b"first", reply.host, reply.port)
        assert await datagram(client) == header + b"first"
        await stranger.sendto(header + b"stranger", reply.host, reply.port)
        await client.sendto(header + b"second", reply.host, reply.port)
        assert await datagram(client) == header + b"second"
    assert [flow.sent for flow in dialer.flows] == [[b"first", b"second"]]


@pytest.mark.parametrize(
    "bad_datagram",
    [
        lambda echo_port: udp_header(ipv4("127.0.0.1"), echo_port, fragment=1) + b"fragment",
        lambda echo_port: udp_header(name("nowhere.test"), echo_port) + b"unknown host",
        lambda _: b"\x00\x00",
        lambda _: b"\x00\x00\x00\x01\x7f\x00",
        lambda _: b"\x00\x00\x00\x02" + bytes(6) + b"address type 2",
    ],
    ids=["fragment", "unknown-host", "short", "truncated-address", "unknown-address-type"],
)
async def test_udp_datagrams_that_cannot_go_are_dropped(
    proxy: int, servers: Servers, dialer: FakeDialer, bad_datagram: Callable[[int], bytes]
) -> None:
    async with (
        udp_client() as udp,
        socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_control, reply),
    ):
        await udp.sendto(bad_datagram(servers.udp4), reply.host, reply.port)
        whole = udp_header(ipv4("127.0.0.1"), servers.udp4) + b"whole"
        await udp.sendto(whole, reply.host, reply.port)
        assert await datagram(udp) == whole
    assert [flow.sent for flow in dialer.flows] == [[b"whole"]]


async def test_udp_flows_are_limited_and_the_least_recently_used_closes(
    proxy: int, servers: Servers, dialer: FakeDialer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socks_module, "MAX_FLOWS", 2)
    a = udp_header(ipv4("127.0.0.1"), servers.udp4)
    b = udp_header(name("echo.test"), servers.udp4)
    c = udp_header(ipv6("::1"), servers.udp6)
    async with (
        udp_client() as udp,
        socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_control, reply),
    ):
        for header in (a, b, a, c):
            await udp.sendto(header + b"ping", reply.host, reply.port)
            assert await datagram(udp) == header + b"ping"
        flow_a, flow_b, flow_c = dialer.flows
        await expect(flow_b.closed.wait())
        assert not flow_a.closed.is_set()
        assert not flow_c.closed.is_set()


async def test_closing_the_control_connection_ends_the_flows(
    proxy: int, servers: Servers, dialer: FakeDialer
) -> None:
    headers = [udp_header(ipv4("127.0.0.1"), servers.udp4), udp_header(ipv6("::1"), servers.udp6)]
    async with udp_client() as udp:
        async with socks(proxy, UDP_ASSOCIATE, ipv4("0.0.0.0"), 0) as (_control, reply):
            for header in headers:
                await udp.sendto(header + b"ping", reply.host, reply.port)
                assert await datagram(udp) == header + b"ping"
            assert not any(flow.closed.is_set() for flow in dialer.flows)
        assert len(dialer.flows) == 2
        for flow in dialer.flows:
            await expect(flow.closed.wait())


async def test_udp_associate_on_an_ipv6_listener(dialer: FakeDialer, servers: Servers) -> None:
    header = udp_header(name("echo.test"), servers.udp4)
    async with (
        running_proxy(dialer, host="::1") as proxy_port,
        udp_client("::1") as udp,
        socks(proxy_port, UDP_ASSOCIATE, ipv6("::"), 0, host="::1") as (_control, reply),
    ):
        assert (reply.code, reply.host) == (0, "::1")
        await udp.sendto(header + b"ping", reply.host, reply.port)
        assert await datagram(udp) == header + b"ping"


# --- HTTP CONNECT ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status_line: str
    headers: list[str]
    body: bytes


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *headers = head.decode().split("\r\n")
    return Response(status_line, headers, body)


@pytest.mark.parametrize(
    ("host", "server"),
    [("127.0.0.1", "tcp4"), ("echo.test", "tcp4"), ("::1", "tcp6")],
    ids=["ipv4", "name", "ipv6"],
)
async def test_http_connect_forwards_pipelined_bytes(
    proxy: int, servers: Servers, dialer: FakeDialer, host: str, server: str
) -> None:
    target_port = getattr(servers, server)
    target = f"[{host}]:{target_port}" if ":" in host else f"{host}:{target_port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: test\r\n\r\n"
    async with await anyio.connect_tcp("127.0.0.1", proxy) as tcp:
        stream = BufferedByteStream(tcp)
        await stream.send(head.encode() + b"sent with the request")
        established = await stream.receive_until(b"\r\n\r\n", 1024)
        assert established == b"HTTP/1.1 200 Connection established"
        assert await exchange(stream, b", and after") == b"sent with the request, and after"
    assert dialer.tcp_dials == [(host, target_port)]


@pytest.mark.parametrize(
    ("target", "status_line", "says"),
    [
        (
            f"echo.test:{REFUSED_PORT}",
            "HTTP/1.1 502 Bad Gateway",
            f"connection refused by echo.test:{REFUSED_PORT} (the traffic-manager's dial",
        ),
        (f"echo.test:{UNREACHABLE_PORT}", "HTTP/1.1 502 Bad Gateway", "is unreachable"),
        (f"echo.test:{TIMEOUT_PORT}", "HTTP/1.1 504 Gateway Timeout", "timed out dialling"),
        (f"echo.test:{POLICY_PORT}", "HTTP/1.1 403 Forbidden", "is not allowed"),
        ("nowhere.test:80", "HTTP/1.1 502 Bad Gateway", "no such host nowhere.test"),
        (f"{OFFLINE}:80", "HTTP/1.1 502 Bad Gateway", "the session with the traffic-manager"),
    ],
    ids=["refused", "unreachable", "timeout", "policy", "unknown-host", "offline"],
)
async def test_http_connect_failures(proxy: int, target: str, status_line: str, says: str) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        response = parse_response(await receive_all(stream))
    assert response.status_line == status_line
    assert says in response.body.decode()
    assert response.body.count(b"\n") == 1
    assert f"Content-Length: {len(response.body)}" in response.headers


async def test_http_other_methods_are_not_allowed(proxy: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(b"GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n")
        response = parse_response(await receive_all(stream))
    assert response.status_line == "HTTP/1.1 405 Method Not Allowed"
    assert "Allow: CONNECT" in response.headers


@pytest.mark.parametrize(
    "head",
    [
        b"CONNECT echo.test HTTP/1.1",
        b"CONNECT echo.test:http HTTP/1.1",
        b"CONNECT echo.test:70000 HTTP/1.1",
        b"CONNECT [::1:80 HTTP/1.1",
        b"CONNECT echo.test:80",
        b"CONNECT echo.test:80 HTTP/1.1\r\nno colon here",
    ],
)
async def test_http_malformed_requests(proxy: int, dialer: FakeDialer, head: bytes) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(head + b"\r\n\r\n")
        response = parse_response(await receive_all(stream))
    assert response.status_line == "HTTP/1.1 400 Bad Request"
    assert dialer.tcp_dials == []


async def test_http_headers_too_large(proxy: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy) as stream:
        await stream.send(b"CONNECT echo.test:80 HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        response = parse_response(await receive_all(stream))
    assert response.status_line == "HTTP/1.1 431 Request Header Fields Too Large"


# --- A real client ---------------------------------------------------------------------------


async def curl(*args: str) -> bytes:
    path = shutil.which("curl")
    if path is None:
        pytest.fail("curl is not on PATH: install it to run the real-client tests (CI does)")
    environment = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    command = [path, "--silent", "--show-error", "--max-time", "20", *args]
    result = await anyio.run_process(command, env=environment, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


async def test_curl_socks5_hostname(proxy: int, servers: Servers, dialer: FakeDialer) -> None:
    url = f"http://echo.test:{servers.http}/"
    assert await curl("--socks5-hostname", f"127.0.0.1:{proxy}", url) == HTTP_BODY
    assert dialer.tcp_dials == [("echo.test", servers.http)]


async def test_curl_http_connect(proxy: int, servers: Servers, dialer: FakeDialer) -> None:
    url = f"http://echo.test:{servers.http}/"
    assert await curl("--proxytunnel", "--proxy", f"http://127.0.0.1:{proxy}", url) == HTTP_BODY
    assert dialer.tcp_dials == [("echo.test", servers.http)]
