"""The probes' HTTP server, as the kubelet's prober uses it (anyio only: every backend)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from manager import health
from tests.conftest import ANYIO_BACKENDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@contextlib.asynccontextmanager
async def probes(ready: list[bool]) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port: int = listener.extra(SocketAttribute.local_port)
    async with anyio.create_task_group() as tasks:
        await tasks.start(health.serve, listener, lambda: ready[0])
        yield port
        tasks.cancel_scope.cancel()


async def request(port: int, raw: bytes) -> bytes:
    """The whole response (empty when the server cut the connection)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        response = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                response += await stream.receive()
    return response


async def test_liveness_and_readiness() -> None:
    ready = [False]
    async with probes(ready) as port:
        get = b"GET %s HTTP/1.1\r\nHost: 10.244.0.5:8083\r\nUser-Agent: kube-probe/1.32\r\n\r\n"
        assert (await request(port, get % b"/healthz")).startswith(b"HTTP/1.1 200 OK\r\n")
        not_ready = await request(port, get % b"/readyz")
        assert not_ready.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert not_ready.endswith(b"\r\n\r\nnot ready\n")
        ready[0] = True
        assert (await request(port, get % b"/readyz?verbose")).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"nonsense\r\n\r\n", b"400"),
    ],
)
async def test_everything_else(raw: bytes, status: bytes) -> None:
    async with probes([True]) as port:
        assert (await request(port, raw)).split()[1] == status


async def test_head_has_no_body() -> None:
    async with probes([True]) as port:
        response = await request(port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\n")


async def test_an_oversized_request_is_cut_off() -> None:
    async with probes([True]) as port:
        response = await request(port, b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 2000)
    assert response == b""
