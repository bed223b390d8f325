"""Which names the laptop's DNS server answers from the cluster, and as which cluster names.

Every program on the laptop asks the daemon's DNS server, so it must tell the cluster's names
from all others by the name alone, the way a program would expect from its own resolver: a
name that exists in the cluster resolves there, every other name resolves exactly as before.
:meth:`ClusterNames.plan` makes that decision; it does no I/O.

**Candidates.** A cluster name is resolved like a pod of the connected namespace ``ns``
would resolve it: with the search path ``ns.svc.<domain>``, ``svc.<domain>``, ``<domain>``
that the kubelet writes into every pod's resolv.conf, and ``ndots:5`` (a name with fewer
than five dots is searched before it is asked as it is). The expansions to ask, in order,
are the plan's *candidates*; the server asks the manager for them one after the other until
one gives an answer other than NXDOMAIN, and labels that answer with the name the laptop
asked. The laptop's own resolver (glibc, ``search corp.example``, ``ndots:1``) has already
done its own search: it sends ``echo.corp.example.`` and then ``echo.``, each fully qualified.

**The rules**, in this order; the first that applies decides:

1. The first label is ``wpad``: REFUSED, asked of nobody. Web proxy auto-discovery looks for
   ``wpad.<every parent domain>``; a cluster's answer could hijack the laptop's proxy
   settings, and an upstream answer is none of the cluster's business either.
2. A reverse name (``d.c.b.a.in-addr.arpa.``, any type, PTR in practice) of an address in
   the cluster's routed subnets: cluster, as it is. This comes before the exclusions, which
   hold ``.arpa`` by default.
3. A name under an *include* suffix: certainly cluster, with the pod's search path and as it
   is, in the pod's order.
4. A name under an *exclude* suffix (:data:`DEFAULT_EXCLUDE_SUFFIXES` unless given): never
   cluster. ``echo.com.`` has two labels and would otherwise look like service ``echo`` in a
   namespace ``com``.
5. A name under the cluster domain: certainly cluster, as it is.
6. A name whose last label is ``svc`` (``echo.default.svc.``): certainly cluster, as
   ``<name>.<domain>.`` only. The pod's search would reach the same name on its third
   try; asking it first saves the manager two lookups that cannot succeed.
7. A name under one of the laptop's own search domains: not cluster. glibc tries
   ``echo.corp.example.`` first; it must go upstream, fail there, so that glibc asks
   ``echo.`` next. Without this rule it would look like a name in namespace ``example``.
8. Short names, with the search path only (their as-is form is the upstream's business):

   - one label (``echo.``): the service ``echo`` of the connected namespace, maybe;
   - two labels (``echo.default.``: a service and its namespace; ``web-0.web.``: a pod of a
     headless service of the connected namespace, the StatefulSet way);
   - three labels whose last label is a namespace (``web-0.web.default.``).

   Leading labels that start with ``_`` (``_http._tcp.``, RFC 2782's SRV names) do not
   count. Which labels are namespaces: ``mapped_namespaces`` when given, plus the connected
   namespace (the search path starts there); else any label may be one.

   These names are only *maybe* cluster names: when the cluster says NXDOMAIN for every
   candidate, the name goes upstream, so that a corporate short name such as ``intranet.``
   still resolves. When the last label is the connected namespace or a mapped one, the name
   is certainly the cluster's and its NXDOMAIN is final.
9. Anything else: upstream.

**Mapped namespaces.** With ``mapped_namespaces`` given, a candidate in another namespace
(``*.<namespace>.svc.<domain>.`` or ``*.<namespace>.pod.<domain>.``) is dropped; a name left
with no candidate is no cluster name and goes upstream like any other. So ``echo.staging.``
is not resolved in the cluster unless ``staging`` is mapped (it may still be a headless pod
``echo`` of a service ``staging`` in the connected namespace: that candidate stays).

**Certainty.** For a certain cluster name (rules 2, 3, 5, 6 and the connected or a mapped
namespace in rule 8) the cluster's NXDOMAIN is the answer and no upstream is asked: there is
nothing else the name could mean. For a maybe-cluster name (rule 8 otherwise) the cluster's
NXDOMAIN passes the query upstream.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.reversename

__all__ = [
    "DEFAULT_EXCLUDE_SUFFIXES",
    "POD_NDOTS",
    "ClusterNames",
    "DNSSettings",
    "Plan",
    "Route",
]

#: Suffixes never resolved in the cluster unless an include suffix says otherwise: public
#: top-level domains and the reverse zones, whose names would otherwise pass for a service
#: in a namespace ("echo.com.") or flood the manager with lookups that cannot succeed.
DEFAULT_EXCLUDE_SUFFIXES = (".arpa", ".com", ".io", ".net", ".org", ".ru")
#: The ``ndots`` of a pod's resolv.conf as the kubelet writes it (``dnsPolicy: ClusterFirst``).
POD_NDOTS = 5

_WPAD = b"wpad"
_SVC = b"svc"
_POD = b"pod"
_IN_ADDR_ARPA = dns.name.from_text("in-addr.arpa.")


@dataclass(frozen=True)
class DNSSettings:
    """What the DNS server needs to know about the cluster and the laptop.

    Suffixes and domains may be written with or without their leading and final dots, in any
    case: ``.private``, ``private.`` and ``Private`` are the same suffix.
    """

    #: The connected namespace: the first search domain is ``<namespace>.svc.<domain>``.
    namespace: str
    #: The cluster domain, e.g. ``cluster.local.`` (final dot optional).
    cluster_domain: str
    #: Namespaces whose names resolve in the cluster; empty: every namespace.
    mapped_namespaces: tuple[str, ...] = ()
    #: Names under these always resolve in the cluster.
    include_suffixes: tuple[str, ...] = ()
    #: Names under these never resolve in the cluster; None: :data:`DEFAULT_EXCLUDE_SUFFIXES`.
    exclude_suffixes: tuple[str, ...] | None = None
    #: The laptop's own search domains: names under them are not the cluster's.
    local_search: tuple[str, ...] = ()
    #: The cluster's routed subnets: their reverse names resolve in the cluster.
    cluster_subnets: tuple[ipaddress.IPv4Network, ...] = ()
    #: The laptop's original nameservers, tried in order; none: REFUSED for other names.
    upstreams: tuple[tuple[str, int], ...] = ()
    #: ``SO_MARK`` of the sockets that ask the upstreams (kept out of the DNS redirection).
    upstream_mark: int | None = None
    #: Seconds one lookup in the cluster may take before the answer is SERVFAIL.
    lookup_timeout: float = 4.0
    #: Seconds one upstream may take to answer, over UDP and again over TCP.
    upstream_timeout: float = 3.0
    #: Seconds the cluster's NXDOMAIN and NODATA are remembered: briefly, so that a service
    #: created a moment ago resolves soon.
    negative_ttl: float = 5.0
    #: How many cluster answers the cache holds at most.
    cache_size: int = 4096
    #: Seconds past its TTL that a cached answer is still given when the cluster or the
    #: upstreams cannot answer (RFC 8767); 0: never.
    serve_stale: float = 86400.0


class Route(enum.Enum):
    """Where a query goes."""

    #: Answered REFUSED, asked of nobody.
    REFUSE = "refuse"
    #: Certainly a cluster name: the cluster's answer, NXDOMAIN included, is final.
    CLUSTER = "cluster"
    #: Maybe a cluster name: the cluster's NXDOMAIN passes the query upstream.
    CLUSTER_FIRST = "cluster first"
    #: Not a cluster name: asked of the laptop's original nameservers.
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one name."""

    route: Route
    #: The cluster names to ask, in order (for the two cluster routes).
    candidates: tuple[dns.name.Name, ...] = ()
    #: Which rule decided, for the log.
    reason: str = ""


def _suffixes(texts: tuple[str, ...]) -> tuple[dns.name.Name, ...]:
    """The suffixes as absolute names; an empty one (``""``, ``"."``) is no suffix."""
    names = []
    for text in texts:
        bare = text.strip().strip(".")
        if bare:
            names.append(dns.name.from_text(bare))
    return tuple(names)


def _under(name: dns.name.Name, suffixes: tuple[dns.name.Name, ...]) -> bool:
    return any(name.is_subdomain(suffix) for suffix in suffixes)


class ClusterNames:
    """Decides, for one set of :class:`DNSSettings`, where each name goes (see the module
    docstring for the rules).

    Raises:
        dns.exception.DNSException: A suffix, domain or namespace is no valid DNS name.
    """

    def __init__(self, settings: DNSSettings) -> None:
        self._domain = dns.name.from_text(
            settings.cluster_domain.strip().strip(".") or "cluster.local"
        )
        self._include = _suffixes(settings.include_suffixes)
        exclude = settings.exclude_suffixes
        self._exclude = _suffixes(DEFAULT_EXCLUDE_SUFFIXES if exclude is None else exclude)
        self._local_search = _suffixes(settings.local_search)
        self._subnets = settings.cluster_subnets
        namespace = settings.namespace.strip().lower()
        svc = dns.name.Name((_SVC,)).concatenate(self._domain)
        search = [svc, self._domain]
        if namespace:
            search.insert(0, dns.name.Name((namespace.encode(),)).concatenate(svc))
        self._search = tuple(search)
        self._connected = namespace.encode()
        self._namespaces: frozenset[bytes] | None = None
        if settings.mapped_namespaces:
            mapped = {ns.strip().lower().encode() for ns in settings.mapped_namespaces}
            self._namespaces = frozenset(mapped | ({namespace.encode()} if namespace else set()))

    def plan(self, name: dns.name.Name) -> Plan:
        """Where the query for the absolute ``name`` goes, and as which cluster names."""
        labels = name.labels[:-1]  # without the root's empty label
        if not labels:
            return Plan(Route.UPSTREAM, reason="the root")
        if labels[0].lower() == _WPAD:
            return Plan(Route.REFUSE, reason="web proxy auto-discovery")
        if self._is_cluster_address(name):
            return self._cluster(Route.CLUSTER, [name], "an address in the cluster's subnets")
        if _under(name, self._include):
            return self._cluster(Route.CLUSTER, self._pod_candidates(name), "an include suffix")
        if _under(name, self._exclude):
            return Plan(Route.UPSTREAM, reason="an exclude suffix")
        if name.is_subdomain(self._domain):
            return self._cluster(Route.CLUSTER, [name], "the cluster domain")
        if labels[-1].lower() == _SVC:
            try:
                full = name.relativize(dns.name.root).concatenate(self._domain)
            except dns.name.NameTooLong:
                return Plan(Route.UPSTREAM, reason="too long for the cluster domain")
            return self._cluster(Route.CLUSTER, [full], "a .svc name")
        if _under(name, self._local_search):
            return Plan(Route.UPSTREAM, reason="the laptop's own search domain")
        # SRV's "_service._proto." prefix (RFC 2782) is not part of the host's name.
        service_labels = 0
        while service_labels < len(labels) and labels[service_labels].startswith(b"_"):
            service_labels += 1
        host = labels[service_labels:]
        count = len(host)
        if count == 1:
            return self._cluster(Route.CLUSTER_FIRST, self._searched(name), "a single label")
        if count in (2, 3):
            last = host[-1].lower()
            if last == self._connected:
                return self._cluster(Route.CLUSTER, self._searched(name), "the namespace")
            if self._namespaces is None:
                return self._cluster(
                    Route.CLUSTER_FIRST, self._searched(name), "maybe a name in a namespace"
                )
            if last in self._namespaces:
                return self._cluster(Route.CLUSTER, self._searched(name), "a mapped namespace")
            if count == 2:
                return self._cluster(
                    Route.CLUSTER_FIRST, self._searched(name), "maybe a headless service's pod"
                )
        return Plan(Route.UPSTREAM, reason="not a cluster name")

    def _cluster(self, route: Route, candidates: list[dns.name.Name], reason: str) -> Plan:
        """A plan for the cluster, with the candidates that the mapped namespaces allow."""
        allowed = tuple(dict.fromkeys(c for c in candidates if self._in_scope(c)))
        if not allowed:
            return Plan(Route.UPSTREAM, reason=f"{reason}, outside the mapped namespaces")
        return Plan(route, allowed, reason)

    def _searched(self, name: dns.name.Name) -> list[dns.name.Name]:
        """``name`` in each domain of the pod's search path (too long ones left out)."""
        relative = name.relativize(dns.name.root)
        expanded = []
        for domain in self._search:
            try:
                expanded.append(relative.concatenate(domain))
            except dns.name.NameTooLong:
                continue
        return expanded

    def _pod_candidates(self, name: dns.name.Name) -> list[dns.name.Name]:
        """The names a pod asks for ``name``: searched first unless it has ``ndots`` dots."""
        dots = len(name.labels) - 2
        if dots >= POD_NDOTS:
            return [name, *self._searched(name)]
        return [*self._searched(name), name]

    def _in_scope(self, candidate: dns.name.Name) -> bool:
        """Whether the mapped namespaces allow asking ``candidate``."""
        if self._namespaces is None or not candidate.is_subdomain(self._domain):
            return True
        labels = candidate.relativize(self._domain).labels
        if len(labels) >= 2 and labels[-1].lower() in (_SVC, _POD):
            return labels[-2].lower() in self._namespaces
        return True

    def _is_cluster_address(self, name: dns.name.Name) -> bool:
        """Whether ``name`` is the reverse name of an address in the cluster's subnets."""
        if not self._subnets or len(name.labels) != 7 or not name.is_subdomain(_IN_ADDR_ARPA):
            return False
        try:
            address = ipaddress.IPv4Address(dns.reversename.to_address(name))
        except (dns.exception.DNSException, ValueError):
            return False
        return any(address in subnet for subnet in self._subnets)
