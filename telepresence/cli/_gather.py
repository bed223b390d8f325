"""``telepresence gather-logs``: one zip file with everything needed to report a problem.

It holds the daemons' log files (``<cache dir>/logs``, with their rotated copies) and the logs
of the traffic-manager's pods, read through the API server (``pods/log``) in the manager
namespace of the connection (or the one ``connect`` would use). What cannot be read (no
cluster, no right to read pod logs) is written into the zip as ``errors.txt`` instead, so
that the user still gets the rest.
"""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

import anyio

from telepresence import config
from telepresence.kube import Kube, KubeError, KubeTarget
from telepresence.transport import MANAGER_SELECTOR

if TYPE_CHECKING:
    from pathlib import Path

    from telepresence.client import Client

__all__ = ["gather_logs"]


async def gather_logs(client: Client, target: Path) -> int:
    """Write the zip; returns how many files it holds."""
    entries: dict[str, bytes] = {}
    problems: list[str] = []
    directory = config.logs_dir()
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.is_file():
                entries[f"daemons/{path.name}"] = path.read_bytes()
    status = await client.status()
    try:
        namespace = status.manager_namespace or _manager_namespace(client)
        async with Kube.open(KubeTarget(client.kubeconfig, client.context)) as kube:
            pods, _ = await kube.collection(
                f"/api/v1/namespaces/{namespace}/pods", label_selector=MANAGER_SELECTOR
            )
            for pod in pods:
                name = pod["metadata"]["name"]
                log = await kube.text(f"/api/v1/namespaces/{namespace}/pods/{name}/log")
                entries[f"traffic-manager/{name}.log"] = log.encode()
            if not pods:
                problems.append(f"no traffic-manager pod in namespace {namespace}")
    except (KubeError, config.ConfigError, config.KubeconfigError) as error:
        problems.append(f"the traffic-manager's logs: {error}")
    if problems:
        entries["errors.txt"] = ("\n".join(problems) + "\n").encode()
    await anyio.to_thread.run_sync(_write, target, entries)
    return len(entries)


def _manager_namespace(client: Client) -> str:
    loaded, _ = config.load_config()
    context = config.read_kubeconfig(client.kubeconfig, client.context)
    namespace, _source = config.manager_namespace(None, context.extensions, loaded)
    return namespace


def _write(target: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
