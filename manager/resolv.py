"""The manager pod's ``/etc/resolv.conf``: its nameservers, search path and ``ndots``.

The kubelet writes a pod's resolv.conf from the cluster's DNS settings (``ClusterFirst``):

    nameserver 10.96.0.10
    search ambassador.svc.cluster.local svc.cluster.local cluster.local
    options ndots:5

That one file tells the manager three facts it would otherwise need permissions to learn: the
cluster DNS address (the nameserver, kube-dns's ClusterIP), the cluster domain (the search
entry after ``svc.``) and how the cluster's own programs expand short names (the search path
and ``ndots``), which is how the manager resolves names for clients.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

#: resolv.conf(5)'s default for ``ndots``.
DEFAULT_NDOTS = 1
#: resolv.conf(5) caps ``ndots`` at this.
MAX_NDOTS = 15
#: The cluster domain when nothing says otherwise (kubelet's ``--cluster-domain`` default).
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """What resolv.conf(5) says, as far as the manager uses it.

    Attributes:
        nameservers: The ``nameserver`` addresses, in order (valid IP addresses only).
        search: The search domains, in order, without final dots.
        ndots: Names with at least this many dots are tried as they are before the search
            path is applied.
    """

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    ndots: int = DEFAULT_NDOTS

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        """Parse resolv.conf text; unknown lines and malformed values are skipped, as the
        C library does."""
        nameservers: list[str] = []
        search: tuple[str, ...] = ()
        ndots = DEFAULT_NDOTS
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not line:
                continue
            keyword, *values = line.split()
            if keyword == "nameserver" and values:
                try:
                    nameservers.append(str(ipaddress.ip_address(values[0].split("%", 1)[0])))
                except ValueError:
                    log.debug("resolv.conf: skipping nameserver %r", values[0])
            elif keyword in ("search", "domain"):
                # The last search or domain line wins (resolv.conf(5)).
                search = tuple(v.rstrip(".").lower() for v in values if v.rstrip("."))
            elif keyword == "options":
                for option in values:
                    name, _, value = option.partition(":")
                    if name == "ndots" and value.isdigit():
                        ndots = min(int(value), MAX_NDOTS)
        return cls(tuple(nameservers), search, ndots)

    @classmethod
    def load(cls, path: Path) -> ResolvConf:
        """Read and parse ``path``; a missing or unreadable file is an empty configuration."""
        try:
            return cls.parse(path.read_text(errors="replace"))
        except OSError as error:
            log.warning("cannot read %s (%s): no search path, no nameserver from it", path, error)
            return cls()

    def cluster_domain(self) -> str | None:
        """The cluster domain that the kubelet's search path reveals, without its final dot:
        the rest of the first entry that starts with ``svc.`` (``svc.cluster.local`` gives
        ``cluster.local``), or None."""
        for entry in self.search:
            if entry.startswith("svc.") and len(entry) > len("svc."):
                return entry.removeprefix("svc.")
        for entry in self.search:
            _, svc, domain = entry.partition(".svc.")
            if svc and domain:
                return domain
        return None
