"""Traffic-manager benchmark: what the manager's data plane costs, per transport.

``python -m benchmarks manager [--json FILE] [--mib N] [--rounds N]``

In one sandbox (one node) with the chart installed (``telepresence helm install``, the
sandbox's ``developer`` user bound by ``clientRbac``) and a ``sandbox/tcp-echo`` pod, the same
client program (``benchmarks/manager_client.py``) measures three paths to that echo server:

- *pod TCP* (the baseline): a TCP connection of its own, from a client pod on the same node;
- *direct*: mux streams through the traffic-manager, over a TLS connection from the same
  client pod straight to the manager pod (the ``direct`` transport, as a CI runner inside the
  cluster would use it);
- *port-forward*: mux streams through the traffic-manager over the ``portforward`` transport,
  from the workstation namespace, as a laptop uses it (API server, kubelet, then the manager).

Figures, each the median of ``--rounds`` runs with the paths interleaved: MB/s of payload
through one stream (sent and echoed back at once, checked by hash), new streams per second
(open, one byte echoed, close; 8 at a time), and the p50 of 64-byte round trips on one stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sandbox.cluster import control

CLIENT = str(Path(__file__).with_name("manager_client.py"))
TELEPRESENCE = str(Path(sys.executable).with_name("telepresence"))
DEVELOPER_BINDING = (
    "clientRbac.create=true,clientRbac.subjects[0].kind=User,"
    "clientRbac.subjects[0].name=developer,"
    "clientRbac.subjects[0].apiGroup=rbac.authorization.k8s.io"
)
WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {name: tcp-echo, labels: {app: tcp-echo}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: echo
      image: sandbox/tcp-echo
      readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: client, image: sandbox/exec, command: [sleep, infinity]}
"""
PATHS = ("pod_tcp", "direct", "portforward")
FIGURES = ("MBps", "streams_per_s", "rtt_p50_us")


def _workstation(directory: Path, *command: str, stdin: str | None = None) -> str:
    argv, env = control.workstation_argv(directory, list(command))
    result = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {result.stderr}")
    return result.stdout


def _kubectl(directory: Path, *args: str, stdin: str | None = None) -> str:
    return _workstation(directory, "kubectl", *args, stdin=stdin)


def _developer_token(directory: Path) -> str:
    config = yaml.safe_load((directory / "kubeconfig").read_text())
    (user,) = (user for user in config["users"] if user["name"] == "developer")
    return str(user["user"]["token"])


def _run_path(directory: Path, path: str, ips: dict[str, str], options: list[str]) -> Any:
    common = ["--host", ips["echo"], *options]
    if path == "portforward":
        output = _workstation(
            directory,
            sys.executable,
            CLIENT,
            "portforward",
            "--context",
            "sandbox-developer",
            *common,
        )
    else:
        mode = ["tcp"] if path == "pod_tcp" else ["direct", "--manager", ips["manager"]]
        if path == "direct":
            mode += ["--token", _developer_token(directory)]
        output = _kubectl(directory, "exec", "client", "--", sys.executable, CLIENT, *mode, *common)
    return json.loads(output)


def prepare(directory: Path) -> dict[str, str]:
    """In a sandbox that is up: the chart installed (the developer bound by clientRbac), the
    echo and client pods Ready; the echo pod's and the manager pod's IPs."""
    print("  installing the traffic-manager", file=sys.stderr)
    _workstation(directory, TELEPRESENCE, "helm", "install", "--set", DEVELOPER_BINDING)
    _kubectl(directory, "apply", "-f", "-", stdin=WORKLOAD)
    for pod in ("tcp-echo", "client"):
        _kubectl(directory, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")
    return {
        "echo": _kubectl(directory, "get", "pod", "tcp-echo", "-o", "jsonpath={.status.podIP}"),
        "manager": _kubectl(
            directory,
            "get",
            "pods",
            "-n",
            "ambassador",
            "-l",
            "app=traffic-manager",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ),
    }


def measure(directory: Path, mib: int, rounds: int, streams: int, count: int) -> dict[str, Any]:
    control.up(directory, 1, lambda line: print(f"  sandbox: {line}", file=sys.stderr))
    try:
        ips = prepare(directory)
        options = ["--mib", str(mib), "--streams", str(streams), "--round-trips", str(count)]
        runs: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
        for index in range(rounds):
            for path in PATHS:  # interleaved: each path meets the machine in the same states
                start = time.perf_counter()
                runs[path].append(_run_path(directory, path, ips, options))
                print(
                    f"  round {index + 1}/{rounds}, {path}: {runs[path][-1]} "
                    f"({time.perf_counter() - start:.1f} s)",
                    file=sys.stderr,
                )
    finally:
        control.down(directory)
    result: dict[str, Any] = {
        "mib": mib,
        "rounds": rounds,
        "streams": streams,
        "round_trips": count,
    }
    for path in PATHS:
        for figure in FIGURES:
            result[f"{path}_{figure}"] = round(
                statistics.median(run[figure] for run in runs[path]), 1
            )
        result[f"{path}_runs"] = runs[path]
    return result


def table(result: dict[str, Any]) -> str:
    names = {"pod_tcp": "pod TCP (baseline)", "direct": "direct TLS", "portforward": "port-forward"}
    lines = [
        f"{'path':<22} {'MB/s':>9} {'x base':>7} {'streams/s':>10} {'x base':>7} "
        f"{'RTT p50 us':>11} {'+ base':>8}"
    ]
    base = {figure: result[f"pod_tcp_{figure}"] for figure in FIGURES}
    for path in PATHS:
        mbps, rate, rtt = (result[f"{path}_{figure}"] for figure in FIGURES)
        lines.append(
            f"{names[path]:<22} {mbps:>9.1f} {mbps / base['MBps']:>6.2f}x {rate:>10.1f} "
            f"{rate / base['streams_per_s']:>6.2f}x {rtt:>11.1f} {rtt - base['rtt_p50_us']:>+8.1f}"
        )
    lines += [
        "",
        "baseline: a TCP connection from a client pod to the echo pod; direct: the same pod, mux",
        "over TLS to the manager pod; port-forward: from the workstation through the API server.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks manager")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--mib", type=int, default=128, help="MiB through one stream per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per path (median)")
    parser.add_argument("--streams", type=int, default=400, help="new streams per run")
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="the sandbox's directory (default: a new one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="manager-bench-") as scratch:
        directory = args.dir or Path(scratch)
        result = measure(directory, args.mib, args.rounds, args.streams, args.round_trips)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
