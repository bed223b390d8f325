"""Rootless access to the cluster: the proxy behind ``telepresence connect --socks [ADDR:]PORT``.

One listening port speaks two proxy protocols, told apart by the first byte a client sends:
``0x05`` opens a SOCKS5 handshake (RFC 1928), an ASCII letter an HTTP request of which only
``CONNECT`` is served (RFC 9110 §9.3.6). SOCKS4 (``0x04``) and anything else is closed, with
a log line that says why.
Nothing is dialled from this host: every destination is opened by a :class:`ClusterDialer`,
the user daemon's session with the traffic-manager, so names resolve in the cluster and no
root, TUN device or route is needed.

**Layers.** The protocols' bytes are pure functions with no I/O (:func:`decode_destination`,
:func:`encode_reply`, :func:`parse_connect_request`, :func:`describe_dial_error`, ...). The
shell around them reads from a :class:`~anyio.streams.buffered.BufferedByteStream` with a
limit on every read, so a connection holds at most one header block (16 KiB, plus one socket
read) before it relays. A request this server will not carry out is a :class:`_Refusal`: the
bytes to answer (a SOCKS reply code, an HTTP error) and one line for the log.

**Lifetime.** :func:`serve_socks` runs one task per client in its task group. A client that
breaks the protocol, stalls its handshake beyond :data:`HANDSHAKE_TIMEOUT` or resets the
connection costs its own connection and one log line, never the server. The handshake
deadline covers only what the client must send; dialling is bounded by the session's own
timeouts (the traffic-manager answers ``timeout``).

**TCP** (SOCKS ``CONNECT``, HTTP ``CONNECT``) relays both ways with half-close: when one
direction ends its FIN is passed on with ``send_eof()`` and the other direction keeps going
until it ends too; when either peer breaks, both are closed. Bytes a client sent ahead of the
answer (HTTP pipelining, SOCKS "optimistic data") are already in the buffer and go first.

**SOCKS replies** carry ``BND.ADDR``/``BND.PORT`` 0.0.0.0:0 for ``CONNECT``, as many proxies
send: the connection's real local end is a socket in the cluster that this host never sees,
and the listener's own address would mislead. Dial failures map to reply codes by the reset
reason: refused 0x05, unreachable 0x04 (host unreachable, since the cluster cannot tell us
whether a network or a host was missing), timeout 0x06, policy 0x02, anything else 0x01; a
name that does not resolve (:class:`DialError`) 0x04. ``BIND`` is answered 0x07.

**UDP ASSOCIATE** binds a UDP socket on the IP the client reached the TCP listener on (port 0)
and answers with its address. Datagrams are accepted only from the client's IP and from one
port: the one the request named, or else the first one seen. Each distinct destination, as
the client wrote it (name or IP, and port), gets one flow from
:meth:`ClusterDialer.open_udp`, in a task of its own so that a slow dial does not hold up other
destinations; replies go back behind the very header the client used for that destination.
At most :data:`MAX_FLOWS` flows live per association (the least recently used is closed
first). The association, its socket and all its flows, ends when the TCP control connection
does (RFC 1928 §7).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import ipaddress
import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteStream

from telepresence.wire.mux import ResetReason
from telepresence.wire.shell import StreamResetError, splice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_FLOWS",
    "MAX_HEADER_SIZE",
    "MAX_UDP_PAYLOAD",
    "UNKNOWN_HOST",
    "ClusterDialer",
    "DialError",
    "serve_socks",
]

log = logging.getLogger(__name__)

#: Seconds a client has to finish its SOCKS or HTTP handshake.
HANDSHAKE_TIMEOUT = 30.0
#: The largest HTTP request line plus headers (a larger one is answered 431).
MAX_HEADER_SIZE = 16 * 1024
#: The largest UDP payload over IPv4; a datagram that cannot fit is dropped.
MAX_UDP_PAYLOAD = 65507
#: UDP flows per association; opening one more closes the least recently used.
MAX_FLOWS = 256
#: Datagrams queued for one flow while it opens or sends; more are dropped, as UDP may.
FLOW_BACKLOG = 64
#: Seconds an error answer waits for the client to read it and close, and for ``aclose()``.
CLOSE_TIMEOUT = 2.0
#: Bytes read and discarded from a refused client, so that closing does not reset the answer.
LINGER_LIMIT = 64 * 1024
#: :attr:`DialError.reason` of a name that does not resolve in the cluster.
UNKNOWN_HOST = "unknown host"


class ClusterDialer(Protocol):
    """Opens connections from inside the cluster: the user daemon's traffic-manager session.

    ``host`` is an IP literal or a DNS name, which the dialer resolves in the cluster.
    """

    async def open_tcp(self, host: str, port: int) -> anyio.abc.ByteStream:
        """A TCP stream to ``host:port``.

        Raises:
            StreamResetError: the cluster side could not connect (its ``reason`` says why).
            DialError: the dialer could not even try.
        """
        ...

    async def open_udp(self, host: str, port: int) -> anyio.abc.UnreliableObjectStream[bytes]:
        """A UDP flow to ``host:port``: ``send()`` datagrams to it, ``receive()`` its replies."""
        ...


class DialError(Exception):
    """The dialer could not even try, e.g. for a name that does not resolve in the cluster.

    Attributes:
        reason: a short label; :data:`UNKNOWN_HOST` (the default) is answered as "host
            unreachable" (SOCKS 0x04), any other reason as a general failure (0x01). Both are
            HTTP 502 with the message.
        message: what went wrong, for a person.
    """

    def __init__(self, message: str, *, reason: str = UNKNOWN_HOST) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def serve_socks(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    dialer: ClusterDialer,
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SOCKS5 and HTTP CONNECT clients on ``listener`` until cancelled.

    Args:
        listener: where clients connect; the caller owns it (and closes it).
        dialer: opens every destination, in the cluster.
        handshake_timeout: seconds a client has to say what it wants before it is closed.
        task_status: told once the server is serving.
    """
    server = _Server(dialer, handshake_timeout)
    async with anyio.create_task_group() as tasks:
        task_status.started()
        await listener.serve(server.serve_client, task_group=tasks)


# --- SOCKS5 bytes (RFC 1928), no I/O ---------------------------------------------------------

SOCKS_VERSION = 5
NO_AUTHENTICATION = 0x00
NO_ACCEPTABLE_METHODS = 0xFF


class Command(enum.IntEnum):
    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class AddressType(enum.IntEnum):
    IPV4 = 1
    DOMAIN_NAME = 3
    IPV6 = 4


class Reply(enum.IntEnum):
    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a client wants to go: ``host`` is IP text or a name; ``encoded`` holds ATYP,
    DST.ADDR and DST.PORT exactly as the client sent them."""

    host: str
    port: int
    encoded: bytes


class _Refusal(Exception):
    """A request this server will not or cannot carry out: ``response`` (maybe empty) is sent
    to the client before its connection closes; the message is for the log."""

    def __init__(self, message: str, response: bytes = b"") -> None:
        super().__init__(message)
        self.response = response


def encode_reply(reply: Reply, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    """VER REP RSV ATYP BND.ADDR BND.PORT."""
    address = ipaddress.ip_address(bound[0])
    kind = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
    header = struct.pack("!BBBB", SOCKS_VERSION, reply, 0, kind)
    return header + address.packed + struct.pack("!H", bound[1])


def _refuse_request(message: str, reply: Reply) -> _Refusal:
    return _Refusal(message, encode_reply(reply))


def choose_method(methods: bytes) -> None:
    """Accept NO AUTHENTICATION, the one method served; raises :class:`_Refusal` (0xFF)."""
    if NO_AUTHENTICATION not in methods:
        offered = ", ".join(f"0x{method:02x}" for method in methods) or "none"
        answer = bytes([SOCKS_VERSION, NO_ACCEPTABLE_METHODS])
        raise _Refusal(f"offers only authentication methods {offered}", answer)


def destination_size(kind: int, name_length: int = 0) -> int:
    """Bytes of ATYP, DST.ADDR and DST.PORT for an address of type ``kind``."""
    match kind:
        case AddressType.IPV4:
            return 1 + 4 + 2
        case AddressType.IPV6:
            return 1 + 16 + 2
        case AddressType.DOMAIN_NAME:
            return 1 + 1 + name_length + 2
    raise _refuse_request(
        f"address type {kind} is not one of RFC 1928's", Reply.ADDRESS_TYPE_NOT_SUPPORTED
    )


def decode_destination(data: bytes) -> tuple[Destination, bytes]:
    """Decode ATYP, DST.ADDR and DST.PORT at the start of ``data``; returns the rest too.

    Raises :class:`_Refusal` for an unknown address type, a bad name or truncated data.
    """
    if not data:
        raise _refuse_request("no address", Reply.GENERAL_FAILURE)
    size = destination_size(data[0], data[1] if len(data) > 1 else 0)
    if len(data) < size:
        raise _refuse_request("truncated address", Reply.GENERAL_FAILURE)
    encoded, rest = data[:size], data[size:]
    (port,) = struct.unpack("!H", encoded[-2:])
    if encoded[0] == AddressType.DOMAIN_NAME:
        host = _decode_name(encoded[2:-2])
    else:
        host = str(ipaddress.ip_address(encoded[1:-2]))
    return Destination(host, port, encoded), rest


def _decode_name(raw: bytes) -> str:
    # A resolvable name is printable ASCII: IDNs travel as punycode ("xn--"), which curl
    # and browsers convert to before asking the proxy.
    if not raw or any(byte <= 0x20 or byte >= 0x7F for byte in raw):
        raise _refuse_request(f"{raw!r} is not a host name", Reply.HOST_UNREACHABLE)
    return raw.decode("ascii")


def decode_datagram(packet: bytes) -> tuple[Destination, bytes]:
    """A client's UDP datagram: RSV (2), FRAG (1), destination, DATA (RFC 1928 §7).

    Fragments are not reassembled (the RFC makes that optional): FRAG other than 0 is
    refused, and the caller drops the datagram.
    """
    if len(packet) < 4:
        raise _refuse_request("datagram shorter than its header", Reply.GENERAL_FAILURE)
    if packet[2] != 0:
        raise _refuse_request(f"fragment {packet[2]}", Reply.GENERAL_FAILURE)
    return decode_destination(packet[3:])


def encode_datagram(destination: Destination, data: bytes) -> bytes:
    """A reply for the client, behind the header it used for ``destination``."""
    return b"\x00\x00\x00" + destination.encoded + data


# --- HTTP CONNECT bytes (RFC 9110 §9.3.6, RFC 9112), no I/O -----------------------------------

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def http_error(status: HTTPStatus, message: str, *, allow: str | None = None) -> bytes:
    """An error response with a one-line text body; the connection closes after it."""
    body = f"{message}\n".encode()
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _bad_request(message: str) -> _Refusal:
    return _Refusal(message, http_error(HTTPStatus.BAD_REQUEST, message))


def parse_connect_request(head: bytes) -> tuple[str, int]:
    """The ``host`` and ``port`` of a ``CONNECT`` request.

    ``head`` is the request line and header lines, without the empty line that ends them.
    The headers are checked for form only: none changes what a tunnel does.
    """
    request_line, *header_lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise _bad_request("the request line is not 'METHOD TARGET HTTP/1.1'")
    method, target, version = parts
    if method != b"CONNECT":
        shown = method.decode("ascii", "replace")
        message = f"this proxy only tunnels with CONNECT, not {shown}"
        raise _Refusal(message, http_error(HTTPStatus.METHOD_NOT_ALLOWED, message, allow="CONNECT"))
    if not version.startswith(b"HTTP/1."):
        raise _bad_request("only HTTP/1.x is served")
    for line in header_lines:
        if b":" not in line or line.startswith((b" ", b"\t")):
            raise _bad_request("a header line is not 'Name: value'")
    try:
        return parse_authority(target.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _bad_request(f"the target must be host:port ({error})") from error


def parse_authority(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; raises :class:`ValueError`."""
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{target!r} has no port")
        ipaddress.IPv6Address(host)
        port_text = rest[1:]
    else:
        host, colon, port_text = target.rpartition(":")
        if not colon or not host or ":" in host:
            raise ValueError(f"{target!r} is not host:port")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ValueError(f"{port_text!r} is not a port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port")
    return host, port


# --- Dial failures, for both protocols --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialFailure:
    """How a failed dial is told to a SOCKS client and to an HTTP client."""

    reply: Reply
    status: HTTPStatus
    message: str


def describe_dial_error(error: Exception, host: str, port: int) -> DialFailure:
    """The SOCKS reply, HTTP status and message for an error of :class:`ClusterDialer`."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(error, DialError):
        reply = Reply.HOST_UNREACHABLE if error.reason == UNKNOWN_HOST else Reply.GENERAL_FAILURE
        return DialFailure(reply, HTTPStatus.BAD_GATEWAY, f"cannot dial {where}: {error.message}")
    if not isinstance(error, StreamResetError):
        return DialFailure(
            Reply.GENERAL_FAILURE,
            HTTPStatus.BAD_GATEWAY,
            f"cannot dial {where}: {str(error) or type(error).__name__}",
        )
    detail = f": {error.message}" if error.message else ""
    cause = f"(the traffic-manager's dial{detail})"
    match error.reason:
        case ResetReason.REFUSED:
            return DialFailure(
                Reply.CONNECTION_REFUSED,
                HTTPStatus.BAD_GATEWAY,
                f"connection refused by {where} {cause}",
            )
        case ResetReason.UNREACHABLE:
            return DialFailure(
                Reply.HOST_UNREACHABLE, HTTPStatus.BAD_GATEWAY, f"{where} is unreachable {cause}"
            )
        case ResetReason.TIMEOUT:
            return DialFailure(
                Reply.TTL_EXPIRED, HTTPStatus.GATEWAY_TIMEOUT, f"timed out dialling {where} {cause}"
            )
        case ResetReason.POLICY:
            return DialFailure(
                Reply.NOT_ALLOWED, HTTPStatus.FORBIDDEN, f"{where} is not allowed {cause}"
            )
    return DialFailure(
        Reply.GENERAL_FAILURE,
        HTTPStatus.BAD_GATEWAY,
        f"cannot dial {where}: stream reset ({error.reason.label}) {cause}",
    )


# --- The shell: one task per client ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SocksRequest:
    command: int
    destination: Destination


@dataclass(frozen=True, slots=True)
class _ConnectRequest:
    host: str
    port: int


#: Errors of a client's connection that are the client's or the network's doing.
_CONNECTION_ENDED = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


class _Server:
    def __init__(self, dialer: ClusterDialer, handshake_timeout: float) -> None:
        self.dialer = dialer
        self.handshake_timeout = handshake_timeout

    async def serve_client(self, client: anyio.abc.SocketStream) -> None:
        """Serve one connection; whatever happens ends here, with one log line."""
        try:
            peer = _endpoint(client.extra(SocketAttribute.remote_address))
        except OSError:  # reset before it was served: there is no peer to name any more
            peer = "(gone)"
        async with _closing(client):
            stream = BufferedByteStream(client)
            try:
                await self._serve(client, stream)
            except _Refusal as refusal:
                log.info("proxy client %s: %s", peer, refusal)
                await _close_gently(stream, refusal.response)
            except _CONNECTION_ENDED as error:
                log.debug("proxy client %s: connection ended: %r", peer, error.__cause__ or error)
            except Exception:
                log.exception("proxy client %s: unexpected error", peer)

    async def _serve(self, client: anyio.abc.SocketStream, stream: BufferedByteStream) -> None:
        with anyio.move_on_after(self.handshake_timeout) as handshake:
            request = await _read_request(stream)
        if handshake.cancelled_caught:
            raise _Refusal(f"did not finish its handshake in {self.handshake_timeout:g} s")
        match request:
            case _ConnectRequest(host, port):
                await self._http_connect(stream, host, port)
            case _SocksRequest(Command.CONNECT, destination):
                await self._socks_connect(stream, destination)
            case _SocksRequest(Command.UDP_ASSOCIATE, destination):
                await self._udp_associate(client, stream, destination)
            case _SocksRequest(command, _):
                name = Command(command).name if command in Command else str(command)
                raise _refuse_request(
                    f"asked for command {name}, which is not served", Reply.COMMAND_NOT_SUPPORTED
                )

    async def _socks_connect(self, stream: BufferedByteStream, destination: Destination) -> None:
        host, port = destination.host, destination.port
        try:
            target = await self.dialer.open_tcp(host, port)
        except (DialError, anyio.BrokenResourceError, OSError) as error:
            failure = describe_dial_error(error, host, port)
            raise _refuse_request(failure.message, failure.reply) from error
        async with _closing(target):
            await stream.send(encode_reply(Reply.SUCCEEDED))
            await _relay(stream, target)

    async def _http_connect(self, stream: BufferedByteStream, host: str, port: int) -> None:
        try:
            target = await self.dialer.open_tcp(host, port)
        except (DialError, anyio.BrokenResourceError, OSError) as error:
            failure = describe_dial_error(error, host, port)
            raise _Refusal(failure.message, http_error(failure.status, failure.message)) from error
        async with _closing(target):
            await stream.send(ESTABLISHED)
            await _relay(stream, target)

    async def _udp_associate(
        self, client: anyio.abc.SocketStream, stream: BufferedByteStream, request: Destination
    ) -> None:
        local_ip = _unmapped(client.extra(SocketAttribute.local_address)[0])
        client_ip = _unmapped(client.extra(SocketAttribute.remote_address)[0])
        try:
            udp = await anyio.create_udp_socket(local_host=local_ip, local_port=0)
        except OSError as error:
            message = f"cannot open a UDP socket on {local_ip}: {error}"
            raise _refuse_request(message, Reply.GENERAL_FAILURE) from error
        async with _closing(udp):
            bound = (local_ip, udp.extra(SocketAttribute.local_port))
            await stream.send(encode_reply(Reply.SUCCEEDED, bound))
            association = _Association(self.dialer, udp, client_ip, request.port)
            # RFC 1928 §7: the association ends when its TCP connection does.
            await _until_either_ends(association.relay, functools.partial(_discard_all, stream))


async def _read_request(stream: BufferedByteStream) -> _SocksRequest | _ConnectRequest:
    """The client's handshake, up to what it asks for."""
    first = await stream.receive_exactly(1)
    if first[0] == SOCKS_VERSION:
        return await _read_socks_request(stream)
    if first.isalpha():
        return await _read_connect_request(stream, first)
    if first[0] == 4:
        raise _Refusal("speaks SOCKS4, which is not served: use SOCKS5 or HTTP CONNECT")
    raise _Refusal(f"speaks neither SOCKS5 nor HTTP (first byte 0x{first[0]:02x})")


async def _read_socks_request(stream: BufferedByteStream) -> _SocksRequest:
    (count,) = await stream.receive_exactly(1)
    choose_method(await stream.receive_exactly(count))
    await stream.send(bytes([SOCKS_VERSION, NO_AUTHENTICATION]))
    version, command, _reserved, kind = await stream.receive_exactly(4)
    if version != SOCKS_VERSION:
        raise _Refusal(f"sent a request of SOCKS version {version} after a SOCKS5 greeting")
    encoded = bytes([kind])
    if kind == AddressType.DOMAIN_NAME:
        encoded += await stream.receive_exactly(1)
    size = destination_size(kind, encoded[1] if len(encoded) > 1 else 0)
    encoded += await stream.receive_exactly(size - len(encoded))
    destination, _ = decode_destination(encoded)
    return _SocksRequest(command, destination)


async def _read_connect_request(stream: BufferedByteStream, first: bytes) -> _ConnectRequest:
    try:
        head = first + await stream.receive_until(b"\r\n\r\n", MAX_HEADER_SIZE - len(first))
    except anyio.DelimiterNotFound as error:
        message = f"request headers longer than {MAX_HEADER_SIZE} bytes"
        status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        raise _Refusal(message, http_error(status, message)) from error
    host, port = parse_connect_request(head)
    return _ConnectRequest(host, port)


async def _close_gently(stream: BufferedByteStream, response: bytes) -> None:
    """Send the answer, if any, and end our side; then read (and drop) what the client still
    sends, for a moment: closing with unread data would make the kernel reset the connection,
    and the client could lose the answer, or see a reset where a clean close was meant
    (RFC 9112 §9.6)."""
    with anyio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(*_CONNECTION_ENDED):
        if response:
            await stream.send(response)
        await stream.send_eof()
        discarded = 0
        while discarded < LINGER_LIMIT:
            discarded += len(await stream.receive())


async def _relay(client: anyio.abc.ByteStream, target: anyio.abc.ByteStream) -> None:
    """Move bytes both ways until both directions have ended, or either side broke."""
    broken: list[BaseException] = []
    await splice(
        client, target, broken, names=("proxy client to cluster", "cluster to proxy client")
    )
    for error in broken:
        log.debug("relay broken: %r", error.__cause__ or error)


# --- UDP ASSOCIATE ---------------------------------------------------------------------------


class _Flow:
    """One destination of an association: its datagrams wait here while its flow opens."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.where = _endpoint((destination.host, destination.port))
        self.scope = anyio.CancelScope()
        self.outbox: MemoryObjectSendStream[bytes]
        self.queued: MemoryObjectReceiveStream[bytes]
        self.outbox, self.queued = anyio.create_memory_object_stream[bytes](FLOW_BACKLOG)

    def offer(self, data: bytes) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self.outbox.send_nowait(data)

    def close(self) -> None:
        self.outbox.close()
        self.queued.close()


class _Association:
    """The UDP side of one UDP ASSOCIATE: the client's datagrams to flows, replies back."""

    def __init__(
        self,
        dialer: ClusterDialer,
        udp: anyio.abc.UDPSocket,
        client_ip: str,
        client_port: int,
    ) -> None:
        self._dialer = dialer
        self._udp = udp
        self._client_ip = client_ip
        self._client_port = client_port or None  # 0: the client did not know it yet
        self._flows: OrderedDict[bytes, _Flow] = OrderedDict()
        self._send_lock = anyio.Lock()  # one datagram at a time on the socket (trio insists)

    async def relay(self) -> None:
        """Until cancelled, or the socket breaks; the flows end with it."""
        async with anyio.create_task_group() as flows:
            try:
                await self._receive(flows)
            except _CONNECTION_ENDED as error:
                log.debug("SOCKS UDP association of %s: socket failed: %r", self._client_ip, error)
            flows.cancel_scope.cancel()

    async def _receive(self, flows: anyio.abc.TaskGroup) -> None:
        async for packet, (host, port) in self._udp:
            if not self._from_client(host, port):
                continue
            try:
                destination, data = decode_datagram(packet)
            except _Refusal as refusal:
                log.debug("SOCKS UDP from %s: dropped: %s", self._client_ip, refusal)
                continue
            if len(data) <= MAX_UDP_PAYLOAD:
                self._flow(destination, flows).offer(data)

    def _from_client(self, host: str, port: int) -> bool:
        if _unmapped(host) != self._client_ip:
            return False
        if self._client_port is None:
            self._client_port = port
        return port == self._client_port

    def _flow(self, destination: Destination, tasks: anyio.abc.TaskGroup) -> _Flow:
        key = destination.encoded
        flow = self._flows.get(key)
        if flow is not None:
            self._flows.move_to_end(key)
            return flow
        if len(self._flows) >= MAX_FLOWS:
            _, oldest = self._flows.popitem(last=False)
            oldest.scope.cancel()
        flow = self._flows[key] = _Flow(destination)
        tasks.start_soon(self._run_flow, flow, name=f"SOCKS UDP flow to {flow.where}")
        return flow

    async def _run_flow(self, flow: _Flow) -> None:
        destination = flow.destination
        try:
            with flow.scope:
                stream = await self._dialer.open_udp(destination.host, destination.port)
                async with _closing(stream):
                    await _until_either_ends(
                        functools.partial(self._return_replies, flow, stream),
                        functools.partial(_send_queued, flow.queued, stream),
                    )
        except (DialError, *_CONNECTION_ENDED) as error:
            log.debug("SOCKS UDP flow to %s: cannot open: %r", flow.where, error)
        finally:
            flow.close()
            if self._flows.get(destination.encoded) is flow:
                del self._flows[destination.encoded]

    async def _return_replies(
        self, flow: _Flow, stream: anyio.abc.UnreliableObjectReceiveStream[bytes]
    ) -> None:
        assert self._client_port is not None  # a flow opens for the client's first datagram
        try:
            async for data in stream:
                packet = encode_datagram(flow.destination, data)
                if len(packet) <= MAX_UDP_PAYLOAD:
                    async with self._send_lock:
                        await self._udp.sendto(packet, self._client_ip, self._client_port)
        except _CONNECTION_ENDED as error:
            log.debug("SOCKS UDP flow to %s: ended: %r", flow.where, error)


async def _send_queued(
    queued: MemoryObjectReceiveStream[bytes], stream: anyio.abc.UnreliableObjectSendStream[bytes]
) -> None:
    try:
        async for data in queued:
            await stream.send(data)
    except _CONNECTION_ENDED as error:
        log.debug("SOCKS UDP flow: cannot send: %r", error)


async def _discard_all(stream: anyio.abc.ByteReceiveStream) -> None:
    """Read until the peer ends the stream, or breaks it; what it sends is dropped."""
    with contextlib.suppress(*_CONNECTION_ENDED):
        async for _ in stream:
            pass


# --- Small helpers ---------------------------------------------------------------------------


async def _until_either_ends(
    first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]]
) -> None:
    """Run both; when either returns, cancel the other. Each handles its own errors."""
    async with anyio.create_task_group() as tasks:

        async def run(function: Callable[[], Awaitable[None]]) -> None:
            await function()
            tasks.cancel_scope.cancel()

        tasks.start_soon(run, first)
        tasks.start_soon(run, second)


@contextlib.asynccontextmanager
async def _closing[Resource: anyio.abc.AsyncResource](
    resource: Resource,
) -> AsyncIterator[Resource]:
    """Close ``resource`` on the way out, even when cancelled (shielded, for a bounded time)."""
    try:
        yield resource
    finally:
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await resource.aclose()


def _unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as IPv4."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


def _endpoint(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
