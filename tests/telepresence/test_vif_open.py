"""``open_vif`` as the root daemon runs it, inside a throwaway network namespace, with a fake
cluster: a dialer that connects to a local echo server, and a lookup that knows one name.

Each case runs a child program in the namespace (the TUN device, the routes and the table
must be the namespace's) and checks what it printed, then that the namespace's links, routes,
rules and nftables ruleset are as they were. The systemd-resolved mode talks to a fake
``org.freedesktop.resolve1`` on a private bus (from ``test_vif_resolved``); the redirect
mode to a nameserver address of the namespace's own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.node import netns as sandbox_netns
from tests.telepresence import test_vif_resolved
from tests.telepresence.test_vif_resolved import fake_resolved

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(90)

#: A private dbus-daemon (the fixture of the resolved tests).
private_bus = test_vif_resolved.bus

CHILD = r'''
import ipaddress, json, os, socket, sys
import anyio, dns.message, dns.query, dns.rdatatype
from telepresence.vif import _vif
from telepresence.wire.proto import manager_pb2

mode = sys.argv[1]
resolv_conf = sys.argv[2]
net = ipaddress.IPv4Network

class Dialer:
    """The cluster: every TCP destination is the local echo server."""
    def __init__(self):
        self.asked = []
    async def open_tcp(self, host, port):
        self.asked.append(f"{host}:{port}")
        return await anyio.connect_tcp("127.0.0.1", int(os.environ["ECHO_PORT"]))
    async def open_udp(self, host, port):
        raise OSError("no UDP in this test")

async def lookup(name, query_type):
    if name == "echo.default.svc.cluster.local." and query_type == 1:
        record = manager_pb2.ResourceRecord(
            name=name, type=1, record_class=1, ttl=30, rdata=bytes([10, 96, 0, 7]))
        return manager_pb2.DNSResponse(rcode=0, answers=[record])
    return manager_pb2.DNSResponse(rcode=3)

async def echo(stream):
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)

def listing(*argv):
    import subprocess
    return subprocess.run(argv, capture_output=True, text=True).stdout

async def main():
    settings = _vif.VIFSettings(
        cluster_subnets=(net("10.96.0.0/12"), net("10.244.0.0/16")),
        dns_ip=ipaddress.IPv4Address("10.96.0.10"),
        cluster_domain="cluster.local.",
        namespace="default",
        never_proxy=(net("10.244.9.0/24"),),
    )
    dialer = Dialer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    os.environ["ECHO_PORT"] = str(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, echo)
        async with _vif.open_vif(settings, dialer, lookup, resolv_conf=resolv_conf) as vif:
            report = {
                "pid": os.getpid(),
                "device": vif.tun.name,
                "mode": vif.dns_mode,
                "routed": [str(n) for n in vif.routed],
                "rules": listing("ip", "rule"),
                "routes": listing("ip", "route"),
                "nft": listing("nft", "list", "table", "ip", "telepresence"),
                "nft6": listing("nft", "list", "table", "ip6", "telepresence"),
            }
            if mode == "busy":
                try:
                    async with _vif.open_vif(settings, dialer, lookup, resolv_conf=resolv_conf):
                        report["second"] = "up"
                except _vif.VIFBusy as error:
                    report["second"] = str(error)
            async with await anyio.connect_tcp("10.96.0.7", 80) as stream:
                await stream.send(b"through the VIF")
                report["echo"] = (await stream.receive()).decode()
            report["asked"] = dialer.asked
            query = dns.message.make_query("echo.default.", "A")
            server = {"redirect": "192.0.2.53", "redirect6": "fd00::53"}.get(mode, "10.96.0.10")
            reply = await anyio.to_thread.run_sync(lambda: dns.query.udp(query, server, timeout=5))
            report["dns"] = [r.to_text() for r in reply.answer]
            if mode == "kill":
                print(json.dumps(report), flush=True)
                os.kill(os.getpid(), 9)
        tasks.cancel_scope.cancel()
    print(json.dumps(report), flush=True)

anyio.run(main)
'''


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"tpvif-{secrets.token_hex(4)}"
    sandbox_netns.create(name)
    try:
        ip(name, "link", "set", "lo", "up")
        ip(name, "addr", "add", "192.0.2.53/32", "dev", "lo")  # the "laptop's" nameserver
        ip(name, "addr", "add", "fd00::53/128", "dev", "lo", "nodad")  # ... and an IPv6 one
        yield name
    finally:
        sandbox_netns.kill_processes_in([name])
        sandbox_netns.remove(name)


def ip(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "ip", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout


def state(ns: str) -> dict[str, str]:
    def run(*argv: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    return {
        "links": run("ip", "-o", "link"),
        "routes": run("ip", "route", "show", "table", "all"),
        "rules": run("ip", "rule"),
        "nft": run("nft", "list", "ruleset"),
    }


def child(
    ns: str, tmp_path: Path, mode: str, environment: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    program = tmp_path / "child.py"
    program.write_text(CHILD)
    resolv_conf = tmp_path / "resolv.conf"
    first = "nameserver fd00::53\n" if mode == "redirect6" else ""
    resolv_conf.write_text(f"{first}nameserver 192.0.2.53\nsearch corp.example\n")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, str(program), mode, str(resolv_conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(environment or {})},
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return done, json.loads(lines[-1])


def test_redirect_mode_routes_redirects_resolves_and_takes_everything_down(
    ns: str, tmp_path: Path
) -> None:
    before = state(ns)
    done, report = child(ns, tmp_path, "redirect", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"})
    assert done.returncode == 0, done.stderr
    assert report["mode"] == "redirect"
    assert report["routed"] == ["10.96.0.0/12", "10.244.0.0/16"]
    assert f"10.96.0.0/12 dev {report['device']}" in report["routes"]
    assert "throw 10.244.9.0/24 proto 126" in report["routes"]  # never-proxy: not the TUN
    assert "fwmark 0x7e1e lookup 32286" in report["rules"]
    assert "dnat to 10.96.0.10:53" in report["nft"]
    assert "192.0.2.53" in report["nft"]
    # TCP through the VIF to the dialer with its original destination; DNS through the
    # nameserver's address, redirected to the VIF's server, answered from the "cluster".
    assert report["echo"] == "through the VIF"
    assert report["asked"] == ["10.96.0.7:80"]
    assert report["dns"] == ["echo.default. 30 IN A 10.96.0.7"]
    assert state(ns) == before


def test_redirect_mode_redirects_queries_to_an_ipv6_nameserver_too(ns: str, tmp_path: Path) -> None:
    before = state(ns)
    done, report = child(ns, tmp_path, "redirect6", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"})
    assert done.returncode == 0, done.stderr
    assert report["mode"] == "redirect"
    assert "fd00::53" in report["nft6"]
    assert "redirect to :" in report["nft6"]
    assert "fd00::53" not in report["nft"]
    # A program asking the IPv6 nameserver, listed first, gets the cluster's answer.
    assert report["dns"] == ["echo.default. 30 IN A 10.96.0.7"]
    assert state(ns) == before  # both tables gone


def test_resolved_mode_configures_the_link_and_reverts_it(
    ns: str, tmp_path: Path, private_bus: str
) -> None:
    before = state(ns)
    with fake_resolved(private_bus, links=frozenset(range(1, 64))) as resolved:
        done, report = child(ns, tmp_path, "resolved", {"DBUS_SYSTEM_BUS_ADDRESS": private_bus})
    assert done.returncode == 0, done.stderr
    assert report["mode"] == "systemd-resolved"
    assert "dnat" not in report["nft"]  # resolved sends the cluster's names; nothing redirected
    assert report["dns"] == ["echo.default. 30 IN A 10.96.0.7"]
    methods = [call.method for call in resolved.calls]
    assert methods == ["SetLinkDNSEx", "SetLinkDomains", "SetLinkDefaultRoute", "RevertLink"]
    index = resolved.calls[0].body[0]
    assert resolved.calls[0].body == (index, [(2, bytes([10, 96, 0, 10]), 53, "")])
    domains = dict(resolved.calls[1].body[1])
    assert domains["default.svc.cluster.local"] is False  # the search domain
    assert domains["cluster.local"] is True  # routing only
    assert domains["svc"] is True
    assert resolved.calls[3].body == (index,)
    assert state(ns) == before


def test_a_second_vif_in_the_namespace_is_refused(ns: str, tmp_path: Path) -> None:
    done, report = child(ns, tmp_path, "busy", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"})
    assert done.returncode == 0, done.stderr
    # The holder named is this very process: its first VIF holds the lock.
    assert report["second"].startswith(
        f"another telepresence root daemon (pid {report['pid']}) has the VIF of this network"
    )
    assert report["echo"] == "through the VIF"  # the first one is untouched


def test_a_killed_daemons_leftovers_are_removed_by_the_next(ns: str, tmp_path: Path) -> None:
    before = state(ns)
    done, report = child(ns, tmp_path, "kill", {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"})
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert report["echo"] == "through the VIF"
    left = state(ns)
    assert report["device"] not in left["links"]  # the TUN went with the process
    assert "table ip telepresence" in left["nft"]
    assert "fwmark" in left["rules"]
    assert "proto 126" in left["routes"]
    removed = subprocess.run(
        [
            "ip", "netns", "exec", ns, sys.executable, "-c",
            "from telepresence.vif._vif import remove_leftovers as r; print(r(), r())",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert removed.stdout.split() == ["True", "False"]
    assert state(ns) == before
