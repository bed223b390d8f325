"""Where clients' streams and DNS questions may go: the namespace scope, as a policy.

An authorized client may reach what its right to port-forward in the cluster lets it reach,
within the manager's scope:

- A cluster-wide manager relays to any address (pods, Services, nodes, and the subnets the
  cluster routes, such as ``alsoProxySubnets``) and resolves any name.
- A namespaced manager relays only to the pods and Services of the namespaces it manages, and
  to the ``client.routing.alsoProxySubnets`` its administrator configured; it resolves only
  names under those namespaces (``*.<ns>.svc.<domain>``, ``*.<ns>.pod.<domain>``) and the
  reverse names of their addresses.
- Never its own loopback, nor unspecified or multicast addresses: the manager is not a way
  into its own pod.

The data plane and the DNS take the policy as an argument, so tests can give one that allows
loopback destinations (:class:`AllowAll`).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from manager.config import IPNetwork
    from manager.inventory import Inventory, IPAddress


class DestinationPolicy(Protocol):
    """Decides whether clients' streams may reach an address, and which names they may
    resolve."""

    def check(self, address: IPAddress) -> str | None:
        """None when ``address`` may be dialled, else why not (for the client)."""
        ...

    def allows_name(self, name: str) -> bool:
        """Whether the absolute ``name`` may be resolved for clients."""
        ...


class AllowAll:
    """Allows every destination and name, loopback included (for tests)."""

    def check(self, address: IPAddress) -> str | None:
        return None

    def allows_name(self, name: str) -> bool:
        return True


class ScopePolicy:
    """The namespace scope as a :class:`DestinationPolicy` (see the module docstring).

    Args:
        inventory: The managed namespaces and their pods' and Services' addresses.
        domain: The cluster domain now (it comes with the cluster info).
        also_proxy: ``client.routing.alsoProxySubnets``.
    """

    def __init__(
        self,
        inventory: Inventory,
        domain: Callable[[], str],
        also_proxy: Sequence[IPNetwork] = (),
    ) -> None:
        self._inventory = inventory
        self._domain = domain
        self._also_proxy = tuple(also_proxy)

    def check(self, address: IPAddress) -> str | None:
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            return f"{address} is not a destination the traffic-manager relays to"
        inventory = self._inventory
        if inventory.selection.everything or inventory.owns(address):
            return None
        if any(address in subnet for subnet in self._also_proxy):
            return None
        return (
            f"{address} is not a pod or Service of the {inventory.selection.describe()}"
            " that this traffic-manager serves"
        )

    def allows_name(self, name: str) -> bool:
        inventory = self._inventory
        if inventory.selection.everything:
            return True
        name = name.lower().rstrip(".")
        reverse = _reverse_address(name)
        if reverse is not None:
            return inventory.owns(reverse)
        domain = self._domain().lower().rstrip(".")
        if not name.endswith("." + domain):
            return False
        labels = name[: -len(domain) - 1].split(".")
        # <...>.<namespace>.svc or <...>.<namespace>.pod, under the cluster domain.
        return len(labels) >= 3 and labels[-1] in ("svc", "pod") and inventory.manages(labels[-2])


def _reverse_address(name: str) -> IPAddress | None:
    """The address of an ``in-addr.arpa`` or ``ip6.arpa`` name, or None."""
    try:
        if name.endswith(".in-addr.arpa"):
            octets = name.removesuffix(".in-addr.arpa").split(".")
            if len(octets) == 4:
                return ipaddress.IPv4Address(".".join(reversed(octets)))
        elif name.endswith(".ip6.arpa"):
            nibbles = name.removesuffix(".ip6.arpa").split(".")
            if len(nibbles) == 32 and all(len(nibble) == 1 for nibble in nibbles):
                return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None
