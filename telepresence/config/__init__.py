"""The client's configuration: ``config.yml``, its directories, and the manager's namespace.

- :func:`load_config` reads ``config.yml`` (:func:`config_path`) into a :class:`Config`:
  timeouts, log levels, the cluster's manager namespace, DNS and routing. Unknown keys come
  back as warnings; a bad value is a :class:`ConfigError` naming the file and the key.
- :func:`effective` lays that over the ``ClientConfig`` the traffic-manager pushes: a key
  ``config.yml`` sets wins, a key it leaves out takes the pushed value.
- :func:`config_dir`, :func:`cache_dir`, :func:`logs_dir` and :func:`runtime_dir` follow the
  XDG Base Directory Specification; :func:`ensure_private_dir` creates one for use.
- :func:`read_kubeconfig` and :func:`list_contexts` read the kubeconfig kubectl would read;
  :func:`manager_namespace` picks the traffic-manager's namespace from the flag, the
  kubeconfig cluster's ``telepresence.io`` extension, ``config.yml``, or ``ambassador``.

The page ``docs/reference/client-config.md`` is the user's reference for all of this.
"""

from __future__ import annotations

from telepresence.config._file import ConfigError, load_config, parse_config
from telepresence.config._kubeconfig import (
    KubeconfigError,
    KubeContext,
    KubeContextSummary,
    list_contexts,
    read_kubeconfig,
)
from telepresence.config._merge import effective
from telepresence.config._model import (
    DEFAULT_EXCLUDE_SUFFIXES,
    DEFAULT_LOOKUP_TIMEOUT,
    LOG_LEVELS,
    ClusterConfig,
    Config,
    DNSConfig,
    IPNetwork,
    LogLevel,
    LogLevels,
    RoutingConfig,
    Timeouts,
    parse_duration,
)
from telepresence.config._namespace import (
    DEFAULT_MANAGER_NAMESPACE,
    NamespaceSource,
    manager_namespace,
)
from telepresence.paths import (
    PrivateDirectoryError,
    cache_dir,
    config_dir,
    config_path,
    ensure_private_dir,
    logs_dir,
    runtime_dir,
)

__all__ = [
    "DEFAULT_EXCLUDE_SUFFIXES",
    "DEFAULT_LOOKUP_TIMEOUT",
    "DEFAULT_MANAGER_NAMESPACE",
    "LOG_LEVELS",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DNSConfig",
    "IPNetwork",
    "KubeContext",
    "KubeContextSummary",
    "KubeconfigError",
    "LogLevel",
    "LogLevels",
    "NamespaceSource",
    "PrivateDirectoryError",
    "RoutingConfig",
    "Timeouts",
    "cache_dir",
    "config_dir",
    "config_path",
    "effective",
    "ensure_private_dir",
    "list_contexts",
    "load_config",
    "logs_dir",
    "manager_namespace",
    "parse_config",
    "parse_duration",
    "read_kubeconfig",
    "runtime_dir",
]
