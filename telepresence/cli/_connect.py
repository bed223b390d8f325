"""``telepresence connect`` and the commands around it, on :class:`telepresence.Client`.

Each command turns its flags into one call of the client library and prints the result;
``--output json|yaml`` prints the result as data instead (stdout only, nothing else). Every
expected failure is a :class:`~telepresence.errors.TelepresenceError`: one paragraph on stderr,
``telepresence <command>: error: <message>``, and the exit code of its class.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
import yaml
from rich.console import Console

from telepresence import __version__, errors
from telepresence.cli import Context, Kubeconfig, _ProgressView, app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from telepresence.client import Client, ConnectionStatus

__all__: list[str] = []


class Output(enum.StrEnum):
    """``--output``: how a status-like command prints its result."""

    text = "text"
    json = "json"
    yaml = "yaml"


OutputOption = Annotated[
    Output,
    typer.Option("--output", "-o", help="Print the result as text, json or yaml."),
]


def _run(command: str, body: Callable[[Client], Awaitable[None]], **client: Any) -> None:
    """Run ``body`` with a client on asyncio; the one place where the connect commands'
    errors become a message and an exit status."""
    from telepresence.client import Client  # noqa: PLC0415  # grpclib: only for these commands

    async def main() -> None:
        async with Client(**client) as connected:
            await body(connected)

    try:
        anyio.run(main, backend="asyncio")
    except errors.TelepresenceError as error:
        typer.echo(f"telepresence {command}: error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        typer.echo(f"telepresence {command}: interrupted", err=True)
        raise typer.Exit(errors.ExitCode.INTERRUPTED) from None


def _print_data(data: Any, output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip("\n"))


def _split(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


@app.command()
def connect(  # one parameter per flag
    *,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            metavar="NAMESPACE",
            help="The connected namespace: short names resolve there. Default: the context's.",
            show_default=False,
        ),
    ] = None,
    manager_namespace: Annotated[
        str | None,
        typer.Option(
            "--manager-namespace",
            metavar="NAMESPACE",
            help="Where the traffic-manager is. Default: the kubeconfig's telepresence.io "
            "extension, then config.yml's cluster.defaultManagerNamespace, then ambassador.",
            show_default=False,
        ),
    ] = None,
    mapped_namespaces: Annotated[
        list[str] | None,
        typer.Option(
            "--mapped-namespaces",
            metavar="NAMESPACES",
            help="Namespaces whose names resolve without their namespace (comma-separated, "
            "repeatable). Default: all.",
            show_default=False,
        ),
    ] = None,
    also_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--also-proxy",
            metavar="CIDR",
            help="Also route this subnet to the cluster (repeatable).",
            show_default=False,
        ),
    ] = None,
    never_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--never-proxy",
            metavar="CIDR",
            help="Never route this subnet to the cluster (repeatable).",
            show_default=False,
        ),
    ] = None,
    transport: Annotated[
        str,
        typer.Option(
            "--transport",
            metavar="portforward|direct",
            help="How to reach the traffic-manager: a port-forward through the API server, "
            "or TCP to --manager-address.",
        ),
    ] = "portforward",
    manager_address: Annotated[
        str | None,
        typer.Option(
            "--manager-address",
            metavar="HOST[:PORT]",
            help="direct: the traffic-manager pod's address (its control API port: 8081).",
            show_default=False,
        ),
    ] = None,
    socks: Annotated[
        str | None,
        typer.Option(
            "--socks",
            metavar="[ADDR:]PORT",
            help="Serve SOCKS5 and HTTP CONNECT on this port (127.0.0.1 unless ADDR): "
            "reach the cluster without root.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = Output.text,
) -> None:
    """Connect this machine to the cluster (starting the daemons when needed)."""

    async def body(client: Client) -> None:
        with _ProgressView(Console(stderr=True, highlight=False, soft_wrap=True)) as progress:
            progress(f"Waiting for the connection to context {context or '(current)'}")
            status = await client.connect(
                namespace=namespace,
                manager_namespace=manager_namespace,
                mapped_namespaces=_split(mapped_namespaces),
                also_proxy=_split(also_proxy),
                never_proxy=_split(never_proxy),
                transport=transport,
                manager_address=manager_address,
                socks=socks,
            )
        if output is not Output.text:
            _print_data(status.to_dict(), output)
            return
        for warning in status.warnings:
            typer.echo(f"Warning: {warning}", err=True)
        typer.echo(
            f"Connected to context {status.context}, namespace {status.namespace} "
            f"({status.cluster_server}), traffic-manager {status.manager_version} in "
            f"namespace {status.manager_namespace}"
        )
        if status.socks_address:
            typer.echo(f"SOCKS5 and HTTP CONNECT proxy on {status.socks_address}")
        skew = _version_skew(status)
        if skew:
            typer.echo(f"Warning: {skew}", err=True)

    _run("connect", body, kubeconfig=kubeconfig, context=context)


@app.command()
def status(output: OutputOption = Output.text) -> None:
    """Show the connection, the daemons and the traffic-manager."""

    async def body(client: Client) -> None:
        found = await client.status()
        if output is not Output.text:
            _print_data(found.to_dict(), output)
            return
        typer.echo(_describe(found))

    _run("status", body)


@app.command()
def quit(
    stop_daemons: Annotated[
        bool,
        typer.Option("--stop-daemons", "-s", help="Also stop the user and root daemons."),
    ] = False,
) -> None:
    """Disconnect from the cluster (depart from the traffic-manager)."""

    async def body(client: Client) -> None:
        await client.quit(stop_daemons=stop_daemons)
        typer.echo("Disconnected" + ("; daemons stopped" if stop_daemons else ""))

    _run("quit", body)


@app.command()
def version(output: OutputOption = Output.text) -> None:
    """Show the versions of the client, the daemons and the traffic-manager."""

    async def body(client: Client) -> None:
        found = await client.versions()
        if output is not Output.text:
            _print_data(
                {
                    name: (dataclasses.asdict(info) if info else None)
                    for name, info in found.items()
                },
                output,
            )
            return
        titles = {"client": "Client", "user-daemon": "User daemon", "root-daemon": "Root daemon",
                  "traffic-manager": "Traffic manager"}  # fmt: skip
        for name, title in titles.items():
            info = found.get(name)
            typer.echo(f"{title}: " + (f"v{info.version}" if info else "not running"))

    _run("version", body)


@app.command()
def loglevel(
    level: Annotated[str, typer.Argument(metavar="trace|debug|info|warning|error")],
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration",
            "-d",
            help="For how long (e.g. 30m). Default: until the daemons stop.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Set the daemons' log level."""
    from telepresence.cli import parse_duration  # noqa: PLC0415

    try:
        seconds = parse_duration(duration) if duration else 0.0
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--duration") from None

    async def body(client: Client) -> None:
        await client.set_log_level(level, duration=seconds)
        typer.echo(f"Log level {level}")

    _run("loglevel", body)


@app.command("list-contexts")
def list_contexts(kubeconfig: Kubeconfig = None, output: OutputOption = Output.text) -> None:
    """List the kubeconfig's contexts."""
    from telepresence import config  # noqa: PLC0415

    try:
        contexts = config.list_contexts(kubeconfig)
    except config.KubeconfigError as error:
        typer.echo(f"telepresence list-contexts: error: {error}", err=True)
        raise typer.Exit(errors.ExitCode.CONFIG) from None
    if output is not Output.text:
        _print_data([dataclasses.asdict(context) for context in contexts], output)
        return
    for context in contexts:
        marker = "*" if context.current else " "
        typer.echo(f"{marker} {context.name}: cluster {context.cluster}, user {context.user}, "
                   f"namespace {context.namespace}")  # fmt: skip


@app.command("list-namespaces")
def list_namespaces(
    kubeconfig: Kubeconfig = None, context: Context = None, output: OutputOption = Output.text
) -> None:
    """List the namespaces this user may see."""

    async def body(client: Client) -> None:
        from telepresence.kube import Kube, KubeError, KubeTarget  # noqa: PLC0415

        try:
            async with Kube.open(KubeTarget(kubeconfig, context)) as kube:
                items, _ = await kube.collection("/api/v1/namespaces")
        except KubeError as error:
            raise errors.ClusterUnreachable(str(error)) from error
        names = sorted(item["metadata"]["name"] for item in items)
        if output is not Output.text:
            _print_data(names, output)
            return
        for name in names:
            typer.echo(name)

    _run("list-namespaces", body)


config_app = typer.Typer(no_args_is_help=True, help="The client configuration.",
                         rich_markup_mode=None)  # fmt: skip
app.add_typer(config_app, name="config")


@config_app.command("view")
def config_view(output: OutputOption = Output.yaml) -> None:
    """Show the client configuration: config.yml with the defaults filled in."""
    from telepresence import config  # noqa: PLC0415

    try:
        loaded, warnings = config.load_config()
    except config.ConfigError as error:
        typer.echo(f"telepresence config view: error: {error}", err=True)
        raise typer.Exit(errors.ExitCode.CONFIG) from None
    for warning in warnings:
        typer.echo(f"Warning: {warning}", err=True)
    data = loaded.model_dump(mode="json", by_alias=True)
    _print_data(data, Output.json if output is Output.json else Output.yaml)


@app.command("gather-logs")
def gather_logs(
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            "-o",
            help="The zip file to write. Default: ./telepresence_logs.zip",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Collect the daemons' logs and the traffic-manager's pod logs into one zip file."""
    from telepresence.cli import _gather  # noqa: PLC0415

    target = output_file or Path("telepresence_logs.zip")

    async def body(client: Client) -> None:
        written = await _gather.gather_logs(client, target)
        typer.echo(f"Wrote {written} files to {target}")

    _run("gather-logs", body)


def _version_skew(status: ConnectionStatus) -> str:
    if status.manager_version and status.manager_version != __version__:
        return (
            f"the traffic-manager is version {status.manager_version} and this client "
            f"{__version__}: upgrade the one that is older (telepresence helm upgrade)"
        )
    return ""


def _describe(status: ConnectionStatus) -> str:
    lines = []
    user = status.user_daemon
    lines.append(
        "User daemon: " + (f"running (v{user.version}, pid {user.pid})" if user else "not running")
    )
    lines.append(f"  Status: {status.state}" + (f" ({status.error})" if status.error else ""))
    if status.state != "disconnected":
        lines += [
            f"  Kubernetes context: {status.context} ({status.cluster_server})",
            f"  Namespace: {status.namespace}",
            f"  Manager namespace: {status.manager_namespace} "
            f"(from {status.manager_namespace_source})",
            f"  Transport: {status.transport}",
        ]
        if status.socks_address:
            lines.append(f"  SOCKS5/HTTP CONNECT proxy: {status.socks_address}")
    root = status.root_daemon
    lines.append(
        "Root daemon: " + (f"running (v{root.version}, pid {root.pid})" if root else "not running")
    )
    if root:
        lines.append(f"  Data plane: {status.root_data_plane or 'none'}")
    if (vif := status.vif) is not None:
        lines += [
            f"  VIF: {vif.device}, routing {', '.join(vif.routed) or 'nothing'}",
            f"  DNS: {vif.dns_address or 'none'} ({vif.dns_mode})",
        ]
        if vif.never_proxied:
            lines.append(f"  Never proxied: {', '.join(vif.never_proxied)}")
        lines += [f"  Not routed: {conflict}" for conflict in vif.conflicts]
    if status.manager_version:
        lines += [
            f"Traffic manager: v{status.manager_version}",
            f"  Session: {status.session_id}",
            f"  Pod subnets: {', '.join(status.pod_subnets) or 'none'}",
            f"  Service subnet: {status.service_subnet or 'unknown'}",
            f"  Cluster DNS: {status.cluster_dns or 'unknown'} ({status.cluster_domain})",
        ]
    return "\n".join(lines)
