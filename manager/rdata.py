"""DNS record data in wire format, from the records c-ares parsed (pycares 5's record types).

``LookupDNS`` answers carry each record's RDATA as RFC 1035 wire bytes, with every domain name
written out in full (no compression pointers: they would point into a message these bytes
are not part of), so that the laptop can copy records into its own replies without knowing
their types. c-ares parses the cluster DNS's answer into fields; this module writes the
fields back, type by type, as the RFCs define them:

| type | RDATA | RFC |
|---|---|---|
| A, AAAA | the address | 1035, 3596 |
| CNAME, NS, PTR | a name | 1035 |
| MX | preference, exchange | 1035 |
| SOA | mname, rname, serial, refresh, retry, expire, minimum | 1035 |
| TXT | character-strings of at most 255 bytes | 1035 |
| SRV | priority, weight, port, target | 2782 |
| NAPTR | order, preference, flags, services, regexp, replacement | 3403 |
| CAA | flags, tag, value | 8659 |
| TLSA | usage, selector, matching type, data | 6698 |
| HTTPS | priority, target, parameters | 9460 |
| URI | priority, weight, target | 7553 |

c-ares joins a TXT record's strings into one, so they are split again at 255 bytes: the same
text, possibly cut at other places.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

#: Record type numbers (the IANA registry).
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, NAPTR, TLSA, HTTPS, ANY, URI, CAA = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 52, 65, 255, 256, 257,
)  # fmt: skip
MAX_NAME = 255
MAX_LABEL = 63


class UnsupportedRecord(ValueError):
    """A record type (or a field) that cannot be written."""


def encode_name(name: str) -> bytes:
    """A domain name in uncompressed wire format (``\\.`` and ``\\DDD`` escapes allowed)."""
    wire = bytearray()
    for label in _labels(name):
        if not 0 < len(label) <= MAX_LABEL:
            raise UnsupportedRecord(f"bad label in {name!r}")
        wire.append(len(label))
        wire += label
    wire.append(0)
    if len(wire) > MAX_NAME:
        raise UnsupportedRecord(f"name too long: {name!r}")
    return bytes(wire)


def encode(rtype: int, data: Any) -> bytes:
    """The RDATA of a record of type ``rtype`` from pycares's parsed ``data``.

    Raises:
        UnsupportedRecord: A type this module does not write.
    """
    match rtype:
        case 1 | 28:  # A, AAAA
            return ipaddress.ip_address(data.addr).packed
        case 5:
            return encode_name(data.cname)
        case 2:
            return encode_name(data.nsdname)
        case 12:
            return encode_name(data.dname)
        case 15:
            return struct.pack("!H", data.priority) + encode_name(data.exchange)
        case 6:
            return (
                encode_name(data.mname)
                + encode_name(data.rname)
                + struct.pack(
                    "!IIIII", data.serial, data.refresh, data.retry, data.expire, data.minimum
                )
            )
        case 16:
            text: bytes = data.data
            if not text:
                return b"\x00"
            return b"".join(_string(text[i : i + 255]) for i in range(0, len(text), 255))
        case 33:
            return struct.pack("!HHH", data.priority, data.weight, data.port) + encode_name(
                data.target
            )
        case 35:
            return (
                struct.pack("!HH", data.order, data.preference)
                + _string(data.flags.encode())
                + _string(data.service.encode())
                + _string(data.regexp.encode())
                + encode_name(data.replacement)
            )
        case 257:
            tag: bytes = data.tag.encode()
            value: bytes = data.value.encode()
            return bytes([data.critical & 0xFF, len(tag)]) + tag + value
        case 52:
            return bytes([data.cert_usage, data.selector, data.matching_type]) + bytes(
                data.cert_association_data
            )
        case 65:
            params = b"".join(
                struct.pack("!HH", key, len(value)) + value for key, value in sorted(data.params)
            )
            return struct.pack("!H", data.priority) + encode_name(data.target) + params
        case 256:
            target: bytes = data.target.encode()
            return struct.pack("!HH", data.priority, data.weight) + target
    raise UnsupportedRecord(f"record type {rtype}")


def _string(value: bytes) -> bytes:
    if len(value) > 255:
        raise UnsupportedRecord("character-string longer than 255 bytes")
    return bytes([len(value)]) + value


def _labels(name: str) -> list[bytes]:
    """Split a presentation-format name into labels, undoing escapes."""
    name = name.rstrip(".") if not name.endswith("\\.") else name
    if not name or name == ".":
        return []
    labels: list[bytes] = []
    current = bytearray()
    i = 0
    while i < len(name):
        char = name[i]
        if char == "\\" and i + 1 < len(name):
            following = name[i + 1 : i + 4]
            if following.isdigit() and len(following) == 3:
                current.append(int(following) & 0xFF)
                i += 4
                continue
            current += name[i + 1].encode("latin-1", "replace")
            i += 2
            continue
        if char == ".":
            labels.append(bytes(current))
            current = bytearray()
        else:
            current += char.encode("latin-1", "replace")
        i += 1
    labels.append(bytes(current))
    return labels
