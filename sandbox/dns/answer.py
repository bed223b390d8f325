"""From a query's bytes to the reply's bytes, with no I/O: the server's protocol logic.

:meth:`Responder.respond` takes one message as it came off the wire and gives back the reply
to send, nothing (the message is dropped), or a :class:`Forward` when the question belongs to
an upstream resolver; the server asks it and hands the upstream's answer to
:meth:`Responder.relay`. dnspython parses and renders every message; EDNS is negotiated by
:func:`dns.message.make_response`, and a reply too big for the client's UDP buffer is cut
with the TC bit set (RFC 1035 4.2.1, RFC 6891 6.2.5), so the client asks again over TCP.

What comes back for what (RFC 1035 4.1.1 names the codes):

- a message too short for a header, or a response: dropped (answering a response invites a
  loop between two servers);
- a header with a body dnspython cannot parse, or a query without exactly one question:
  FORMERR; an opcode other than QUERY: NOTIMP; an EDNS version other than 0: BADVERS;
- a class other than IN, or a zone transfer: REFUSED;
- a name in the cluster domain: the records the :class:`~sandbox.dns.zone.Zone` has,
  NXDOMAIN or NODATA with the SOA in the authority section (RFC 2308 2.1, 2.2), always AA;
  when a CNAME (an ExternalName Service) leads out of the domain and there is an upstream,
  the chain followed by the upstream's answer for the target, as CoreDNS gives it;
- a known address's reverse name: its PTRs;
- anything else: forwarded to the upstream when there is one, else REFUSED.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.IN.SRV import SRV

from sandbox.dns.zone import Zone

if TYPE_CHECKING:
    from dns.rdata import Rdata

    from sandbox.dns.cluster import ClusterIndex
    from sandbox.dns.settings import DNSSettings

RdataType = dns.rdatatype.RdataType
IN = dns.rdataclass.IN
#: The EDNS buffer size offered and honoured: DNS Flag Day 2020's, which avoids fragmentation.
UDP_PAYLOAD = 1232
#: Replies to clients without EDNS fit in this (RFC 1035 2.3.4).
CLASSIC_UDP_PAYLOAD = 512
TCP_PAYLOAD = 65535
#: CNAMEs followed within the domain before giving what was found (CoreDNS stops at 8 too).
MAX_CHAIN = 8
HEADER_SIZE = 12


@dataclass(frozen=True, slots=True)
class Forward:
    """A question for the upstream resolver: send ``upstream_query``, then :meth:`relay`."""

    query: dns.message.Message
    upstream_query: dns.message.Message
    over_udp: bool
    #: Records that go before the upstream's answer: the CNAME chain that led out of the
    #: cluster domain, when the upstream is asked for an ExternalName's target.
    chain: tuple[dns.rrset.RRset, ...] = ()


class Responder:
    """Answers queries from a cluster index (see the module docstring)."""

    def __init__(self, index: ClusterIndex, settings: DNSSettings) -> None:
        self.settings = settings
        self.zone = Zone(index, settings.domain, settings.ttl)

    def respond(self, wire: bytes, *, over_udp: bool) -> bytes | Forward | None:
        """The reply to one message, a question to forward, or None to drop it."""
        if len(wire) < HEADER_SIZE or wire[2] & (dns.flags.QR >> 8):
            return None
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, struct.error, IndexError):
            # dnspython raises FormError and its kin for most malformed bodies, and plain
            # ValueError (bad EDNS options, bad label text) or struct.error for a few.
            return _header_only_error(wire, dns.rcode.FORMERR)
        response = dns.message.make_response(
            query,
            recursion_available=self.settings.upstream is not None,
            our_payload=UDP_PAYLOAD,
        )
        limit = _size_limit(query, over_udp=over_udp)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 6.1.3
            return _encode(response, limit)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return _encode(response, limit)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return _encode(response, limit)
        question = query.question[0]
        if question.rdclass != IN or question.rdtype in (RdataType.AXFR, RdataType.IXFR):
            response.set_rcode(dns.rcode.REFUSED)
            return _encode(response, limit)
        if question.name in self.zone:
            outside = self._answer(response, question.name, question.rdtype)
            if outside is not None and self.settings.upstream is not None:
                # CoreDNS resolves an ExternalName's target through its upstream and answers
                # the chain and the addresses together: stub resolvers (glibc's) do not chase
                # a CNAME with a query of their own.
                return Forward(
                    query,
                    self._upstream_query(query, outside, question.rdtype),
                    over_udp,
                    tuple(response.answer),
                )
            return _encode(response, limit)
        if (node := self.zone.find_reverse(question.name)) is not None:
            response.flags |= dns.flags.AA
            records = node.select(question.rdtype)
            for rdtype, rdatas in records.items():
                self._add(response, response.answer, question.name, rdtype, rdatas)
            return _encode(response, limit)
        if self.settings.upstream is None:
            response.set_rcode(dns.rcode.REFUSED)
            return _encode(response, limit)
        return Forward(query, self._upstream_query(query, question.name, question.rdtype), over_udp)

    @staticmethod
    def _upstream_query(
        query: dns.message.Message, name: dns.name.Name, rdtype: RdataType
    ) -> dns.message.Message:
        return dns.message.make_query(
            name,
            rdtype,
            IN,
            use_edns=0,
            payload=UDP_PAYLOAD,
            want_dnssec=bool(query.ednsflags & dns.flags.DO),
        )

    def relay(self, forward: Forward, answer: dns.message.Message | None) -> bytes:
        """The reply to a forwarded query: the upstream's ``answer``, or SERVFAIL if none."""
        response = dns.message.make_response(
            forward.query, recursion_available=True, our_payload=UDP_PAYLOAD
        )
        if answer is None:
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            response.set_rcode(answer.rcode())
            response.flags |= answer.flags & dns.flags.AD
            response.answer = [*forward.chain, *answer.answer]
            response.authority = list(answer.authority)
            response.additional = list(answer.additional)
        return _encode(response, _size_limit(forward.query, over_udp=forward.over_udp))

    def _answer(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: RdataType
    ) -> dns.name.Name | None:
        """Answer ``name`` from the zone; returns the name outside it where a CNAME chain
        led, if one did (for the upstream to resolve)."""
        response.flags |= dns.flags.AA
        node = self.zone.find(name)
        for _ in range(MAX_CHAIN):
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            if node.alias is not None and rdtype not in (RdataType.CNAME, RdataType.ANY):
                cname = node.records[RdataType.CNAME]
                self._add(response, response.answer, name, RdataType.CNAME, cname)
                if node.alias not in self.zone:
                    return node.alias  # the upstream's, when there is one
                name, node = node.alias, self.zone.find(node.alias)
                continue
            records = node.select(rdtype)
            if not records:
                break  # NODATA
            for found_type, rdatas in records.items():
                self._add(response, response.answer, name, found_type, rdatas)
            self._add_srv_addresses(response, records.get(RdataType.SRV, []))
            return None
        else:
            return None  # aliases in a loop: give the chain as far as it was followed
        # NXDOMAIN or NODATA: the SOA says for how long the client may remember that.
        self._add(response, response.authority, self.zone.origin, RdataType.SOA, [self.zone.soa()])
        return None

    def _add_srv_addresses(self, response: dns.message.Message, srvs: list[Rdata]) -> None:
        """Addresses of the SRV targets, in the additional section as CoreDNS gives them."""
        for srv in srvs:
            if not isinstance(srv, SRV) or srv.target not in self.zone:
                continue
            node = self.zone.find(srv.target)
            for rdtype, rdatas in (node.records if node is not None else {}).items():
                if rdtype in (RdataType.A, RdataType.AAAA):
                    self._add(response, response.additional, srv.target, rdtype, rdatas)

    def _add(
        self,
        response: dns.message.Message,
        section: list[dns.rrset.RRset],
        name: dns.name.Name,
        rdtype: RdataType,
        rdatas: list[Rdata],
    ) -> None:
        """Add to the RRset of ``name`` and ``rdtype`` in ``section`` (one of the response's)."""
        rrset = response.find_rrset(section, name, IN, rdtype, create=True)
        for rdata in rdatas:
            rrset.add(rdata, self.settings.ttl)


def _size_limit(query: dns.message.Message, *, over_udp: bool) -> int:
    if not over_udp:
        return TCP_PAYLOAD
    if query.edns < 0:
        return CLASSIC_UDP_PAYLOAD
    return max(CLASSIC_UDP_PAYLOAD, min(query.payload, UDP_PAYLOAD))


def _encode(response: dns.message.Message, limit: int) -> bytes:
    return response.to_wire(max_size=limit, prefer_truncation=True)


def _header_only_error(wire: bytes, rcode: dns.rcode.Rcode) -> bytes:
    """An error reply built from the header alone, for a query whose body would not parse."""
    (query_id, flags) = struct.unpack("!HH", wire[:4])
    response = dns.message.Message(id=query_id)
    response.flags = dns.flags.QR | (flags & dns.flags.RD)
    response.set_opcode(dns.opcode.from_flags(flags))
    response.set_rcode(rcode)
    return response.to_wire()
