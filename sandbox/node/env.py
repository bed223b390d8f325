"""What a container's process starts with: its environment, ``/etc/resolv.conf`` and ``/etc/hosts``.

The kubelet builds these itself, before the container runtime is asked for anything, and a
program in a pod observes every detail of them; this module reproduces kubelet's
(``pkg/kubelet/kubelet_pods.go``, ``pkg/kubelet/envvars``, ``pkg/kubelet/network/dns``) as
pure functions over the pod and the stored objects, so the sandbox's kubelet only passes the
result on (``os.execve``'s environment, a file bind-mounted over ``/etc/resolv.conf``).

The environment (``makeEnvironmentVariables``) is built in three layers, each overriding
the one before:

1. *service links*: Docker-link-style variables for every Service with a cluster IP in the
   pod's namespace (unless ``enableServiceLinks: false``), and always for the ``kubernetes``
   Service in ``default``, which is how in-cluster clients find the API server;
2. ``envFrom``: every key of a ConfigMap or Secret, with an optional prefix;
3. ``env``, in order: a literal ``value`` with ``$(VAR)`` references expanded against what
   is defined so far (earlier ``env`` entries, ``envFrom`` and the service links, never a
   later entry), or a ``valueFrom`` source: a field of the pod, a resource of a container, a
   ConfigMap or Secret key.

A missing ConfigMap, Secret or key fails the whole container with kubelet's message (the
container waits in ``CreateContainerConfigError``) unless the reference is ``optional``.
Secret values are bytes; they become ``str`` with ``surrogateescape``, so that
``os.execve`` passes the original bytes through unchanged, as Go's ``string(v)`` does.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

from sandbox.apiserver.goformat import go_quote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from sandbox.apiserver.store import Store

CONFIGMAPS: Final = ("", "configmaps")
SECRETS: Final = ("", "secrets")
SERVICES: Final = ("", "services")

#: What a sandbox node offers its pods: the limit the downward API reports for a container
#: without one (kubelet reports the node's allocatable resources then). A modest laptop-sized
#: node, so that programs sizing thread pools or heaps from it stay sane.
NODE_ALLOCATABLE: Final[Mapping[str, str]] = {
    "cpu": "4",
    "memory": "8Gi",
    "ephemeral-storage": "50Gi",
    "pods": "110",
}

#: Services whose variables every pod gets, from the ``default`` namespace, even with
#: ``enableServiceLinks: false`` (kubelet's ``masterServices``).
_MASTER_SERVICES: Final = frozenset({"kubernetes"})
#: Resources whose missing limit defaults to the node's allocatable amount
#: (``MergeContainerResourceLimits``).
_DEFAULTED_LIMITS: Final = ("cpu", "memory", "ephemeral-storage")
#: glibc reads at most this many nameservers, and kubelet trims the list to it.
MAX_NAMESERVERS: Final = 3
#: kubelet's limits on the search list (``MaxDNSSearchPaths``, ``MaxDNSSearchListChars``).
MAX_SEARCHES: Final = 32
MAX_SEARCH_CHARS: Final = 2048
_HOSTNAME_MAX: Final = 63
_FQDN_MAX: Final = 64
_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME: Final = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_QUANTITY: Final = re.compile(
    r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?"
)
_SUFFIXES: Final[Mapping[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


class EnvError(Exception):
    """The container cannot be configured; the message is kubelet's
    ``CreateContainerConfigError`` text, e.g. ``configmap "x" not found``."""


# -- the environment ---------------------------------------------------------------------------


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    store: Store,
    pod_ip: str,
    host_ip: str,
    node_name: str,
    allocatable: Mapping[str, str] = NODE_ALLOCATABLE,
) -> dict[str, str]:
    """The environment of ``container``, as kubelet's ``makeEnvironmentVariables`` builds it.

    Args:
        pod: The pod, as stored.
        container: One of its containers (or init containers).
        store: Where Services, ConfigMaps and Secrets are read.
        pod_ip: The pod's address (``status.podIP``).
        host_ip: The node's address (``status.hostIP``).
        node_name: The node's name (``spec.nodeName``; the pod's own when it has one).
        allocatable: The node's allocatable resources, for limits the container lacks.

    Returns:
        Every variable, service links first, later layers overriding earlier ones.

    Raises:
        EnvError: A referenced ConfigMap, Secret, key or field cannot be resolved.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = metadata.get("namespace", "")
    links = spec.get("enableServiceLinks") is not False
    environment = service_links(store.list(SERVICES), namespace, enable_service_links=links)
    sources = _Sources(store, namespace)
    # tmpEnv in kubelet: envFrom, then env; service links only fill what these leave out.
    defined: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        data: Mapping[str, str] | None = None
        if (ref := source.get("configMapRef")) is not None:
            data = sources.config_map(ref.get("name", ""), optional=bool(ref.get("optional")))
        elif (ref := source.get("secretRef")) is not None:
            data = sources.secret(ref.get("name", ""), optional=bool(ref.get("optional")))
        for key, value in (data or {}).items():
            name = prefix + key
            # An environment cannot carry a name with '=' or a control character; the API's
            # relaxed rule (any printable ASCII but '=') is what a key must meet to be used.
            if _is_env_var_name(name):
                defined[name] = value
    for var in container.get("env") or []:
        name = var.get("name", "")
        value = var.get("value") or ""
        value_from = var.get("valueFrom")
        if value:
            value = expand(value, lambda ref: _lookup(ref, defined, environment))
        elif value_from is not None:
            resolved = _value_from(
                value_from, pod, container, sources, pod_ip, host_ip, node_name, allocatable
            )
            if resolved is None:  # an optional reference that is not there: no variable
                continue
            value = resolved
        defined[name] = value
    environment.update(defined)
    return environment


def command_and_args(
    container: Mapping[str, Any], environment: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """The container's ``command`` and ``args`` with ``$(VAR)`` references to its environment
    expanded (``ExpandContainerCommandAndArgs``): ``args: ["$(GREETING)"]`` runs with the
    variable's value, with no shell involved."""

    def expanded(words: Iterable[Any]) -> list[str]:
        return [expand(str(word), lambda ref: _lookup(ref, environment)) for word in words]

    return expanded(container.get("command") or ()), expanded(container.get("args") or ())


def _lookup(reference: str, *layers: Mapping[str, str]) -> str:
    for layer in layers:
        if reference in layer:
            return layer[reference]
    return f"$({reference})"  # an unknown reference stays as written


def _is_env_var_name(name: str) -> bool:
    return bool(name) and all(" " <= ch <= "~" and ch != "=" for ch in name)


def _value_from(  # noqa: PLR0917 (kubelet's inputs to one variable)
    value_from: Mapping[str, Any],
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    sources: _Sources,
    pod_ip: str,
    host_ip: str,
    node_name: str,
    allocatable: Mapping[str, str],
) -> str | None:
    if (field := value_from.get("fieldRef")) is not None:
        return pod_field_value(
            pod,
            field.get("fieldPath", ""),
            api_version=field.get("apiVersion") or "v1",
            pod_ip=pod_ip,
            host_ip=host_ip,
            node_name=node_name,
        )
    if (selector := value_from.get("resourceFieldRef")) is not None:
        return resource_value(pod, container, selector, allocatable)
    if (ref := value_from.get("configMapKeyRef")) is not None:
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        data = sources.config_map(name, optional=optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise EnvError(f"couldn't find key {key} in ConfigMap {sources.namespace}/{name}")
        return data[key]
    if (ref := value_from.get("secretKeyRef")) is not None:
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        data = sources.secret(name, optional=optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise EnvError(f"couldn't find key {key} in Secret {sources.namespace}/{name}")
        return data[key]
    return ""


class _Sources:
    """The ConfigMaps and Secrets one container reads, each fetched once (kubelet keeps them
    in maps for the same reason: every reference sees the same version)."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self._config_maps: dict[str, Mapping[str, str] | None] = {}
        self._secrets: dict[str, Mapping[str, str] | None] = {}

    def config_map(self, name: str, *, optional: bool) -> Mapping[str, str] | None:
        """Its ``data`` (``binaryData`` is not for the environment), None when it is missing
        and ``optional``."""
        if name not in self._config_maps:
            obj = self.store.get(CONFIGMAPS, self.namespace, name)
            self._config_maps[name] = None if obj is None else dict(obj.get("data") or {})
        data = self._config_maps[name]
        if data is None and not optional:
            raise EnvError(f"configmap {go_quote(name)} not found")
        return data

    def secret(self, name: str, *, optional: bool) -> Mapping[str, str] | None:
        if name not in self._secrets:
            obj = self.store.get(SECRETS, self.namespace, name)
            self._secrets[name] = None if obj is None else decode_secret_text(obj)
        data = self._secrets[name]
        if data is None and not optional:
            raise EnvError(f"secret {go_quote(name)} not found")
        return data


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's ``data``: base64 in the object, bytes in a volume or the environment."""
    decoded: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            continue  # the API refuses such a Secret: nothing sensible to give
    return decoded


def decode_secret_text(secret: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value.decode("utf-8", "surrogateescape")
        for key, value in decode_secret_data(secret).items()
    }


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """``$(VAR)`` expansion as Kubernetes does it (``third_party/forked/golang/expansion``).

    ``$(NAME)`` is replaced by ``mapping(NAME)``; ``$$`` is a literal ``$`` (so ``$$(A)``
    stays ``$(A)``); an unclosed ``$(`` and a ``$`` before anything else are kept as written.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    out.append(mapping(text[cursor + 2 : closer]))
                    advance = closer - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# -- service links -----------------------------------------------------------------------------


def service_links(
    services: Iterable[Mapping[str, Any]], namespace: str, *, enable_service_links: bool
) -> dict[str, str]:
    """The variables of kubelet's ``getServiceEnvVarMap``: each Service of ``namespace`` with
    a cluster IP (when links are enabled) and the ``kubernetes`` Service of ``default``
    (always; a Service of that name in the pod's own namespace takes its place)."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for service in services:
        if not _has_cluster_ip(service):
            continue
        metadata = service.get("metadata") or {}
        name, service_namespace = metadata.get("name", ""), metadata.get("namespace", "")
        if service_namespace == "default" and name in _MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif service_namespace == namespace and enable_service_links:
            chosen[name] = service
    variables: dict[str, str] = {}
    for name in sorted(chosen):
        variables.update(_service_variables(chosen[name]))
    return variables


def _has_cluster_ip(service: Mapping[str, Any]) -> bool:
    # v1helper.IsServiceIPSet: headless ("None") and ExternalName ("") Services have none.
    return (service.get("spec") or {}).get("clusterIP") not in (None, "", "None")


def _variable_name(name: str) -> str:
    return name.replace("-", "_").upper()


def _service_variables(service: Mapping[str, Any]) -> dict[str, str]:
    """``envvars.FromServices`` for one Service: ``_SERVICE_HOST``/``_SERVICE_PORT`` and a
    name per named port, then the Docker link variables of every port."""
    prefix = _variable_name(service["metadata"]["name"])
    spec = service.get("spec") or {}
    ip = spec["clusterIP"]
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    variables = {f"{prefix}_SERVICE_HOST": ip}
    if not ports:
        return variables
    variables[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port", 0))
    for port in ports:
        if port.get("name"):
            variables[f"{prefix}_SERVICE_PORT_{_variable_name(port['name'])}"] = str(port["port"])
    for index, port in enumerate(ports):
        protocol = port.get("protocol") or "TCP"
        number = port.get("port", 0)
        address = f"{protocol.lower()}://{_join_host_port(ip, number)}"
        if index == 0:
            variables[f"{prefix}_PORT"] = address  # Docker special-cases the first port
        port_prefix = f"{prefix}_PORT_{number}_{protocol.upper()}"
        variables[port_prefix] = address
        variables[f"{port_prefix}_PROTO"] = protocol.lower()
        variables[f"{port_prefix}_PORT"] = str(number)
        variables[f"{port_prefix}_ADDR"] = ip
    return variables


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the downward API --------------------------------------------------------------------------


def pod_field_value(
    pod: Mapping[str, Any],
    field_path: str,
    *,
    api_version: str = "v1",
    pod_ip: str = "",
    host_ip: str = "",
    node_name: str = "",
) -> str:
    """A ``fieldRef``'s value (``podFieldSelectorRuntimeValue``, then
    ``fieldpath.ExtractFieldPathAsString`` for metadata). Volumes pass no addresses: only
    metadata fields are allowed there.

    Raises:
        EnvError: The field is not one the downward API offers.
    """
    if api_version != "v1":
        raise EnvError(f"unsupported pod version: {api_version}")
    path, subscript = _split_subscript(field_path)
    if subscript is not None and path not in ("metadata.annotations", "metadata.labels"):
        raise EnvError(f"field label does not support subscript: {field_path}")
    if subscript is None and field_path not in _FIELD_LABELS:
        raise EnvError(f"field label not supported: {field_path}")
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    match field_path:
        case "spec.nodeName" | "spec.host":
            return str(spec.get("nodeName") or node_name)
        case "spec.serviceAccountName":
            return str(spec.get("serviceAccountName", ""))
        case "status.hostIP" | "status.hostIPs":
            return host_ip
        case "status.podIP" | "status.podIPs":
            return pod_ip
    if subscript is not None:
        key = subscript.lower() if path == "metadata.annotations" else subscript
        if not _full_match(_QUALIFIED_NAME, key) or len(key.rpartition("/")[2]) > 63:
            raise EnvError(f"invalid key subscript in {field_path}: not a qualified name")
        attribute = "annotations" if path == "metadata.annotations" else "labels"
        return str((metadata.get(attribute) or {}).get(subscript, ""))
    match field_path:
        case "metadata.annotations":
            return format_map(metadata.get("annotations") or {})
        case "metadata.labels":
            return format_map(metadata.get("labels") or {})
        case "metadata.name" | "metadata.namespace" | "metadata.uid":
            return str(metadata.get(field_path.removeprefix("metadata."), ""))
    raise EnvError(f"unsupported fieldPath: {field_path}")


#: ``ConvertDownwardAPIFieldLabel``'s list; the last three pass it but have no value.
_FIELD_LABELS: Final = frozenset(
    {
        "metadata.annotations",
        "metadata.labels",
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.host",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
        "spec.restartPolicy",
        "spec.schedulerName",
        "status.phase",
    }
)


def _split_subscript(field_path: str) -> tuple[str, str | None]:
    """``metadata.labels['app']`` -> (``metadata.labels``, ``app``)
    (``fieldpath.SplitMaybeSubscriptedPath``)."""
    if not field_path.endswith("']"):
        return field_path, None
    path, found, subscript = field_path.removesuffix("']").partition("['")
    if not found or not path:
        return field_path, None
    return path, subscript


def _full_match(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.fullmatch(text) is not None


def format_map(values: Mapping[str, Any]) -> str:
    """Labels or annotations as the downward API writes them: ``key="value"`` lines, sorted,
    values quoted as Go's ``%q`` does (``fieldpath.FormatMap``)."""
    return "\n".join(f"{key}={go_quote(str(values[key]))}" for key in sorted(values))


def resource_value(
    pod: Mapping[str, Any],
    container: Mapping[str, Any] | None,
    selector: Mapping[str, Any],
    allocatable: Mapping[str, str] = NODE_ALLOCATABLE,
) -> str:
    """A ``resourceFieldRef``'s value: the container's request or limit divided by the
    divisor, rounded up; a missing cpu, memory or ephemeral-storage limit is the node's
    allocatable amount (``ExtractResourceValueByContainerNameAndNodeAllocatable``).

    Args:
        pod: The pod.
        container: The container asking (env), or None (a volume names it).
        selector: ``{containerName, resource, divisor}``.
        allocatable: The node's allocatable resources.

    Raises:
        EnvError: Unknown container or resource.
    """
    container_name = selector.get("containerName") or ""
    if container_name or container is None:
        container = _find_container(pod, container_name)
    requested = selector.get("resource", "")
    kind, _, name = requested.partition(".")
    if kind not in ("limits", "requests") or not (
        name in _DEFAULTED_LIMITS or name.startswith("hugepages-")
    ):
        raise EnvError(f"unsupported container resource : {requested}")
    resources = container.get("resources") or {}
    amounts = dict(resources.get(kind) or {})
    if kind == "limits":
        for defaulted in _DEFAULTED_LIMITS:
            if defaulted in allocatable and quantity(amounts.get(defaulted, "0")) == 0:
                amounts[defaulted] = allocatable[defaulted]
    amount = quantity(amounts.get(name, "0"))
    divisor = quantity(str(selector.get("divisor") or "0")) or Fraction(1)
    if name == "cpu":
        # convertResourceCPUToString: in millicores, rounded up.
        return str(math.ceil(Fraction(_milli(amount), _milli(divisor))))
    return str(math.ceil(Fraction(math.ceil(amount), max(math.ceil(divisor), 1))))


def _milli(amount: Fraction) -> int:
    """``Quantity.MilliValue``: thousandths, rounded up."""
    return math.ceil(amount * 1000)


def _find_container(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if container.get("name") == name:
                return dict(container)
    raise EnvError(f"container {name} not found")


def quantity(text: str | float) -> Fraction:
    """A Kubernetes quantity (``500m``, ``1.5Gi``, ``1e3``) as an exact number.

    Raises:
        EnvError: Not a quantity.
    """
    if isinstance(text, int | float):
        return Fraction(text)
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise EnvError(f"quantities must match the regular expression: {text!r}")
    sign, number, suffix, exponent = match.groups()
    value = Fraction(number) * (_SUFFIXES[suffix or ""])
    if exponent is not None:
        value *= Fraction(10) ** int(exponent)
    return -value if sign == "-" else value


# -- DNS: resolv.conf and the hosts file ------------------------------------------------------


def resolv_conf(
    pod: Mapping[str, Any],
    *,
    nameserver: str,
    cluster_domain: str,
    host_resolv_conf: str | None = None,
) -> str:
    """The pod's ``/etc/resolv.conf`` (kubelet's ``GetPodDNS``, written as the runtime does).

    ``ClusterFirst`` (the default; ``ClusterFirstWithHostNet`` too) asks the cluster DNS
    with the namespace's search path and ``ndots:5``; ``Default`` takes the node's settings;
    ``None`` only ``dnsConfig``, which is merged into the others too.

    Args:
        pod: The pod.
        nameserver: The cluster DNS server (kubelet's ``--cluster-dns``).
        cluster_domain: e.g. ``cluster.local`` (``--cluster-domain``).
        host_resolv_conf: The node's resolv.conf (``--resolv-conf``). None is kubelet's
            ``--resolv-conf=""``: the node's settings are "ask 127.0.0.1, search ``.``",
            which resolves nothing, so no query of a sandbox pod ever leaves the machine.
    """
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    host_servers: list[str]
    host_searches: list[str]
    host_options: list[str]
    if host_resolv_conf is None:
        host_servers, host_searches, host_options = ["127.0.0.1"], ["."], []
    else:
        host_servers, host_searches, host_options = parse_resolv_conf(host_resolv_conf)
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    cluster = policy == "ClusterFirstWithHostNet" or (
        policy == "ClusterFirst" and not spec.get("hostNetwork")
    )
    servers: list[str]
    if policy == "None":
        servers, searches, options = [], [], []
    elif cluster and nameserver:
        servers = [nameserver]
        searches = host_searches if host_resolv_conf is not None else []
        if cluster_domain:
            own = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
            searches = _unique([*own, *searches])
        options = ["ndots:5"]
    else:
        # Default, ClusterFirst on the host network, or no cluster DNS to send pods to.
        servers, searches, options = host_servers, host_searches, host_options
    config = spec.get("dnsConfig") or {}
    servers = _unique(servers + list(config.get("nameservers") or []))
    searches = _unique(searches + list(config.get("searches") or []))
    options = _merge_options(options, config.get("options") or [])
    servers = servers[:MAX_NAMESERVERS]
    searches = _fit_searches(searches)
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {server}" for server in servers]
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """Nameservers, search domains (the last ``search`` line; trailing dots dropped, ``.``
    left out) and options of a resolv.conf, as kubelet's ``parseResolvConf`` reads it."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            servers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            options = _merge_options(options, [{"name": o} for o in fields[1:]])
    return servers, searches, options


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(existing: list[str], added: Iterable[Mapping[str, Any]]) -> list[str]:
    """``mergeDNSOptions``: by name, the pod's ``dnsConfig`` options winning."""
    merged: dict[str, str] = {}
    for text in existing:
        name, _, value = text.partition(":")
        merged[name] = value
    for option in added:
        name, _, value = str(option.get("name", "")).partition(":")
        merged[name] = str(option["value"]) if option.get("value") is not None else value
    return [f"{name}:{value}" if value else name for name, value in merged.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    """``formDNSSearchFitsLimits``: at most 32 domains, at most 2048 characters in all."""
    searches = searches[:MAX_SEARCHES]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches = searches[:-1]
    return searches


def pod_hostname(pod: Mapping[str, Any], *, cluster_domain: str) -> tuple[str, str]:
    """The pod's short host name and its domain (``GeneratePodHostNameAndDomain``): its
    ``hostname`` or name, cut to 63 characters, and ``subdomain.namespace.svc.domain`` when
    it has a ``subdomain``.

    Raises:
        EnvError: ``hostname`` or ``subdomain`` is not a DNS label.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = metadata.get("name", "")
    hostname = name
    if requested := spec.get("hostname"):
        if not _is_dns_label(requested):
            raise EnvError(f"pod Hostname {go_quote(requested)} is not a valid DNS label")
        hostname = requested
    if len(hostname) > _HOSTNAME_MAX:
        # The kernel's limit is 64 bytes with the terminating NUL; a name cut at a '-' or '.'
        # would not be a valid label, so those go too.
        hostname = hostname[:_HOSTNAME_MAX].rstrip("-.")
        if not hostname:
            raise EnvError(f"hostname for pod {go_quote(name)} was invalid")
    domain = ""
    if subdomain := spec.get("subdomain"):
        if not _is_dns_label(subdomain):
            raise EnvError(f"pod Subdomain {go_quote(subdomain)} is not a valid DNS label")
        domain = f"{subdomain}.{metadata.get('namespace', '')}.svc.{cluster_domain}"
    return hostname, domain


def _is_dns_label(text: str) -> bool:
    return len(text) <= 63 and _full_match(_DNS1123_LABEL, text)


def hostname(pod: Mapping[str, Any], *, cluster_domain: str) -> str:
    """The host name the pod's UTS namespace gets: the short name, or with
    ``setHostnameAsFQDN`` the fully qualified one (at most 64 characters).

    Raises:
        EnvError: The names are not valid, or the FQDN is too long.
    """
    short, domain = pod_hostname(pod, cluster_domain=cluster_domain)
    if not (pod.get("spec") or {}).get("setHostnameAsFQDN") or not domain:
        return short
    fqdn = f"{short}.{domain}"
    if len(fqdn) > _FQDN_MAX:
        raise EnvError(
            f"failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too "
            f"long (64 characters is the max, {len(fqdn)} characters requested)"
        )
    return fqdn


def hosts_file(pod: Mapping[str, Any], *, pod_ip: str, cluster_domain: str) -> str:
    """The pod's ``/etc/hosts``, as kubelet's ``managedHostsFileContent`` writes it: the
    loopback names, the pod's address with its names, then the pod's ``hostAliases``.

    Raises:
        EnvError: The pod's ``hostname`` or ``subdomain`` is not a DNS label.
    """
    short, domain = pod_hostname(pod, cluster_domain=cluster_domain)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        lines.append(f"{pod_ip}\t{short}.{domain}\t{short}" if domain else f"{pod_ip}\t{short}")
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += [f"{a.get('ip', '')}\t" + "\t".join(a.get("hostnames") or []) for a in aliases]
    return "".join(line + "\n" for line in lines)
