"""Install, upgrade, uninstall and lint the traffic-manager's release through helm-sdkpy.

The release is always ``traffic-manager``, in the manager namespace, from the chart embedded
in this client (:mod:`telepresence.helm.chart`), as ``telepresence helm`` does in the
original. Helm applies the objects without waiting; the client then waits itself for the
traffic-manager's Deployment to roll out (:mod:`telepresence.helm.cluster`), reporting progress
and staying cancellable, which a wait inside Helm's thread would not be. As with the
original's atomic installs, an install that does not become ready in time is uninstalled
again. An upgrade that does not is left in place (helm-sdkpy's rollback does not work): its
Deployment keeps the previous pod serving until a new one is ready.

helm-sdkpy runs Helm in asyncio's worker threads, so these functions need the asyncio
backend. Helm's errors come back as strings; :func:`_translate` turns each into one
:class:`~telepresence.helm.errors.HelmError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import helm_sdkpy
import yaml

from telepresence.helm import cluster
from telepresence.helm.chart import Chart, embedded_chart
from telepresence.helm.cluster import Target
from telepresence.helm.errors import (
    AlreadyInstalled,
    ChartRejected,
    ClusterUnreachable,
    HelmError,
    HelmFailed,
    NamespaceCollision,
    NotInstalled,
    ReleaseStateError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_WAIT",
    "RELEASE_NAME",
    "LintMessage",
    "LintReport",
    "Release",
    "current_release",
    "install",
    "lint",
    "uninstall",
    "upgrade",
]

type Values = dict[str, Any]
type Progress = Callable[[str], None]

#: The Helm release, as the original names it.
RELEASE_NAME = "traffic-manager"
#: Seconds to wait for the traffic-manager to become ready (or, on uninstall, to go away).
DEFAULT_WAIT = 120.0
#: The Deployment whose rollout means the traffic-manager is ready.
DEPLOYMENT_NAME = "traffic-manager"


@dataclass(frozen=True, slots=True)
class Release:
    """A revision of the traffic-manager's release, as Helm recorded it.

    Attributes:
        name: The release name (``traffic-manager``).
        namespace: The manager namespace.
        revision: Helm's revision number, 1 for the first install.
        status: Helm's status: ``deployed``, ``failed``, ``pending-install``, ``uninstalled``...
        chart_version: The chart's version.
        app_version: The traffic-manager's version.
        notes: The chart's NOTES.txt as rendered for this release.
        objects: The objects of the rendered manifest.
    """

    name: str
    namespace: str
    revision: int
    status: str
    chart_version: str
    app_version: str
    notes: str
    objects: tuple[dict[str, Any], ...] = field(repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Release:
        info = record.get("info") or {}
        metadata = (record.get("chart") or {}).get("metadata") or {}
        manifest = record.get("manifest") or ""
        return cls(
            name=str(record.get("name", RELEASE_NAME)),
            namespace=str(record.get("namespace", "")),
            revision=int(record.get("version") or 0),
            status=str(info.get("status", "")),
            chart_version=str(metadata.get("version", "")),
            app_version=str(metadata.get("appVersion", "")),
            notes=str(info.get("notes") or "").strip(),
            objects=tuple(obj for obj in yaml.safe_load_all(manifest) if isinstance(obj, dict)),
        )

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The rendered object of a kind and name, if the release has it."""
        for obj in self.objects:
            if obj.get("kind") == kind and (obj.get("metadata") or {}).get("name") == name:
                return obj
        return None

    @property
    def deploys_manager(self) -> bool:
        """Whether the release runs a traffic-manager (not with ``rbac.only``)."""
        return self.find("Deployment", DEPLOYMENT_NAME) is not None


@dataclass(frozen=True, slots=True)
class LintMessage:
    """One finding of Helm's lint: its severity (``INFO``, ``WARNING``, ``ERROR``) and the
    file it is about. (helm-sdkpy does not pass on Helm's explanation.)"""

    severity: str
    path: str


@dataclass(frozen=True, slots=True)
class LintReport:
    """What Helm's lint found in the chart with the given values."""

    chart: Chart
    messages: tuple[LintMessage, ...]

    @property
    def errors(self) -> tuple[LintMessage, ...]:
        return tuple(message for message in self.messages if message.severity == "ERROR")


# -- the commands ----------------------------------------------------------------------------


async def current_release(target: Target) -> Release | None:
    """The traffic-manager's latest release in the target namespace, whatever its status, or
    None when there is none.

    Raises:
        HelmError: Helm could not look (e.g. the cluster is unreachable).
    """
    helm = _configuration(target)
    try:
        record = await helm_sdkpy.Status(helm).run(RELEASE_NAME)
    except helm_sdkpy.ReleaseNotFoundError:
        return None
    except helm_sdkpy.HelmError as error:
        # A namespace that does not exist holds no release. (A real API server lists nothing
        # there; the sandbox's answers 404, which Helm passes on.)
        if f'namespaces "{target.namespace}" not found' in str(error):
            return None
        raise _translate(error, target) from error
    return Release.from_record(record)


async def install(
    values: Values,
    target: Target = Target(),  # noqa: B008  # frozen, so a shared default is safe
    *,
    create_namespace: bool = True,
    wait: float | None = DEFAULT_WAIT,
    progress: Progress | None = None,
) -> Release:
    """Install the traffic-manager, then wait for it to be ready.

    Args:
        values: Values over the chart's defaults (see :class:`~telepresence.helm.ValueSources`).
        target: The manager namespace and the cluster.
        create_namespace: Create the manager namespace if it does not exist.
        wait: Seconds to wait for the traffic-manager to become ready; None: do not wait.
            When it is not ready in time the release is uninstalled again.
        progress: Called with a line for each step and each change while waiting.

    Raises:
        AlreadyInstalled: A traffic-manager release is deployed in the namespace already.
        ValuesError, ChartRejected, NamespaceCollision: The values are not acceptable.
        WaitTimeout: It was not ready in time (and has been uninstalled).
        HelmError: Anything else Helm or the cluster reported.
    """
    report = progress or _ignore
    chart = embedded_chart()
    existing = await current_release(target)
    if existing is not None and existing.status == "deployed":
        raise AlreadyInstalled(
            f'traffic-manager version "{existing.app_version}" is already installed in '
            f"namespace {target.namespace}, use 'telepresence helm upgrade' instead to replace it"
        )
    if existing is not None:
        report(
            f"Removing the traffic-manager release left {existing.status} in namespace "
            f"{target.namespace} by an earlier attempt"
        )
        await _uninstall(target)
    return await _install(
        chart, values, target, create_namespace=create_namespace, wait=wait, report=report
    )


async def upgrade(
    values: Values,
    target: Target = Target(),  # noqa: B008  # frozen, so a shared default is safe
    *,
    reuse_values: bool = False,
    reset_values: bool = False,
    create_namespace: bool = True,
    wait: float | None = DEFAULT_WAIT,
    progress: Progress | None = None,
) -> Release:
    """Upgrade (or downgrade) the traffic-manager to this client's chart, then wait for it to
    be ready; install it when there is none, as the original does.

    Values follow Helm's rules: with ``reuse_values`` the given values are merged over the
    release's current ones; with ``reset_values`` only the given values apply over the chart's
    defaults; with neither, the current values are kept when no values are given, and replaced
    by the given ones otherwise.

    Args:
        values: Values over the chart's defaults.
        target: The manager namespace and the cluster.
        reuse_values: Merge ``values`` over the current release's values.
        reset_values: Start from the chart's defaults.
        create_namespace: When there is nothing to upgrade, create the namespace to install in.
        wait: Seconds to wait for the new revision to be ready; None: do not wait. When it
            is not ready in time it stays in place (the Deployment keeps the previous pod
            until a new one is ready) and :class:`WaitTimeout` says so.
        progress: Called with a line for each step and each change while waiting.

    Raises:
        ValueError: Both ``reuse_values`` and ``reset_values``.
        ValuesError, ChartRejected, NamespaceCollision: The values are not acceptable.
        ReleaseStateError: Another install, upgrade or rollback of it has not finished.
        WaitTimeout: It was not ready in time (the new revision stays in place).
        HelmError: Anything else Helm or the cluster reported.
    """
    if reuse_values and reset_values:
        raise ValueError("reuse_values and reset_values exclude each other")
    report = progress or _ignore
    chart = embedded_chart()
    existing = await current_release(target)
    if existing is None or existing.status == "uninstalled":
        report(f"No traffic-manager in namespace {target.namespace}: installing it")
        return await _install(
            chart, values, target, create_namespace=create_namespace, wait=wait, report=report
        )
    if existing.status.startswith("pending-"):
        raise ReleaseStateError(
            f"the traffic-manager release in namespace {target.namespace} is "
            f"{existing.status}: another install, upgrade or rollback has not finished; wait "
            "for it, or remove the release with 'telepresence helm uninstall'"
        )
    report(
        f"Upgrading the traffic-manager in namespace {target.namespace} from "
        f"{existing.app_version} (revision {existing.revision}) to {chart.app_version}"
    )
    try:
        record = await helm_sdkpy.Upgrade(_configuration(target)).run(
            RELEASE_NAME,
            str(chart.path),
            values=values or None,
            wait=False,
            timeout=_helm_seconds(wait),
            reuse_values=reuse_values,
            reset_values=reset_values,
        )
    except helm_sdkpy.HelmError as error:
        raise _translate(error, target) from error
    release = Release.from_record(record)

    async def keep() -> str:
        # Not rolled back, unlike the original's atomic upgrade: helm-sdkpy's rollback fails
        # ("wait strategy not set"). The Deployment's rolling update keeps the previous pod
        # serving until a new one is ready.
        return (
            f"revision {release.revision} stays in place: correct it with 'telepresence helm "
            "upgrade', or remove it with 'telepresence helm uninstall'"
        )

    await _wait_ready(release, target, wait, report, keep)
    return release


async def uninstall(
    target: Target = Target(),  # noqa: B008  # frozen, so a shared default is safe
    *,
    wait: float | None = DEFAULT_WAIT,
    progress: Progress | None = None,
) -> Release:
    """Uninstall the traffic-manager: every object of its release. The namespace stays.

    Args:
        target: The manager namespace and the cluster.
        wait: Seconds to wait for the traffic-manager's pods to be gone; None: do not wait.
        progress: Called with a line for each step and each change while waiting.

    Raises:
        NotInstalled: There is no traffic-manager release in the namespace.
        WaitTimeout: Its pods were still there when the time was up.
        HelmError: Anything else Helm or the cluster reported.
    """
    report = progress or _ignore
    existing = await current_release(target)
    if existing is None or existing.status == "uninstalled":
        raise NotInstalled(f"traffic-manager is not installed in namespace {target.namespace}")
    report(
        f"Uninstalling the traffic-manager {existing.app_version} from namespace {target.namespace}"
    )
    await _uninstall(target)
    deployment = existing.find("Deployment", DEPLOYMENT_NAME)
    if wait is None or deployment is None:
        return existing
    with anyio.move_on_after(wait):
        await cluster.wait_for_pods_gone(target, cluster.label_selector(deployment), report)
        return existing
    raise WaitTimeout(
        f"the traffic-manager's pods in namespace {target.namespace} were still there "
        f"{_duration(wait)} after its uninstall"
    )


async def lint(values: Values) -> LintReport:
    """Lint the embedded chart with ``values`` over its defaults.

    Raises:
        ChartNotFound: The chart is missing.
        HelmFailed: Helm could not lint at all.
    """
    chart = embedded_chart()
    # Lint needs no cluster; the configuration is only the handle helm-sdkpy asks for.
    helm = _configuration(Target())
    with chart.with_defaults(values) if values else contextlib.nullcontext(chart) as linted:
        try:
            result = await helm_sdkpy.Lint(helm).run(str(linted.path))
        except helm_sdkpy.HelmError as error:
            raise HelmFailed(_clean(str(error))) from error
    severities = {1: "INFO", 2: "WARNING", 3: "ERROR"}
    messages = tuple(
        LintMessage(severities.get(int(item.get("Severity") or 0), "UNKNOWN"), str(item["Path"]))
        for item in result.get("Messages") or ()
    )
    return LintReport(chart, messages)


# -- steps -----------------------------------------------------------------------------------


async def _install(
    chart: Chart,
    values: Values,
    target: Target,
    *,
    create_namespace: bool,
    wait: float | None,
    report: Progress,
) -> Release:
    report(f"Installing the traffic-manager {chart.app_version} in namespace {target.namespace}")
    try:
        record = await helm_sdkpy.Install(_configuration(target)).run(
            RELEASE_NAME,
            str(chart.path),
            values=values or None,
            create_namespace=create_namespace,
            wait=False,
            timeout=_helm_seconds(wait),
        )
    except helm_sdkpy.HelmError as error:
        raise _translate(error, target) from error
    release = Release.from_record(record)

    async def remove() -> str:
        report("The traffic-manager did not become ready in time: uninstalling it again")
        await _uninstall(target)
        return "it was uninstalled again"

    await _wait_ready(release, target, wait, report, remove)
    return release


async def _wait_ready(
    release: Release,
    target: Target,
    wait: float | None,
    report: Progress,
    on_timeout: Callable[[], Awaitable[str]],
) -> None:
    """Wait for the release's traffic-manager to roll out. When the time is up, run
    ``on_timeout`` (shielded, so that an uninstall completes), which says what became of the
    release, and raise :class:`WaitTimeout`."""
    if wait is None or not release.deploys_manager:
        return
    last = ""

    def note(line: str) -> None:
        nonlocal last
        last = line
        report(line)

    with anyio.move_on_after(wait):
        await cluster.wait_for_rollout(target, DEPLOYMENT_NAME, note)
        report(f"The traffic-manager in namespace {target.namespace} is ready")
        return
    state = last.removeprefix("Waiting for the traffic-manager: ") or "no state reported"
    with anyio.CancelScope(shield=True):
        try:
            aftermath = await on_timeout()
        except HelmError as error:
            aftermath = f"uninstalling it failed too: {error}"
    raise WaitTimeout(
        f"the traffic-manager in namespace {target.namespace} did not become ready within "
        f"{_duration(wait)} ({state}); {aftermath}"
    )


async def _uninstall(target: Target) -> None:
    try:
        await helm_sdkpy.Uninstall(_configuration(target)).run(RELEASE_NAME, wait=False)
    except helm_sdkpy.ReleaseNotFoundError:
        return
    except helm_sdkpy.HelmError as error:
        raise _translate(error, target) from error


def _configuration(target: Target) -> helm_sdkpy.Configuration:
    try:
        return helm_sdkpy.Configuration(
            namespace=target.namespace,
            kubeconfig=target.helm_kubeconfig(),
            kubecontext=target.context,
        )
    except helm_sdkpy.HelmLibraryNotFound as error:
        raise HelmFailed(f"Helm cannot be loaded (helm-sdkpy): {error}") from error
    except helm_sdkpy.HelmError as error:
        raise ClusterUnreachable(f"cannot use the kubeconfig: {_clean(str(error))}") from error


def _ignore(_: str) -> None:
    pass


def _helm_seconds(wait: float | None) -> int:
    """Helm's own timeout (for hooks; the chart has none): the wait's, else Helm's default."""
    return max(1, math.ceil(wait)) if wait is not None else 300


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# -- Helm's errors, as one line each -------------------------------------------------------------

_ACTION_PREFIX = re.compile(r"^(?:install|upgrade|uninstall|rollback|status|lint) failed: ")
_UNREACHABLE = re.compile(
    r"(?:cluster reachability check failed: )?kubernetes cluster unreachable: (?P<why>.*)",
    re.IGNORECASE | re.DOTALL,
)
_SCHEMA = "values don't meet the specifications of the schema(s)"
_SCHEMA_ITEM = re.compile(r"^- at '(?P<pointer>[^']*)': (?P<problem>.*)$", re.MULTILINE)
_COLLISION = re.compile(
    r"traffic-manager in namespace (?P<theirs>\S+) already manages namespace (?P<shared>\S+)"
)
_NAMESPACE_MISSING = re.compile(r'namespaces "(?P<namespace>[^"]+)" not found')


def _translate(error: helm_sdkpy.HelmError, target: Target) -> HelmError:
    """One :class:`HelmError` for what Helm reported."""
    message = _clean(str(error))
    if isinstance(error, helm_sdkpy.ReleaseNotFoundError):
        return NotInstalled(f"traffic-manager is not installed in namespace {target.namespace}")
    if unreachable := _UNREACHABLE.search(message):
        return ClusterUnreachable(f"cannot reach the cluster: {_one_line(unreachable['why'])}")
    if message.startswith(_SCHEMA):
        problems = [
            f"{_value_path(item['pointer'])}: {item['problem'].strip()}"
            for item in _SCHEMA_ITEM.finditer(message)
        ]
        return ChartRejected(
            "the values do not match the chart's schema: " + "; ".join(problems or [message])
        )
    if collision := _COLLISION.search(message):
        return NamespaceCollision(_one_line(message), collision["theirs"], collision["shared"])
    if message.startswith(("execution error at (", "template: ", "parse error at (")):
        return ChartRejected(_one_line(message))
    if "cannot reuse a name that is still in use" in message:
        return AlreadyInstalled(
            f"traffic-manager is already installed in namespace {target.namespace}, use "
            "'telepresence helm upgrade' instead to replace it"
        )
    if (missing := _NAMESPACE_MISSING.search(message)) and missing["namespace"] == target.namespace:
        return HelmFailed(
            f"namespace {target.namespace} does not exist: create it, or leave out "
            "--create-namespace=false"
        )
    return HelmFailed(_one_line(message))


def _clean(message: str) -> str:
    return _ACTION_PREFIX.sub("", message.strip())


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _value_path(pointer: str) -> str:
    """A JSON pointer into the values (``/client/dns/0``) as a --set name
    (``client.dns[0]``); the empty pointer is the values themselves."""
    if not pointer.strip("/"):
        return "values"
    name = ""
    for part in pointer.strip("/").split("/"):
        token = part.replace("~1", "/").replace("~0", "~")
        name += f"[{token}]" if token.isdigit() else (f".{token}" if name else token)
    return name
