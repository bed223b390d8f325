"""Fixtures for the traffic-manager tests: the sandbox API server and DNS, in this process.

The manager runs in-process against the sandbox's API server (HTTPS on loopback, with the
admin kubeconfig as its identity) and asks the sandbox's cluster DNS server, which answers
from the same store, on a loopback port of its own. Clients are grpclib's real client and the
wire library's real mux over loopback TLS. Nothing leaves loopback.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import pytest

from manager import kube
from sandbox.dns import StoreView
from sandbox.dns import serve as serve_dns
from telepresence.wire import tls

from .harness import Cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sandbox.apiserver.run import Running


@pytest.fixture
def anyio_backend() -> str:
    # grpclib, kubernetes-asyncio and aiodns run on asyncio only, as the manager does.
    return "asyncio"


@pytest.fixture(scope="session")
def ca() -> tls.Identity:
    return tls.create_ca("Telepresence CA (manager tests)")


@pytest.fixture(scope="session")
def manager_identity(ca: tls.Identity) -> tls.Identity:
    return tls.issue_manager_certificate(ca, namespace="ambassador")


@pytest.fixture
async def cluster(apiserver: Running) -> AsyncIterator[Cluster]:
    """The sandbox cluster as the admin sees it, with the manager's namespace and a cluster
    DNS server on loopback."""
    async with contextlib.AsyncExitStack() as stack:
        kubernetes = await stack.enter_async_context(kube.from_kubeconfig(apiserver.kubeconfig))
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        store = apiserver.server.objects.store
        dns_port: int = await tasks.start(
            lambda task_status: serve_dns(StoreView(store), "127.0.0.1", 0, task_status=task_status)
        )
        cluster = Cluster(apiserver, kubernetes, dns_port)
        await cluster.create_namespace("ambassador")
        yield cluster
