"""A client built on the library, run in the sandbox's workstation by
``test_session_sandbox.py``: it opens a session through the port-forward transport, does what
the test names, and prints one JSON document of what it saw.

    python session_client.py --context developer --pod-ip 10.244.0.5 --service-ip 10.96.0.20

Everything it reports is observed, never assumed: echoed bytes are compared by the test, and a
failure is reported as its message.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from typing import Any

import anyio

from telepresence import transport
from telepresence.kube import Kube, KubeError, KubeTarget
from telepresence.session import ManagerSession, SessionError, open_session
from telepresence.transport import TransportError
from telepresence.wire.shell import StreamResetError

TCP_PORT, UDP_PORT, CLOSED_PORT = 7000, 7001, 7999


def _subnet(net: Any) -> str:
    return f"{ipaddress.ip_address(net.ip)}/{net.mask}"


async def _tcp_echo(session: ManagerSession, host: str, payload: bytes) -> str:
    async with await session.open_tcp(host, TCP_PORT) as stream:
        await stream.send(payload)
        await stream.send_eof()
        echoed = b""
        try:
            while True:
                echoed += await stream.receive()
        except anyio.EndOfStream:
            pass
    return echoed.hex()


async def _udp_echo(session: ManagerSession, host: str, payload: bytes) -> str:
    async with await session.open_udp(host, UDP_PORT) as flow:
        with anyio.fail_after(10):
            await flow.send(payload)
            return (await flow.receive()).hex()


async def _closed_port(session: ManagerSession, host: str) -> str:
    try:
        stream = await session.open_tcp(host, CLOSED_PORT)
    except StreamResetError as error:
        return error.reason.name.lower()
    await stream.aclose()
    return "accepted"


async def main(arguments: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(200_000)
    report: dict[str, Any] = {"payload": payload.hex()}
    async with (
        Kube.open(KubeTarget(context=arguments.context)) as kube,
        transport.port_forward(kube, arguments.manager_namespace) as way,
    ):
        if arguments.token is not None:
            try:
                async with open_session(way, token=arguments.token, name="nobody@ws"):
                    report["refused"] = None
            except SessionError as error:
                report["refused"] = f"{type(error).__name__}: {error}"
            return report
        token = kube.bearer_token or ""
        async with open_session(way, token=token, name="developer@ws") as session:
            info = session.cluster_info
            report["session"] = {
                "version": session.manager_version,
                "pod": session.manager_pod,
                "pod_subnets": [_subnet(net) for net in info.pod_subnets],
                "service_subnet": _subnet(info.service_subnet),
                "dns": str(ipaddress.ip_address(info.cluster_dns_ip)),
                "domain": info.cluster_domain,
            }
            for label, host in (("pod", arguments.pod_ip), ("service", arguments.service_ip)):
                report[f"tcp_{label}"] = await _tcp_echo(session, host, payload)
                report[f"udp_{label}"] = await _udp_echo(session, host, payload[:1000])
            report["tcp_by_name"] = await _tcp_echo(session, "echo.default", payload[:10])
            report["closed_port"] = await _closed_port(session, arguments.pod_ip)
            answer = await session.lookup_dns("echo.default")
            report["dns"] = {
                "rcode": answer.rcode,
                "answers": [
                    (record.name, record.type, str(ipaddress.ip_address(record.rdata)))
                    for record in answer.answers
                ],
            }
    return report


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", required=True)
    parser.add_argument("--manager-namespace", default="ambassador")
    parser.add_argument("--pod-ip", default="")
    parser.add_argument("--service-ip", default="")
    parser.add_argument("--token", help="arrive with this token instead, expecting a refusal")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        print(json.dumps(anyio.run(main, _arguments())))
    except (KubeError, TransportError, SessionError) as failure:
        print(f"{type(failure).__name__}: {failure}", file=sys.stderr)
        sys.exit(2)
