"""The cluster's answers, as the DNS server keeps them: parsed once, cached by their TTL; and
the laptop's nameservers' replies (:class:`ReplyCache`).

A :class:`ClusterAnswer` is the manager's ``DNSResponse`` with its records parsed into
dnspython rdata (RDATA arrives in wire format with every name written out, so
:func:`dns.rdata.from_wire` reads it without the message it came from).

:class:`AnswerCache` keeps them by (cluster name, type), least recently used first out when
full. How long (RFC 2181 §8, RFC 2308):

- records: the smallest TTL among them; when served from the cache, each record's TTL is
  lowered by the time it spent there, so that no downstream cache keeps it longer than the
  cluster allowed;
- NXDOMAIN, NODATA, and REFUSED (the manager's "outside the namespaces I serve"): the
  configured negative TTL, a few seconds, so that a service created a moment ago resolves
  soon. The cluster sends no SOA for these, and neither do we, so no downstream cache keeps
  them at all;
- anything else (SERVFAIL, NOTIMP, ...): not at all, the next query asks again.

**Serving stale data** (RFC 8767). An entry past its TTL is not given as an answer, but it is
kept ``stale`` seconds longer (or until the least recently used go): when the cluster or the
laptop's nameservers cannot answer (a timeout, a broken connection, SERVFAIL), the server
gives the stale answer, no TTL above :data:`STALE_TTL`, instead of SERVFAIL. A program
then sees the name it resolved a moment ago, not a failure (glibc gives up at once on
SERVFAIL), while the cluster or the nameserver is busy.

The cache does no I/O and reads no clock: ``now`` (seconds, monotonic) is an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

if TYPE_CHECKING:
    from collections.abc import Callable

    from telepresence.wire.proto import manager_pb2

__all__ = [
    "AnswerCache",
    "CacheKey",
    "ClusterAnswer",
    "ClusterRecord",
    "ReplyCache",
    "STALE_TTL",
    "UpstreamKey",
]

#: The largest rcode there is (12 bits with EDNS, RFC 6891 §6.1.3).
_MAX_RCODE = 4095
#: The TTL of every record of a stale answer (RFC 8767 §4 recommends 30 seconds).
STALE_TTL = 30

type CacheKey = tuple[dns.name.Name, dns.rdatatype.RdataType]


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    """One record of the cluster's answer."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rdclass: dns.rdataclass.RdataClass
    ttl: int
    rdata: dns.rdata.Rdata


@dataclass(frozen=True, slots=True)
class ClusterAnswer:
    """The cluster's answer to one question: its rcode and its answer section."""

    rcode: int
    records: tuple[ClusterRecord, ...] = ()

    @classmethod
    def from_response(cls, response: manager_pb2.DNSResponse) -> ClusterAnswer:
        """Parse the manager's answer.

        Raises:
            ValueError: The rcode is out of range, or a record's name or RDATA does not parse.
        """
        if response.rcode > _MAX_RCODE:
            raise ValueError(f"rcode {response.rcode} is out of range")
        records = []
        for record in response.answers:
            try:
                rdclass = dns.rdataclass.RdataClass.make(record.record_class or dns.rdataclass.IN)
                rdtype = dns.rdatatype.RdataType.make(record.type)
                rdata = dns.rdata.from_wire(rdclass, rdtype, record.rdata, 0, len(record.rdata))
                name = dns.name.from_text(record.name)
            except (dns.exception.DNSException, ValueError) as error:
                raise ValueError(
                    f"the record {record.name!r} of type {record.type} does not parse: {error}"
                ) from error
            records.append(ClusterRecord(name, rdtype, rdclass, record.ttl, rdata))
        return cls(response.rcode, tuple(records))

    @property
    def negative(self) -> bool:
        """NXDOMAIN, NODATA or REFUSED: the name, or the type, is not there."""
        if self.rcode == dns.rcode.NOERROR:
            return not self.records
        return self.rcode in (dns.rcode.NXDOMAIN, dns.rcode.REFUSED)

    def aged(self, seconds: int) -> ClusterAnswer:
        """This answer after ``seconds`` in a cache: each TTL that much lower, down to 0."""
        if seconds <= 0 or not self.records:
            return self
        return replace(
            self,
            records=tuple(replace(r, ttl=max(r.ttl - seconds, 0)) for r in self.records),
        )

    def capped(self, ttl: int) -> ClusterAnswer:
        """This answer with no record's TTL above ``ttl``."""
        return replace(self, records=tuple(replace(r, ttl=min(r.ttl, ttl)) for r in self.records))


@dataclass(slots=True)
class _Entry[V]:
    value: V
    stored: float
    expires: float


class _TTLCache[K, V]:
    """A bounded LRU whose entries expire, and are then kept ``stale`` seconds longer for
    :meth:`_fetch_stale`: the bookkeeping both caches share."""

    def __init__(self, size: int, stale: float) -> None:
        self._size = max(size, 0)
        self._stale = max(stale, 0.0)
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _fetch(self, key: K, now: float) -> tuple[V, int] | None:
        """The value kept for ``key`` and its age in whole seconds; None when none is, or it
        expired."""
        entry = self._live(key, now)
        if entry is None or now >= entry.expires:
            return None
        self._entries.move_to_end(key)
        return entry.value, int(now - entry.stored)

    def _fetch_stale(self, key: K, now: float) -> V | None:
        """The value kept for ``key``, expired or not; None when none is, or it expired more
        than ``stale`` seconds ago."""
        entry = self._live(key, now)
        return entry.value if entry is not None else None

    def _live(self, key: K, now: float) -> _Entry[V] | None:
        """The entry for ``key``, dropped (and None) once past its stale time."""
        entry = self._entries.get(key)
        if entry is not None and now >= entry.expires + self._stale:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: K, value: V, now: float, lifetime: float) -> None:
        """Keep ``value`` for ``lifetime`` seconds (not at all for 0), the least recently
        used going first when full."""
        if lifetime <= 0 or self._size == 0:
            return
        self._entries[key] = _Entry(value, now, now + lifetime)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


class AnswerCache(_TTLCache[CacheKey, ClusterAnswer]):
    """A bounded LRU of the cluster's answers, each kept for as long as its TTL says.

    Args:
        size: The most answers kept; the least recently used go first.
        negative_ttl: Seconds NXDOMAIN, NODATA and REFUSED are kept.
        stale: Seconds an expired answer is kept for :meth:`stale`.
    """

    def __init__(self, size: int, negative_ttl: float, stale: float = 0.0) -> None:
        super().__init__(size, stale)
        self._negative_ttl = negative_ttl

    def lifetime(self, answer: ClusterAnswer) -> float:
        """Seconds ``answer`` may be kept; 0: not at all."""
        if answer.negative:
            return self._negative_ttl
        if answer.rcode == dns.rcode.NOERROR:
            return min(record.ttl for record in answer.records)
        return 0

    def get(self, key: CacheKey, now: float) -> ClusterAnswer | None:
        """The answer kept for ``key``, its TTLs aged; None when none is, or it expired."""
        found = self._fetch(key, now)
        return found[0].aged(found[1]) if found is not None else None

    def put(self, key: CacheKey, answer: ClusterAnswer, now: float) -> None:
        """Keep ``answer`` for ``key`` as long as :meth:`lifetime` says (not at all for 0)."""
        self._store(key, answer, now, self.lifetime(answer))

    def stale(self, key: CacheKey, now: float) -> ClusterAnswer | None:
        """The answer kept for ``key``, even expired, with no TTL above :data:`STALE_TTL`;
        None when none is kept."""
        found = self._fetch_stale(key, now)
        return found.capped(STALE_TTL) if found is not None else None


# --- the upstream's replies ------------------------------------------------------------------

type UpstreamKey = tuple[dns.name.Name, int, int]


class ReplyCache(_TTLCache[UpstreamKey, bytes]):
    """A bounded LRU of the laptop's nameservers' replies (by name, type and class), kept as
    a caching resolver keeps them (RFC 2308): positive answers for their smallest TTL,
    NXDOMAIN and NODATA for the SOA's negative TTL (``min(SOA TTL, MINIMUM)``), or
    ``negative_ttl`` when the reply has no SOA; other rcodes and truncated replies not at all.
    A burst of lookups (glibc asks ``NAME.<search domain>`` first, for every connection) then
    costs the nameservers one query.

    Args:
        size: The most replies kept.
        negative_ttl: Seconds a negative reply without an SOA is kept.
        stale: Seconds an expired reply is kept for :meth:`stale`.
        max_ttl: The longest any reply is kept.
    """

    def __init__(
        self, size: int, negative_ttl: float, stale: float = 0.0, max_ttl: float = 3600.0
    ) -> None:
        super().__init__(size, stale)
        self._negative_ttl = negative_ttl
        self._max_ttl = max_ttl

    def lifetime(self, reply: dns.message.Message) -> float:
        """Seconds ``reply`` may be kept; 0: not at all."""
        if reply.flags & dns.flags.TC or reply.rcode() not in (
            dns.rcode.NOERROR,
            dns.rcode.NXDOMAIN,
        ):
            return 0
        if reply.rcode() == dns.rcode.NOERROR and reply.answer:
            return min(*(rrset.ttl for rrset in reply.answer), self._max_ttl)
        for rrset in reply.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                minimum: int = rrset[0].minimum
                return min(rrset.ttl, minimum, self._max_ttl)
        return self._negative_ttl

    def get(self, key: UpstreamKey, query_id: int, now: float) -> dns.message.Message | None:
        """The reply kept for ``key``, with ``query_id`` and its TTLs aged; None when none."""
        found = self._fetch(key, now)
        if found is None:
            return None
        wire, age = found
        return _reply(wire, query_id, lambda ttl: max(ttl - age, 0))

    def stale(self, key: UpstreamKey, query_id: int, now: float) -> dns.message.Message | None:
        """The reply kept for ``key``, even expired, with ``query_id`` and no TTL above
        :data:`STALE_TTL`; None when none is kept."""
        wire = self._fetch_stale(key, now)
        if wire is None:
            return None
        return _reply(wire, query_id, lambda ttl: min(ttl, STALE_TTL))

    def put(self, key: UpstreamKey, reply: dns.message.Message, now: float) -> None:
        """Keep ``reply`` as long as :meth:`lifetime` says (not at all for 0)."""
        self._store(key, reply.to_wire(), now, self.lifetime(reply))


def _reply(wire: bytes, query_id: int, ttl: Callable[[int], int]) -> dns.message.Message:
    """The kept reply ``wire``, with ``query_id``, each TTL changed by ``ttl``."""
    reply = dns.message.from_wire(wire)
    reply.id = query_id
    for section in (reply.answer, reply.authority, reply.additional):
        for rrset in section:
            rrset.ttl = ttl(rrset.ttl)
    return reply
