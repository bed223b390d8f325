"""Which namespace the traffic-manager is in: the first of four sources that says.

1. the ``--manager-namespace`` flag;
2. the kubeconfig cluster's ``telepresence.io`` extension,
   ``{cluster: {defaultManagerNamespace: staging}}`` (or the older
   ``{manager: {namespace: staging}}`` of earlier clients);
3. ``config.yml``'s ``cluster.defaultManagerNamespace``;
4. ``ambassador``, where ``telepresence helm install`` puts it.

The kubeconfig comes before ``config.yml`` because it is per cluster: one user can work with
several clusters whose traffic-managers live in different namespaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from telepresence.config._kubeconfig import KubeconfigError
from telepresence.config._model import describe, namespace_error

if TYPE_CHECKING:
    from telepresence.config._model import Config

__all__ = ["DEFAULT_MANAGER_NAMESPACE", "EXTENSION", "NamespaceSource", "manager_namespace"]

#: Where the traffic-manager is when nothing says otherwise.
DEFAULT_MANAGER_NAMESPACE = "ambassador"
#: The name of Telepresence's kubeconfig cluster extension.
EXTENSION = "telepresence.io"

type NamespaceSource = Literal["flag", "kubeconfig", "config.yml", "default"]


def manager_namespace(
    flag: str | None,
    kubeconfig_cluster_extensions: Mapping[str, Any] | list[Any] | None,
    config: Config,
) -> tuple[str, NamespaceSource]:
    """The traffic-manager's namespace, and which source gave it.

    Args:
        flag: ``--manager-namespace``, None (or empty) when not given.
        kubeconfig_cluster_extensions: The context's cluster ``extensions``, by name
            (:attr:`KubeContext.extensions`) or as the kubeconfig's list of ``name`` and
            ``extension``.
        config: The loaded ``config.yml``.

    Raises:
        KubeconfigError: The ``telepresence.io`` extension names no valid namespace.
    """
    if flag:
        return flag, "flag"
    from_kubeconfig = _from_extension(kubeconfig_cluster_extensions)
    if from_kubeconfig:
        return from_kubeconfig, "kubeconfig"
    if config.cluster.default_manager_namespace:
        return config.cluster.default_manager_namespace, "config.yml"
    return DEFAULT_MANAGER_NAMESPACE, "default"


def _from_extension(extensions: Mapping[str, Any] | list[Any] | None) -> str | None:
    if isinstance(extensions, list):
        extension = next(
            (
                item.get("extension")
                for item in extensions
                if isinstance(item, Mapping) and item.get("name") == EXTENSION
            ),
            None,
        )
    else:
        extension = (extensions or {}).get(EXTENSION)
    if extension is None:
        return None
    where = f"the kubeconfig cluster's {EXTENSION} extension"
    if not isinstance(extension, Mapping):
        raise KubeconfigError(f"{where}: expected a mapping, got {describe(extension)}")
    for section, key in (("cluster", "defaultManagerNamespace"), ("manager", "namespace")):
        fields = extension.get(section)
        if fields is None:
            continue
        if not isinstance(fields, Mapping):
            raise KubeconfigError(f"{where}: {section}: expected a mapping, got {describe(fields)}")
        value = fields.get(key)
        if value is None:
            continue
        problem = namespace_error(value)
        if problem:
            raise KubeconfigError(f"{where}: {section}.{key}: {problem}")
        return str(value)
    return None
