"""What can go wrong talking to the cluster as the kubeconfig's user.

One small hierarchy under :class:`KubeError`, whose ``str()`` is one sentence a user can act
on; the CLI prints it as it is. kubernetes-asyncio's and aiohttp's exceptions are translated
where they are raised, with the original chained as the cause, and never leave this package.

Local faults are told apart from what the cluster refused:

- :class:`ClusterUnreachable`: the kubeconfig cannot be used, or the API server does not
  answer (nothing reached the cluster, or the connection to it broke).
- :class:`PortForwardError`: the API server refused a port-forward (no right to it, no such
  pod) or the pod's side reported an error on the port's error channel (nothing listens on
  the port, the connection to it broke).
- :class:`KubeError` itself: any other refusal by the API server.
"""

from __future__ import annotations

__all__ = ["ClusterUnreachable", "Forbidden", "KubeError", "PortForwardError"]


class KubeError(Exception):
    """Base of the errors of :mod:`telepresence.kube`; ``str()`` is the user's message."""


class ClusterUnreachable(KubeError):
    """The kubeconfig cannot be used, or the cluster's API server cannot be reached."""


class Forbidden(KubeError):
    """The API server refused the kubeconfig's user (403): RBAC does not allow it."""


class PortForwardError(KubeError):
    """A port-forward was refused, or its error channel reported an error."""
