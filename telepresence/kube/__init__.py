"""The client's Kubernetes adapter: one cluster as the kubeconfig's user, and port-forwards.

This package is the only part of the client, besides ``telepresence.helm.cluster``, that
imports kubernetes-asyncio and aiohttp; what it hands out are anyio streams and plain values.

- :class:`KubeTarget` names the kubeconfig and context (or leaves them to kubectl's rules);
  :meth:`Kube.open` loads it and keeps the API clients open for a block.
- :meth:`Kube.ready_pod` finds the pod to talk to; :meth:`Kube.port_forward` opens a
  :class:`PortForwardStream` to one of its ports, and :func:`serve_port_forward` does so for
  every connection a listener accepts (a unix socket that gRPC dials, say).
- Errors are :class:`KubeError`\\ s: :class:`ClusterUnreachable` and
  :class:`PortForwardError`.

kubernetes-asyncio runs on asyncio only, so this package does too.
"""

from __future__ import annotations

from telepresence.kube._config import KubeTarget, LoadedConfig, kubeconfig_paths, load_config
from telepresence.kube._errors import ClusterUnreachable, Forbidden, KubeError, PortForwardError
from telepresence.kube._kube import WATCH_SECONDS, Kube, Watch
from telepresence.kube._portforward import PortForwardStream, serve_port_forward

__all__ = [
    "WATCH_SECONDS",
    "ClusterUnreachable",
    "Forbidden",
    "Kube",
    "KubeError",
    "KubeTarget",
    "LoadedConfig",
    "PortForwardError",
    "PortForwardStream",
    "Watch",
    "kubeconfig_paths",
    "load_config",
    "serve_port_forward",
]
