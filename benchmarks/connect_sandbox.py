"""What ``python -m benchmarks connect`` changes in the sandbox, and how it finds processes.

The sandbox's workstation is a laptop outside the cluster: its only route is its link to the
fabric, and the fabric forwards nothing that comes from it (``sandbox/cluster/network.py``).
Two of the benchmark's paths need more, for as long as they are measured:

- the *baseline* reaches the cluster's pods and Services directly, as a laptop inside the
  cluster's network (a VPC peer, a node) would: routes for the pod and service subnets in the
  workstation, an ``accept`` before the fabric's ``drop`` for them, and in the fabric a route
  for the service subnet to node-0, whose kube-proxy rules turn a ClusterIP into an endpoint;
- sshuttle and ``--transport direct`` need one address each, the sshd pod and the manager
  pod, as a real user must reach their ssh server or their manager.

:func:`opened` adds exactly that and removes it again, also when the block fails; every
change is inside the sandbox's own namespaces, never the host's. The rest are small finds:
the traffic-manager's process among the sandbox's, a process's resident memory, and the
command line that runs a program in the workstation with another ``/etc/resolv.conf``.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.cluster import addresses
from sandbox.cluster.daemon import prefix_for
from sandbox.cluster.network import WORKSTATION_LINK
from sandbox.node import netns

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: The fabric's table and chain that keep the workstation out (``sandbox.cluster.network``).
FABRIC_TABLE = ("ip", "sandbox", "forward")
RULE_COMMENT = "python -m benchmarks connect"


def _run(namespace: str, *argv: str) -> str:
    done = subprocess.run(
        netns.enter_argv(namespace, *argv), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {namespace}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Opening:
    """What :func:`opened` found at its end: its changes that someone else had undone."""

    vanished: list[str] = field(default_factory=list)


@contextlib.contextmanager
def opened(
    directory: Path,
    *,
    routes: Sequence[str] = (),
    forwarded: Sequence[str] = (),
    service_route: bool = False,
) -> Iterator[Opening]:
    """For the block: the workstation routes ``routes`` to the fabric, the fabric forwards the
    workstation's packets to ``forwarded``, and with ``service_route`` it routes the service
    subnet to node-0. A workstation route already gone at the end (the VIF may take over a
    route it finds, and remove it when it goes) is listed in ``Opening.vanished``."""
    prefix = prefix_for(directory)
    workstation, fabric = prefix + "ws", prefix + "fabric"
    undo: list[tuple[str, ...]] = []
    opening = Opening()
    try:
        for cidr in routes:
            gateway = addresses.WORKSTATION_GATEWAY
            _run(workstation, "ip", "route", "add", cidr, "via", gateway)
            undo.append((workstation, "ip", "route", "del", cidr, "via", gateway))
        if service_route:
            network, node = str(addresses.SERVICE_NETWORK), addresses.node_ip(0)
            _run(fabric, "ip", "route", "add", network, "via", node)
            undo.append((fabric, "ip", "route", "del", network, "via", node))
        family, table, chain = FABRIC_TABLE
        for cidr in forwarded:
            # insert: before the chain's drop; --echo --handle: so that exactly it goes again.
            echoed = _run(
                fabric, "nft", "--echo", "--handle", "insert", "rule", family, table, chain,
                "iifname", WORKSTATION_LINK, "ip", "daddr", cidr, "accept",
                "comment", f'"{RULE_COMMENT}"',
            )  # fmt: skip
            found = re.search(r"# handle (\d+)", echoed)
            if found is None:
                raise SystemExit(f"nft did not say which handle the rule for {cidr} has: {echoed}")
            undo.append((fabric, "nft", "delete", "rule", family, table, chain, "handle",
                         found.group(1)))  # fmt: skip
        yield opening
    finally:
        failures = []
        for namespace, *argv in reversed(undo):
            try:
                _run(namespace, *argv)
            except SystemExit as error:
                if argv[:3] == ["ip", "route", "del"] and "No such process" in str(error):
                    opening.vanished.append(f"{argv[3]} in {namespace}")
                else:
                    failures.append(str(error))
        if failures:
            raise SystemExit("could not undo: " + "; ".join(failures))


def with_resolver(argv: list[str], resolv_conf: Path) -> list[str]:
    """A workstation command line (``control.workstation_argv``) with ``resolv_conf`` bound
    at ``/etc/resolv.conf`` instead of the workstation's own."""
    target = ":/etc/resolv.conf"
    swapped = [f"{resolv_conf}{target}" if arg.endswith(target) else arg for arg in argv]
    if swapped == argv:
        raise SystemExit("the workstation's command line binds no /etc/resolv.conf")
    return swapped


def manager_pid(directory: Path) -> int:
    """The traffic-manager's process (``python -m manager``) among the sandbox's."""
    names = netns.with_prefix(prefix_for(directory))
    for pids in netns.processes_in(names).values():
        for pid in pids:
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"-m" in argv and argv[argv.index(b"-m") + 1 :][:1] == [b"manager"]:
                    return pid
    raise SystemExit("no traffic-manager process (python -m manager) runs in the sandbox")


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) * 1024 / 1e6, 1)
    raise SystemExit(f"process {pid} has no VmRSS (a kernel thread, or gone)")
