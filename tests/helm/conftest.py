"""The chart under test, and a cluster to render and install it in.

helm-sdkpy drives the real Helm engine, but offers no `helm template`: Helm renders a chart only
on its way into a cluster, where it also discovers the API and keeps its release records. So
every rendering here is an install into the sandbox's API server, running in-process on
loopback (no kubelet: nothing runs, so nothing waits for readiness), and the rendered objects
are read back from the release's manifest, as `helm get manifest` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import helm_sdkpy
import pytest
import yaml
from kubernetes_asyncio import client

from tests.sandbox.test_client import api_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sandbox.apiserver.run import Running

CHART = Path(__file__).resolve().parents[2] / "helm" / "telepresence-oss"
RELEASE = "traffic-manager"
#: Where `telepresence helm install` puts the traffic-manager unless told otherwise.
MANAGER_NAMESPACE = "ambassador"


@dataclass(frozen=True)
class Release:
    """An installed release: Helm's record of it, and the objects its manifest holds."""

    record: dict[str, Any]
    objects: list[dict[str, Any]]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = [
            obj
            for obj in self.objects
            if obj["kind"] == kind
            and obj["metadata"]["name"] == name
            and obj["metadata"].get("namespace") == namespace
        ]
        assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} rendered"
        return found[0]

    def named(self, kind: str) -> set[tuple[str | None, str]]:
        """(namespace, name) of every rendered object of a kind."""
        return {
            (obj["metadata"].get("namespace"), obj["metadata"]["name"])
            for obj in self.objects
            if obj["kind"] == kind
        }

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}


@dataclass(frozen=True)
class Cluster:
    """The sandbox API server, with Helm and a Kubernetes client pointed at it."""

    running: Running
    api: client.ApiClient

    def helm(self, namespace: str) -> helm_sdkpy.Configuration:
        return helm_sdkpy.Configuration(
            namespace=namespace, kubeconfig=str(self.running.kubeconfig)
        )

    async def create_namespaces(self, *names: str, **labels: str) -> None:
        core = client.CoreV1Api(self.api)
        for name in names:
            body: Any = {"metadata": {"name": name, "labels": labels}}
            await core.create_namespace(body)

    async def install(
        self,
        values: dict[str, Any] | None = None,
        namespace: str = MANAGER_NAMESPACE,
        release: str = RELEASE,
    ) -> Release:
        record = await helm_sdkpy.Install(self.helm(namespace)).run(
            release, str(CHART), values=values, create_namespace=True, wait=False
        )
        return _release(record)

    async def upgrade(
        self,
        values: dict[str, Any] | None = None,
        namespace: str = MANAGER_NAMESPACE,
        release: str = RELEASE,
        *,
        reuse_values: bool = False,
    ) -> Release:
        record = await helm_sdkpy.Upgrade(self.helm(namespace)).run(
            release, str(CHART), values=values, wait=False, reuse_values=reuse_values
        )
        return _release(record)


def _release(record: dict[str, Any]) -> Release:
    objects = [obj for obj in yaml.safe_load_all(record["manifest"]) if obj]
    return Release(record, objects)


@pytest.fixture
def anyio_backend() -> str:
    # The API server is an aiohttp application, and helm-sdkpy runs Helm in asyncio's threads.
    return "asyncio"


@pytest.fixture
async def cluster(apiserver: Running) -> AsyncIterator[Cluster]:
    async with api_client(apiserver) as api:
        yield Cluster(apiserver, api)
