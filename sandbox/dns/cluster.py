"""What the cluster DNS knows: Services and their endpoints, kept current from object changes.

The server reads the cluster through a :class:`ClusterView`, a read-only source of Services,
EndpointSlices, Endpoints and Pods and a feed of their changes; :class:`StoreView` is that view
over the API server's in-process store. :class:`ClusterIndex` turns the objects into what
names need: services by namespace and name, each service's endpoints, and a reverse map from
an IP to whatever has it. A change re-derives only the service it belongs to, so a query never
scans the cluster.

Endpoints come from the service's EndpointSlices (label ``kubernetes.io/service-name``) when
it has any, else from its Endpoints object, as CoreDNS has done since it moved to slices. An
endpoint counts when its ``ready`` condition is true or unset (the API says unset means
ready), or when the service publishes not-ready addresses.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from sandbox.apiserver.store import Change, Key, Store

log = logging.getLogger("sandbox.dns")
Obj = dict[str, Any]
Kind = Literal["services", "endpointslices", "endpoints", "pods"]
#: Called with the kind, the object before the change (None if new) and after (None if gone).
type OnChange = Callable[[Kind, Obj | None, Obj | None], None]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ClusterView(Protocol):
    """The objects the DNS answers from, read-only, and a feed of changes to them."""

    def services(self) -> Iterable[Obj]: ...
    def endpoint_slices(self) -> Iterable[Obj]: ...
    def endpoints(self) -> Iterable[Obj]: ...
    def pods(self) -> Iterable[Obj]: ...

    def subscribe(self, on_change: OnChange) -> Callable[[], None]:
        """Call ``on_change`` after every change from now on; returns the unsubscriber."""
        ...


_STORE_KINDS: dict[Key, Kind] = {
    ("", "services"): "services",
    ("discovery.k8s.io", "endpointslices"): "endpointslices",
    ("", "endpoints"): "endpoints",
    ("", "pods"): "pods",
}


class StoreView:
    """A :class:`ClusterView` over the API server's store, in the same process."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def services(self) -> Iterable[Obj]:
        return self._store.list(("", "services"))

    def endpoint_slices(self) -> Iterable[Obj]:
        return self._store.list(("discovery.k8s.io", "endpointslices"))

    def endpoints(self) -> Iterable[Obj]:
        return self._store.list(("", "endpoints"))

    def pods(self) -> Iterable[Obj]:
        return self._store.list(("", "pods"))

    def subscribe(self, on_change: OnChange) -> Callable[[], None]:
        def listener(key: Key, change: Change) -> None:
            if (kind := _STORE_KINDS.get(key)) is not None:
                current = None if change.type == "DELETED" else change.object
                on_change(kind, change.previous, current)

        self._store.listeners.append(listener)
        return lambda: self._store.listeners.remove(listener)


# -- the objects, as DNS needs them -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    protocol: str  # lower case, as in an SRV name: tcp, udp, sctp
    number: int


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    headless: bool
    external_name: str | None
    ports: tuple[Port, ...]
    publish_not_ready: bool


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    hostname: str | None
    ready: bool

    @property
    def label(self) -> str:
        """Its name under the service: the hostname, or the address with dashes (as CoreDNS)."""
        return self.hostname or self.address.replace(".", "-").replace(":", "-")


@dataclass(frozen=True, slots=True)
class EndpointGroup:
    """Endpoints that share ports: one EndpointSlice, or one subset of an Endpoints object."""

    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class ServiceName:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class EndpointName:
    namespace: str
    service: str
    label: str


@dataclass(frozen=True, slots=True)
class PodName:
    namespace: str
    address: str


#: What an IP is the address of, for PTR answers.
Owner = ServiceName | EndpointName | PodName


def parse_service(obj: Obj) -> Service:
    metadata, spec = obj.get("metadata", {}), obj.get("spec") or {}
    external_name = None
    if spec.get("type") == "ExternalName" and spec.get("externalName"):
        external_name = str(spec["externalName"]).rstrip(".").lower()
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    headless = "None" in ips
    return Service(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        cluster_ips=() if headless or external_name else _addresses(ips),
        headless=headless and external_name is None,
        external_name=external_name,
        ports=_ports(spec.get("ports")),
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
    )


def parse_endpoint_slice(obj: Obj) -> EndpointGroup | None:
    if obj.get("addressType") not in ("IPv4", "IPv6"):
        return None  # FQDN slices name no addresses for DNS to give
    endpoints: list[Endpoint] = []
    for endpoint in obj.get("endpoints") or ():
        ready = (endpoint.get("conditions") or {}).get("ready") is not False
        endpoints.extend(
            Endpoint(address, endpoint.get("hostname"), ready)
            for address in _addresses(endpoint.get("addresses") or ())
        )
    return EndpointGroup(_ports(obj.get("ports")), tuple(endpoints))


def parse_endpoints(obj: Obj) -> tuple[EndpointGroup, ...]:
    groups = []
    for subset in obj.get("subsets") or ():
        endpoints = [
            Endpoint(address, entry.get("hostname"), ready)
            for field, ready in (("addresses", True), ("notReadyAddresses", False))
            for entry in subset.get(field) or ()
            for address in _addresses([entry.get("ip")])
        ]
        groups.append(EndpointGroup(_ports(subset.get("ports")), tuple(endpoints)))
    return tuple(groups)


def _ports(specs: Iterable[Obj] | None) -> tuple[Port, ...]:
    return tuple(
        Port(str(spec.get("name") or ""), str(spec.get("protocol") or "TCP").lower(), port)
        for spec in specs or ()
        if isinstance(port := spec.get("port"), int)
    )


def _addresses(texts: Iterable[object]) -> tuple[str, ...]:
    """The valid IPs among ``texts``, in the compressed form the reverse map is keyed by."""
    addresses = []
    for text in texts:
        try:
            addresses.append(ipaddress.ip_address(str(text)).compressed)
        except ValueError:
            continue
    return tuple(addresses)


def _key(obj: Obj | None) -> tuple[str, str]:
    metadata = (obj or {}).get("metadata", {})
    return metadata.get("namespace", ""), metadata.get("name", "")


# -- the index --------------------------------------------------------------------------------


class ClusterIndex:
    """Services, their endpoints and a reverse map, updated one change at a time."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], Service] = {}
        #: Bumped on every change; the zone's SOA serial.
        self.serial = 1
        self._services_in: Counter[str] = Counter()
        self._slices: dict[tuple[str, str], dict[str, EndpointGroup]] = {}
        self._endpoints: dict[tuple[str, str], tuple[EndpointGroup, ...]] = {}
        self._owners: dict[str, Counter[Owner]] = {}
        self._published: dict[object, frozenset[tuple[str, Owner]]] = {}

    def follow(self, view: ClusterView) -> Callable[[], None]:
        """Load the view's objects and apply its changes from now on; returns the unfollower."""
        unsubscribe = view.subscribe(self._apply_logging_errors)
        current: list[tuple[Kind, Iterable[Obj]]] = [
            ("services", view.services()),
            ("endpointslices", view.endpoint_slices()),
            ("endpoints", view.endpoints()),
            ("pods", view.pods()),
        ]
        for kind, objects in current:
            for obj in objects:
                self.apply(kind, None, obj)
        return unsubscribe

    def _apply_logging_errors(self, kind: Kind, previous: Obj | None, current: Obj | None) -> None:
        # Called inside the store's writes: a fault here must not fail the API server's write.
        try:
            self.apply(kind, previous, current)
        except Exception:
            namespace, name = _key(current or previous)
            log.exception("cluster DNS skipped a change to %s %s/%s", kind, namespace, name)

    def apply(self, kind: Kind, previous: Obj | None, current: Obj | None) -> None:
        """Take in one change (``current`` None: the object is gone)."""
        self.serial += 1
        if kind == "services":
            self._apply_service(previous, current)
        elif kind == "endpointslices":
            self._apply_slice(previous, current)
        elif kind == "endpoints":
            key = _key(current or previous)
            if current is None:
                self._endpoints.pop(key, None)
            else:
                self._endpoints[key] = parse_endpoints(current)
            self._refresh(key)
        else:
            self._apply_pod(previous, current)

    # -- reads --------------------------------------------------------------------------------

    def has_namespace(self, namespace: str) -> bool:
        """Whether any service lives in ``namespace`` (so ``<ns>.svc`` is a name)."""
        return self._services_in[namespace] > 0

    def groups(self, service: Service) -> Iterator[EndpointGroup]:
        """The service's endpoint groups, with only the endpoints DNS should give."""
        key = (service.namespace, service.name)
        slices = self._slices.get(key)
        for group in slices.values() if slices else self._endpoints.get(key, ()):
            endpoints = tuple(e for e in group.endpoints if e.ready or service.publish_not_ready)
            yield EndpointGroup(group.ports, endpoints)

    def endpoints(self, service: Service) -> list[Endpoint]:
        """The service's endpoints, each address once."""
        seen: dict[str, Endpoint] = {}
        for group in self.groups(service):
            for endpoint in group.endpoints:
                seen.setdefault(endpoint.address, endpoint)
        return list(seen.values())

    def owners(self, address: str) -> list[Owner]:
        """What ``address`` belongs to: services and endpoints first; a pod only if nothing
        else names it."""
        owners = list(self._owners.get(address, ()))
        named = [owner for owner in owners if not isinstance(owner, PodName)]
        return sorted(named or owners, key=repr)

    # -- changes ------------------------------------------------------------------------------

    def _apply_service(self, previous: Obj | None, current: Obj | None) -> None:
        key = _key(current or previous)
        if key in self.services:
            self._services_in[key[0]] -= 1
            del self.services[key]
        if current is not None:
            self.services[key] = parse_service(current)
            self._services_in[key[0]] += 1
        self._refresh(key)

    def _apply_slice(self, previous: Obj | None, current: Obj | None) -> None:
        for obj, gone in ((previous, True), (current, False)):
            if obj is None:
                continue
            namespace, name = _key(obj)
            service = (obj.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            if not service:
                continue
            key = (namespace, service)
            slices = self._slices.setdefault(key, {})
            group = None if gone else parse_endpoint_slice(obj)
            if group is None:
                slices.pop(name, None)
            else:
                slices[name] = group
            if not slices:
                del self._slices[key]
            self._refresh(key)

    def _apply_pod(self, previous: Obj | None, current: Obj | None) -> None:
        key = _key(current or previous)
        entries: set[tuple[str, Owner]] = set()
        if current is not None and not (current.get("spec") or {}).get("hostNetwork"):
            status = current.get("status") or {}
            ips = [entry.get("ip") for entry in status.get("podIPs") or ()] or [status.get("podIP")]
            entries = {(address, PodName(key[0], address)) for address in _addresses(ips)}
        self._publish(("pod", key), entries)

    def _refresh(self, key: tuple[str, str]) -> None:
        """Re-derive the reverse entries of one service: its ClusterIPs and its endpoints."""
        entries: set[tuple[str, Owner]] = set()
        if (service := self.services.get(key)) is not None:
            entries.update((ip, ServiceName(*key)) for ip in service.cluster_ips)
            entries.update(
                (endpoint.address, EndpointName(*key, endpoint.label))
                for endpoint in self.endpoints(service)
            )
        self._publish(("service", key), entries)

    def _publish(self, source: object, entries: set[tuple[str, Owner]]) -> None:
        """Replace the reverse entries ``source`` contributes."""
        for address, owner in self._published.pop(source, frozenset()):
            owners = self._owners[address]
            owners[owner] -= 1
            if owners[owner] <= 0:
                del owners[owner]
            if not owners:
                del self._owners[address]
        if entries:
            self._published[source] = frozenset(entries)
            for address, owner in entries:
                self._owners.setdefault(address, Counter())[owner] += 1
