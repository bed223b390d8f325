"""The cluster DNS server's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DNSSettings:
    """How the cluster DNS answers.

    Attributes:
        domain: The cluster domain; names under it are answered from the cluster's objects.
        ttl: Seconds every answer may be cached (CoreDNS's kubernetes plugin uses 5).
        upstream: ``(address, port)`` of a resolver for names outside the cluster's zones;
            None answers them REFUSED.
        upstream_timeout: Seconds to wait for the upstream before answering SERVFAIL.
        tcp_idle_timeout: Seconds a TCP client may stay silent before it is disconnected
            (RFC 7766 6.2.3 asks servers to close idle connections).
        max_forwarded: Questions over UDP waiting for the upstream at once; more are
            answered SERVFAIL, so a flood cannot grow the server without bound.
    """

    domain: str = "cluster.local"
    ttl: int = 5
    upstream: tuple[str, int] | None = None
    upstream_timeout: float = 2.0
    tcp_idle_timeout: float = 10.0
    max_forwarded: int = 100
