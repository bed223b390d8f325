"""``python -m sandbox``: run the sandbox cluster's parts.

``apiserver --dir DIR`` runs the API server in the foreground, writes ``DIR/kubeconfig``, and
stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import anyio
import typer

from sandbox.apiserver.run import Running, serve

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


if __name__ == "__main__":
    app()
