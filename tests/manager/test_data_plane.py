"""The data plane of a running manager: the wire library's client over loopback TLS.

The destinations are echo servers on 127.0.0.1, which the default policy would refuse (the
manager is no way into its own pod), so most tests allow everything; the policy tests use the
default one, with a dialer that takes cluster addresses to the loopback echo server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest

from manager import app
from manager.policy import AllowAll
from telepresence.wire import shell
from telepresence.wire.mux import ResetReason

from .harness import (
    Cluster,
    EchoServers,
    ManagerClient,
    RedirectingDialer,
    StallingDialer,
    closed_port,
    echo_servers,
    start_manager,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from telepresence.wire import tls
    from telepresence.wire.proto import manager_pb2 as pb

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BLACK_HOLE = ipaddress.ip_address("192.0.2.1")  # TEST-NET-1: never dialled for real


async def echo_until_broken(stream: shell.MuxStream) -> None:
    """Echo through ``stream`` until it breaks (raises)."""
    while True:
        await stream.send(b"x")
        await stream.receive()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServers]:
    async with echo_servers() as servers:
        yield servers


@pytest.fixture
async def manager(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> AsyncIterator[ManagerClient]:
    collaborators = app.Collaborators(policy=AllowAll(), dialer=StallingDialer(BLACK_HOLE))
    files = {"client.yaml": {"timeouts": {"endpointDial": "500ms"}}}
    async with start_manager(
        cluster, tmp_path, manager_identity, ca, files=files, collaborators=collaborators
    ) as manager:
        yield manager


@pytest.fixture
async def session(manager: ManagerClient, cluster: Cluster) -> pb.SessionInfo:
    return await manager.arrive(await cluster.service_account_token("alice", may_port_forward=True))


async def test_tcp_both_ways_with_half_close(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
            await stream.send(b"hello")
            assert await stream.receive() == b"hello"
            await stream.send(b" world")
            await stream.send_eof()
            rest = b"".join([chunk async for chunk in stream])
            assert rest == b" world"
            await stream.aclose()


async def test_tcp_bulk_transfer_keeps_every_byte(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: several flow-control windows
    with anyio.fail_after(30):
        async with manager.mux(session) as connection:
            stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
            received = bytearray()

            async def send() -> None:
                for offset in range(0, len(payload), 65536):
                    await stream.send(payload[offset : offset + 65536])
                await stream.send_eof()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                async for chunk in stream:
                    received += chunk
            assert bytes(received) == payload
            await stream.aclose()


async def test_udp_datagrams_both_ways(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            flow = await connection.open_datagram_stream("127.0.0.1", echo.udp_port)
            for datagram in (b"one", b"two" * 1000, bytes(60000)):
                await flow.send(datagram)
                assert await flow.receive() == datagram
            await flow.aclose()


async def test_a_closed_tcp_port_is_refused(
    manager: ManagerClient, session: pb.SessionInfo
) -> None:
    port = closed_port()
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            with pytest.raises(shell.StreamResetError) as raised:
                await connection.open_stream("127.0.0.1", port)
            assert raised.value.reason is ResetReason.REFUSED
            assert f"127.0.0.1:{port}" in raised.value.message
            assert "refused" in raised.value.message
            # The connection goes on.
            assert await connection.ping() >= 0


async def test_a_closed_udp_port_is_refused(
    manager: ManagerClient, session: pb.SessionInfo
) -> None:
    port = closed_port(socket.SOCK_DGRAM)
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            flow = await connection.open_datagram_stream("127.0.0.1", port)
            await flow.send(b"anyone?")
            with pytest.raises(shell.StreamResetError) as raised:
                await flow.receive()
            assert raised.value.reason is ResetReason.REFUSED


async def test_a_silent_destination_times_out(
    manager: ManagerClient, session: pb.SessionInfo
) -> None:
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            with pytest.raises(shell.StreamResetError) as raised:
                await connection.open_stream(str(BLACK_HOLE), 80)
            assert raised.value.reason is ResetReason.TIMEOUT
            assert "0.5 s" in raised.value.message


async def test_an_unknown_name_is_unreachable(
    manager: ManagerClient, session: pb.SessionInfo
) -> None:
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            with pytest.raises(shell.StreamResetError) as raised:
                await connection.open_stream("nothing.default", 80)
            assert raised.value.reason is ResetReason.UNREACHABLE
            assert "did not resolve" in raised.value.message


async def test_an_unknown_session_is_turned_away(manager: ManagerClient) -> None:
    with anyio.fail_after(10), pytest.raises(shell.HandshakeError) as raised:
        async with manager.mux(b"not-a-session"):
            pass
    assert raised.value.reason is ResetReason.POLICY
    assert "arrive again" in raised.value.message


async def test_departing_closes_the_sessions_connections(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    with anyio.fail_after(10):
        async with manager.mux(session) as connection:
            stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
            await manager.stub.Depart(session, timeout=5)
            with pytest.raises(anyio.BrokenResourceError):
                await echo_until_broken(stream)
            await connection.wait_closed()
            with pytest.raises((anyio.ClosedResourceError, anyio.BrokenResourceError)):
                await connection.open_stream("127.0.0.1", echo.tcp_port)
    # A departed session's id opens nothing any more.
    with anyio.fail_after(10), pytest.raises(shell.HandshakeError):
        async with manager.mux(session):
            pass


async def test_many_streams_on_one_connection(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    async def one(connection: shell.MuxConnection, index: int) -> None:
        async with await connection.open_stream("127.0.0.1", echo.tcp_port) as stream:
            message = f"stream {index}".encode()
            await stream.send(message)
            await stream.send_eof()
            assert b"".join([chunk async for chunk in stream]) == message

    with anyio.fail_after(20):
        async with manager.mux(session) as connection, anyio.create_task_group() as tasks:
            for index in range(50):
                tasks.start_soon(one, connection, index)
    assert echo.tcp_connections == 50


async def test_a_client_may_hold_more_than_a_thousand_streams_at_once(
    manager: ManagerClient, session: pb.SessionInfo, echo: EchoServers
) -> None:
    # A laptop's VIF carries each of its programs' connections as a stream: thousands of
    # idle ones at a time are normal (the mux's default limit, 1024, is not the manager's).
    held = 1500
    opened = 0
    all_open = anyio.Event()
    dialling = anyio.CapacityLimiter(50)  # the harness's dial timeout is short: no stampede

    async def hold(connection: shell.MuxConnection) -> None:
        nonlocal opened
        async with dialling:
            stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
        async with stream:
            opened += 1
            if opened == held:
                all_open.set()
            await all_open.wait()
            await stream.send(b"!")
            assert await stream.receive() == b"!"

    with anyio.fail_after(50):
        async with manager.mux(session) as connection, anyio.create_task_group() as tasks:
            for _ in range(held):
                tasks.start_soon(hold, connection)
    assert opened == held


async def test_shutdown_goes_away_and_lets_open_streams_finish(
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    echo: EchoServers,
) -> None:
    collaborators = app.Collaborators(policy=AllowAll())
    with anyio.fail_after(30):
        async with start_manager(
            cluster, tmp_path, manager_identity, ca, collaborators=collaborators
        ) as manager:
            token = await cluster.service_account_token("alice", may_port_forward=True)
            session = await manager.arrive(token)
            async with manager.mux(session) as connection:
                stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
                manager.running.shutdown()
                assert await manager.probe("/readyz") == 503
                # The open stream still carries data after the GO_AWAY...
                await stream.send(b"still here")
                assert await stream.receive() == b"still here"
                # ... and new streams are refused.
                with pytest.raises((shell.StreamResetError, anyio.ClosedResourceError)):
                    await connection.open_stream("127.0.0.1", echo.tcp_port)
                await stream.send_eof()
                assert [chunk async for chunk in stream] == []
                await stream.aclose()
                # With its last stream done, the connection ends cleanly.
                ended = await connection.wait_closed()
                assert ended.reason is ResetReason.NO_ERROR
            await manager.running.stopped.wait()


async def test_shutdown_cuts_what_outlives_the_grace_period(
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    echo: EchoServers,
) -> None:
    collaborators = app.Collaborators(policy=AllowAll())
    with anyio.fail_after(30):
        async with start_manager(
            cluster, tmp_path, manager_identity, ca, collaborators=collaborators, shutdown_grace=0.3
        ) as manager:
            token = await cluster.service_account_token("alice", may_port_forward=True)
            session = await manager.arrive(token)
            async with manager.mux(session) as connection:
                stream = await connection.open_stream("127.0.0.1", echo.tcp_port)
                manager.running.shutdown()
                await manager.running.stopped.wait()
                with pytest.raises(anyio.BrokenResourceError):
                    await echo_until_broken(stream)
                await connection.wait_closed()


@contextlib.asynccontextmanager
async def namespaced_manager(
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    dialer: RedirectingDialer,
) -> AsyncIterator[ManagerClient]:
    files = {
        "namespaces.yaml": {"namespaces": ["dev"]},
        "client.yaml": {"routing": {"alsoProxySubnets": ["192.168.50.0/24"]}},
    }
    collaborators = app.Collaborators(dialer=dialer)
    async with start_manager(
        cluster, tmp_path, manager_identity, ca, files=files, collaborators=collaborators
    ) as manager:
        yield manager


async def test_a_namespaced_manager_relays_only_to_its_namespaces(
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    echo: EchoServers,
) -> None:
    for namespace in ("dev", "other"):
        await cluster.create_namespace(namespace)
    dev_ip = await cluster.create_service("echo", "dev")
    other_ip = await cluster.create_service("echo", "other")
    await cluster.create_pod("web", "dev", "10.244.3.7")
    dialer = RedirectingDialer(echo.tcp_port)
    with anyio.fail_after(30):
        async with namespaced_manager(cluster, tmp_path, manager_identity, ca, dialer) as manager:
            token = await cluster.service_account_token("alice", may_port_forward=True)
            session = await manager.arrive(token)
            async with manager.mux(session) as connection:
                for host in (dev_ip, "10.244.3.7", "echo.dev", "192.168.50.9"):
                    async with await connection.open_stream(host, 7000) as stream:
                        await stream.send(b"ping")
                        assert await stream.receive() == b"ping"
                for host in (other_ip, "10.244.200.1", "127.0.0.1"):
                    with pytest.raises(shell.StreamResetError) as raised:
                        await connection.open_stream(host, 7000)
                    assert raised.value.reason is ResetReason.POLICY, host
                    assert "not allowed" in raised.value.message
                with pytest.raises(shell.StreamResetError) as raised:
                    await connection.open_stream("echo.other", 7000)
                assert raised.value.reason is ResetReason.POLICY
                assert "echo.other is outside the namespaces served" in raised.value.message
    assert [str(address) for address, _ in dialer.dialled] == [
        dev_ip,
        "10.244.3.7",
        dev_ip,
        "192.168.50.9",
    ]


async def test_resets_pass_through_both_ways(
    manager: ManagerClient, session: pb.SessionInfo
) -> None:
    seen: list[str] = []

    async def rude(client: anyio.abc.SocketStream) -> None:
        """Answers the first message with a TCP RST; reports how a client's reset arrives."""
        request = await client.receive()
        if request == b"reset me":
            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
            return
        try:
            await client.receive()
        except anyio.BrokenResourceError:
            seen.append("reset")
        except anyio.EndOfStream:
            seen.append("end")
        finally:
            done.set()

    done = anyio.Event()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, rude)
            async with manager.mux(session) as connection:
                stream = await connection.open_stream("127.0.0.1", port)
                await stream.send(b"reset me")
                with pytest.raises(shell.StreamResetError) as raised:
                    await stream.receive()
                assert raised.value.reason is ResetReason.CANCELLED
                assert "the destination reset the connection" in raised.value.message

                stream = await connection.open_stream("127.0.0.1", port)
                await stream.send(b"hello")
                stream.reset(ResetReason.CANCELLED, "the laptop's app went away")
                await done.wait()
            tasks.cancel_scope.cancel()
    assert seen == ["reset"]


async def test_an_idle_udp_flow_is_closed(
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    echo: EchoServers,
) -> None:
    collaborators = app.Collaborators(policy=AllowAll(), udp_idle_timeout=0.2)
    with anyio.fail_after(20):
        async with start_manager(
            cluster, tmp_path, manager_identity, ca, collaborators=collaborators
        ) as manager:
            token = await cluster.service_account_token("alice", may_port_forward=True)
            async with manager.mux(await manager.arrive(token)) as connection:
                flow = await connection.open_datagram_stream("127.0.0.1", echo.udp_port)
                await flow.send(b"one")
                assert await flow.receive() == b"one"
                # Then nothing, for longer than the idle timeout: the manager ends the flow.
                with pytest.raises((anyio.EndOfStream, shell.StreamResetError)):
                    await flow.receive()
