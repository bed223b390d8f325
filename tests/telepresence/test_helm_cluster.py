"""The waits of ``telepresence.helm.cluster`` leave no connection behind when they end.

A wait that runs out of time, or a watch that loses the race to another one, is cancelled
while its response is still open. Closing such a TLS connection politely sends close_notify
and leaves the socket open until the API server answers; on Python < 3.12.8 the socket then
stays open for good once the client's event loop is gone (CPython gh-118960), and is reported
as an unclosed socket whenever the garbage collector finds it. So the waits abort what they
abandon. The test keeps the API server (which runs in the test's event loop) busy while the
client's loop winds down, so nothing depends on how fast it would have answered.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import pytest

from telepresence.helm.cluster import Target, wait_for_pods_gone, wait_for_rollout
from tests.telepresence.conftest import client_sockets_to

if TYPE_CHECKING:
    from tests.telepresence.conftest import Cluster

NO_WAIT = "--no-wait"
pytestmark = pytest.mark.anyio


async def _left_open_after(cluster: Cluster, wait: object) -> set[str]:
    """Run ``wait`` in a worker thread with an event loop of its own (as the CLI does) until
    it is cancelled after a moment; the client sockets to the API server it left open once
    that loop is gone, while the API server is kept busy. (Others, such as the connections
    Helm keeps, were there before.)"""
    port = urlsplit(cluster.running.url).port
    assert port is not None
    server_loop = asyncio.get_running_loop()

    def client_side() -> set[str]:
        before = client_sockets_to(port)

        async def main() -> None:
            with anyio.move_on_after(0.5):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(wait)  # type: ignore[arg-type]
                    await anyio.sleep(0.3)
                    # From here the API server answers nothing for a second.
                    server_loop.call_soon_threadsafe(time.sleep, 1.0)

        anyio.run(main)
        return client_sockets_to(port) - before

    return await anyio.to_thread.run_sync(client_side)


async def test_a_rollout_wait_that_is_cancelled_leaves_no_connection_open(
    cluster: Cluster,
) -> None:
    assert (await cluster.telepresence("helm", "install", NO_WAIT)).exit_code == 0
    target = Target(kubeconfig=cluster.kubeconfig)
    progress: list[str] = []

    async def wait() -> None:
        await wait_for_rollout(target, "traffic-manager", progress.append)

    assert await _left_open_after(cluster, wait) == set()
    # It was waiting on its watches, not failing early.
    assert progress == [
        "Waiting for the traffic-manager: the Deployment's new spec is not picked up yet; "
        "no pod yet"
    ]


async def test_a_pods_gone_wait_that_is_cancelled_leaves_no_connection_open(
    cluster: Cluster,
) -> None:
    await cluster.create_namespaces("ambassador")
    await cluster.create_pod("ambassador", "traffic-manager-1", {"app": "traffic-manager"})
    target = Target(kubeconfig=cluster.kubeconfig)
    progress: list[str] = []

    async def wait() -> None:
        await wait_for_pods_gone(target, "app=traffic-manager", progress.append)

    assert await _left_open_after(cluster, wait) == set()
    assert len(progress) == 1
