"""The root daemon's TCP and UDP forwarders, behind the real nftables table, in a namespace.

Each test gets a fresh network namespace set up as the root daemon sets up a laptop: ``lo``
up, a TUN device ``vif0`` that owns the route to the fake cluster subnet :data:`CLUSTER` and
carries an address in never-proxy (as the DNS server's is), the daemon's nftables table
(:func:`telepresence.vif._nft.apply`) and the policy routing that loops marked UDP back in
through ``lo``. The namespace goes, with everything in it, however the test ends.

The test body (a *scenario*, the ``async def`` functions below) runs in a child process
inside the namespace (``ip netns exec``), on asyncio, uvloop and trio: the forwarders'
sockets must be the namespace's, and the child can raise its descriptor limit. There, the
forwarders serve on :data:`TCP_PORT` and :data:`UDP_PORT`, and the cluster is played by
:class:`FakeDialer`, which records what it was asked to dial and connects to echo servers on
the child's loopback instead. Clients are ordinary sockets that connect to cluster addresses.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import resource
import secrets
import socket
import struct
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from telepresence.socks import DialError
from telepresence.vif._forward import (
    MAX_FLOWS,
    serve_tcp,
    serve_udp,
    tcp_listener,
    udp_socket,
)
from telepresence.vif._nft import Redirection, apply
from telepresence.wire.mux import ResetReason
from telepresence.wire.shell import StreamResetError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

pytestmark = pytest.mark.timeout(120)

#: The fake cluster, and the never-proxy part of it.
CLUSTER = "10.99.0.0/16"
NEVER = "10.99.9.0/24"
#: The TUN device's own address: in the cluster subnet, and in never-proxy.
VIF_ADDRESS = "10.99.0.10"
TCP_PORT = 4100
UDP_PORT = 4200
MARK = ROUTE_TABLE = 0x7E1E
ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["asyncio", "uvloop", "trio"]
#: Seconds a scenario may take in the child, and the child in all.
PATIENCE = 60

# Destination ports that the fake traffic-manager treats specially.
ECHO = 8080
GOODBYE = 9000  # says "bye", half-closes, then counts what it still receives
REFUSED, UNREACHABLE, NO_SESSION = 7001, 7002, 7003


# --- The namespace, and running a scenario in it (the pytest process) -------------------------


def ip(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ip", *argv], check=True, timeout=10)


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace set up like a laptop with the VIF; removed, with any child, at the end."""
    # Here rather than at the top: the children import this module too, and need no pyroute2.
    from sandbox.node import netns as sandbox_netns

    name = f"tpfwd-{secrets.token_hex(4)}"
    sandbox_netns.create(name)
    try:
        ip(name, "link", "set", "lo", "up")
        # A TUN device like the VIF (this kernel has no dummy links): with nobody attached it
        # has no carrier, but it owns the route, which is what the output path looks at.
        ip(name, "tuntap", "add", "dev", "vif0", "mode", "tun")
        ip(name, "addr", "add", f"{VIF_ADDRESS}/32", "dev", "vif0")
        ip(name, "link", "set", "vif0", "up")
        ip(name, "route", "add", CLUSTER, "dev", "vif0")
        ip(name, "rule", "add", "fwmark", str(MARK), "lookup", str(ROUTE_TABLE))
        ip(name, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE))
        redirection = Redirection(
            subnets=(IPv4Network(CLUSTER),),
            never=(IPv4Network(f"{VIF_ADDRESS}/32"), IPv4Network(NEVER)),
            tcp_port=TCP_PORT,
            udp_port=UDP_PORT,
            mark=MARK,
        )
        apply(redirection, netns=name)
        yield name
    finally:
        sandbox_netns.kill_processes_in([name])
        sandbox_netns.remove(name)


def run_in(
    ns: str, backend: str, scenario: Callable[[World], Awaitable[None]], **options: Any
) -> None:
    """Run ``scenario`` in a child inside ``ns``; its traceback is the failure message."""
    child = "import sys; from tests.telepresence.test_vif_forward import child; child(sys.argv)"
    argv = [sys.executable, "-c", child, scenario.__name__, backend, json.dumps(options)]
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE + 30,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-80:])
        pytest.fail(f"{scenario.__name__} on {backend} failed:\n{tail}", pytrace=False)


every_backend = pytest.mark.parametrize("backend", BACKENDS)


# --- The tests -------------------------------------------------------------------------------


@every_backend
def test_tcp_is_forwarded_to_its_original_destination_both_ways(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_echo_and_half_close)


@every_backend
def test_tcp_half_close_from_the_cluster_side(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_cluster_half_closes_first)


@every_backend
def test_tcp_dial_failures_reset_the_client_and_the_server_goes_on(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_dial_failures_reset)


@every_backend
def test_tcp_client_reset_resets_the_cluster_side(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_client_reset)


@every_backend
def test_tcp_straight_to_the_listener_is_refused(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_not_redirected)


@every_backend
def test_tcp_a_thousand_concurrent_connections(ns: str, backend: str) -> None:
    run_in(ns, backend, tcp_thousand_connections)


@every_backend
def test_tcp_accept_failing_for_want_of_descriptors_does_not_end_the_server(
    ns: str, backend: str
) -> None:
    run_in(ns, backend, tcp_accept_emfile)


@every_backend
def test_udp_one_flow_per_client_with_replies_from_the_destination(ns: str, backend: str) -> None:
    run_in(ns, backend, udp_flows)


@every_backend
def test_udp_idle_flow_is_closed_and_a_new_datagram_opens_another(ns: str, backend: str) -> None:
    run_in(ns, backend, udp_idle_flow, idle_timeout=0.2)


@every_backend
def test_udp_flows_are_bounded_least_recently_active_first(ns: str, backend: str) -> None:
    run_in(ns, backend, udp_flow_limit, max_flows=2)


@every_backend
def test_udp_to_a_destination_that_cannot_be_dialled_is_dropped_then_dialled_again(
    ns: str, backend: str
) -> None:
    run_in(ns, backend, udp_dial_failure, retry_after=0.5)


@every_backend
def test_udp_straight_to_the_forwarder_is_dropped(ns: str, backend: str) -> None:
    run_in(ns, backend, udp_not_redirected)


@every_backend
def test_never_proxy_destinations_are_not_forwarded(ns: str, backend: str) -> None:
    run_in(ns, backend, never_proxy)


# --- The child: the cluster played on loopback ------------------------------------------------


class FakeFlow(anyio.abc.UnreliableObjectStream[bytes]):
    """A UDP flow "in the cluster": a connected loopback socket to the UDP echo server that
    records what it sent and whether it was closed."""

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
    """Dials the child's echo servers, as the traffic-manager would dial in the cluster, and
    fails on some ports as it would; records every destination asked for."""

    echo_port: int
    goodbye_port: int
    udp_echo_port: int
    tcp_dials: list[tuple[str, int]] = field(default_factory=list)
    udp_dials: list[tuple[str, int]] = field(default_factory=list)
    flows: list[FakeFlow] = field(default_factory=list)
    #: Set when a UDP dial was refused.
    udp_refused: anyio.Event = field(default_factory=anyio.Event)

    async def open_tcp(self, host: str, port: int) -> anyio.abc.ByteStream:
        self.tcp_dials.append((host, port))
        if port == NO_SESSION:
            raise DialError("the session with the traffic-manager is gone", reason="no session")
        if port in (REFUSED, UNREACHABLE):
            reason = ResetReason.REFUSED if port == REFUSED else ResetReason.UNREACHABLE
            raise StreamResetError(reason, f"dial tcp {host}:{port}", remote=True)
        return await anyio.connect_tcp(
            "127.0.0.1", self.goodbye_port if port == GOODBYE else self.echo_port
        )

    async def open_udp(self, host: str, port: int) -> anyio.abc.UnreliableObjectStream[bytes]:
        self.udp_dials.append((host, port))
        if port == REFUSED:
            self.udp_refused.set()
            raise StreamResetError(ResetReason.REFUSED, f"dial udp {host}:{port}", remote=True)
        flow = FakeFlow(await anyio.create_connected_udp_socket("127.0.0.1", self.udp_echo_port))
        self.flows.append(flow)
        return flow


@dataclass
class World:
    """What a scenario works with."""

    dialer: FakeDialer
    #: How each connection to the TCP servers ended: "eof" or "reset", and for GOODBYE
    #: "received N".
    endings: MemoryObjectReceiveStream[str]


async def serve_echo(stream: anyio.abc.SocketStream, endings: MemoryObjectSendStream[str]) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send(chunk)
            await stream.send_eof()
        except anyio.BrokenResourceError:
            endings.send_nowait("reset")
        else:
            endings.send_nowait("eof")


async def serve_goodbye(
    stream: anyio.abc.SocketStream, endings: MemoryObjectSendStream[str]
) -> None:
    async with stream:
        await stream.send(b"bye")
        await stream.send_eof()
        received = 0
        async for chunk in stream:
            received += len(chunk)
        endings.send_nowait(f"received {received}")


async def serve_udp_echo(udp: anyio.abc.UDPSocket) -> None:
    async for data, (host, port) in udp:
        await udp.sendto(b"echo:" + data, host, port)


@contextlib.asynccontextmanager
async def forwarding(
    *, idle_timeout: float = 60.0, max_flows: int = MAX_FLOWS, retry_after: float = 5.0
) -> AsyncIterator[World]:
    """The cluster's servers, and both forwarders on their ports, for one scenario."""
    endings_in, endings = anyio.create_memory_object_stream[str](math.inf)
    listener = tcp_listener(TCP_PORT)
    udp = udp_socket(UDP_PORT)
    try:
        with endings_in, endings:
            async with (
                await anyio.create_tcp_listener(local_host="127.0.0.1") as echo,
                await anyio.create_tcp_listener(local_host="127.0.0.1") as goodbye,
                await anyio.create_udp_socket(local_host="127.0.0.1") as udp_echo,
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(echo.serve, functools.partial(serve_echo, endings=endings_in))
                tasks.start_soon(
                    goodbye.serve, functools.partial(serve_goodbye, endings=endings_in)
                )
                tasks.start_soon(serve_udp_echo, udp_echo)
                dialer = FakeDialer(
                    echo_port=echo.extra(anyio.abc.SocketAttribute.local_port),
                    goodbye_port=goodbye.extra(anyio.abc.SocketAttribute.local_port),
                    udp_echo_port=udp_echo.extra(anyio.abc.SocketAttribute.local_port),
                )
                await tasks.start(serve_tcp, listener, dialer)
                await tasks.start(
                    functools.partial(
                        serve_udp,
                        udp,
                        dialer,
                        idle_timeout=idle_timeout,
                        max_flows=max_flows,
                        retry_after=retry_after,
                    )
                )
                yield World(dialer, endings)
                tasks.cancel_scope.cancel()
    finally:
        listener.close()
        udp.close()


def child(argv: list[str]) -> None:
    """The child's entry point: ``SCENARIO BACKEND OPTIONS_JSON``."""
    name, backend, options = argv[1:]
    scenario = globals()[name]
    warnings.simplefilter("error")
    unraisable: list[str] = []
    sys.unraisablehook = lambda hook: unraisable.append(f"{hook.exc_value!r} in {hook.object!r}")
    logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        with anyio.fail_after(PATIENCE):
            async with forwarding(**json.loads(options)) as world:
                await scenario(world)

    anyio.run(
        main,
        backend="trio" if backend == "trio" else "asyncio",
        backend_options={"use_uvloop": True} if backend == "uvloop" else {},
    )
    assert not unraisable, unraisable


async def receive_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def receive_exactly(stream: anyio.abc.ByteReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return data


async def expect_reset(stream: anyio.abc.ByteReceiveStream) -> None:
    """The connection was reset: a RST, not an end of data."""
    with pytest.raises(anyio.BrokenResourceError) as caught:
        await stream.receive()
    assert isinstance(caught.value.__cause__, ConnectionResetError), repr(caught.value.__cause__)


# --- TCP scenarios ---------------------------------------------------------------------------


async def tcp_echo_and_half_close(world: World) -> None:
    async with await anyio.connect_tcp("10.99.1.2", ECHO) as client:
        await client.send(b"hello")
        assert await receive_exactly(client, 5) == b"hello"
        # Half-close: what the cluster still sends after our FIN arrives, then its FIN.
        rest = os.urandom(64 * 1024)
        await client.send(rest)
        await client.send_eof()
        assert await receive_all(client) == rest

    # A megabyte each way at once, intact.
    data = os.urandom(1024 * 1024)
    async with await anyio.connect_tcp("10.99.1.2", ECHO) as client:

        async def send_then_eof() -> None:
            await client.send(data)
            await client.send_eof()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_then_eof)
            assert await receive_all(client) == data

    assert world.dialer.tcp_dials == [("10.99.1.2", ECHO)] * 2
    assert [await world.endings.receive() for _ in range(2)] == ["eof", "eof"]


async def tcp_cluster_half_closes_first(world: World) -> None:
    async with await anyio.connect_tcp("10.99.4.5", GOODBYE) as client:
        assert await receive_all(client) == b"bye"  # its FIN reached us...
        await client.send(b"x" * 100_000)  # ... and our direction still flows
        await client.send_eof()
        assert await world.endings.receive() == "received 100000"


async def tcp_dial_failures_reset(world: World) -> None:
    for port in (REFUSED, UNREACHABLE, NO_SESSION):
        async with await anyio.connect_tcp("10.99.1.2", port) as client:
            await expect_reset(client)
    async with await anyio.connect_tcp("10.99.1.2", ECHO) as client:
        await client.send(b"still serving")
        assert await receive_exactly(client, 13) == b"still serving"
    expected = [("10.99.1.2", port) for port in (REFUSED, UNREACHABLE, NO_SESSION, ECHO)]
    assert world.dialer.tcp_dials == expected


async def tcp_client_reset(world: World) -> None:
    client = await anyio.connect_tcp("10.99.1.2", ECHO)
    await client.send(b"ping")
    assert await receive_exactly(client, 4) == b"ping"
    raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()
    assert await world.endings.receive() == "reset"


async def tcp_not_redirected(world: World) -> None:
    async with await anyio.connect_tcp("127.0.0.1", TCP_PORT) as client:
        await expect_reset(client)
    assert world.dialer.tcp_dials == []


async def tcp_thousand_connections(world: World) -> None:
    count = 1000
    destinations = [(f"10.99.{100 + i // 250}.{1 + i % 250}", 1 + i) for i in range(count)]

    async def one(index: int) -> None:
        host, port = destinations[index]
        payload = f"connection {index:04d};".encode() * 300
        async with await anyio.connect_tcp(host, port) as client:
            await client.send(payload)
            await client.send_eof()
            assert await receive_all(client) == payload, index

    async with anyio.create_task_group() as tasks:
        for index in range(count):
            tasks.start_soon(one, index)
    assert sorted(world.dialer.tcp_dials) == sorted(destinations)


async def tcp_accept_emfile(world: World) -> None:
    accept_failed = anyio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "cannot accept" in record.getMessage():
                accept_failed.set()

    logger = logging.getLogger("telepresence.vif._forward")
    logger.addHandler(watch := Watch())
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    # The client's socket exists before the descriptors run out (uvloop's connect would need
    # more than one); then the forwarder's accept() fails with EMFILE.
    client = socket.socket()
    client.setblocking(False)
    with client:
        try:
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 32, limits[1]))
            with contextlib.suppress(OSError):
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            with contextlib.suppress(BlockingIOError):
                client.connect(("10.99.1.2", ECHO))
            await accept_failed.wait()
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            logger.removeHandler(watch)
        await anyio.wait_writable(client)
        client.send(b"after EMFILE")
        await anyio.wait_readable(client)
        assert client.recv(100) == b"after EMFILE"
    assert world.dialer.tcp_dials == [("10.99.1.2", ECHO)]


# --- UDP scenarios ---------------------------------------------------------------------------


async def udp_client() -> anyio.abc.UDPSocket:
    # Unbound: the kernel picks the VIF's address, as for a program's socket.
    return await anyio.create_udp_socket(family=socket.AF_INET)


async def udp_flows(world: World) -> None:
    destination = ("10.99.3.4", 5353)
    async with await udp_client() as one, await udp_client() as two:
        clients = {b"one": one, b"two": two}
        # A burst each: the flow's first datagrams reach the listener before the flow's own
        # socket exists, the rest that socket.
        for tag, client in clients.items():
            for index in range(20):
                await client.sendto(b"%s %d" % (tag, index), *destination)
        for tag, client in clients.items():
            replies = set()
            for _ in range(20):
                data, source = await client.receive()
                assert source == destination, source
                replies.add(data)
            assert replies == {b"echo:%s %d" % (tag, index) for index in range(20)}
        # Both ways again, on the flows that are open now.
        for tag, client in clients.items():
            await client.sendto(tag + b" again", *destination)
            assert await client.receive() == (b"echo:" + tag + b" again", destination)

    assert world.dialer.udp_dials == [destination] * 2
    sent = sorted(world.dialer.flows, key=lambda flow: flow.sent[0])
    for flow, tag in zip(sent, clients, strict=True):
        expected = [b"%s %d" % (tag, index) for index in range(20)] + [tag + b" again"]
        assert sorted(flow.sent) == sorted(expected)


async def udp_idle_flow(world: World) -> None:
    destination = ("10.99.3.4", 5353)
    async with await udp_client() as client:
        await client.sendto(b"first", *destination)
        assert await client.receive() == (b"echo:first", destination)
        first = world.dialer.flows[0]
        await first.closed.wait()  # idle for idle_timeout

        await client.sendto(b"second", *destination)
        assert await client.receive() == (b"echo:second", destination)
    assert world.dialer.udp_dials == [destination] * 2
    assert [flow.sent for flow in world.dialer.flows] == [[b"first"], [b"second"]]


async def udp_flow_limit(world: World) -> None:
    destination = ("10.99.3.4", 5353)
    async with await udp_client() as a, await udp_client() as b, await udp_client() as c:
        for client in (a, b, a):  # b is now the least recently active
            await client.sendto(b"hi", *destination)
            assert await client.receive() == (b"echo:hi", destination)
        flow_a, flow_b = world.dialer.flows
        await c.sendto(b"hi", *destination)  # one flow too many
        assert await c.receive() == (b"echo:hi", destination)
        await flow_b.closed.wait()
        assert not flow_a.closed.is_set()
        assert not world.dialer.flows[2].closed.is_set()


async def udp_dial_failure(world: World) -> None:
    refused, open_one = ("10.99.3.4", REFUSED), ("10.99.3.4", 5353)
    async with await udp_client() as client:

        async def datagram_then_round_trip() -> None:
            # The listener takes datagrams in order: once the second one's echo is back, the
            # first one has been dealt with.
            await client.sendto(b"to nobody", *refused)
            await client.sendto(b"ping", *open_one)
            assert await client.receive() == (b"echo:ping", open_one)

        await datagram_then_round_trip()
        await world.dialer.udp_refused.wait()
        await anyio.sleep(0.1)  # the failed flow's task ends
        for _ in range(3):
            await datagram_then_round_trip()
        assert world.dialer.udp_dials.count(refused) == 1
        await anyio.sleep(0.6)  # retry_after
        await datagram_then_round_trip()
        assert world.dialer.udp_dials.count(refused) == 2
    assert world.dialer.udp_dials.count(open_one) == 1


async def udp_not_redirected(world: World) -> None:
    async with await udp_client() as client:
        await client.sendto(b"direct", "127.0.0.1", UDP_PORT)
        await client.sendto(b"redirected", "10.99.3.4", 5353)
        assert await client.receive() == (b"echo:redirected", ("10.99.3.4", 5353))
    assert world.dialer.udp_dials == [("10.99.3.4", 5353)]
    assert world.dialer.flows[0].sent == [b"redirected"]


# --- never-proxy -----------------------------------------------------------------------------

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


async def never_proxy(world: World) -> None:
    # Attach to the TUN device, as the daemon holds it, to see what the kernel routes there.
    tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"vif0", IFF_TUN | IFF_NO_PI))
        async with await udp_client() as client, anyio.create_task_group() as tasks:

            async def keep_sending() -> None:
                # Again and again, as TCP resends its SYN: the device's carrier, which it got
                # when we attached, may not be up yet, and a datagram sent before is lost.
                while True:
                    await client.sendto(b"never", "10.99.9.9", 53)
                    await anyio.sleep(0.2)

            tasks.start_soon(keep_sending)
            tasks.start_soon(anyio.connect_tcp, "10.99.9.9", 80)  # its SYN goes to the TUN
            seen: set[tuple[str, int]] = set()
            while seen != {("udp", 53), ("tcp", 80)}:
                await anyio.wait_readable(tun)
                with contextlib.suppress(BlockingIOError):
                    packet = os.read(tun, 65535)
                    if packet[0] >> 4 == 4 and socket.inet_ntoa(packet[16:20]) == "10.99.9.9":
                        header = (packet[0] & 0x0F) * 4
                        (port,) = struct.unpack_from("!H", packet, header + 2)
                        seen.add(({6: "tcp", 17: "udp"}[packet[9]], port))
            tasks.cancel_scope.cancel()
    finally:
        os.close(tun)
    assert world.dialer.tcp_dials == []
    assert world.dialer.udp_dials == []
