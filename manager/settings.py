"""The process settings the Deployment gives in the environment, and the log level.

| variable | default | meaning |
|---|---|---|
| ``LOG_LEVEL`` | ``info`` | ``trace``, ``debug``, ``info``, ``warning`` (``warn``) or ``error`` |
| ``MANAGER_NAMESPACE`` | the pod's service-account namespace | where the manager runs |
| ``POD_IP`` | (none) | the manager pod's IP, sent to clients for the ``direct`` transport |
| ``API_PORT`` | 8081 | the gRPC control API (h2c) |
| ``DATA_PORT`` | 8082 | the data plane: tpmux over TLS |
| ``HEALTH_PORT`` | 8083 | HTTP ``/readyz`` and ``/healthz`` |
| ``CONFIG_DIR`` | ``/etc/traffic-manager`` | the chart's configuration (:mod:`manager.config`) |
| ``TLS_DIR`` | ``/var/run/secrets/traffic-manager-tls`` | ``tls.crt``, ``tls.key``, ``ca.crt`` |
| ``KUBERNETES_SERVICE_HOST`` | (set by the kubelet) | the in-cluster API server; also a ClusterIP |
| ``KUBECONFIG`` | (none) | outside a pod only: the cluster to use (development and tests) |

A value that cannot be used is a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Below DEBUG: the original's ``trace`` level.
TRACE = 5
LOG_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The traffic-manager's process settings (see the module docstring).

    Attributes:
        bind_host: Where the listeners bind; None binds every address (IPv4 and IPv6).
        shutdown_grace: Seconds a SIGTERM leaves open streams to finish before they are cut.
        trust_port_forward: Let clients without a token in through the pod's loopback (what a
            port-forward reaches), as the API server authorized them; on in a pod.
    """

    log_level: int = logging.INFO
    namespace: str = "ambassador"
    pod_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    api_port: int = 8081
    data_port: int = 8082
    health_port: int = 8083
    config_dir: Path = Path("/etc/traffic-manager")
    tls_dir: Path = Path("/var/run/secrets/traffic-manager-tls")
    kubernetes_service_host: str | None = None
    kubeconfig: Path | None = None
    bind_host: str | None = None
    shutdown_grace: float = 10.0
    trust_port_forward: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from ``environ`` (the process environment by default)."""
        env = os.environ if environ is None else environ
        return cls(
            log_level=log_level(env.get("LOG_LEVEL", "info")),
            namespace=_namespace(env),
            pod_ip=_ip(env, "POD_IP"),
            api_port=_port(env, "API_PORT", 8081),
            data_port=_port(env, "DATA_PORT", 8082),
            health_port=_port(env, "HEALTH_PORT", 8083),
            config_dir=Path(env.get("CONFIG_DIR") or "/etc/traffic-manager"),
            tls_dir=Path(env.get("TLS_DIR") or "/var/run/secrets/traffic-manager-tls"),
            kubernetes_service_host=env.get("KUBERNETES_SERVICE_HOST") or None,
            kubeconfig=Path(env["KUBECONFIG"]) if env.get("KUBECONFIG") else None,
            # In a pod, only a port-forward reaches the manager's loopback.
            trust_port_forward=bool(env.get("KUBERNETES_SERVICE_HOST")),
        )


def log_level(text: str) -> int:
    """The ``logging`` level for a ``LOG_LEVEL`` value."""
    try:
        return LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise SettingsError(
            f"LOG_LEVEL: {text!r} is not a log level (use one of {', '.join(LOG_LEVELS)})"
        ) from None


def configure_logging(level: int) -> None:
    """Log to stderr (the container log) at ``level``. The libraries' own chatter (asyncio,
    aiohttp, grpclib, h2) shows from WARNING, or at every level with ``trace``."""
    logging.addLevelName(TRACE, "TRACE")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    libraries = level if level <= TRACE else max(level, logging.WARNING)
    for name in ("asyncio", "aiohttp", "kubernetes_asyncio", "grpclib", "hpack", "h2"):
        logging.getLogger(name).setLevel(libraries)


def _namespace(env: Mapping[str, str]) -> str:
    if env.get("MANAGER_NAMESPACE"):
        return env["MANAGER_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "ambassador"
    except OSError:
        return "ambassador"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise SettingsError(f"{name}: {text!r} is not a port number (0 to 65535)")
    return int(text)


def _ip(env: Mapping[str, str], name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = env.get(name)
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not an IP address") from None
