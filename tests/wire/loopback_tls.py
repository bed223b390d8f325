"""TLS contexts for a server on loopback and a client that trusts it, from a fresh CA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telepresence.wire import tls

if TYPE_CHECKING:
    import ssl


def localhost_contexts(ca_name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for "localhost" (and 127.0.0.1), and a client context trusting it."""
    ca = tls.create_ca(ca_name)
    server = tls.issue_certificate(
        ca, "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    return tls.server_context(server), tls.client_context(ca.certificate)
