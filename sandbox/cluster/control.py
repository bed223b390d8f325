"""Start, stop and inspect a sandbox from the command line (``python -m sandbox up|down|...``).

``up`` starts the daemon (:mod:`~sandbox.cluster.daemon`) in its own session, with its logs in
``DIR/sandbox.log``, and relays the progress lines it writes on a pipe until it says
``ready``; when the daemon dies first, ``up`` shows the end of its log and removes whatever
it left. ``down`` asks the daemon to stop (SIGTERM), waits for it (SIGKILL after a deadline),
and then removes anything still there by the sandbox's namespace prefix, so a sandbox killed
with ``kill -9`` is cleaned up as well; ``up`` does the same before it starts.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import yaml

from sandbox.cluster import addresses, network
from sandbox.cluster.daemon import HOST_KUBECONFIG, STATE_FILE, State, prefix_for
from sandbox.node import netns

if TYPE_CHECKING:
    from collections.abc import Callable

LOG_FILE = "sandbox.log"
UP_TIMEOUT = 180.0
DOWN_TIMEOUT = 60.0


class ControlError(Exception):
    """What went wrong, said for the person at the terminal."""


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What a clean-up removed."""

    daemon_stopped: bool
    #: Namespaces the clean-up itself had to remove (the daemon removes its own on SIGTERM).
    namespaces: list[str]
    #: Namespaces still there afterwards (none, unless something outside holds them).
    remaining: list[str]


def daemon_alive(state: State) -> bool:
    """Whether the process ``state`` names is still this sandbox's daemon."""
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"sandbox" in cmdline and b"daemon" in cmdline


def up(directory: Path, nodes: int, say: Callable[[str], None]) -> State:
    """Start a sandbox in ``directory``; returns once it is ready (see the module docstring)."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if not 1 <= nodes <= addresses.MAX_NODES:
        raise ControlError(f"--nodes must be between 1 and {addresses.MAX_NODES}, not {nodes}")
    state = State.load(directory)
    if state is not None and daemon_alive(state):
        say(f"already up (pid {state.pid})")
        return state
    stale = clean(directory)
    if stale.namespaces:
        say(f"removed a stale sandbox: {len(stale.namespaces)} namespaces")
    log_path = directory / LOG_FILE
    read_fd, write_fd = os.pipe()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "daemon",
                "--dir",
                str(directory),
                "--nodes",
                str(nodes),
                "--progress-fd",
                str(write_fd),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    deadline = time.monotonic() + UP_TIMEOUT
    with os.fdopen(read_fd, "r") as progress:
        for line in progress:
            message = line.rstrip("\n")
            say(message)
            if message == "ready":
                break
            if time.monotonic() > deadline:
                process.terminate()
                raise ControlError(f"the sandbox was not ready after {UP_TIMEOUT:.0f} s")
        else:
            process.wait()
            clean(directory)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ControlError(
                f"the sandbox failed to start (exit status {process.returncode}); the end of "
                f"{log_path}:\n{tail}"
            )
    state = State.load(directory)
    if state is None:
        raise ControlError(f"the sandbox said it was ready but wrote no {STATE_FILE}")
    return state


def down(directory: Path) -> Cleanup:
    """Stop the sandbox in ``directory`` and remove everything it made."""
    return clean(directory.resolve())


def clean(directory: Path) -> Cleanup:
    """Stop the daemon if it runs, then remove every namespace (and what runs inside) with
    this directory's prefix."""
    state = State.load(directory)
    stopped = False
    if state is not None and daemon_alive(state):
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while daemon_alive(state) and time.monotonic() < deadline:
            time.sleep(0.05)
        if daemon_alive(state):
            os.kill(state.pid, signal.SIGKILL)
        stopped = True
    prefix = prefix_for(directory)
    removed = anyio.run(network.tear_down, prefix)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return Cleanup(stopped, removed, netns.with_prefix(prefix))


def describe(result: Cleanup, directory: Path) -> str:
    """One line on what a clean-up did, for the terminal."""
    if result.remaining:
        return (
            f"down, but {len(result.remaining)} namespaces are still there "
            f"({', '.join(result.remaining)}): something outside the sandbox holds them"
        )
    if not result.daemon_stopped and not result.namespaces:
        return f"nothing was running in {directory}"
    stale = (
        f"; removed {len(result.namespaces)} namespaces left behind" if result.namespaces else ""
    )
    return f"down; nothing left behind{stale}"


def status(directory: Path) -> dict[str, Any]:
    """What runs in ``directory``: the daemon, its namespaces, and the nodes and pods the
    API server knows."""
    directory = directory.resolve()
    state = State.load(directory)
    prefix = prefix_for(directory)
    report: dict[str, Any] = {
        "directory": str(directory),
        "running": bool(state and daemon_alive(state)),
        "namespaces": netns.with_prefix(prefix),
    }
    if state is None or not report["running"]:
        return report
    report |= {
        "pid": state.pid,
        "api": state.api_url,
        "kubeconfig": state.kubeconfig,
        "uptime_seconds": round(time.time() - state.started),
    }
    try:
        get = _admin_reader(directory)
        nodes = get("/api/v1/nodes")
        pods = get("/api/v1/pods")
    except OSError as error:
        report["error"] = f"the API server does not answer: {error}"
        return report
    report["nodes"] = {
        n["metadata"]["name"]: next(
            (c["status"] for c in n["status"].get("conditions", []) if c["type"] == "Ready"),
            "Unknown",
        )
        for n in nodes["items"]
    }
    phases: dict[str, int] = {}
    for pod in pods["items"]:
        phase = pod.get("status", {}).get("phase", "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    report["pods"] = phases
    return report


def _admin_reader(directory: Path) -> Callable[[str], dict[str, Any]]:
    """GETs as the sandbox admin to the API server's loopback listener (standard library
    only): its address from the host kubeconfig, the credentials from ``DIR/pki``."""
    config = yaml.safe_load((directory / HOST_KUBECONFIG).read_text())
    host, port = config["clusters"][0]["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    pki = directory / "pki"
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")

    def get(path: str) -> dict[str, Any]:
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise OSError(f"GET {path}: {response.status}")
        result: dict[str, Any] = json.loads(body)
        return result

    return get


def workstation_argv(directory: Path, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``command`` in the workstation."""
    directory = directory.resolve()
    state = State.load(directory)
    if state is None or not daemon_alive(state):
        raise ControlError(f"no sandbox is running in {directory}: start one with `sandbox up`")
    workstation = directory / "workstation"
    stage = workstation / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    resolv = workstation / "resolv.conf"
    resolv.write_text(
        f"# the workstation's corporate resolver (the sandbox's)\n"
        f"nameserver {addresses.WORKSTATION_GATEWAY}\n"
        f"search {addresses.CORPORATE_DOMAIN}\n"
    )
    argv = [
        *netns.ENTER,
        "--net",
        str(netns.path(state.prefix + "ws")),
        "--private-mounts",
        "--stage",
        str(stage),
        "--ro-bind",
        f"{resolv}:/etc/resolv.conf",
        "--",
        *command,
    ]
    env = dict(os.environ, KUBECONFIG=state.kubeconfig)
    return argv, env
