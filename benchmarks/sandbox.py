"""Sandbox benchmark: how long ``sandbox up`` takes, and how fast its data paths are.

``python -m benchmarks sandbox [--json FILE] [--mib N] [--rounds N] [--nodes N]``

1. *up*: the wall time of ``sandbox up`` (namespaces, API server, DNS, controllers, kubelets,
   kube-proxies) until every node is Ready, as a user waits for it.
2. *port-forward*: ``--mib`` MiB through the ``pods/portforward`` subresource with
   kubernetes-asyncio (the way Telepresence's default transport reaches the traffic manager)
   to a ``sandbox/tcp-echo`` pod, sent and echoed back at the same time; beside it, the
   baseline in the same run: the same transfer over a direct TCP connection to the same pod
   from the API server's namespace (the hop the port-forward itself makes). Figure: MB/s of
   payload in each direction, median of ``--rounds``.
3. *pod to service*: 64-byte request/response round trips over one TCP connection from a
   client pod (on another node when there are two) to the echo Service's ClusterIP
   (kube-proxy's DNAT through the node), beside the same from the same pod to the echo pod's
   IP; ``--rounds`` runs of ``--round-trips`` each, the two paths interleaved. Figure: p50
   and p99 in microseconds over all runs.

Every transfer is checked: the bytes echoed back must hash to the bytes sent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.stream import WsApiClient

from benchmarks._stats import percentile
from sandbox.cluster import control
from sandbox.cluster.daemon import prefix_for
from sandbox.node import netns

WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {name: tcp-echo, labels: {app: tcp-echo}}
spec:
  terminationGracePeriodSeconds: 1
  nodeName: node-0
  containers:
    - name: echo
      image: sandbox/tcp-echo
      readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  selector: {app: tcp-echo}
  ports: [{port: 7000}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  nodeName: node-NODE
  containers:
    - {name: client, image: sandbox/exec, command: [sleep, infinity]}
"""

CHUNK = 256 * 1024

#: The direct baseline: echo MiB through a plain TCP connection, print seconds.
DIRECT = """
import hashlib, socket, sys, threading, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = bytes(range(256)) * 1024
s = socket.create_connection((host, port))
sent = hashlib.sha256()
def send():
    for _ in range(total // len(chunk)):
        s.sendall(chunk); sent.update(chunk)
start = time.perf_counter()
t = threading.Thread(target=send); t.start()
got, received = 0, hashlib.sha256()
buffer = bytearray(1 << 20)
while got < total:
    n = s.recv_into(buffer)
    if not n: raise SystemExit("closed early")
    received.update(memoryview(buffer)[:n]); got += n
elapsed = time.perf_counter() - start
t.join()
assert received.digest() == sent.digest(), "corrupted"
print(elapsed)
"""

#: The round trips, run inside the client pod: print microseconds, one per line.
ROUND_TRIPS = """
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
message = b"x" * 64
samples = []
for i in range(count + 100):
    start = time.perf_counter_ns()
    s.sendall(message)
    got = 0
    while got < 64:
        got += len(s.recv(64 - got))
    if i >= 100:
        samples.append((time.perf_counter_ns() - start) / 1000)
print("\\n".join(f"{x:.1f}" for x in samples))
"""


def _kubectl(directory: Path, *args: str, stdin: str | None = None) -> str:
    argv, env = control.workstation_argv(directory, ["kubectl", *args])
    result = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


async def _port_forward(directory: Path, total: int) -> float:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(directory / "host.kubeconfig"), client_configuration=configuration
    )
    chunk = bytes(range(256)) * (CHUNK // 256)
    async with WsApiClient(configuration=configuration) as api_client:
        # Typed as answering a str; with _preload_content=False it is the websocket.
        api: Any = client.CoreV1Api(api_client)
        ws = await api.connect_get_namespaced_pod_portforward(
            "tcp-echo", "default", ports="7000", _preload_content=False
        )
        async with ws as socket:
            sent, received = hashlib.sha256(), hashlib.sha256()
            headers = got = 0
            while headers < 2:  # each channel first carries its port number
                await socket.receive_bytes()
                headers += 1
            start = time.perf_counter()

            async def send() -> None:
                for _ in range(total // len(chunk)):
                    await socket.send_bytes(b"\x00" + chunk)
                    sent.update(chunk)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                while got < total:
                    message = await socket.receive_bytes()
                    if message[0] != 0:
                        raise SystemExit(f"port-forward error: {message[1:]!r}")
                    received.update(message[1:])
                    got += len(message) - 1
            elapsed = time.perf_counter() - start
    if received.digest() != sent.digest():
        raise SystemExit("port-forward corrupted the data")
    return elapsed


def _direct(directory: Path, pod_ip: str, total: int) -> float:
    fabric = prefix_for(directory) + "fabric"
    output = anyio.run(
        lambda: netns.run(fabric, sys.executable, "-c", DIRECT, pod_ip, "7000", str(total))
    )
    return float(output)


def _round_trips(directory: Path, ip: str, count: int) -> list[float]:
    output = _kubectl(
        directory, "exec", "client", "--", "python3", "-c", ROUND_TRIPS, ip, "7000", str(count)
    )
    return [float(line) for line in output.split()]


def measure(directory: Path, nodes: int, mib: int, rounds: int, count: int) -> dict[str, Any]:
    start = time.perf_counter()
    control.up(directory, nodes, lambda line: print(f"  sandbox: {line}", file=sys.stderr))
    up_seconds = time.perf_counter() - start
    try:
        client_node = str(min(1, nodes - 1))
        _kubectl(directory, "apply", "-f", "-", stdin=WORKLOAD.replace("NODE", client_node))
        for pod in ("tcp-echo", "client"):
            _kubectl(directory, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")
        pod_ip = _kubectl(directory, "get", "pod", "tcp-echo", "-o", "jsonpath={.status.podIP}")
        service_ip = _kubectl(
            directory, "get", "service", "tcp-echo", "-o", "jsonpath={.spec.clusterIP}"
        )
        total = mib * 1024 * 1024
        forwarded, direct = [], []
        for _ in range(rounds):
            forwarded.append(total / anyio.run(_port_forward, directory, total) / 1e6)
            direct.append(total / _direct(directory, pod_ip, total) / 1e6)
        # Interleaved, so that both paths meet the machine in the same states.
        to_service: list[float] = []
        to_pod: list[float] = []
        for _ in range(rounds):
            to_service += _round_trips(directory, service_ip, count)
            to_pod += _round_trips(directory, pod_ip, count)
    finally:
        control.down(directory)
    return {
        "nodes": nodes,
        "up_seconds": round(up_seconds, 2),
        "port_forward_mb_s": round(statistics.median(forwarded), 1),
        "direct_tcp_mb_s": round(statistics.median(direct), 1),
        "port_forward_rounds": [round(x, 1) for x in forwarded],
        "direct_rounds": [round(x, 1) for x in direct],
        "mib": mib,
        "service_rtt_p50_us": round(percentile(to_service, 0.5), 1),
        "service_rtt_p99_us": round(percentile(to_service, 0.99), 1),
        "pod_rtt_p50_us": round(percentile(to_pod, 0.5), 1),
        "pod_rtt_p99_us": round(percentile(to_pod, 0.99), 1),
        "round_trips": count,
        "client_on_other_node": nodes > 1,
    }


def table(result: dict[str, Any]) -> str:
    ratio = result["port_forward_mb_s"] / result["direct_tcp_mb_s"]
    lines = [
        f"sandbox up ({result['nodes']} nodes) to Ready: {result['up_seconds']:.2f} s",
        "",
        f"{'path':<40} {'figure':>14} {'baseline':>14} {'ratio':>7}",
        f"{'port-forward, MB/s each way':<40} {result['port_forward_mb_s']:>14.1f} "
        f"{result['direct_tcp_mb_s']:>14.1f} {ratio:>6.2f}x",
        f"{'pod to Service RTT p50, us':<40} {result['service_rtt_p50_us']:>14.1f} "
        f"{result['pod_rtt_p50_us']:>14.1f} {'':>7}",
        f"{'pod to Service RTT p99, us':<40} {result['service_rtt_p99_us']:>14.1f} "
        f"{result['pod_rtt_p99_us']:>14.1f} {'':>7}",
        "",
        "baselines: a direct TCP connection to the same pod from the API server's namespace;",
        "the same client pod to the echo pod's IP (no kube-proxy).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sandbox")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--mib", type=int, default=256, help="MiB each way per transfer")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path (median)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="the sandbox's directory (default: a new one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as scratch:
        directory = args.dir or Path(scratch)
        result = measure(directory, args.nodes, args.mib, args.rounds, args.round_trips)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
