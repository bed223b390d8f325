"""The VIF's TUN device, routes and policy routing, for real inside a throwaway namespace.

The calls run in a child process inside the namespace (``ip netns exec ... python -c``): the
netlink socket and the TUN device must be the namespace's, and the test process stays in the
host's.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.node import netns as sandbox_netns
from telepresence.vif._device import ROUTE_TABLE, Conflict, conflicts

if TYPE_CHECKING:
    from collections.abc import Iterator

import ipaddress

pytestmark = pytest.mark.timeout(60)

net = ipaddress.IPv4Network
MARK = 0x7E1E


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"tpdev-{secrets.token_hex(4)}"
    sandbox_netns.create(name)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        sandbox_netns.kill_processes_in([name])
        sandbox_netns.remove(name)


def run(ns: str, body: str) -> Any:
    """Run ``body`` (Python, with the device module imported as ``d``) in the namespace and
    return what it printed as JSON on its last line."""
    program = "import ipaddress, json, subprocess\nfrom telepresence.vif import _device as d\n"
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", program + body],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def ip(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "ip", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout


def test_the_device_owns_its_address_and_routes_and_vanishes_with_the_process(ns: str) -> None:
    seen = run(
        ns,
        """
tun = d.open_tun(ipaddress.IPv4Address("10.96.0.10"))
d.routes(tun, [ipaddress.IPv4Network("10.96.0.0/12"), ipaddress.IPv4Network("10.244.0.0/24")])
d.routes(tun, [ipaddress.IPv4Network("10.96.0.0/12")])  # again: no error
listing = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout
addresses = subprocess.run(
    ["ip", "-j", "-4", "addr", "show", tun.name], capture_output=True, text=True
).stdout
own = d.local_routes()
print(json.dumps({"name": tun.name, "routes": json.loads(listing),
    "addresses": json.loads(addresses), "own": [[str(n), dev] for n, dev in own],
    "excluded": len(d.local_routes(exclude_index=tun.index))}))
""",
    )
    assert seen["name"].startswith("tel")
    assert {(r["dst"], r["dev"]) for r in seen["routes"]} == {
        ("10.96.0.0/12", seen["name"]),
        ("10.244.0.0/24", seen["name"]),
    }
    [link] = seen["addresses"]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"]] == [("10.96.0.10", 32)]
    assert sorted(seen["own"]) == [["10.244.0.0/24", seen["name"]], ["10.96.0.0/12", seen["name"]]]
    assert seen["excluded"] == 0
    # The process has exited: the device, its address and its routes are gone.
    assert seen["name"] not in ip(ns, "link")
    assert ip(ns, "route").strip() == ""


def test_policy_routing_is_added_replaced_and_removed(ns: str) -> None:
    removed = run(
        ns,
        f"""
d.add_policy({MARK})
d.add_policy({MARK})  # a second start replaces, not duplicates
print(json.dumps(False))
""",
    )
    assert removed is False
    rules = [line for line in ip(ns, "rule").splitlines() if "fwmark" in line]
    assert rules == [f"1000:\tfrom all fwmark {MARK:#x} lookup {ROUTE_TABLE}"]
    assert ip(ns, "route", "show", "table", str(ROUTE_TABLE)).split() == [
        "local", "default", "dev", "lo", "proto", "static", "scope", "host",
    ]  # fmt: skip

    # A killed daemon left them: the next start removes them (once).
    assert run(ns, f"print(json.dumps([d.remove_policy({MARK}), d.remove_policy({MARK})]))") == [
        True,
        False,
    ]
    assert "fwmark" not in ip(ns, "rule")
    assert ip(ns, "route", "show", "table", str(ROUTE_TABLE)).strip() == ""


def test_conflicts_with_local_routes_are_found_except_where_allowed() -> None:
    existing = [(net("10.96.5.0/24"), "eth0"), (net("192.168.0.0/16"), "wlan0")]

    found = conflicts([net("10.96.0.0/12"), net("10.244.0.0/16")], existing)

    assert found == [Conflict(net("10.96.0.0/12"), net("10.96.5.0/24"), "eth0")]
    assert str(found[0]) == "10.96.0.0/12 overlaps the route to 10.96.5.0/24 on eth0"
    assert conflicts([net("10.96.0.0/12")], existing, allowed=[net("10.96.0.0/12")]) == []
    assert conflicts([net("192.168.3.0/24")], existing) == [
        Conflict(net("192.168.3.0/24"), net("192.168.0.0/16"), "wlan0")
    ]


def test_a_route_for_kept_out_addresses_is_no_conflict() -> None:
    # The manager's pod reached by a route of its own (the direct transport): kept out of the
    # VIF anyway, so its route does not stop the pod subnet from being routed.
    existing = [(net("10.244.0.2/32"), "eth0")]
    assert conflicts([net("10.244.0.0/16")], existing, kept_out=[net("10.244.0.2/32")]) == []
    assert conflicts([net("10.244.0.0/16")], existing) != []


def test_never_proxy_routes_copy_the_laptops_way_and_leave_its_own_routes_alone(ns: str) -> None:
    ip(ns, "tuntap", "add", "dev", "eth9", "mode", "tun")
    ip(ns, "link", "set", "eth9", "up")
    ip(ns, "addr", "add", "10.1.0.2/24", "dev", "eth9")
    ip(ns, "route", "add", "10.244.0.0/16", "via", "10.1.0.1")
    ip(ns, "route", "add", "10.244.0.2/32", "via", "10.1.0.1")  # the laptop's own, exact
    before = ip(ns, "route")
    seen = run(
        ns,
        """
tun = d.open_tun(None)
d.routes(tun, [ipaddress.IPv4Network("10.96.0.0/12")])
never = [ipaddress.IPv4Network(n) for n in ("10.244.3.0/24", "10.244.0.2/32", "10.96.7.0/24")]
d.exempt(tun, never)
d.exempt(tun, never)  # again (an update): no error, no duplicate
during = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
print(json.dumps([during, d.remove_exemptions()]))
""",
    )
    during, removed = seen
    assert "10.244.3.0/24 via 10.1.0.1 dev eth9 proto 126" in during
    assert "throw 10.96.7.0/24 proto 126" in during
    assert during.count("10.244.0.2") == 1  # the laptop's route, not replaced
    assert removed is True
    assert ip(ns, "route") == before  # its own routes are all still there
