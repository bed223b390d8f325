"""Network namespaces of the sandbox: create, remove, run a program or ``nft`` inside one.

Every namespace the sandbox makes is a *named* namespace (``/run/netns/NAME``, as ``ip netns``
makes them) whose name starts with the sandbox's prefix, so that everything one sandbox made
can be found and removed again, also after the process that made it was killed. pyroute2
creates and removes them; programs run inside one through :data:`ENTER` (``enter.py``), and
rules are loaded with ``nft -j -f -`` run inside the namespace, so one ruleset is one atomic
transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from pyroute2 import netns as _netns

#: Where named network namespaces live (``ip netns`` and pyroute2 agree on it).
RUN_DIR = Path("/run/netns")
#: The launcher that enters namespaces and sets up a container's filesystem view.
ENTER_SCRIPT = Path(__file__).with_name("enter.py")
#: How to start it: this interpreter, isolated and without site-packages, so it starts fast.
ENTER = (sys.executable, "-I", "-S", str(ENTER_SCRIPT))


class NamespaceError(Exception):
    """A namespace operation or a program run inside a namespace failed."""


def path(name: str) -> Path:
    """The file that holds namespace ``name``."""
    return RUN_DIR / name


def create(name: str) -> Path:
    """Create namespace ``name`` (its loopback is down until someone brings it up)."""
    try:
        _netns.create(name)
    except OSError as error:
        raise NamespaceError(f"cannot create network namespace {name}: {error}") from error
    return path(name)


def remove(name: str) -> None:
    """Remove namespace ``name``; its links, addresses, routes and nft tables go with it
    once no process is left inside."""
    with contextlib.suppress(FileNotFoundError):
        _netns.remove(name)


def with_prefix(prefix: str) -> list[str]:
    """The names of the existing namespaces that start with ``prefix``."""
    if not RUN_DIR.is_dir():
        return []
    return sorted(entry.name for entry in RUN_DIR.iterdir() if entry.name.startswith(prefix))


def processes_in(names: list[str]) -> dict[str, list[int]]:
    """The processes inside each of the namespaces ``names`` (by namespace name)."""
    wanted = set(names)
    return {name: pids for name, pids in _netns.ns_pids(str(RUN_DIR)).items() if name in wanted}


def kill_processes_in(names: list[str], sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every process inside the namespaces ``names``; returns their PIDs."""
    killed = []
    for pids in processes_in(names).values():
        for pid in pids:
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            killed.append(pid)
    return killed


def enter_argv(name: str, *argv: str) -> list[str]:
    """The command line that runs ``argv`` inside namespace ``name``."""
    return [*ENTER, "--net", str(path(name)), "--", *argv]


async def run(name: str, *argv: str, stdin: bytes | None = None) -> str:
    """Run ``argv`` inside namespace ``name``; its output, or NamespaceError with its errors."""
    result = await anyio.run_process(
        enter_argv(name, *argv), input=stdin, check=False, stderr=subprocess.PIPE
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise NamespaceError(f"{' '.join(argv)} in {name} failed: {message}")
    return result.stdout.decode()


async def nft(name: str, commands: list[dict[str, Any]]) -> None:
    """Apply nftables ``commands`` (JSON, as ``nft -j`` takes them) in namespace ``name``,
    as one transaction: all of them or none."""
    payload = json.dumps({"nftables": commands}).encode()
    await run(name, "nft", "-j", "-f", "-", stdin=payload)


async def nft_list(name: str) -> list[dict[str, Any]]:
    """The namespace's ruleset, as ``nft -j list ruleset`` prints it."""
    output = await run(name, "nft", "-j", "list", "ruleset")
    items: list[dict[str, Any]] = json.loads(output)["nftables"]
    return [item for item in items if "metainfo" not in item]


async def sysctl(name: str, settings: dict[str, str]) -> None:
    """Set per-namespace sysctls (``net.*``) inside namespace ``name``."""
    await run(name, "sysctl", "-q", "-w", *(f"{key}={value}" for key, value in settings.items()))
