"""Which cluster, as which user: the kubeconfig as kubectl would read it.

A :class:`KubeTarget` names a kubeconfig and a context, or leaves them to the usual rules:
the ``KUBECONFIG`` list, else ``~/.kube/config``, else (inside a pod) the pod's service
account. :func:`load_config` turns it into a kubernetes-asyncio ``Configuration`` (server,
TLS, credentials) and the context's namespace, which kubernetes-asyncio reads but does not
keep: it is taken from the loader's current context.

Nothing is written back to the kubeconfig (``persist_config=False``): a client that only
reads a cluster has no business rewriting the user's files (kubernetes-asyncio would do so to
cache refreshed tokens of some auth providers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from telepresence.kube._errors import ClusterUnreachable

__all__ = ["DEFAULT_NAMESPACE", "KubeTarget", "LoadedConfig", "kubeconfig_paths", "load_config"]

#: The namespace of a context that names none, as kubectl defaults it.
DEFAULT_NAMESPACE = "default"
#: Where a pod finds its own namespace (the service-account volume), as client-go reads it.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """Which cluster to talk to, and as whom.

    Attributes:
        kubeconfig: A kubeconfig file (or a ``:``-separated list); None means ``KUBECONFIG``,
            else ``~/.kube/config``, else the service account of the pod this runs in.
        context: A context of the kubeconfig; None means its current context.
    """

    kubeconfig: str | None = None
    context: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A loaded kubeconfig context.

    Attributes:
        configuration: kubernetes-asyncio's client configuration (server, TLS, credentials).
        namespace: The context's namespace (``default`` when it names none).
    """

    configuration: k8s_client.Configuration
    namespace: str


def kubeconfig_paths(target: KubeTarget) -> str | None:
    """The kubeconfig file(s) as kubectl would pick them (``:``-separated), or None when
    there is none, which means the pod's service account."""
    if target.kubeconfig:
        return target.kubeconfig
    from_environment = os.environ.get("KUBECONFIG", "")
    if from_environment.strip(os.pathsep):
        return from_environment
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


async def load_config(target: KubeTarget) -> LoadedConfig:
    """Load the target's kubeconfig context (or the in-cluster configuration).

    Raises:
        ClusterUnreachable: The kubeconfig is missing or malformed, or names no such context;
            or, in a pod, the service account is not mounted.
    """
    configuration = k8s_client.Configuration()
    paths = kubeconfig_paths(target)
    try:
        if paths is None:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            namespace = _in_cluster_namespace()
        else:
            loader = await k8s_config.load_kube_config(
                config_file=paths,
                context=target.context,
                client_configuration=configuration,
                persist_config=False,
            )
            namespace = _context_namespace(loader.current_context)
    except (ConfigException, OSError) as error:
        raise ClusterUnreachable(f"cannot use the kubeconfig {paths or ''}: {error}") from error
    except (yaml.YAMLError, TypeError, AttributeError, KeyError) as error:
        # kubernetes-asyncio assumes the file is a mapping of the right shape; an empty file
        # or another YAML document fails inside it with errors that name no kubeconfig field.
        raise ClusterUnreachable(
            f"cannot use the kubeconfig {paths}: it is not a valid kubeconfig ({error})"
        ) from error
    return LoadedConfig(configuration, namespace)


def _context_namespace(context: object) -> str:
    """The namespace of a kubeconfig context entry (``{"name": ..., "context": {...}}``)."""
    fields = context.get("context") if isinstance(context, dict) else None
    namespace = fields.get("namespace") if isinstance(fields, dict) else None
    return str(namespace) if namespace else DEFAULT_NAMESPACE


def _in_cluster_namespace() -> str:
    """The pod's own namespace, as client-go's in-cluster configuration finds it: the
    ``POD_NAMESPACE`` variable (set through the downward API), else the service account's
    namespace file."""
    from_environment = os.environ.get("POD_NAMESPACE", "").strip()
    if from_environment:
        return from_environment
    try:
        from_file = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return DEFAULT_NAMESPACE
    return from_file or DEFAULT_NAMESPACE
