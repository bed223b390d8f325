"""The traffic-manager's Helm release: what ``telepresence helm install | upgrade | uninstall |
lint`` do, as an async library the CLI wraps.

The chart is the one embedded in this client (:mod:`~telepresence.helm.chart`), so a client
installs the traffic-manager of its own version; Helm itself runs in-process through
helm-sdkpy. The pieces:

| module | what it does |
|---|---|
| :mod:`~telepresence.helm.values` | Helm's rules for ``-f`` and the ``--set`` flags (no I/O) |
| :mod:`~telepresence.helm.chart` | finds the embedded chart |
| :mod:`~telepresence.helm.release` | install, upgrade, uninstall, lint; Helm's errors translated |
| :mod:`~telepresence.helm.cluster` | the target cluster and namespace; waits on the rollout |
| :mod:`~telepresence.helm.errors` | the error hierarchy, one-line messages |

Everything here runs on asyncio (helm-sdkpy and kubernetes-asyncio need it)::

    from telepresence import helm

    values = helm.ValueSources(set=("logLevel=debug",)).resolve()
    release = await helm.install(values, helm.Target(namespace="ambassador"), progress=print)
"""

from __future__ import annotations

from telepresence.helm.chart import Chart, embedded_chart
from telepresence.helm.cluster import DEFAULT_MANAGER_NAMESPACE, Target
from telepresence.helm.errors import (
    AlreadyInstalled,
    ChartNotFound,
    ChartRejected,
    ClusterUnreachable,
    HelmError,
    HelmFailed,
    LintFailed,
    NamespaceCollision,
    NotInstalled,
    ReleaseStateError,
    ValuesError,
    WaitTimeout,
)
from telepresence.helm.release import (
    DEFAULT_WAIT,
    RELEASE_NAME,
    LintMessage,
    LintReport,
    Release,
    current_release,
    install,
    lint,
    uninstall,
    upgrade,
)
from telepresence.helm.values import ValueSources

__all__ = [
    "DEFAULT_MANAGER_NAMESPACE",
    "DEFAULT_WAIT",
    "RELEASE_NAME",
    "AlreadyInstalled",
    "Chart",
    "ChartNotFound",
    "ChartRejected",
    "ClusterUnreachable",
    "HelmError",
    "HelmFailed",
    "LintFailed",
    "LintMessage",
    "LintReport",
    "NamespaceCollision",
    "NotInstalled",
    "Release",
    "ReleaseStateError",
    "Target",
    "ValueSources",
    "ValuesError",
    "WaitTimeout",
    "current_release",
    "embedded_chart",
    "install",
    "lint",
    "uninstall",
    "upgrade",
]
