"""``python -m sandbox``: the sandbox cluster's commands.

``up`` / ``down`` / ``status`` / ``ws -- CMD`` / ``kubeconfig`` manage a whole cluster in
network namespaces (:mod:`sandbox.cluster`); ``daemon`` is what ``up`` starts in the
background; ``apiserver --dir DIR`` runs only the API server in the foreground, writes
``DIR/kubeconfig``, and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from sandbox.apiserver.run import Running, serve
from sandbox.cluster import control

DIRECTORY = Annotated[
    Path, typer.Option("--dir", help="Where the sandbox keeps its credentials, state and logs.")
]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """The sandbox cluster: a local Kubernetes stand-in for tests and the demo."""


@app.command()
def apiserver(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the credentials and kubeconfig live.")
    ] = Path(".sandbox"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 6443,
    history: Annotated[
        int, typer.Option(help="Changes kept per resource for resuming watches.")
    ] = 1000,
) -> None:
    """Run the Kubernetes API server emulator in the foreground."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        async with anyio.create_task_group() as tasks:
            running: Running = await tasks.start(
                lambda task_status: serve(
                    directory.resolve(),
                    host=host,
                    port=port,
                    history=history,
                    task_status=task_status,
                )
            )
            typer.echo(f"API server on {running.url}; KUBECONFIG={running.kubeconfig}", err=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    typer.echo(f"{signal.Signals(signum).name}: stopping", err=True)
                    tasks.cancel_scope.cancel()
                    break

    failure: OSError | None = None
    try:
        anyio.run(run)
    except* OSError as group:
        leaf: OSError | ExceptionGroup[OSError] = group
        while isinstance(leaf, ExceptionGroup):
            leaf = leaf.exceptions[0]
        failure = leaf
    if failure is not None:
        reason = failure.strerror or failure
        typer.echo(f"error: cannot serve on {host}:{port}: {reason}", err=True)
        raise typer.Exit(1)


@app.command()
def up(
    directory: DIRECTORY = Path(".sandbox"),
    nodes: Annotated[int, typer.Option(help="How many nodes.")] = 2,
) -> None:
    """Start the sandbox cluster in the background; returns when it is ready."""
    try:
        state = control.up(directory, nodes, lambda line: typer.echo(f"sandbox: {line}", err=True))
    except control.ControlError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"sandbox: up; KUBECONFIG={state.kubeconfig} (use `sandbox ws -- CMD`)", err=True)


@app.command()
def down(directory: DIRECTORY = Path(".sandbox")) -> None:
    """Stop the sandbox and remove every namespace, link, rule and process it made."""
    result = control.down(directory)
    typer.echo(f"sandbox: {control.describe(result, directory)}", err=True)
    if result.remaining:
        raise typer.Exit(1)


@app.command()
def status(
    directory: DIRECTORY = Path(".sandbox"),
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Show whether the sandbox runs, its nodes and its pods."""
    report = control.status(directory)
    if output == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    if not report["running"]:
        leftovers = len(report["namespaces"])
        extra = (
            f" ({leftovers} namespaces left behind: `sandbox down` removes them)"
            if leftovers
            else ""
        )
        typer.echo(f"not running in {report['directory']}{extra}")
        raise typer.Exit(3)
    typer.echo(f"running (pid {report['pid']}, up {report['uptime_seconds']} s)")
    typer.echo(f"API server: {report['api']}  kubeconfig: {report['kubeconfig']}")
    if "error" in report:
        typer.echo(report["error"])
        raise typer.Exit(1)
    nodes = ", ".join(f"{name} Ready={ready}" for name, ready in report["nodes"].items())
    typer.echo(f"nodes: {nodes}")
    pods = ", ".join(f"{count} {phase}" for phase, count in sorted(report["pods"].items()))
    typer.echo(f"pods: {pods or 'none'}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ws(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    directory: DIRECTORY = Path(".sandbox"),
) -> None:
    """Run a command in the workstation namespace, with KUBECONFIG set (`ws -- CMD ...`)."""
    try:
        argv, env = control.workstation_argv(directory, command)
    except control.ControlError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    os.execve(argv[0], argv, env)


@app.command()
def kubeconfig(
    directory: DIRECTORY = Path(".sandbox"),
    host: Annotated[
        bool, typer.Option("--host", help="The kubeconfig for tools on the host (loopback).")
    ] = False,
) -> None:
    """Print the path of the sandbox's kubeconfig (the workstation's, or --host's)."""
    name = "host.kubeconfig" if host else "kubeconfig"
    typer.echo(directory.resolve() / name)


@app.command()
def demo(
    directory: DIRECTORY = Path(".sandbox-demo"),
    nodes: Annotated[int, typer.Option(help="How many nodes.")] = 2,
) -> None:
    """Bring a sandbox up, deploy the demo app, show it serving, connect the workstation with
    telepresence and show it serving there too, and tear it all down."""
    from sandbox.cluster import demo as cluster_demo  # noqa: PLC0415 (only this command)

    raise typer.Exit(cluster_demo.main(directory, nodes))


@app.command(hidden=True)
def daemon(
    directory: DIRECTORY = Path(".sandbox"),
    nodes: Annotated[int, typer.Option()] = 2,
    progress_fd: Annotated[int, typer.Option("--progress-fd")] = -1,
) -> None:
    """The sandbox's background process (`up` starts it)."""
    # Only the daemon needs the node parts (and pyroute2): the other commands start faster.
    from sandbox.cluster import daemon as cluster_daemon  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pipe = os.fdopen(progress_fd, "w", buffering=1) if progress_fd >= 0 else sys.stderr

    def progress(line: str) -> None:
        logging.getLogger("sandbox").info("%s", line)
        with contextlib.suppress(OSError):  # `up` is gone; the log has it
            pipe.write(line + "\n")

    try:
        cluster_daemon.run(directory, nodes, progress)
    except Exception as error:
        logging.getLogger("sandbox").exception("the sandbox failed")
        progress(f"failed: {error}")
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
