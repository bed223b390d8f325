"""The ``direct`` transport's dial to the manager's pod (the data plane's connection): by
address or by name, on loopback."""

from __future__ import annotations

import socket

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from telepresence import transport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def _echo(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_dial_reaches_the_port_by_address_or_by_name(host: str) -> None:
    # "localhost" (from /etc/hosts, no DNS query) may resolve to ::1 first, where nothing
    # listens: the next address is tried.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, _echo)
        async with (
            transport.direct(host, "ambassador") as way,
            await way.dial(port) as stream,
        ):
            assert stream.extra(SocketAttribute.remote_address)[1] == port
            await stream.send(b"to the manager's pod")
            assert await stream.receive() == b"to the manager's pod"
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_dial_to_a_closed_port_raises_the_connections_error(host: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        async with transport.direct(host, "ambassador") as way:
            with pytest.raises(ConnectionRefusedError):
                await way.dial(port)


async def test_dial_tries_each_address_of_the_name_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def addresses(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        assert host == "traffic-manager.ambassador"
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET6, stream, tcp, "", ("::1", port, 0, 0)),  # nothing listens there
            (socket.AF_INET, stream, tcp, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", addresses)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, _echo)
        async with (
            transport.direct("traffic-manager.ambassador", "ambassador") as way,
            await way.dial(port) as stream,
        ):
            await stream.send(b"second address")
            assert await stream.receive() == b"second address"
        tasks.cancel_scope.cancel()
