"""What can go wrong installing, upgrading, uninstalling or linting the traffic-manager.

One hierarchy under :class:`HelmError`. Each message is one line that says what happened in
the user's terms, and what to do where that is not obvious; the CLI prints it as it is and
maps the class to an exit code (``telepresence.cli``). helm-sdkpy's and kubernetes-asyncio's
exceptions are translated where they are raised (:mod:`telepresence.helm.release`,
:mod:`telepresence.helm.cluster`), with the original chained as the cause.

Local faults (the command line, the installation) are told apart from what the cluster or
Helm refused:

- :class:`ValuesError`: a values file or a ``--set`` is malformed (nothing was sent).
- :class:`ChartNotFound`: this installation lacks its embedded chart.
- :class:`ChartRejected`: Helm refused to render the chart with these values: a schema
  violation, a template's ``fail`` such as :class:`NamespaceCollision`, or a failed lint.
- :class:`ReleaseStateError`: :class:`AlreadyInstalled` or :class:`NotInstalled`.
- :class:`ClusterUnreachable`: no kubeconfig, no such context, or no answer from the API server.
- :class:`WaitTimeout`: the traffic-manager did not become ready (or go away) in time.
- :class:`HelmFailed`: anything else Helm reported (e.g. the API server refused an object).
"""

from __future__ import annotations

__all__ = [
    "AlreadyInstalled",
    "ChartNotFound",
    "ChartRejected",
    "ClusterUnreachable",
    "HelmError",
    "HelmFailed",
    "LintFailed",
    "NamespaceCollision",
    "NotInstalled",
    "ReleaseStateError",
    "ValuesError",
    "WaitTimeout",
]


class HelmError(Exception):
    """Base of every error of ``telepresence helm``; ``str()`` is the one-line message."""


class ValuesError(HelmError):
    """A values file or a ``--set``/``--set-string``/``--set-json`` argument is malformed."""


class ChartNotFound(HelmError):
    """The chart embedded in the distribution is missing (a broken installation)."""


class ChartRejected(HelmError):
    """Helm refused to render the chart with these values: the values break the chart's
    schema, or a template failed (see :class:`NamespaceCollision`)."""


class NamespaceCollision(ChartRejected):
    """Another traffic-manager already manages a namespace this one would manage.

    Attributes:
        theirs: The other traffic-manager's namespace.
        shared: The first namespace both would manage.
    """

    def __init__(self, message: str, theirs: str, shared: str) -> None:
        super().__init__(message)
        self.theirs = theirs
        self.shared = shared


class LintFailed(ChartRejected):
    """``lint`` found errors in the chart with these values."""


class ReleaseStateError(HelmError):
    """The release is not in the state the command needs."""


class AlreadyInstalled(ReleaseStateError):
    """``install`` found the traffic-manager installed already."""


class NotInstalled(ReleaseStateError):
    """``uninstall`` found no traffic-manager to remove."""


class ClusterUnreachable(HelmError):
    """The cluster cannot be used: no kubeconfig, an unknown context, or no answer."""


class WaitTimeout(HelmError):
    """The traffic-manager did not become ready, or did not go away, within the timeout."""


class HelmFailed(HelmError):
    """Helm failed for another reason; the message is Helm's."""
