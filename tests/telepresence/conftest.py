"""A cluster for ``telepresence helm``: the sandbox's API server, in-process on loopback.

The CLI runs as a user runs it (Typer's CliRunner, or the console script as a process) with
``KUBECONFIG`` pointing at that server; what it did is then read back through the API with
kubernetes-asyncio. There is no kubelet and no controller here, so nothing runs: commands that
would wait for the traffic-manager get ``--no-wait``, and the tests about waiting play the
Deployment controller themselves (:meth:`Cluster.mark_available`).

The API server runs in the test's event loop; each CLI invocation runs in a worker thread with
its own, as a separate process would.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from typer.testing import CliRunner

from telepresence.cli import app
from tests.sandbox.test_client import api_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sandbox.apiserver.run import Running

#: The console script of this environment.
TELEPRESENCE = str(Path(sys.executable).with_name("telepresence"))
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
#: Every kind the chart makes, with how to list it: (kind, namespaced).
CHART_KINDS = {
    "Deployment": True,
    "Service": True,
    "ServiceAccount": True,
    "ConfigMap": True,
    "Secret": True,
    "Role": True,
    "RoleBinding": True,
    "ClusterRole": False,
    "ClusterRoleBinding": False,
}
type Ref = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


@dataclass(frozen=True)
class Outcome:
    """What a command printed, and its exit status."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if ": error: " in line]


@dataclass(frozen=True)
class Cluster:
    running: Running
    api: client.ApiClient

    @property
    def kubeconfig(self) -> str:
        return str(self.running.kubeconfig)

    async def telepresence(self, *args: str, env: dict[str, str | None] | None = None) -> Outcome:
        """``telepresence ARGS`` through Typer's CliRunner, with KUBECONFIG set."""
        runner = CliRunner()
        environment: dict[str, str | None] = {"KUBECONFIG": self.kubeconfig, **(env or {})}
        invoke = functools.partial(runner.invoke, app, list(args), env=environment)
        result = await anyio.to_thread.run_sync(invoke)
        # An expected failure is an exit status, never an exception escaping the command.
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)

    async def telepresence_process(self, *args: str) -> Outcome:
        """``telepresence ARGS`` as a process: the console script, as a user runs it."""
        environment = {**os.environ, "KUBECONFIG": self.kubeconfig}
        done = await anyio.run_process([TELEPRESENCE, *args], env=environment, check=False)
        return Outcome(done.returncode, done.stdout.decode(), done.stderr.decode())

    async def create_namespaces(self, *names: str) -> None:
        core = client.CoreV1Api(self.api)
        for name in names:
            body: Any = {"metadata": {"name": name}}
            await core.create_namespace(body)

    async def create_pod(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """A pod that nothing runs (there is no kubelet here): it stays until deleted."""
        body: Any = {
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "sandbox/http-echo"}]},
        }
        await client.CoreV1Api(self.api).create_namespaced_pod(namespace, body)

    async def namespace_exists(self, name: str) -> bool:
        try:
            await client.CoreV1Api(self.api).read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def deployment(self, namespace: str = "ambassador") -> dict[str, Any]:
        found = await client.AppsV1Api(self.api).read_namespaced_deployment(
            "traffic-manager", namespace
        )
        deployment: dict[str, Any] = self.api.sanitize_for_serialization(found)
        return deployment

    async def manager_env(self, namespace: str = "ambassador") -> dict[str, str]:
        """The traffic-manager container's plain environment variables."""
        deployment = await self.deployment(namespace)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item["value"] for item in container["env"] if "value" in item}

    async def manager_config(self, namespace: str = "ambassador") -> dict[str, str]:
        found = await client.CoreV1Api(self.api).read_namespaced_config_map(
            "traffic-manager", namespace
        )
        return dict(found.data)

    async def mark_available(self, namespace: str = "ambassador") -> None:
        """Play the Deployment controller and the kubelet: once the traffic-manager's
        Deployment exists, report its current spec rolled out and available."""
        apps = client.AppsV1Api(self.api)
        # All namespaces: the manager namespace may not exist yet when this starts.
        stream = watch.Watch().stream(
            apps.list_deployment_for_all_namespaces,
            field_selector="metadata.name=traffic-manager",
            timeout_seconds=30,
        )
        async with stream:
            async for event in stream:
                found = event["object"]
                if found.metadata.namespace == namespace and event["type"] != "DELETED":
                    break
            else:
                raise AssertionError(f"no traffic-manager Deployment appeared in {namespace}")
        status: Any = {
            "status": {
                "observedGeneration": found.metadata.generation,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            }
        }
        await apps.patch_namespaced_deployment_status(
            "traffic-manager", namespace, status, **MERGE_PATCH
        )

    async def helm_made(self, release_namespace: str = "ambassador") -> set[Ref]:
        """Every object Helm made for the release in ``release_namespace``, found through the
        API by Helm's ownership annotations, and the release's own records."""
        core = client.CoreV1Api(self.api)
        apps = client.AppsV1Api(self.api)
        rbac = client.RbacAuthorizationV1Api(self.api)
        listings: dict[str, Any] = {
            "Deployment": apps.list_deployment_for_all_namespaces,
            "Service": core.list_service_for_all_namespaces,
            "ServiceAccount": core.list_service_account_for_all_namespaces,
            "ConfigMap": core.list_config_map_for_all_namespaces,
            "Secret": core.list_secret_for_all_namespaces,
            "Role": rbac.list_role_for_all_namespaces,
            "RoleBinding": rbac.list_role_binding_for_all_namespaces,
            "ClusterRole": rbac.list_cluster_role,
            "ClusterRoleBinding": rbac.list_cluster_role_binding,
        }
        assert set(listings) == set(CHART_KINDS)
        found: set[Ref] = set()
        for kind, listing in listings.items():
            for item in (await listing()).items:
                metadata = item.metadata
                annotations = metadata.annotations or {}
                labels = metadata.labels or {}
                ours = annotations.get("meta.helm.sh/release-namespace") == release_namespace
                record = (
                    kind == "Secret"
                    and labels.get("owner") == "helm"
                    and metadata.namespace == release_namespace
                )
                if ours or record:
                    found.add((kind, metadata.namespace or "", metadata.name))
        return found


def client_sockets_to(port: int) -> set[str]:
    """The inodes of this process's TCP sockets connected to local ``port`` as clients (what a
    test counts before and after a client's event loop ended, to find a socket left open)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            inodes.add(os.readlink(f"/proc/self/fd/{fd}").removeprefix("socket:[").rstrip("]"))
    found = set()
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
            found.add(fields[9])
    return found


@pytest.fixture
def anyio_backend() -> str:
    # The API server is an aiohttp application; the CLI runs on asyncio as well.
    return "asyncio"


@pytest.fixture
async def cluster(apiserver: Running) -> AsyncIterator[Cluster]:
    async with api_client(apiserver) as api:
        yield Cluster(apiserver, api)
