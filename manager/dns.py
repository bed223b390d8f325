"""Name resolution in the cluster, for clients' ``LookupDNS`` and for the data plane.

Two layers:

- A :class:`Resolver` answers one question for an absolute name, with the cluster DNS's
  rcode and records (wire-format RDATA). :class:`AresResolver` is the real one (aiodns over
  c-ares, asyncio only, built inside the running loop); tests give one that asks a server of
  their own.
- :class:`ClusterDNS` resolves a client's name the way the manager's own pod would: with the
  search path and ``ndots`` of the pod's resolv.conf (``echo.default.`` becomes
  ``echo.default.svc.cluster.local.``), asking only the names that the namespace scope
  allows, and labelling the answer with the name the client asked.

Searching follows resolv.conf(5) and the original's rules for names that arrive with their
final dot: a name under the cluster domain or a reverse zone is only asked as it is; a single
label only with the search domains; other names as they are first when they have at least
``ndots`` dots, last otherwise. The first candidate with records wins. Without one, the answer
is NODATA if some candidate had that, else SERVFAIL if some candidate failed (a REFUSED, "not
my zone", is no failure), else NXDOMAIN.
When the scope allows none of the candidates, the answer is REFUSED.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import aiodns
import aiodns.error

from manager import rdata

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from manager.inventory import IPAddress
    from manager.resolv import ResolvConf

log = logging.getLogger(__name__)

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
CLASS_IN = 1

#: The query types c-ares (through aiodns) can ask, by number.
ARES_TYPES = {
    rdata.A: "A",
    rdata.AAAA: "AAAA",
    rdata.ANY: "ANY",
    rdata.CAA: "CAA",
    rdata.CNAME: "CNAME",
    rdata.MX: "MX",
    rdata.NAPTR: "NAPTR",
    rdata.NS: "NS",
    rdata.PTR: "PTR",
    rdata.SOA: "SOA",
    rdata.SRV: "SRV",
    rdata.TXT: "TXT",
}
_ARES_RCODES = {
    aiodns.error.ARES_ENOTFOUND: NXDOMAIN,
    aiodns.error.ARES_ENODATA: NOERROR,
    aiodns.error.ARES_EREFUSED: REFUSED,
    aiodns.error.ARES_ENOTIMP: NOTIMP,
    aiodns.error.ARES_EFORMERR: FORMERR,
    aiodns.error.ARES_EBADNAME: FORMERR,
}


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``rdata`` in wire format."""

    name: str
    type: int
    ttl: int
    rdata: bytes
    record_class: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one question: an rcode and the answer section."""

    rcode: int
    records: tuple[Record, ...] = ()


class OutOfScope(LookupError):
    """The namespace scope allows none of the names that a name would be asked as."""


class Resolver(Protocol):
    """Asks the cluster DNS one question, for an absolute name (with its final dot)."""

    async def query(self, name: str, rtype: int) -> Answer: ...


class AresResolver:
    """A :class:`Resolver` on c-ares (aiodns). Build it in the running asyncio loop.

    Args:
        nameservers: ``address`` or ``address:port`` strings; none: the resolv.conf ones.
        timeout: Seconds per try.
        tries: Tries per nameserver.
    """

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = 2.0, tries: int = 2):
        self._resolver = aiodns.DNSResolver(
            nameservers=list(nameservers) or None,
            loop=asyncio.get_running_loop(),
            timeout=timeout,
            tries=tries,
        )

    async def query(self, name: str, rtype: int) -> Answer:
        qtype = ARES_TYPES.get(rtype)
        if qtype is None:
            return Answer(NOTIMP)
        try:
            result = await self._resolver.query_dns(name, qtype)
        except aiodns.error.DNSError as error:
            code = error.args[0] if error.args else None
            rcode = _ARES_RCODES.get(code, SERVFAIL)
            if rcode == SERVFAIL:
                log.debug("DNS %s %s: %s", name, qtype, error)
            return Answer(rcode)
        records = []
        for record in result.answer:
            try:
                wire = rdata.encode(record.type, record.data)
            except (rdata.UnsupportedRecord, ValueError, AttributeError) as error:
                log.debug("DNS %s %s: skipping a record: %s", name, qtype, error)
                continue
            records.append(
                Record(_absolute(record.name), record.type, record.ttl, wire, record.record_class)
            )
        return Answer(NOERROR, tuple(records))

    async def aclose(self) -> None:
        await self._resolver.close()


class ClusterDNS:
    """Resolves names as the manager's pod would, within the namespace scope.

    Args:
        resolver: Asks the cluster DNS.
        resolv: The manager pod's resolv.conf (search path, ndots).
        allows: Whether the scope allows asking an absolute name.
    """

    def __init__(
        self, resolver: Resolver, resolv: ResolvConf, allows: Callable[[str], bool]
    ) -> None:
        self._resolver = resolver
        self._search = resolv.search
        self._ndots = resolv.ndots
        self._domain = resolv.cluster_domain() or "cluster.local"
        self._allows = allows

    def candidates(self, name: str) -> list[str]:
        """The absolute names to ask for ``name``, in order (see the module docstring)."""
        absolute = _absolute(name.lower())
        bare = absolute[:-1]
        if not bare:
            return [absolute]
        if not self._search or bare == self._domain or bare.endswith(("." + self._domain, ".arpa")):
            return [absolute]
        expanded = [f"{bare}.{domain}." for domain in self._search]
        if "." not in bare:
            return expanded
        if bare.count(".") >= self._ndots:
            return [absolute, *expanded]
        return [*expanded, absolute]

    async def lookup(self, name: str, rtype: int) -> Answer:
        """Resolve ``name`` (absolute, as the client asks) for type ``rtype``."""
        allowed = [c for c in self.candidates(name) if self._allows(c)]
        if not allowed:
            log.debug("DNS %s type %d: outside the namespaces served", name, rtype)
            return Answer(REFUSED)
        nodata = failed = False
        for candidate in allowed:
            answer = await self._resolver.query(candidate, rtype)
            if answer.rcode == NOERROR and answer.records:
                return Answer(NOERROR, _renamed(answer.records, candidate, _absolute(name)))
            nodata |= answer.rcode == NOERROR
            # REFUSED is a server's "not my zone" (the cluster DNS without an upstream says it
            # for names outside the cluster): that candidate does not exist there.
            failed |= answer.rcode not in (NOERROR, NXDOMAIN, REFUSED)
        if nodata:
            return Answer(NOERROR)
        return Answer(SERVFAIL if failed else NXDOMAIN)

    async def addresses(self, host: str) -> list[IPAddress]:
        """The IPv4 then IPv6 addresses of ``host`` (a name as a data-plane stream gives it).

        Raises:
            OutOfScope: The name is outside the namespaces served.
        """
        if not any(self._allows(c) for c in self.candidates(_absolute(host))):
            raise OutOfScope(host)
        found: list[IPAddress] = []
        for rtype in (rdata.A, rdata.AAAA):
            answer = await self.lookup(_absolute(host), rtype)
            found += [
                ipaddress.ip_address(record.rdata)
                for record in answer.records
                if record.type == rtype
            ]
        return found


def _renamed(records: tuple[Record, ...], asked: str, name: str) -> tuple[Record, ...]:
    """The records with the owner ``asked`` relabelled ``name``: the client asked for the
    short name, and its DNS server answers for that name."""
    if asked == name.lower():
        return records
    return tuple(
        replace(record, name=name) if record.name.lower() == asked else record for record in records
    )


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."
