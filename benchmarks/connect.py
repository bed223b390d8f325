"""Connect benchmark: how long ``telepresence connect`` takes, and what SOCKS costs.

``python -m benchmarks connect [--json FILE] [--rounds N] [--mib N]``

In one sandbox (one node) with the chart installed (the ``sandbox-developer`` user bound by
``clientRbac``), a ``sandbox/tcp-echo`` pod and a client pod:

1. *connect*: the wall time of ``telepresence connect --socks`` as a process in the
   workstation namespace, from its start to its exit (connected), measured by a stopwatch
   that runs in the workstation too; *cold* with no daemon running (``quit -s`` before each),
   as a user's first connect is, and *warm* with both daemons running and disconnected (``quit``
   before each). Median of ``--rounds``.
2. *SOCKS*: through the proxy ``connect --socks`` serves, from the workstation, one stream's
   MB/s, new streams per second and 64-byte round-trip p50 to the echo pod (by its IP),
   beside the baseline in the same run: a TCP connection of its own from the client pod to the
   same echo pod (``benchmarks/manager_client.py`` measures both with the same code).

The manager-side paths (direct, port-forward without SOCKS) are ``python -m benchmarks
manager``'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.manager import CLIENT, TELEPRESENCE, _kubectl, _workstation, prepare
from sandbox.cluster import control

#: The stopwatch, run in the workstation: seconds for one command to exit 0.
STOPWATCH = """
import subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - start
if done.returncode != 0:
    raise SystemExit(done.stderr)
print(elapsed)
"""
SOCKS_PORT = 1080


def measure(directory: Path, rounds: int, mib: int) -> dict[str, Any]:
    control.up(directory, 1, lambda line: print(f"  sandbox: {line}", file=sys.stderr))
    home = directory / "laptop"
    xdg = [
        f"XDG_{name}={home / name.lower()}" for name in ("RUNTIME_DIR", "CACHE_HOME", "CONFIG_HOME")
    ]

    def telepresence(*args: str) -> str:
        return _workstation(directory, "env", *xdg, TELEPRESENCE, *args)

    def timed(*args: str) -> float:
        output = _workstation(directory, "env", *xdg, sys.executable, "-c", STOPWATCH,
                              TELEPRESENCE, *args)  # fmt: skip
        return float(output)

    connect = ["connect", "--context", "sandbox-developer", "-n", "default",
               "--socks", str(SOCKS_PORT)]  # fmt: skip
    try:
        echo = prepare(directory)["echo"]
        cold, warm = [], []
        for index in range(rounds):
            telepresence("quit", "-s")
            cold.append(timed(*connect))
            telepresence("quit")
            warm.append(timed(*connect))
            print(f"  round {index + 1}/{rounds}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s",
                  file=sys.stderr)  # fmt: skip
        options = ["--host", echo, "--mib", str(mib)]
        socks, baseline = [], []
        for _ in range(rounds):
            socks.append(json.loads(_workstation(
                directory, sys.executable, CLIENT, "socks", "--proxy", f"127.0.0.1:{SOCKS_PORT}",
                *options,
            )))  # fmt: skip
            baseline.append(json.loads(_kubectl(
                directory, "exec", "client", "--", sys.executable, CLIENT, "tcp", *options
            )))  # fmt: skip
            print(f"  socks {socks[-1]}, pod TCP {baseline[-1]}", file=sys.stderr)
        telepresence("quit", "-s")
    finally:
        control.down(directory)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(run[key] for run in runs), 1)

    return {
        "rounds": rounds,
        "mib": mib,
        "connect_cold_s": round(statistics.median(cold), 3),
        "connect_warm_s": round(statistics.median(warm), 3),
        "connect_cold_runs": [round(x, 3) for x in cold],
        "connect_warm_runs": [round(x, 3) for x in warm],
        "socks_MBps": median(socks, "MBps"),
        "socks_streams_per_s": median(socks, "streams_per_s"),
        "socks_rtt_p50_us": median(socks, "rtt_p50_us"),
        "baseline_MBps": median(baseline, "MBps"),
        "baseline_streams_per_s": median(baseline, "streams_per_s"),
        "baseline_rtt_p50_us": median(baseline, "rtt_p50_us"),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"telepresence connect, cold (no daemons): {result['connect_cold_s']:.2f} s "
        f"(target < 1.5 s); warm (daemons running): {result['connect_warm_s']:.2f} s",
        "",
        f"{'path':<26} {'MB/s':>9} {'x base':>7} {'streams/s':>10} {'RTT p50 us':>11}",
    ]
    for name, key in (("pod TCP (baseline)", "baseline"), ("SOCKS (workstation)", "socks")):
        mbps = result[f"{key}_MBps"]
        lines.append(
            f"{name:<26} {mbps:>9.1f} {mbps / result['baseline_MBps']:>6.2f}x "
            f"{result[f'{key}_streams_per_s']:>10.1f} {result[f'{key}_rtt_p50_us']:>11.1f}"
        )
    lines += [
        "",
        "baseline: a TCP connection from a client pod to the echo pod; SOCKS: from the",
        "workstation through connect --socks (user daemon, port-forward, traffic-manager).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks connect")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--mib", type=int, default=64, help="MiB through one stream per run")
    parser.add_argument("--dir", type=Path, help="the sandbox's directory (default: a new one)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="connect-bench-") as scratch:
        directory = args.dir or Path(scratch)
        result = measure(directory, args.rounds, args.mib)
    print(table(result))
    print(f"(the run took {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
