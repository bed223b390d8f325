"""Cluster DNS through systemd-resolved: the TUN link's own DNS server and routing domains.

Where systemd-resolved runs, the root daemon does not touch ``resolv.conf``: it tells resolved,
over the system bus (``org.freedesktop.resolve1``, object ``/org/freedesktop/resolve1``,
interface ``org.freedesktop.resolve1.Manager``), that the TUN link has a DNS server of its
own, the daemon's, and which names go to it:

- ``SetLinkDNSEx(ifindex, [(family, address, port, "")])`` names the server; it takes a port
  (resolved >= 246). Older resolved only has ``SetLinkDNS(ifindex, [(family, address)])``,
  which can only mean port 53, so it is the fallback for a server on port 53 and a
  :class:`ResolvedError` for any other port.
- ``SetLinkDomains(ifindex, [(domain, routing_only)])``: routing-only domains (``~svc``) send
  the names under them to this link's server without entering the search list; the one search
  domain (``<namespace>.svc.<cluster domain>``) also does both. :func:`link_domains` builds
  the list.
- ``SetLinkDefaultRoute(ifindex, false)``: every other name keeps going to the laptop's own
  servers. resolved < 240 has no such method; its ``UnknownMethod`` answer is ignored, and
  such a resolved also sends names outside every link's domains to this link's server.

Each call replaces that setting of the link, so calling :func:`configure_link` again (another
namespace mapped) updates the link in place. On quit the daemon calls :func:`revert_link`
(``RevertLink``). If the daemon is killed instead, nothing stale is left in resolved: these
settings belong to the link, and resolved drops a link with all its settings when the kernel
removes the interface, which it does to a (non-persistent) TUN device when the process holding
it exits.

Every call waits for resolved's reply at most ``timeout`` seconds. The calls block; the
daemon runs them in a worker thread. ``bus_address`` (a D-Bus address such as
``unix:path=/run/dbus/system_bus_socket``) replaces the system bus, for tests.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import TYPE_CHECKING, Any

from jeepney import (
    DBusAddress,
    HeaderFields,
    MessageType,
    message_bus,
    new_method_call,
)
from jeepney.io.blocking import open_dbus_connection

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from jeepney.io.blocking import DBusConnection

__all__ = [
    "BUS_NAME",
    "INTERFACE",
    "OBJECT_PATH",
    "ResolvedError",
    "available",
    "configure_link",
    "link_domains",
    "revert_link",
]

#: resolved's well-known name on the system bus, its object and the interface of its methods.
BUS_NAME = "org.freedesktop.resolve1"
OBJECT_PATH = "/org/freedesktop/resolve1"
INTERFACE = "org.freedesktop.resolve1.Manager"
#: The system bus when ``DBUS_SYSTEM_BUS_ADDRESS`` is not set (the D-Bus specification's default).
SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
#: How long a call may wait for its reply; resolved answers these in milliseconds.
TIMEOUT = 5.0

#: What the bus (or sd-bus, for resolved) answers for a method the service does not have.
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
#: What resolved answers for an interface index it does not know (the link is gone).
NO_SUCH_LINK = "org.freedesktop.resolve1.NoSuchLink"

_MANAGER = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=INTERFACE)


class ResolvedError(Exception):
    """The system bus could not be reached, or resolved refused a call or did not answer.

    Attributes:
        method: the resolve1 method that failed; ``None`` when the bus could not be reached.
        error_name: the D-Bus error resolved (or the bus) answered with, such as
            ``org.freedesktop.resolve1.NoSuchLink``; ``None`` when there was no answer.
    """

    def __init__(
        self, message: str, *, method: str | None = None, error_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.method = method
        self.error_name = error_name


def _connect(bus_address: str | None, timeout: float) -> DBusConnection:
    address = bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS
    try:
        # The bus answers the Hello that follows authentication itself (jeepney gives that
        # exchange no deadline; authentication has ``auth_timeout``).
        return open_dbus_connection(address, auth_timeout=timeout)
    except (OSError, ValueError, RuntimeError) as error:
        # OSError: no socket or refused; ValueError: a malformed address or failed
        # authentication; RuntimeError: a transport jeepney does not speak (only unix:).
        raise ResolvedError(f"cannot connect to the system bus at {address}: {error}") from error


def _call(
    connection: DBusConnection, method: str, signature: str, body: tuple[Any, ...], timeout: float
) -> None:
    """Call one resolve1 method; an error reply or no reply becomes a :class:`ResolvedError`."""
    message = new_method_call(_MANAGER, method, signature, body)
    try:
        reply = connection.send_and_get_reply(message, timeout=timeout)
    except TimeoutError as error:
        raise ResolvedError(
            f"{method}: {BUS_NAME} did not answer within {timeout:g} s", method=method
        ) from error
    except OSError as error:
        raise ResolvedError(f"{method}: the bus went away: {error}", method=method) from error
    if reply.header.message_type is MessageType.error:
        name = reply.header.fields.get(HeaderFields.error_name, "")
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
        raise ResolvedError(f"{method} failed: {text} ({name})", method=method, error_name=name)


def available(bus_address: str | None = None, *, timeout: float = TIMEOUT) -> bool:
    """Whether resolved can be told about the link: the bus is reachable and resolved is on it.

    Args:
        bus_address: the bus to ask; by default ``DBUS_SYSTEM_BUS_ADDRESS`` or the system bus.
        timeout: seconds to wait for the bus.

    Returns:
        True when ``org.freedesktop.resolve1`` has an owner; False when it has none (resolved
        is not running) or the bus cannot be reached.
    """
    try:
        with _connect(bus_address, timeout) as connection:
            reply = connection.send_and_get_reply(
                message_bus.NameHasOwner(BUS_NAME), timeout=timeout
            )
    except (ResolvedError, OSError):
        return False
    return bool(reply.header.message_type is MessageType.method_return and reply.body == (True,))


def configure_link(
    ifindex: int,
    server: tuple[str, int],
    domains: Sequence[tuple[str, bool]],
    *,
    bus_address: str | None = None,
    timeout: float = TIMEOUT,
) -> None:
    """Make the link's DNS server ``server`` for ``domains``, and for no other name.

    Args:
        ifindex: the TUN device's interface index.
        server: the daemon's DNS server, ``(address, port)``; IPv4 or IPv6.
        domains: ``(domain, routing_only)`` pairs, as :func:`link_domains` makes them.
        bus_address: the bus to use; by default ``DBUS_SYSTEM_BUS_ADDRESS`` or the system bus.
        timeout: seconds to wait for each reply.

    Raises:
        ResolvedError: the bus is unreachable, or resolved refused a call (its message and the
            method are in the error); the settings made before that call stay until
            :func:`revert_link` or until the link goes away.
        ValueError: ``server``'s address is not an IP address.
    """
    host, port = server
    address = ipaddress.ip_address(host)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    packed = address.packed
    with _connect(bus_address, timeout) as connection:
        try:
            _call(
                connection,
                "SetLinkDNSEx",
                "ia(iayqs)",
                (ifindex, [(family, packed, port, "")]),
                timeout,
            )
        except ResolvedError as error:
            if error.error_name != UNKNOWN_METHOD:
                raise
            if port != 53:
                raise ResolvedError(
                    f"SetLinkDNSEx: this systemd-resolved (older than 246) cannot use a DNS "
                    f"server on port {port}, only on port 53",
                    method="SetLinkDNSEx",
                    error_name=UNKNOWN_METHOD,
                ) from error
            _call(connection, "SetLinkDNS", "ia(iay)", (ifindex, [(family, packed)]), timeout)
        _call(connection, "SetLinkDomains", "ia(sb)", (ifindex, list(domains)), timeout)
        try:
            _call(connection, "SetLinkDefaultRoute", "ib", (ifindex, False), timeout)
        except ResolvedError as error:
            if error.error_name != UNKNOWN_METHOD:
                raise


def revert_link(ifindex: int, *, bus_address: str | None = None, timeout: float = TIMEOUT) -> None:
    """Drop everything :func:`configure_link` set on the link (``RevertLink``).

    A link resolved does not know (the TUN device is already gone, and its settings with it)
    is not an error.

    Raises:
        ResolvedError: the bus is unreachable, or resolved refused the call.
    """
    with _connect(bus_address, timeout) as connection:
        try:
            _call(connection, "RevertLink", "i", (ifindex,), timeout)
        except ResolvedError as error:
            if error.error_name != NO_SUCH_LINK:
                raise


def _dedupe(domains: Iterable[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Normalised (no outer dots, lower case), empty ones dropped, first occurrence kept."""
    seen: set[str] = set()
    result: list[tuple[str, bool]] = []
    for domain, routing_only in domains:
        name = domain.strip(".").lower()
        if name and name not in seen:
            seen.add(name)
            result.append((name, routing_only))
    return result


def link_domains(
    namespace: str,
    mapped_namespaces: Sequence[str],
    cluster_domain: str,
    include_suffixes: Sequence[str],
) -> list[tuple[str, bool]]:
    """The ``SetLinkDomains`` list: which names go to the daemon's server, and the search domain.

    Args:
        namespace: the connected namespace (``""`` for none): ``<namespace>.svc.<cluster
            domain>`` becomes the link's search domain, so ``my-service`` resolves as in a pod
            of that namespace.
        mapped_namespaces: the other namespaces whose ``<service>.<namespace>`` names resolve.
        cluster_domain: the cluster's DNS domain, such as ``cluster.local``.
        include_suffixes: further suffixes the cluster resolves (leading dots are dropped).

    Returns:
        The search domain first (``routing_only`` False), then the routing-only domains: the
        cluster domain, ``svc``, each namespace, each include suffix; lower case, without
        duplicates.
    """
    search = [(f"{namespace}.svc.{cluster_domain.strip('.')}", False)] if namespace else []
    routing = [cluster_domain, "svc", namespace, *mapped_namespaces, *include_suffixes]
    return _dedupe([*search, *((domain, True) for domain in routing)])
