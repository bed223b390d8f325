"""The byte layout of the data plane: constants, frame header, payload codecs.

Everything on the wire after the client's 8-byte preface is a frame: a fixed 12-byte header
followed by at most ``MAX_PAYLOAD`` (64 KiB) payload bytes. As with HTTP/2's
SETTINGS_MAX_FRAME_SIZE, the limit counts the payload: an application's 64 KiB write is then
one frame rather than a full one and a 12-byte tail, which cost the receiver 15%. Integers
are big-endian. The header carries its own version byte so that a later header layout can be
recognised (and refused with a reason) instead of being misparsed.

    offset  size  field
    0       1     version      (1)
    1       1     type         (FrameType)
    2       1     flags        (per type; unknown bits are an error)
    3       1     reserved     (0)
    4       4     stream id    (0 = the connection itself)
    8       4     length       (payload bytes, <= MAX_PAYLOAD)

Decoders here validate every field and raise :class:`ProtocolError` with a reason; they never
raise anything else on any input (the property tests hold them to that).
``docs/reference/wire-protocol.md`` is the normative description; keep the two in step.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from telepresence.wire.mux._errors import ProtocolError, ResetReason

#: Sent once by the client before its first frame. The high byte and CR LF catch peers that
#: speak a text protocol or mangle line endings, as in the PNG signature.
MAGIC = b"\x89TPMUX\r\n"
VERSION = 1

HEADER = struct.Struct("!BBBBII")
HEADER_SIZE = HEADER.size  # 12
MAX_PAYLOAD = 64 * 1024  # one full UDP datagram (65507 bytes) fits
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD

MAX_CREDENTIALS = 4096
MAX_MESSAGE = 1024
MAX_NAME = 253  # RFC 1035 limit on a domain name in text form
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**32 - 1


class FrameType(enum.IntEnum):
    HELLO = 0x0
    OPEN = 0x1
    DATA = 0x2
    DATAGRAM = 0x3
    WINDOW_UPDATE = 0x4
    HALF_CLOSE = 0x5
    RESET = 0x6
    PING = 0x7
    GO_AWAY = 0x8


#: Flag bit on OPEN (the acceptor's answer: the destination is reached) and PING (a pong).
FLAG_ACK = 0x1

#: Which flag bits each frame type defines; any other bit set is a protocol error.
ALLOWED_FLAGS = {
    FrameType.HELLO: 0,
    FrameType.OPEN: FLAG_ACK,
    FrameType.DATA: 0,
    FrameType.DATAGRAM: 0,
    FrameType.WINDOW_UPDATE: 0,
    FrameType.HALF_CLOSE: 0,
    FrameType.RESET: 0,
    FrameType.PING: FLAG_ACK,
    FrameType.GO_AWAY: 0,
}

#: Frame types that belong to the connection (stream id 0) rather than to a stream.
CONNECTION_FRAMES = frozenset({FrameType.HELLO, FrameType.PING, FrameType.GO_AWAY})


class Protocol(enum.IntEnum):
    """What a stream carries: a TCP byte stream or UDP datagrams."""

    TCP = 1
    UDP = 2


class AddressType(enum.IntEnum):
    NONE = 0  # only for an origin
    IPV4 = 1
    IPV6 = 2
    NAME = 3  # only for a destination: resolved by the accepting side


@dataclass(frozen=True, slots=True)
class Address:
    """A host (IP address or DNS name) and a port.

    ``host`` is the text form: ``"10.96.0.12"``, ``"fd00::1"`` or ``"echo.default"``.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO payload: what the sender lets its peer do, and who the sender is."""

    max_concurrent_streams: int
    initial_stream_window: int
    initial_connection_window: int
    credentials: bytes = b""


@dataclass(frozen=True, slots=True)
class OpenRequest:
    protocol: Protocol
    destination: Address
    origin: Address | None = None


_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HELLO = struct.Struct("!IIIH")
_RESET = struct.Struct("!BH")
_GO_AWAY = struct.Struct("!IBH")


def frame(frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One frame: header and payload, for payloads that are small or already bytes."""
    return HEADER.pack(VERSION, frame_type, flags, 0, stream_id, len(payload)) + payload


def header(frame_type: FrameType, stream_id: int, length: int, flags: int = 0) -> bytes:
    return HEADER.pack(VERSION, frame_type, flags, 0, stream_id, length)


# -- encoders ------------------------------------------------------------------------------


def encode_hello(hello: Hello) -> bytes:
    return (
        _HELLO.pack(
            hello.max_concurrent_streams,
            hello.initial_stream_window,
            hello.initial_connection_window,
            len(hello.credentials),
        )
        + hello.credentials
    )


def _encode_address(address: Address | None) -> bytes:
    if address is None:
        return _U8.pack(AddressType.NONE)
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        name = address.host.encode("idna")
        return _U8.pack(AddressType.NAME) + _U8.pack(len(name)) + name + _U16.pack(address.port)
    kind = AddressType.IPV4 if ip.version == 4 else AddressType.IPV6
    return _U8.pack(kind) + ip.packed + _U16.pack(address.port)


def encode_open(request: OpenRequest) -> bytes:
    return (
        _U8.pack(request.protocol)
        + _encode_address(request.destination)
        + _encode_address(request.origin)
    )


def encode_reason(reason: ResetReason, message: str) -> bytes:
    text = _truncate_utf8(message, MAX_MESSAGE)
    return _RESET.pack(reason, len(text)) + text


def encode_go_away(last_stream_id: int, reason: ResetReason, message: str) -> bytes:
    text = _truncate_utf8(message, MAX_MESSAGE)
    return _GO_AWAY.pack(last_stream_id, reason, len(text)) + text


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    # Cut on a character boundary so the peer can always decode what it gets.
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


# -- decoders ------------------------------------------------------------------------------


def decode_hello(payload: bytes) -> Hello:
    if len(payload) < _HELLO.size:
        raise ProtocolError(ResetReason.PROTOCOL, "HELLO payload too short")
    streams, stream_window, connection_window, length = _HELLO.unpack_from(payload)
    if len(payload) != _HELLO.size + length:
        raise ProtocolError(ResetReason.PROTOCOL, "HELLO credentials length does not match")
    if length > MAX_CREDENTIALS:
        raise ProtocolError(ResetReason.PROTOCOL, "HELLO credentials longer than 4096 bytes")
    if streams < 1:
        raise ProtocolError(ResetReason.PROTOCOL, "HELLO allows no concurrent streams")
    for window in (stream_window, connection_window):
        if not MAX_PAYLOAD <= window <= MAX_WINDOW:
            raise ProtocolError(ResetReason.PROTOCOL, f"HELLO initial window {window} out of range")
    return Hello(streams, stream_window, connection_window, bytes(payload[_HELLO.size :]))


def _decode_address(payload: bytes, pos: int, *, origin: bool) -> tuple[Address | None, int]:
    end = len(payload)
    if pos >= end:
        raise ProtocolError(ResetReason.PROTOCOL, "OPEN address truncated")
    kind = payload[pos]
    pos += 1
    host: str
    if kind == AddressType.NONE and origin:
        return None, pos
    if kind == AddressType.IPV4:
        if end - pos < 6:
            raise ProtocolError(ResetReason.PROTOCOL, "OPEN IPv4 address truncated")
        host = str(ipaddress.IPv4Address(bytes(payload[pos : pos + 4])))
        pos += 4
    elif kind == AddressType.IPV6:
        if end - pos < 18:
            raise ProtocolError(ResetReason.PROTOCOL, "OPEN IPv6 address truncated")
        host = str(ipaddress.IPv6Address(bytes(payload[pos : pos + 16])))
        pos += 16
    elif kind == AddressType.NAME and not origin:
        if pos >= end:
            raise ProtocolError(ResetReason.PROTOCOL, "OPEN name truncated")
        length = payload[pos]
        pos += 1
        if not 1 <= length <= MAX_NAME or end - pos < length + 2:
            raise ProtocolError(ResetReason.PROTOCOL, "OPEN name length invalid")
        host = _decode_name(bytes(payload[pos : pos + length]))
        pos += length
    else:
        raise ProtocolError(ResetReason.PROTOCOL, f"OPEN address type {kind} not allowed here")
    (port,) = _U16.unpack_from(payload, pos)
    if port == 0 and not origin:
        raise ProtocolError(ResetReason.PROTOCOL, "OPEN destination port is 0")
    return Address(host, port), pos + 2


def _decode_name(raw: bytes) -> str:
    # Names travel as IDNA-encoded ASCII; anything else would let a peer smuggle bytes
    # (spaces, NULs, control characters) into a resolver or a log line.
    if not all(0x21 <= byte < 0x7F for byte in raw):
        raise ProtocolError(ResetReason.PROTOCOL, "OPEN name is not printable ASCII")
    return raw.decode("ascii")


def decode_open(payload: bytes) -> OpenRequest:
    if not payload:
        raise ProtocolError(ResetReason.PROTOCOL, "OPEN payload empty")
    try:
        protocol = Protocol(payload[0])
    except ValueError:
        raise ProtocolError(ResetReason.PROTOCOL, f"OPEN protocol {payload[0]} unknown") from None
    destination, pos = _decode_address(payload, 1, origin=False)
    origin, pos = _decode_address(payload, pos, origin=True)
    if pos != len(payload):
        raise ProtocolError(ResetReason.PROTOCOL, "OPEN payload has trailing bytes")
    assert destination is not None
    return OpenRequest(protocol, destination, origin)


def decode_reason(payload: bytes, offset: int = 0) -> tuple[ResetReason, str]:
    if len(payload) - offset < _RESET.size:
        raise ProtocolError(ResetReason.PROTOCOL, "reason truncated")
    code, length = _RESET.unpack_from(payload, offset)
    try:
        reason = ResetReason(code)
    except ValueError:
        raise ProtocolError(ResetReason.PROTOCOL, f"reason code {code} unknown") from None
    start = offset + _RESET.size
    if length > MAX_MESSAGE or len(payload) - start != length:
        raise ProtocolError(ResetReason.PROTOCOL, "reason message length invalid")
    try:
        message = bytes(payload[start:]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ResetReason.PROTOCOL, "reason message is not UTF-8") from None
    return reason, message


def decode_go_away(payload: bytes) -> tuple[int, ResetReason, str]:
    if len(payload) < 4:
        raise ProtocolError(ResetReason.PROTOCOL, "GO_AWAY payload too short")
    (last_stream_id,) = _U32.unpack_from(payload)
    reason, message = decode_reason(payload, 4)
    return last_stream_id, reason, message


def decode_u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise ProtocolError(ResetReason.PROTOCOL, f"{what} payload must be 4 bytes")
    value: int = _U32.unpack(payload)[0]
    return value


def decode_u64(payload: bytes, what: str) -> int:
    if len(payload) != 8:
        raise ProtocolError(ResetReason.PROTOCOL, f"{what} payload must be 8 bytes")
    value: int = _U64.unpack(payload)[0]
    return value
