"""The ``telepresence`` command line."""

from __future__ import annotations

import typer

from telepresence import __version__

app = typer.Typer(
    no_args_is_help=True, help="Join a Kubernetes cluster's network from this machine."
)


@app.command()
def version() -> None:
    """Show the client version."""
    typer.echo(f"Client: v{__version__}")


@app.callback()
def _root() -> None:
    """Keeps Typer in multi-command mode while there is a single command."""


def main() -> None:
    app()
