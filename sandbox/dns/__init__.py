"""The sandbox cluster's DNS: answers for Services, endpoints and pods, as CoreDNS gives them.

``serve(view, host, port)`` runs it until cancelled; ``view`` is the cluster's objects
(:class:`StoreView` over the API server's store, in the same process). Names under the
cluster domain are answered from an index that follows the objects' changes
(:mod:`~sandbox.dns.cluster`), by the zone's rules (:mod:`~sandbox.dns.zone`) and the
message logic (:mod:`~sandbox.dns.answer`), which does no I/O; :mod:`~sandbox.dns.server`
holds the sockets. dnspython reads and writes every message.
"""

from sandbox.dns.answer import Forward, Responder
from sandbox.dns.cluster import ClusterIndex, ClusterView, StoreView
from sandbox.dns.server import serve
from sandbox.dns.settings import DNSSettings

__all__ = [
    "ClusterIndex",
    "ClusterView",
    "DNSSettings",
    "Forward",
    "Responder",
    "StoreView",
    "serve",
]
