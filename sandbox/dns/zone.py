"""The names of the cluster domain and the records at each, as the Kubernetes DNS spec lays out.

https://github.com/kubernetes/dns/blob/master/docs/specification.md, as CoreDNS's kubernetes
plugin answers it (``pods insecure``, its kubeadm default):

================================================  ==========================================
``<svc>.<ns>.svc``                                 A/AAAA of the ClusterIPs; for a headless
                                                   service, of its endpoints; CNAME for an
                                                   ExternalName service; SRV for every port
``<endpoint>.<svc>.<ns>.svc``                      A/AAAA of that endpoint, by hostname or
                                                   dashed address
``_<port>._<proto>.<svc>.<ns>.svc``                SRV for a named port (to the service, or
                                                   to each endpoint of a headless one)
``<a-b-c-d>.<ns>.pod``                             A of the address in the name
``<ns>.svc``, ``svc``, ``pod``, ``<ns>.pod``       exist, with no records (empty non-terminals)
the domain itself                                  SOA
================================================  ==========================================

Reverse names (``in-addr.arpa``, ``ip6.arpa``) of ClusterIPs, endpoints and pods get PTRs;
other reverse names are not the cluster's, and fall through as CoreDNS's default Corefile
makes them (``fallthrough in-addr.arpa ip6.arpa``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from sandbox.dns.cluster import EndpointName, PodName, ServiceName

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sandbox.dns.cluster import ClusterIndex, Owner, Service

IN = dns.rdataclass.IN
RdataType = dns.rdatatype.RdataType
#: SOA timers as CoreDNS sets them (refresh, retry, expire); the minimum is the TTL.
SOA_TIMERS = (7200, 1800, 86400)


@dataclass(slots=True)
class Node:
    """The records at one name; an empty node is a name with no records (NODATA)."""

    records: dict[RdataType, list[dns.rdata.Rdata]] = field(default_factory=dict)
    #: The CNAME target, when the name is an alias.
    alias: dns.name.Name | None = None

    def add(self, rdata: dns.rdata.Rdata) -> None:
        self.records.setdefault(rdata.rdtype, []).append(rdata)

    def select(self, rdtype: RdataType) -> dict[RdataType, list[dns.rdata.Rdata]]:
        if rdtype == RdataType.ANY:
            return self.records
        return {rdtype: self.records[rdtype]} if rdtype in self.records else {}


class Zone:
    """Looks names up in the cluster domain and in the reverse zones."""

    def __init__(self, index: ClusterIndex, domain: str, ttl: int) -> None:
        self.index = index
        self.origin = dns.name.from_text(domain)
        self.ttl = ttl

    def __contains__(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self.origin)

    def soa(self) -> dns.rdata.Rdata:
        serial = self.index.serial % 2**32
        timers = " ".join(map(str, (serial, *SOA_TIMERS, self.ttl)))
        return _rdata(RdataType.SOA, f"ns.dns.{self.origin} hostmaster.{self.origin} {timers}")

    def find(self, name: dns.name.Name) -> Node | None:
        """The node at ``name`` (which must be in the domain), or None if there is none."""
        relative = name.relativize(self.origin)
        try:
            labels = [label.decode("ascii").lower() for label in relative.labels]
        except UnicodeDecodeError:
            return None
        labels.reverse()  # from the domain down: ["svc", "<ns>", "<svc>", ...]
        match labels:
            case []:
                node = Node()
                node.add(self.soa())
                return node
            case ["svc", *rest]:
                return self._find_service_name(rest)
            case ["pod"] | ["pod", _]:
                return Node()
            case ["pod", _namespace, dashed]:
                return self._pod(dashed)
        return None

    def find_reverse(self, name: dns.name.Name) -> Node | None:
        """PTRs for an address the cluster knows; None when it is not the cluster's."""
        try:
            address = ipaddress.ip_address(dns.reversename.to_address(name)).compressed
        except (dns.exception.DNSException, ValueError):
            return None  # not a whole address: not ours either
        owners = self.index.owners(address)
        if not owners:
            return None
        node = Node()
        for owner in owners:
            node.add(_rdata(RdataType.PTR, self._owner_name(owner)))
        return node

    # -- services -----------------------------------------------------------------------------

    def _find_service_name(self, labels: list[str]) -> Node | None:
        match labels:
            case []:
                return Node()
            case [namespace]:
                return Node() if self.index.has_namespace(namespace) else None
        service = self.index.services.get((labels[0], labels[1]))
        if service is None:
            return None
        match labels[2:]:
            case []:
                return self._service(service)
            case [protocol] if protocol.startswith("_"):
                # ``_tcp.<svc>.<ns>.svc`` is there when a port of ``_<port>._tcp`` is.
                found = any(port.protocol == protocol[1:] for port in service.ports)
                return Node() if found else None
            case [endpoint]:
                return self._endpoint(service, endpoint)
            case [protocol, port] if protocol.startswith("_") and port.startswith("_"):
                return self._port(service, port[1:], protocol[1:])
        return None

    def _service(self, service: Service) -> Node:
        node = Node()
        if service.external_name is not None:
            try:
                node.alias = dns.name.from_text(service.external_name)
            except dns.exception.DNSException:
                return node  # not a name DNS can give (the API server validates it)
            node.add(_rdata(RdataType.CNAME, node.alias))
            return node
        name = self._service_name(service)
        if service.headless:
            endpoints = self.index.endpoints(service)
            for endpoint in endpoints:
                node.add(_address(endpoint.address))
            targets = [
                (port.number, self._endpoint_name(service, endpoint.label))
                for group in self.index.groups(service)
                for port in group.ports
                for endpoint in group.endpoints
            ]
        else:
            for ip in service.cluster_ips:
                node.add(_address(ip))
            targets = [(port.number, name) for port in service.ports]
        for rdata in _srv(targets):
            node.add(rdata)
        return node

    def _endpoint(self, service: Service, label: str) -> Node | None:
        node = Node()
        for endpoint in self.index.endpoints(service):
            if endpoint.label.lower() == label:
                node.add(_address(endpoint.address))
        return node if node.records else None

    def _port(self, service: Service, name: str, protocol: str) -> Node | None:
        def matches(port_name: str, port_protocol: str) -> bool:
            return port_name.lower() == name and port_protocol == protocol

        if service.headless:
            targets = [
                (port.number, self._endpoint_name(service, endpoint.label))
                for group in self.index.groups(service)
                for port in group.ports
                if matches(port.name, port.protocol)
                for endpoint in group.endpoints
            ]
        else:
            targets = [
                (port.number, self._service_name(service))
                for port in service.ports
                if matches(port.name, port.protocol)
            ]
        if not targets:
            return None
        node = Node()
        for rdata in _srv(targets):
            node.add(rdata)
        return node

    # -- pods and names -----------------------------------------------------------------------

    def _pod(self, dashed: str) -> Node | None:
        # ``pods insecure``: the name carries the address; no pod need exist.
        for text in (dashed.replace("-", "."), dashed.replace("-", ":")):
            try:
                address = ipaddress.ip_address(text).compressed
            except ValueError:
                continue
            node = Node()
            node.add(_address(address))
            return node
        return None

    def _service_name(self, service: Service) -> dns.name.Name:
        return self._name(service.name, service.namespace, "svc")

    def _endpoint_name(self, service: Service, label: str) -> dns.name.Name:
        return self._name(label, service.name, service.namespace, "svc")

    def _owner_name(self, owner: Owner) -> dns.name.Name:
        match owner:
            case ServiceName(namespace, name):
                return self._name(name, namespace, "svc")
            case EndpointName(namespace, service, label):
                return self._name(label, service, namespace, "svc")
            case PodName(namespace, address):
                dashed = address.replace(".", "-").replace(":", "-")
                return self._name(dashed, namespace, "pod")

    def _name(self, *labels: str) -> dns.name.Name:
        return dns.name.Name([label.encode() for label in labels]).concatenate(self.origin)


def _rdata(rdtype: RdataType, text: object) -> dns.rdata.Rdata:
    # Through text: dnspython's rdata constructors carry no type annotations.
    return dns.rdata.from_text(IN, rdtype, str(text))


def _address(address: str) -> dns.rdata.Rdata:
    version = ipaddress.ip_address(address).version
    return _rdata(RdataType.A if version == 4 else RdataType.AAAA, address)


def _srv(targets: Iterable[tuple[int, dns.name.Name]]) -> list[dns.rdata.Rdata]:
    """SRVs of one priority sharing the weight as CoreDNS does: each ``100 // count``."""
    unique = list(dict.fromkeys(targets))
    weight = 100 // len(unique) if unique else 0
    return [_rdata(RdataType.SRV, f"0 {weight} {port} {target}") for port, target in unique]
