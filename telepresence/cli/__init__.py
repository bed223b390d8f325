"""The ``telepresence`` command line.

Commands are thin: they turn flags into a call of the library (``telepresence.helm`` for the
``helm`` commands; :class:`telepresence.Client` for ``connect`` and the commands around it,
in :mod:`telepresence.cli._connect`), show its progress, and print its result. Errors reach
the user in one place per family of commands (:func:`_run` here, and its twin there): an
expected failure is one line, ``telepresence <command>: error: <message>``, on stderr, and an
exit status that tells the kind of failure apart (:class:`ExitCode`); no traceback.

Progress goes to stderr: on a terminal as a spinner whose text follows what is being waited
for, with each completed step printed above it; otherwise as plain lines, one per change.
Results go to stdout.

Heavy imports (helm-sdkpy, kubernetes-asyncio) happen when a command that needs them runs, so
that ``telepresence version`` and ``--help`` stay fast.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.console import Console
from typer.core import TyperGroup

from telepresence.errors import ExitCode

__all__ = ["ExitCode", "app", "main"]

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from types import ModuleType, TracebackType

    from rich.status import Status


# Defaults shown in --help without importing the library (tests check they agree with it).
DEFAULT_MANAGER_NAMESPACE = "ambassador"
DEFAULT_TIMEOUT = "2m"

#: Boolean flags that also accept pflag's ``--flag=true|false``, as the original's do.
_BOOLEAN_FLAGS = {
    "--create-namespace": "--no-create-namespace",
    "--wait": "--no-wait",
    "--reuse-values": None,
    "--reset-values": None,
    "--upgrade": None,
}
#: Options that take a value, whose next argument is never a flag to rewrite.
_VALUE_OPTIONS = {
    "-f",
    "--values",
    "--set",
    "--set-string",
    "--set-json",
    "-n",
    "--namespace",
    "--manager-namespace",
    "--kubeconfig",
    "--context",
    "--timeout",
}
_TRUE, _FALSE = {"true", "t", "1", "yes"}, {"false", "f", "0", "no"}


def normalise_boolean_flags(args: Sequence[str]) -> list[str]:
    """Rewrite ``--create-namespace=false`` to ``--no-create-namespace`` (and the like), which
    Click's on/off flags do not accept as written."""
    out: list[str] = []
    expecting_value = False
    for index, arg in enumerate(args):
        if arg == "--":
            out.extend(args[index:])
            break
        name, equals, value = arg.partition("=")
        if not expecting_value and equals and name in _BOOLEAN_FLAGS:
            lowered = value.lower()
            if lowered in _TRUE:
                out.append(name)
                continue
            if lowered in _FALSE:
                negative = _BOOLEAN_FLAGS[name]
                if negative:
                    out.append(negative)
                continue
        out.append(arg)
        expecting_value = not expecting_value and arg in _VALUE_OPTIONS
    return out


class _Group(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalise_boolean_flags(args))


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    help="Join a Kubernetes cluster's network from this machine.",
    pretty_exceptions_enable=False,
    # Plain Click output: a usage error is one line, like every other error.
    rich_markup_mode=None,
)
helm_app = typer.Typer(
    no_args_is_help=True,
    help="Install, upgrade, uninstall or lint the traffic-manager with the Helm chart "
    "embedded in this client.",
    rich_markup_mode=None,
)
app.add_typer(helm_app, name="helm")


@app.callback()
def _root() -> None:
    """Join a Kubernetes cluster's network from this machine."""


def main() -> None:
    app()


# -- telepresence helm -----------------------------------------------------------------------

Namespace = Annotated[
    str,
    typer.Option(
        "--namespace",
        "-n",
        "--manager-namespace",
        metavar="NAMESPACE",
        help="The manager namespace: where the traffic-manager is, or is to be, installed.",
    ),
]
Kubeconfig = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        metavar="FILE",
        help="The kubeconfig file. Default: KUBECONFIG, else ~/.kube/config.",
        show_default=False,
    ),
]
Context = Annotated[
    str | None,
    typer.Option(
        "--context", metavar="CONTEXT", help="The kubeconfig context. Default: its current context."
    ),
]
ValuesFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--values",
        "-f",
        metavar="FILE",
        help="A YAML file of values (repeatable; a later file wins; - reads stdin).",
        show_default=False,
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set a value: a.b=v, a={x,y}, a[0].b=v; separate several with commas (repeatable).",
        show_default=False,
    ),
]
SetString = Annotated[
    list[str] | None,
    typer.Option(
        "--set-string",
        metavar="KEY=VALUE",
        help="Set a value, always as a string (repeatable).",
        show_default=False,
    ),
]
SetJson = Annotated[
    list[str] | None,
    typer.Option(
        "--set-json",
        metavar="KEY=JSON",
        help='Set a value from JSON: a.b=[1,2], a={"b":1} (repeatable).',
        show_default=False,
    ),
]
CreateNamespace = Annotated[
    bool,
    typer.Option(
        "--create-namespace/--no-create-namespace",
        help="Create the manager namespace if it does not exist (--create-namespace=false "
        "works too).",
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait", help="Wait until the traffic-manager is ready (or, on uninstall, gone)."
    ),
]
Timeout = Annotated[
    str,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="How long to wait, e.g. 90s, 2m, 1m30s. An install whose traffic-manager is not "
        "ready by then is uninstalled again.",
    ),
]


@helm_app.command("install")
def helm_install(
    *,
    namespace: Namespace = DEFAULT_MANAGER_NAMESPACE,
    values: ValuesFiles = None,
    set_: Set = None,
    set_string: SetString = None,
    set_json: SetJson = None,
    create_namespace: CreateNamespace = True,
    wait: Wait = True,
    timeout: Timeout = DEFAULT_TIMEOUT,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    upgrade: Annotated[
        bool, typer.Option("--upgrade", "-u", hidden=True, help="Deprecated.")
    ] = False,
) -> None:
    """Install the traffic-manager: the chart of this client's version, as release
    traffic-manager in the manager namespace."""
    if upgrade:
        typer.echo(
            'Flag --upgrade has been deprecated, use "telepresence helm upgrade" instead of '
            '"telepresence helm install --upgrade"',
            err=True,
        )
        helm_upgrade(
            namespace=namespace,
            values=values,
            set_=set_,
            set_string=set_string,
            set_json=set_json,
            reuse_values=False,
            reset_values=False,
            create_namespace=create_namespace,
            wait=wait,
            timeout=timeout,
            kubeconfig=kubeconfig,
            context=context,
        )
        return
    seconds = _wait_seconds(wait, timeout)

    async def run(helm: ModuleType, progress: Callable[[str], None]) -> None:
        release = await helm.install(
            _values(helm, values, set_, set_string, set_json),
            helm.Target(namespace, kubeconfig, context),
            create_namespace=create_namespace,
            wait=seconds,
            progress=progress,
        )
        _done("installed", release)

    _run("helm install", run)


@helm_app.command("upgrade")
def helm_upgrade(
    *,
    namespace: Namespace = DEFAULT_MANAGER_NAMESPACE,
    values: ValuesFiles = None,
    set_: Set = None,
    set_string: SetString = None,
    set_json: SetJson = None,
    reuse_values: Annotated[
        bool,
        typer.Option(
            "--reuse-values",
            help="Keep the release's current values and merge the given ones over them.",
        ),
    ] = False,
    reset_values: Annotated[
        bool,
        typer.Option(
            "--reset-values", help="Start from the chart's defaults: drop the current values."
        ),
    ] = False,
    create_namespace: CreateNamespace = True,
    wait: Wait = True,
    timeout: Timeout = DEFAULT_TIMEOUT,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Upgrade (or downgrade) the traffic-manager to this client's version and values; install
    it if there is none. With neither --reuse-values nor --reset-values, the current values
    are kept when no values are given, and replaced by the given ones otherwise."""
    if reuse_values and reset_values:
        raise typer.BadParameter(
            "--reuse-values and --reset-values exclude each other", param_hint="--reset-values"
        )
    seconds = _wait_seconds(wait, timeout)

    async def run(helm: ModuleType, progress: Callable[[str], None]) -> None:
        release = await helm.upgrade(
            _values(helm, values, set_, set_string, set_json),
            helm.Target(namespace, kubeconfig, context),
            reuse_values=reuse_values,
            reset_values=reset_values,
            create_namespace=create_namespace,
            wait=seconds,
            progress=progress,
        )
        _done("upgraded" if release.revision > 1 else "installed", release)

    _run("helm upgrade", run)


@helm_app.command("uninstall")
def helm_uninstall(
    *,
    namespace: Namespace = DEFAULT_MANAGER_NAMESPACE,
    wait: Wait = True,
    timeout: Timeout = DEFAULT_TIMEOUT,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Uninstall the traffic-manager and everything its release made. The namespace stays."""
    seconds = _wait_seconds(wait, timeout)

    async def run(helm: ModuleType, progress: Callable[[str], None]) -> None:
        await helm.uninstall(
            helm.Target(namespace, kubeconfig, context), wait=seconds, progress=progress
        )
        typer.echo("Traffic Manager uninstalled successfully")

    _run("helm uninstall", run)


@helm_app.command("lint")
def helm_lint(
    *,
    values: ValuesFiles = None,
    set_: Set = None,
    set_string: SetString = None,
    set_json: SetJson = None,
) -> None:
    """Lint the embedded chart, with the given values over its defaults."""

    async def run(helm: ModuleType, progress: Callable[[str], None]) -> None:
        report = await helm.lint(_values(helm, values, set_, set_string, set_json))
        typer.echo(f"==> Linting {report.chart.name} {report.chart.version}")
        for message in report.messages:
            typer.echo(f"[{message.severity}] {message.path}")
        failed = 1 if report.errors else 0
        typer.echo(f"\n1 chart(s) linted, {failed} chart(s) failed")
        if report.errors:
            found = ", ".join(f"{message.path} ({message.severity})" for message in report.errors)
            raise helm.LintFailed(
                f"the chart does not lint with these values: {found}. Helm's reasons do not "
                "come through helm-sdkpy's lint; an install with the same values reports them"
            )

    _run("helm lint", run)


# -- the plumbing ------------------------------------------------------------------------------


def _values(
    helm: ModuleType,
    files: list[str] | None,
    set_: list[str] | None,
    set_string: list[str] | None,
    set_json: list[str] | None,
) -> dict[str, Any]:
    sources = helm.ValueSources(
        files=tuple(files or ()),
        set=tuple(set_ or ()),
        set_string=tuple(set_string or ()),
        set_json=tuple(set_json or ()),
    )
    values: dict[str, Any] = sources.resolve()
    return values


def _done(what: str, release: Any) -> None:
    typer.echo(f"Traffic Manager {what} successfully")
    if release.notes:
        typer.echo(f"\n{release.notes}")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``90s``, ``2m``, ``1m30s``, ``1.5h``) or a plain
    number of seconds.

    Raises:
        ValueError: Not a positive duration.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"{text!r} is not a duration such as 90s, 2m or 1m30s") from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not seconds > 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def _wait_seconds(wait: bool, timeout: str) -> float | None:
    try:
        seconds = parse_duration(timeout)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--timeout") from None
    return seconds if wait else None


def _run(
    command: str, body: Callable[[ModuleType, Callable[[str], None]], Awaitable[None]]
) -> None:
    """Run a command's body on asyncio (helm-sdkpy and kubernetes-asyncio need it), showing
    its progress; the one place where its errors become a message and an exit status."""
    from telepresence import helm  # noqa: PLC0415  # 0.6 s of imports only the helm commands need

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        with _ProgressView(console) as progress:

            async def main() -> None:
                await body(helm, progress)

            anyio.run(main, backend="asyncio")
    except helm.HelmError as error:
        typer.echo(f"telepresence {command}: error: {error}", err=True)
        raise typer.Exit(_exit_code(helm, error)) from None
    except KeyboardInterrupt:
        typer.echo(f"telepresence {command}: interrupted", err=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _exit_code(helm: ModuleType, error: Exception) -> ExitCode:
    codes = (
        (helm.ValuesError, ExitCode.BAD_VALUES),
        (helm.ChartRejected, ExitCode.REJECTED),
        (helm.ReleaseStateError, ExitCode.RELEASE_STATE),
        (helm.ClusterUnreachable, ExitCode.UNREACHABLE),
        (helm.WaitTimeout, ExitCode.TIMEOUT),
    )
    for kind, code in codes:
        if isinstance(error, kind):
            return code
    return ExitCode.FAILED


class _ProgressView:
    """Shows progress lines: on a terminal, a spinner with the latest ``Waiting ...`` line and
    each other step printed above it; elsewhere, every line as it comes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._status: Status | None = None

    def __enter__(self) -> Callable[[str], None]:
        if self._console.is_terminal:
            self._status = self._console.status("", spinner="dots")
        return self.show

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()

    def show(self, line: str) -> None:
        if self._status is None:
            typer.echo(line, err=True)
        elif line.startswith("Waiting"):
            self._status.update(line)
            self._status.start()
        else:
            self._status.stop()
            self._console.print(line, markup=False)


# The connect commands register themselves on ``app``.
from telepresence.cli import _connect  # noqa: E402, F401
