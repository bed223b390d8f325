"""The configuration the Helm chart mounts in ``CONFIG_DIR``: YAML files, each optional.

- ``client.yaml``: the chart's ``client`` block, pushed to every client by ``GetClientConfig``;
- ``namespaces.yaml``: ``namespaces: [...]`` or ``namespaceSelector: {...}``; neither: all;
- ``intercept.yaml``, ``workloads.yaml``, ``service-mesh.yaml``, ``agent.yaml``: for the
  intercepts milestone; read, checked to be mappings, and kept as they are.

``client.yaml`` uses the names of the original Telepresence client configuration::

    connectionTTL: 24h            # how long a silent client's session lives
    dns:
      includeSuffixes: [.private]
      excludeSuffixes: [.com, .io]
      lookupTimeout: 8s
    routing:
      alsoProxySubnets: [192.168.50.0/24]
      neverProxySubnets: []
      allowConflictingSubnets: []
    timeouts:
      endpointDial: 3s            # also the manager's own dial timeout for clients' streams
      trafficManagerAPI: 15s
      ...

Durations are Go duration strings (``1m30s``, ``500ms``) or numbers of seconds. Keys this
version does not use (later ``images``, ``logLevels``, ``grpc``, ``intercept``, and timeouts the
control API has no field for) are accepted and ignored, so that a chart of a newer version
does not break an older manager. Anything malformed is a :class:`ConfigError` that names the
file and the key, and the manager refuses to start with it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from manager.scope import OPERATORS, LabelSelector, NamespaceSelection, Requirement

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT_FILE = "client.yaml"
NAMESPACES_FILE = "namespaces.yaml"
#: Files of later milestones: checked to be mappings and kept.
LATER_FILES = ("intercept.yaml", "workloads.yaml", "service-mesh.yaml", "agent.yaml")

#: The original's default: a client's session outlives a laptop's sleep.
DEFAULT_CONNECTION_TTL = 24 * 3600.0
#: The original client's default ``timeouts.endpointDial``.
DEFAULT_ENDPOINT_DIAL = 3.0
#: The ``client.timeouts`` keys the control API carries (``Timeouts`` in manager.proto).
TIMEOUT_KEYS = (
    "clusterConnect",
    "trafficManagerConnect",
    "trafficManagerAPI",
    "endpointDial",
    "roundtripLatency",
    "intercept",
    "agentInstall",
)

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """``client.dns``."""

    include_suffixes: tuple[str, ...] = ()
    exclude_suffixes: tuple[str, ...] = ()
    lookup_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """``client.routing``."""

    also_proxy_subnets: tuple[IPNetwork, ...] = ()
    never_proxy_subnets: tuple[IPNetwork, ...] = ()
    allow_conflicting_subnets: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The chart's ``client`` block (``client.yaml``).

    Attributes:
        connection_ttl: Seconds a client session lives without a ``Remain``.
        dns: Which names the laptop resolves in the cluster.
        routing: Which subnets the laptop routes to the cluster besides its own.
        timeouts: Seconds per ``client.timeouts`` key (all keys given, known or not).
    """

    connection_ttl: float = DEFAULT_CONNECTION_TTL
    dns: DNSConfig = field(default_factory=DNSConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    timeouts: Mapping[str, float] = field(default_factory=dict)

    @property
    def endpoint_dial(self) -> float:
        """How long the manager gives a destination to answer a client's stream."""
        return self.timeouts.get("endpointDial", DEFAULT_ENDPOINT_DIAL)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Everything in ``CONFIG_DIR``.

    Attributes:
        client: ``client.yaml``.
        namespaces: ``namespaces.yaml``.
        later: The files of later milestones, by file name, as mappings.
    """

    client: ClientConfig = field(default_factory=ClientConfig)
    namespaces: NamespaceSelection = field(default_factory=NamespaceSelection)
    later: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def load(directory: Path) -> ManagerConfig:
    """Read every file of ``directory`` (a missing directory is an empty configuration).

    Raises:
        ConfigError: A file is malformed; the message names it and the key at fault.
    """
    return ManagerConfig(
        client=parse_client(_read(directory, CLIENT_FILE)),
        namespaces=parse_namespaces(_read(directory, NAMESPACES_FILE)),
        later={name: _read(directory, name) for name in LATER_FILES},
    )


def parse_client(document: Mapping[str, Any], source: str = CLIENT_FILE) -> ClientConfig:
    """``client.yaml`` as a :class:`ClientConfig`."""
    dns = _mapping(document.get("dns"), source, "dns")
    routing = _mapping(document.get("routing"), source, "routing")
    timeouts = _mapping(document.get("timeouts"), source, "timeouts")
    ttl = document.get("connectionTTL")
    lookup = dns.get("lookupTimeout")
    return ClientConfig(
        connection_ttl=(
            DEFAULT_CONNECTION_TTL if ttl is None else duration(ttl, source, "connectionTTL")
        ),
        dns=DNSConfig(
            include_suffixes=_strings(dns.get("includeSuffixes"), source, "dns.includeSuffixes"),
            exclude_suffixes=_strings(dns.get("excludeSuffixes"), source, "dns.excludeSuffixes"),
            lookup_timeout=None
            if lookup is None
            else duration(lookup, source, "dns.lookupTimeout"),
        ),
        routing=RoutingConfig(
            also_proxy_subnets=_subnets(routing, source, "alsoProxySubnets"),
            never_proxy_subnets=_subnets(routing, source, "neverProxySubnets"),
            allow_conflicting_subnets=_subnets(routing, source, "allowConflictingSubnets"),
        ),
        timeouts={
            str(key): duration(value, source, f"timeouts.{key}")
            for key, value in timeouts.items()
            if value is not None
        },
    )


def parse_namespaces(
    document: Mapping[str, Any], source: str = NAMESPACES_FILE
) -> NamespaceSelection:
    """``namespaces.yaml`` as a :class:`NamespaceSelection`."""
    names = document.get("namespaces")
    selector = document.get("namespaceSelector")
    if names and selector:
        raise ConfigError(f"{source}: give either namespaces or namespaceSelector, not both")
    if names:
        listed = _strings(names, source, "namespaces")
        for name in listed:
            _check_namespace_name(name, source, "namespaces")
        return NamespaceSelection(names=frozenset(listed))
    if selector:
        return NamespaceSelection.of(label_selector(selector, source, "namespaceSelector"))
    return NamespaceSelection()


def label_selector(value: Any, source: str, key: str) -> LabelSelector:
    """A Kubernetes ``LabelSelector`` (``matchLabels`` and ``matchExpressions``)."""
    selector = _mapping(value, source, key)
    requirements: list[Requirement] = []
    labels = _mapping(selector.get("matchLabels"), source, f"{key}.matchLabels")
    for label, label_value in labels.items():
        if not isinstance(label_value, str):
            raise ConfigError(f"{source}: {key}.matchLabels.{label}: expected a string")
        requirements.append(Requirement(str(label), "In", (label_value,)))
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ConfigError(f"{source}: {key}.matchExpressions: expected a list")
    for index, raw in enumerate(expressions):
        where = f"{key}.matchExpressions[{index}]"
        expression = _mapping(raw, source, where)
        expression_key = expression.get("key")
        operator = expression.get("operator")
        if not isinstance(expression_key, str) or not expression_key:
            raise ConfigError(f"{source}: {where}.key: expected a label key")
        if operator not in OPERATORS:
            raise ConfigError(
                f"{source}: {where}.operator: expected one of {', '.join(OPERATORS)},"
                f" got {operator!r}"
            )
        values = _strings(expression.get("values"), source, f"{where}.values")
        if operator in ("In", "NotIn") and not values:
            raise ConfigError(f"{source}: {where}.values: {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ConfigError(f"{source}: {where}.values: {operator} takes no values")
        requirements.append(Requirement(expression_key, operator, values))
    return LabelSelector(tuple(requirements))


def duration(value: Any, source: str, key: str) -> float:
    """Seconds from a Go duration string (``1h30m``, ``250ms``) or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: expected a duration such as 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        position = 0
        seconds = 0.0
        if text == "0":
            return 0.0
        for match in _DURATION.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(text):
            raise ConfigError(
                f"{source}: {key}: {value!r} is not a duration (use e.g. 30s, 1m30s, 500ms)"
            )
    else:
        raise ConfigError(f"{source}: {key}: expected a duration such as 30s, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{source}: {key}: a duration cannot be negative")
    return seconds


def _read(directory: Path, name: str) -> Mapping[str, Any]:
    path = directory / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: not valid YAML: {error}") from error
    return _mapping(document, name, "the document")


def _mapping(value: Any, source: str, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{source}: {key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _subnets(routing: Mapping[str, Any], source: str, key: str) -> tuple[IPNetwork, ...]:
    where = f"routing.{key}"
    subnets = []
    for text in _strings(routing.get(key), source, where):
        try:
            subnets.append(ipaddress.ip_network(text, strict=False))
        except ValueError as error:
            raise ConfigError(f"{source}: {where}: {text!r} is not a subnet ({error})") from error
    return tuple(subnets)


def _check_namespace_name(name: str, source: str, key: str) -> None:
    # A namespace name is an RFC 1123 label.
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ConfigError(f"{source}: {key}: {name!r} is not a namespace name")
