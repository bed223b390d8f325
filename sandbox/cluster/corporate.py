"""The workstation's own resolver: the "corporate" DNS a laptop has outside the cluster.

It answers a few names of one outside zone (:data:`ZONE`), NXDOMAIN for other names in that
zone, and REFUSED for everything else: nothing leaves the sandbox, so there is no Internet to
forward to. Telepresence must keep these names working when it takes over DNS, which is what
the tests check with it. The cluster DNS forwards non-cluster names here too, as CoreDNS
forwards to its node's resolver.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from anyio.abc import SocketAttribute

from sandbox.cluster.addresses import CORPORATE_DOMAIN

if TYPE_CHECKING:
    from anyio.abc import SocketStream, TaskStatus

log = logging.getLogger("sandbox.corporate")

#: The names it knows (documentation addresses: answered, never reachable).
ZONE = {
    f"intranet.{CORPORATE_DOMAIN}.": "192.0.2.10",
    f"wiki.{CORPORATE_DOMAIN}.": "192.0.2.11",
    f"git.{CORPORATE_DOMAIN}.": "192.0.2.12",
}
TTL = 60


def answer(wire: bytes) -> bytes | None:
    """The reply to one query (None for something that is not a query)."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # dnspython raises many kinds for garbage; all mean "not a query"
        return None
    if query.flags & dns.flags.QR or not query.question:
        return None
    reply = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text().lower()
    if not (name == f"{CORPORATE_DOMAIN}." or name.endswith(f".{CORPORATE_DOMAIN}.")):
        reply.set_rcode(dns.rcode.REFUSED)
        return reply.to_wire()
    reply.flags |= dns.flags.AA
    address = ZONE.get(name)
    if address is None and name != f"{CORPORATE_DOMAIN}.":
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif address is not None and question.rdtype == dns.rdatatype.A:
        reply.answer.append(
            dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, address)
        )
    return reply.to_wire()


async def serve(
    host: str, port: int = 53, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Answer over UDP and TCP on ``host``:``port`` until cancelled."""
    udp = await anyio.create_udp_socket(local_host=host, local_port=port)
    bound = udp.extra(SocketAttribute.local_port)
    tcp = await anyio.create_tcp_listener(local_host=host, local_port=bound)
    async with udp, tcp, anyio.create_task_group() as tasks:
        tasks.start_soon(_serve_udp, udp, name="corporate dns udp")
        tasks.start_soon(tcp.serve, _serve_tcp_client, name="corporate dns tcp")
        log.info("corporate DNS for %s on %s port %d", CORPORATE_DOMAIN, host, bound)
        task_status.started(bound)


async def _serve_udp(udp: anyio.abc.UDPSocket) -> None:
    async for wire, (client, client_port) in udp:
        reply = answer(wire)
        if reply is not None:
            await udp.sendto(reply, client, client_port)


async def _serve_tcp_client(stream: SocketStream) -> None:
    # RFC 1035 4.2.2: each message behind a two-byte length.
    async with stream:
        buffer = b""
        try:
            with anyio.fail_after(10):
                while True:
                    while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2]):
                        buffer += await stream.receive()
                    size = int.from_bytes(buffer[:2])
                    reply = answer(buffer[2 : 2 + size])
                    buffer = buffer[2 + size :]
                    if reply is None:
                        return
                    await stream.send(len(reply).to_bytes(2) + reply)
        except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError):
            return
