"""``python -m sandbox demo``: the project's main job, shown on the sandbox cluster.

It brings a sandbox up, deploys the demo application (:file:`demo.yaml`: three HTTP echo
replicas behind a Service, and a client pod), waits for the rollout, shows the pods and the
Service, calls the Service by its names from the client pod (the answers name the replica
that served them), shows that the workstation (the "laptop") cannot reach the cluster's
addresses without Telepresence; then installs the traffic-manager (``telepresence helm
install``), connects (``telepresence connect``: the VIF), calls the same Service by its names
from the workstation with plain curl, shows ``telepresence status``, quits, and tears the
sandbox down, also when a step fails. Every step is a real ``kubectl`` or ``telepresence``
run in the workstation namespace, the daemons with directories of the demo's own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.cluster import control

if TYPE_CHECKING:
    from collections.abc import Callable

MANIFEST = Path(__file__).with_name("demo.yaml")
#: This checkout's command line, beside the interpreter that runs the demo.
TELEPRESENCE = str(Path(sys.executable).with_name("telepresence"))


class DemoError(Exception):
    """A demo step failed; the message names it."""


def run(directory: Path, nodes: int, say: Callable[[str], None]) -> None:
    try:
        control.up(directory, nodes, lambda line: say(f"sandbox: {line}"))
        _steps(directory, say)
        try:
            _telepresence_steps(directory, say)
        finally:
            with contextlib.suppress(DemoError):
                _telepresence(directory, "quit", "--stop-daemons", show=False)
    finally:
        say(f"sandbox: {control.describe(control.down(directory), directory)}")


def _ws(directory: Path, *command: str, show: bool = True, shown_as: str | None = None) -> str:
    """Run ``command`` in the workstation; print it (as ``shown_as``) and its output."""
    argv, env = control.workstation_argv(directory, list(command))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    shown = shown_as or " ".join(command)
    if show:
        print(f"$ {shown}", flush=True)
        print(result.stdout.rstrip(), flush=True)
    if result.returncode != 0:
        raise DemoError(f"`{shown}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _steps(directory: Path, say: Callable[[str], None]) -> None:
    say("deploying the demo application")
    _ws(directory, "kubectl", "apply", "-f", str(MANIFEST))
    _ws(directory, "kubectl", "rollout", "status", "deployment/echo", "--timeout=90s")
    _ws(directory, "kubectl", "wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
    _ws(directory, "kubectl", "get", "nodes")
    _ws(directory, "kubectl", "get", "pods", "-o", "wide")
    _ws(directory, "kubectl", "get", "service", "echo")
    say("calling the Service from inside the cluster, by three of its names")
    for name in ("echo", "echo.default", "echo.default.svc.cluster.local"):
        _ws(directory, "kubectl", "exec", "client", "--", "curl", "-sS", f"http://{name}/demo")
    say("the workstation, like a laptop, reaches the API server but not the cluster's addresses")
    ip = _ws(
        directory,
        "kubectl",
        "get",
        "service",
        "echo",
        "-o",
        "jsonpath={.spec.clusterIP}",
        show=False,
    )
    argv, env = control.workstation_argv(
        directory, ["curl", "-sS", "--max-time", "2", f"http://{ip}/"]
    )
    outcome = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    print(f"$ curl http://{ip}/\n{outcome.stderr.strip()}", flush=True)
    if outcome.returncode == 0:
        raise DemoError(f"the workstation reached the ClusterIP {ip}; it must not")


def _telepresence(directory: Path, *args: str, show: bool = True) -> str:
    """``telepresence ARGS`` in the workstation, its daemons' sockets and logs in the demo's
    directory (``laptop/``)."""
    home = directory.resolve() / "laptop"
    variables = [
        f"XDG_RUNTIME_DIR={home / 'run'}",
        f"XDG_CACHE_HOME={home / 'cache'}",
        f"XDG_CONFIG_HOME={home / 'config'}",
    ]
    return _ws(
        directory,
        "env",
        *variables,
        TELEPRESENCE,
        *args,
        show=show,
        shown_as=f"telepresence {' '.join(args)}",
    )


def _telepresence_steps(directory: Path, say: Callable[[str], None]) -> None:
    say("installing the traffic-manager")
    _telepresence(directory, "helm", "install")
    say("connecting the workstation: every program now reaches the cluster")
    _telepresence(directory, "connect", "--namespace", "default")
    for name in ("echo", "echo.default", "echo.default.svc.cluster.local"):
        _ws(directory, "curl", "-sS", "--max-time", "10", f"http://{name}/demo")
    _telepresence(directory, "status")
    say("quitting: the VIF, its routes, rules and DNS redirection go")
    _telepresence(directory, "quit", "--stop-daemons")


def main(directory: Path, nodes: int) -> int:
    try:
        run(directory, nodes, lambda line: print(f"==> {line}", file=sys.stderr, flush=True))
    except (DemoError, control.ControlError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
