"""The settings of ``config.yml`` as Pydantic models, and the parsers of their values.

Each section of the file is a model whose fields carry the original client's defaults; keys
are the original's camelCase (``endpointDial``), attributes are snake_case (``endpoint_dial``),
and either name builds a model in code. ``model_fields_set`` of each section says which keys
the file gave, which is what :func:`telepresence.config.effective` needs to let the file win
over what the traffic-manager pushes.

The value parsers raise :class:`PydanticCustomError` of type ``config`` whose message is the
whole explanation (``'3 parsecs' is not a duration (...)``), so that the loader can put the
file and the dotted key in front of it and show one line. Durations are float seconds
throughout, as the traffic-manager's own configuration keeps them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "DEFAULT_EXCLUDE_SUFFIXES",
    "DEFAULT_LOOKUP_TIMEOUT",
    "LOG_LEVELS",
    "ClusterConfig",
    "Config",
    "DNSConfig",
    "IPNetwork",
    "LogLevel",
    "LogLevels",
    "RoutingConfig",
    "Timeouts",
    "describe",
    "namespace_error",
    "parse_duration",
]

type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
type LogLevel = Literal["trace", "debug", "info", "warning", "error"]

LOG_LEVELS: tuple[LogLevel, ...] = ("trace", "debug", "info", "warning", "error")
#: The names never resolved in the cluster when ``dns.excludeSuffixes`` is not set: top-level
#: domains no cluster uses, whose lookups would only add a round trip to the cluster.
DEFAULT_EXCLUDE_SUFFIXES = (".arpa", ".com", ".io", ".net", ".org", ".ru")
#: How long the laptop's DNS server waits for the cluster to answer one lookup.
DEFAULT_LOOKUP_TIMEOUT = 8.0

# A Go duration (time.ParseDuration): one or more <number><unit>, e.g. 1h30m, 1.5s, 250ms.
# Go takes both the micro sign (U+00B5) and the Greek mu (U+03BC) for microseconds.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_HINT = "(such as 3s, 1m30s or 2.5)"
# A namespace name is an RFC 1123 label, as Kubernetes validates it.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# The chart's values.schema.json ``dnsSuffix``: labels of letters, digits, '_' and '-'.
_DNS_SUFFIX = re.compile(r"\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def describe(value: object) -> str:
    """What a YAML value is, for a message: ``a list``, ``the string 'x'``, ``the number 5``."""
    match value:
        case bool():
            return f"the boolean {str(value).lower()}"
        case int() | float():
            return f"the number {value}"
        case str():
            return f"the string {value!r}"
        case list() | tuple():
            return "a list"
        case Mapping():
            return "a mapping"
        case None:
            return "nothing"
        case _:
            return f"a {type(value).__name__}"


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a Go duration string (``1m30s``, ``500ms``).

    Raises:
        ValueError: Not a duration, or a negative one; the message quotes the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"{describe(value)} is not a duration {_DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError(f"{describe(value)} is not a duration {_DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative: a duration is 0 or more")
    return seconds


def _parse_duration_text(value: str) -> float:
    text = value.strip()
    try:
        # A bare number of seconds, as YAML would have given it unquoted.
        return float(text) if text and text[-1].isdigit() else _go_duration(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration {_DURATION_HINT}") from None


def _go_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text[1:] if text.startswith(("-", "+")) else text
    position, seconds = 0, 0.0
    for part in _DURATION_PART.finditer(rest):
        if part.start() != position:
            break
        seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        position = part.end()
    if not rest or position != len(rest):
        raise ValueError(text)
    return sign * seconds


def _custom(reason: str) -> PydanticCustomError:
    # The template is only a placeholder so that a value's braces are never formatted.
    return PydanticCustomError("config", "{reason}", {"reason": reason})


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise _custom(str(error)) from None


def _log_level(value: object) -> LogLevel:
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "warn":  # logrus, which the original uses, takes both spellings
        text = "warning"
    for level in LOG_LEVELS:
        if text == level:
            return level
    raise _custom(f"{value!r} is not a log level (one of {', '.join(LOG_LEVELS)})")


def namespace_error(value: object) -> str | None:
    """What is wrong with ``value`` as a Kubernetes namespace name; None if nothing."""
    if not isinstance(value, str):
        return f"expected a namespace name, got {describe(value)}"
    if not _NAMESPACE.fullmatch(value):
        return (
            f"{value!r} is not a namespace name"
            " (lowercase letters, digits and '-', at most 63 characters)"
        )
    return None


def _namespace(value: object) -> str:
    problem = namespace_error(value)
    if problem:
        raise _custom(problem)
    return str(value)


def _dns_suffix(value: object) -> str:
    if isinstance(value, str) and _DNS_SUFFIX.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise _custom(f"expected a DNS suffix, got {describe(value)}")
    raise _custom(f"{value!r} is not a DNS suffix (such as .local or .cluster.local)")


def _network(value: object) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise _custom(f"expected a subnet such as 10.0.0.0/16, got {describe(value)}")
    hint = f"{value!r} is not a subnet in CIDR notation (such as 10.0.0.0/16)"
    if "/" not in value:
        # ipaddress would take a lone address as a /32 (or /128); Go's ParseCIDR, the
        # original's parser, and the chart's schema want the prefix length written out.
        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            raise _custom(hint) from None
        raise _custom(f"{hint}: it has no prefix length")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _custom(hint) from None
    # Host bits set is most likely a typo in the prefix length or the address; guessing
    # which would route a subnet the user did not mean.
    raise _custom(f"{value!r} has host bits set (the subnet would be {network})")


def _key(name: str) -> str:
    """The ``config.yml`` key of a field: camelCase, with the original's ``API``."""
    return to_camel(name).replace("Api", "API")


Duration = Annotated[float, BeforeValidator(_duration)]
Namespace = Annotated[str, PlainValidator(_namespace)]
DNSSuffix = Annotated[str, PlainValidator(_dns_suffix)]
Network = Annotated[IPNetwork, PlainValidator(_network)]


class _Section(BaseModel):
    """A mapping of ``config.yml``; YAML's empty value (``timeouts:``) is an empty mapping."""

    model_config = ConfigDict(
        alias_generator=_key, populate_by_name=True, frozen=True, extra="ignore"
    )

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, Mapping | BaseModel):
            return data
        raise _custom(f"expected a mapping, got {describe(data)}")


class Timeouts(_Section):
    """``timeouts``: seconds each step may take before it fails.

    Attributes:
        agent_install: A traffic-agent arriving after its injection.
        apply: A Kubernetes manifest being applied.
        cluster_connect: Reaching the Kubernetes API server.
        connectivity_check: Checking whether the cluster is already reachable from here.
        endpoint_dial: Dialling a cluster address whose IP is known.
        helm: A Helm operation (install, upgrade, uninstall) on the traffic-manager.
        intercept: An intercept becoming active.
        proxy_dial: An outbound connection being established.
        roundtrip_latency: Added to ``endpoint_dial`` when the dial happens in the cluster.
        traffic_manager_api: One call to the traffic-manager's API.
        traffic_manager_connect: The port-forward to, and first contact with, the manager.
    """

    agent_install: Duration = 120.0
    apply: Duration = 60.0
    cluster_connect: Duration = 20.0
    connectivity_check: Duration = 0.5
    endpoint_dial: Duration = 3.0
    helm: Duration = 30.0
    intercept: Duration = 30.0
    proxy_dial: Duration = 5.0
    roundtrip_latency: Duration = 2.0
    traffic_manager_api: Duration = 15.0
    traffic_manager_connect: Duration = 60.0


class LogLevels(_Section):
    """``logLevels``: how much each daemon logs."""

    user_daemon: Annotated[LogLevel, PlainValidator(_log_level)] = "info"
    root_daemon: Annotated[LogLevel, PlainValidator(_log_level)] = "info"


class ClusterConfig(_Section):
    """``cluster``: which traffic-manager to use, and which namespaces to map.

    Attributes:
        default_manager_namespace: The traffic-manager's namespace; None when not set (see
            :func:`telepresence.config.manager_namespace` for the order of the sources).
        mapped_namespaces: The namespaces whose names the laptop resolves (empty: all the
            traffic-manager lets the user see).
    """

    default_manager_namespace: Namespace | None = None
    mapped_namespaces: list[Namespace] = Field(default_factory=list)


class DNSConfig(_Section):
    """``dns``: which names the laptop resolves in the cluster.

    Attributes:
        include_suffixes: Names ending in one of these always go to the cluster.
        exclude_suffixes: Names ending in one of these never do (unless an include suffix
            matches too); None when not set: :data:`DEFAULT_EXCLUDE_SUFFIXES`.
        lookup_timeout: Seconds to wait for the cluster to answer one lookup.
    """

    include_suffixes: list[DNSSuffix] = Field(default_factory=list)
    exclude_suffixes: list[DNSSuffix] | None = None
    lookup_timeout: Duration = DEFAULT_LOOKUP_TIMEOUT


class RoutingConfig(_Section):
    """``routing``: which subnets the laptop routes to the cluster besides its own.

    Attributes:
        also_proxy_subnets: Routed to the cluster too (a database only the cluster reaches).
        never_proxy_subnets: Never routed to the cluster, even inside a cluster subnet.
        allow_conflicting_subnets: Cluster subnets routed even where they overlap a route
            the laptop already has.
    """

    also_proxy_subnets: list[Network] = Field(default_factory=list)
    never_proxy_subnets: list[Network] = Field(default_factory=list)
    allow_conflicting_subnets: list[Network] = Field(default_factory=list)


class Config(_Section):
    """The whole ``config.yml``; every key is optional."""

    timeouts: Timeouts = Field(default_factory=Timeouts)
    log_levels: LogLevels = Field(default_factory=LogLevels)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dns: DNSConfig = Field(default_factory=DNSConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
