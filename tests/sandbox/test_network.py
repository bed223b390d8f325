"""The sandbox's network and its launcher, with real namespaces and packets.

The launcher (``enter.py``) must build a container's filesystem view without changing the
host's; the network must connect pods across nodes, keep the workstation outside, and be
removed entirely by ``tear_down``, processes inside included.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from pyroute2 import AsyncIPRoute

from sandbox.cluster import addresses, network
from sandbox.node import netns
from sandbox.node.podnet import BRIDGE, PodNetwork, bridge_address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.timeout(60)

CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(2)\n"
    "print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n"
)
ECONNREFUSED, ENETUNREACH = 111, 101


def enter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*netns.ENTER, *args], capture_output=True, text=True, check=False)


def test_binds_appear_without_touching_the_host(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "data.txt").write_text("from the volume")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    stage = tmp_path / "stage"
    stage.mkdir()
    missing = f"/sandbox-test-{uuid.uuid4().hex[:8]}"  # under "/": a new root is built
    deep = "/etc/sandbox-test-config"  # under an existing directory: /etc is shadowed
    result = enter(
        "--private-mounts",
        "--stage", str(stage),
        "--bind", f"{volume}:{missing}/data",
        "--ro-bind", f"{volume}:{deep}",
        "--ro-bind", f"{resolv}:/etc/resolv.conf",
        "--hostname", "a-pod",
        "--",
        "sh", "-c",
        f"cat {missing}/data/data.txt; echo; cat {deep}/data.txt; echo; cat /etc/resolv.conf; "
        f"hostname; test -f /etc/passwd && echo passwd-kept; "
        f"touch {deep}/x 2>/dev/null || echo read-only",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "from the volume",
        "from the volume",
        "nameserver 10.96.0.10",
        "a-pod",
        "passwd-kept",
        "read-only",
    ]
    assert not os.path.exists(missing)
    assert not os.path.exists(deep)
    assert "10.96.0.10" not in Path("/etc/resolv.conf").read_text()
    assert (
        subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout != "a-pod\n"
    )
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sh"], "usage"),
        (["--"], "no program to run"),
        (["--bind", "/tmp:/x", "--", "true"], "--bind needs --private-mounts"),
        (["--private-mounts", "--bind", "/tmp:/x", "--", "true"], "--bind needs --stage"),
        (["--private-mounts", "--stage", "/tmp", "--bind", "/nonexistent-src:/x", "--", "true"],
         "/nonexistent-src"),
        (["--private-mounts", "--stage", "/tmp", "--bind", "/tmp:relative", "--", "true"],
         "expected SOURCE:/ABSOLUTE/DESTINATION"),
        (["--net", "/run/netns/no-such-namespace", "--", "true"], "cannot open the network"),
        (["--", "no-such-program-here"], "cannot run no-such-program-here"),
        (["--exec-fd", "1", "--", "true"], "bad --exec-fd '1'"),
        (["--exec-fd", "987", "--", "true"], "bad --exec-fd 987: Bad file descriptor"),
    ],
)  # fmt: skip
def test_bad_launcher_input_is_one_clear_line(args: list[str], message: str) -> None:
    result = enter(*args)
    assert result.returncode == 127
    assert result.stderr.startswith("sandbox: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def end_of_file(fd: int) -> bool:
    """Whether the pipe's read end ``fd`` reads end of file within 10 s."""
    readable, _, _ = select.select([fd], [], [], 10)
    return bool(readable) and os.read(fd, 1) == b""


def test_exec_fd_reads_end_of_file_once_the_program_runs() -> None:
    read_end, write_end = os.pipe()
    try:
        launched = subprocess.Popen(
            [*netns.ENTER, "--exec-fd", str(write_end), "--", "sh", "-c", "read line; echo $line"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(write_end,),
        )
    finally:
        os.close(write_end)
    try:
        with launched as running:
            assert end_of_file(read_end)
            # The program runs (it waits for its line), as itself, without the launcher's fd.
            assert running.poll() is None
            assert Path(f"/proc/{running.pid}/cmdline").read_bytes().startswith(b"sh\0")
            assert not os.path.exists(f"/proc/{running.pid}/fd/{write_end}")
            stdout, _ = running.communicate("hello\n", timeout=10)
        assert (running.returncode, stdout) == (0, "hello\n")
    finally:
        os.close(read_end)


def test_exec_fd_reads_end_of_file_when_the_launcher_fails() -> None:
    read_end, write_end = os.pipe()
    try:
        failed = subprocess.run(
            [*netns.ENTER, "--exec-fd", str(write_end), "--", "no-such-program-here"],
            capture_output=True,
            text=True,
            pass_fds=(write_end,),
            check=False,
        )
    finally:
        os.close(write_end)
    try:
        assert end_of_file(read_end)
    finally:
        os.close(read_end)
    assert failed.returncode == 127
    assert failed.stderr == "sandbox: cannot run no-such-program-here: No such file or directory\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def two_nodes() -> AsyncIterator[network.Network]:
    plan = network.plan(f"tpn{uuid.uuid4().hex[:5]}-", 2)
    try:
        await network.build(plan)
        yield plan
    finally:
        await network.tear_down(plan.prefix)
        assert netns.with_prefix(plan.prefix) == []


async def connect_from(namespace: str, ip: str, port: int) -> int:
    output = await netns.run(namespace, sys.executable, "-c", CONNECT, ip, str(port))
    return int(output)


@pytest.mark.anyio
async def test_pods_reach_each_other_and_the_workstation_reaches_nothing(
    two_nodes: network.Network,
) -> None:
    node0, node1 = two_nodes.nodes
    a = await PodNetwork(node0.namespace, node0.pod_cidr, two_nodes.pod_prefix(node0)).attach(
        str(uuid.uuid4())
    )
    b = await PodNetwork(node1.namespace, node1.pod_cidr, two_nodes.pod_prefix(node1)).attach(
        str(uuid.uuid4())
    )
    assert a.ip == "10.244.0.2"
    assert b.ip == "10.244.1.2"
    # Refused means the packet arrived and a kernel answered: the path works both ways.
    assert await connect_from(a.namespace, b.ip, 9) == ECONNREFUSED
    assert await connect_from(b.namespace, a.ip, 9) == ECONNREFUSED
    assert await connect_from(a.namespace, addresses.FABRIC_IP, 9) == ECONNREFUSED
    assert (
        await connect_from(two_nodes.workstation, addresses.WORKSTATION_GATEWAY, 9) == ECONNREFUSED
    )
    for target in (a.ip, b.ip, addresses.FABRIC_IP, addresses.CLUSTER_DNS_IP):
        assert await connect_from(two_nodes.workstation, target, 80) == ENETUNREACH


async def bridge_mac(namespace: str) -> str:
    address: str = json.loads(await netns.run(namespace, "ip", "-j", "link", "show", BRIDGE))[0][
        "address"
    ]
    return address


@pytest.mark.anyio
async def test_pods_keep_their_gateway_when_the_pod_with_the_lowest_mac_goes(
    two_nodes: network.Network,
) -> None:
    # A bridge without a MAC of its own takes its ports' lowest, and takes another when that
    # port goes, telling no one: the other pods kept sending to the old MAC, which the bridge
    # no longer took, until their neighbour entry expired (a CI run lost the cluster DNS for
    # 40 s after a rollout restart removed such a pod).
    node = two_nodes.nodes[0]
    pods = PodNetwork(node.namespace, node.pod_cidr, two_nodes.pod_prefix(node))
    client = await pods.attach(str(uuid.uuid4()))
    leaving = str(uuid.uuid4())
    await pods.attach(leaving)
    port = "v" + leaving.replace("-", "")[:12]
    async with AsyncIPRoute(netns=node.namespace) as ipr:
        (index,) = await ipr.link_lookup(ifname=port)
        # The lowest unicast MAC there is: any pod's port may happen to have the lowest.
        await ipr.link("set", index=index, address="00:00:00:00:00:01")
        assert await bridge_mac(node.namespace) == bridge_address(node.gateway)
        # The client learns the gateway's MAC (refused: the packet got there and back).
        assert await connect_from(client.namespace, node.gateway, 9) == ECONNREFUSED
        await pods.detach(leaving)
        for _ in range(200):  # the port goes with the namespace, once the kernel frees it
            if not await ipr.link_lookup(ifname=port):
                break
            await anyio.sleep(0.05)
        else:
            raise AssertionError(f"{port} is still on the bridge")
    assert await bridge_mac(node.namespace) == bridge_address(node.gateway)
    assert await connect_from(client.namespace, node.gateway, 9) == ECONNREFUSED


@pytest.mark.anyio
async def test_tear_down_kills_what_runs_inside(two_nodes: network.Network) -> None:
    process = await anyio.open_process(
        netns.enter_argv(two_nodes.workstation, "sh", "-c", "echo inside; exec sleep 300")
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(5):
            assert await process.stdout.receive() == b"inside\n"
        assert netns.processes_in([two_nodes.workstation]) == {two_nodes.workstation: [process.pid]}
        removed = await network.tear_down(two_nodes.prefix)
        assert set(removed) == {
            two_nodes.fabric,
            two_nodes.workstation,
            *(n.namespace for n in two_nodes.nodes),
        }
        with anyio.fail_after(5):
            assert await process.wait() == -9
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


def test_a_mount_over_the_sources_parent_hides_no_source(tmp_path: Path) -> None:
    # An emptyDir at /tmp, and the pod's other files kept under /tmp too (pytest's tmp_path
    # is there): mounted first, the emptyDir must not hide the others' sources or the stage.
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    hosts = tmp_path / "hosts"
    hosts.write_text("10.244.0.9 a-pod\n")
    stage = tmp_path / "stage"
    stage.mkdir()
    config = f"/etc/sandbox-test-{uuid.uuid4().hex[:8]}"
    result = enter(
        "--private-mounts",
        "--stage", str(stage),
        "--bind", f"{empty}:/tmp",
        "--ro-bind", f"{hosts}:{config}/hosts",
        "--ro-bind", f"{hosts}:/etc/hosts",
        "--",
        "sh", "-c", f"ls -A /tmp; cat /etc/hosts {config}/hosts",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["10.244.0.9 a-pod", "10.244.0.9 a-pod"]
