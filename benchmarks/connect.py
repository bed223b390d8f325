"""Connect benchmark: what a laptop gets from ``telepresence connect``, beside the alternatives.

``python -m benchmarks connect [--json FILE] [--rounds N] [--mib N] [--paths P,...] [--hold N]``

In one sandbox (one node) with the chart installed (the ``sandbox-developer`` user bound by
``clientRbac``), a ``sandbox/tcp-echo`` pod behind the Service ``tcp-echo`` and, for
sshuttle, an sshd pod, one program (``benchmarks/connect_paths.py``) runs in the workstation
namespace, as any program on the laptop would, and measures each *path* to the echo server
with the same code: one connection's MB/s, 8 connections' aggregate MB/s, new connections per
second, 64-byte round trips (p50, p99), to the echo pod's IP and to the Service, and
``getaddrinfo()`` of a cluster name (the same one again and again, and fresh ones). The paths:

- ``baseline``: the workstation routed straight into the cluster network, for this path
  only (``benchmarks/connect_sandbox.py``): what the network itself costs;
- ``tp-portforward`` and ``tp-direct``: ``telepresence connect`` (the VIF: the TUN device,
  routes, nftables redirection and DNS of the root daemon), over the default ``portforward``
  transport, and over ``--transport direct --manager-address POD:8081`` with a route to the
  manager pod alone, as a CI runner inside the cluster's network would have; by the Service's
  name ``tcp-echo.default``;
- ``sshuttle``: sshuttle 2.0 from PyPI (``--method nft --dns``) to Debian's sshd in a pod
  (``benchmarks/sshuttle_peer.py``), the workstation reaching the sshd pod alone;
- ``socks``: through the SOCKS5 proxy of ``connect --socks`` (no root daemon needed);
- ``connect``: the wall time of ``telepresence connect --socks``, *cold* (no daemon running)
  and *warm* (both daemons running, disconnected), timed in the workstation.

Each round visits every path in turn (set up, measure, tear down), so that they meet the
machine in the same states; figures are medians over ``--rounds``. With ``--hold N`` (and a
``tp-`` path), N idle connections are then held through the VIF to the Service's ClusterIP
while the root daemon's and the traffic-manager's resident memory are read (fewer, and a
note, when the path stops taking new ones). The table ends with the VIF issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import sshuttle_peer
from benchmarks.connect_sandbox import manager_pid, opened, rss_mb, with_resolver
from benchmarks.manager import TELEPRESENCE, _kubectl, _workstation, prepare
from sandbox.cluster import addresses, control

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
PATHS = ("connect", "baseline", "socks", "sshuttle", "tp-portforward", "tp-direct")
SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  selector: {app: tcp-echo}
  ports: [{port: 7000}]
"""
#: How a program on the laptop names the Service through Telepresence's DNS; the baseline
#: asks the cluster DNS for its full name.
SERVICE_NAME = "tcp-echo.default"
SERVICE_FQDN = f"tcp-echo.default.svc.{addresses.CLUSTER_DOMAIN}"
#: Fresh names: the cluster DNS answers ``a-b-c-d.default.pod`` with that address.
FRESH_NAME = f"{{}}.default.pod.{addresses.CLUSTER_DOMAIN}"
POD_NETWORK, SERVICE_NETWORK = str(addresses.POD_NETWORK), str(addresses.SERVICE_NETWORK)
MANAGER_API_PORT = 8081
CONNECT = ["connect", "--context", "sandbox-developer", "-n", "default"]
MEASURING = [sys.executable, "-m", "benchmarks.connect_paths"]
#: Figures of one path in the table: (JSON key suffix, label, higher is better; None: no
#: comparison with the baseline).
FIGURES = (
    ("MBps", "1 connection, MB/s", True),
    ("MBps_client_cpu", "  measuring client, cores", None),
    ("MBps_8", "8 connections, MB/s", True),
    ("MBps_8_client_cpu", "  measuring client, cores", None),
    ("conn_per_s", "new connections/s", True),
    ("rtt_p50_us", "64 B round trip p50, us", False),
    ("rtt_p99_us", "64 B round trip p99, us", False),
    ("service_conn_per_s", "Service: new connections/s", True),
    ("service_rtt_p50_us", "Service: round trip p50, us", False),
    ("dns_p50_us", "DNS, same name p50, us", False),
    ("dns_uncached_p50_us", "DNS, fresh names p50, us", False),
    ("dns_failed", "DNS, same name: failed (sum)", None),
    ("dns_uncached_failed", "DNS, fresh names: failed (sum)", None),
    ("connect_s", "connect, s", False),
)
COLUMNS = (
    ("baseline", "baseline"),
    ("tp_direct", "tp direct"),
    ("tp_portforward", "tp port-fwd"),
    ("sshuttle", "sshuttle"),
    ("socks", "SOCKS"),
)


@dataclass
class Lab:
    """One sandbox, set up for the paths: addresses, the laptop's XDG directories."""

    directory: Path
    echo: str
    service: str
    manager: str
    mib: int
    sshd: str = ""
    sshd_files: sshuttle_peer.SshdFiles | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def xdg(self) -> list[str]:
        home = self.directory / "laptop"
        return [f"XDG_{name}={home / name.lower()}"
                for name in ("RUNTIME_DIR", "CACHE_HOME", "CONFIG_HOME")]  # fmt: skip

    def telepresence(self, *args: str) -> str:
        return _workstation(self.directory, "env", *self.xdg, TELEPRESENCE, *args)

    def timed(self, *args: str) -> float:
        """Seconds for ``telepresence ARGS`` to succeed, timed in the workstation."""
        output = _workstation(self.directory, "env", *self.xdg, sys.executable, "-c", STOPWATCH,
                              TELEPRESENCE, *args)  # fmt: skip
        return float(output)

    def tcp(self, host: str, *options: str, prefix: str = "") -> dict[str, float]:
        output = _workstation(self.directory, *MEASURING, "tcp", "--host", host, *options)
        return {prefix + key: value for key, value in json.loads(output).items()}

    def pod_and_service(self, service: str, *options: str) -> dict[str, float]:
        """The figures to the echo pod's IP, then (new connections and round trips) to the
        Service at ``service``."""
        figures = self.tcp(self.echo, "--mib", str(self.mib), *options)
        return figures | self.tcp(service, "--mib", "0", *options, prefix="service_")

    def dns(self, name: str, round_index: int, resolver: Path | None = None) -> dict[str, float]:
        fresh_from = f"10.244.{100 + round_index}.1"  # names no earlier round asked
        command = [*MEASURING, "dns", "--name", name, "--expect", self.service,
                   "--fresh", FRESH_NAME, "--fresh-from", fresh_from]  # fmt: skip
        argv, env = control.workstation_argv(self.directory, command)
        if resolver is not None:
            argv = with_resolver(argv, resolver)
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"DNS lookups ({name}): {done.stderr}")
        figures: dict[str, float] = json.loads(done.stdout)
        return figures


def measure_baseline(lab: Lab, round_index: int) -> dict[str, float]:
    """Routes straight into the cluster network; names from the cluster DNS directly."""
    resolver = lab.directory / "cluster-resolv.conf"
    resolver.write_text(f"nameserver {addresses.CLUSTER_DNS_IP}\n")
    subnets = [POD_NETWORK, SERVICE_NETWORK]
    with opened(lab.directory, routes=subnets, forwarded=subnets, service_route=True):
        figures = lab.pod_and_service(lab.service)
        figures |= lab.dns(SERVICE_FQDN, round_index, resolver)
    return figures


def measure_sshuttle(lab: Lab, round_index: int) -> dict[str, float]:
    """sshuttle for both subnets and DNS. The workstation routes the subnets to the fabric,
    as a laptop's default route would, and the fabric drops them: only sshuttle's redirect
    gets through, over ssh to the sshd pod, the one address the fabric lets the workstation
    reach. The cluster DNS answers only full names there (the workstation's search list is
    its own), so it is asked the baseline's name."""
    assert lab.sshd_files is not None
    subnets = [POD_NETWORK, SERVICE_NETWORK]
    log = lab.directory / f"sshuttle-{round_index}.log"
    with opened(lab.directory, routes=subnets, forwarded=[f"{lab.sshd}/32"]):
        start = time.perf_counter()
        with sshuttle_peer.running_sshuttle(
            lab.directory, lab.sshd_files, lab.sshd, subnets, log, notes=lab.notes
        ):
            figures = {"connect_s": round(time.perf_counter() - start, 3)}
            figures |= lab.pod_and_service(lab.service)
            figures |= lab.dns(SERVICE_FQDN, round_index)  # the pod's resolver, by --dns
    return figures


def measure_socks(lab: Lab, round_index: int) -> dict[str, float]:
    """Through ``connect --socks``: the proxy resolves the Service's name in the cluster."""
    figures = {"connect_s": round(lab.timed(*CONNECT, "--socks", str(SOCKS_PORT)), 3)}
    try:
        figures |= lab.pod_and_service(SERVICE_NAME, "--socks", f"127.0.0.1:{SOCKS_PORT}")
    finally:
        lab.telepresence("quit")
    return figures


@contextlib.contextmanager
def _telepresence_connected(
    lab: Lab, transport: str, figures: dict[str, float]
) -> Iterator[dict[str, Any]]:
    """``telepresence connect`` over ``transport`` (VIF included) for the block; its wall
    time into ``figures``."""
    extra: list[str] = []
    reach: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if transport == "direct":
        address = f"{lab.manager}:{MANAGER_API_PORT}"
        extra = ["--transport", "direct", "--manager-address", address]
        reach = _reaching_manager(lab)
    with reach:
        figures["connect_s"] = round(lab.timed(*CONNECT, *extra), 3)
        try:
            status = json.loads(lab.telepresence("status", "-o", "json"))
            if status.get("state") != "connected":
                raise SystemExit(f"telepresence status after connect: {status}")
            vif = status.get("vif") or {}
            if vif.get("conflicts"):
                lab.notes.append(f"{transport}: VIF conflicts {vif['conflicts']}")
            yield status
        finally:
            lab.telepresence("quit")


@contextlib.contextmanager
def _reaching_manager(lab: Lab) -> Iterator[None]:
    """The workstation reaches the manager pod's address: a route of its own, and the fabric
    lets it through (the VIF keeps that address out, and its route is no conflict)."""
    route = f"{lab.manager}/32"
    with opened(lab.directory, routes=[route], forwarded=[route]) as opening:
        yield
    if opening.vanished:
        note = f"the workstation's route to the manager pod ({route}) was gone after quit"
        if note not in lab.notes:
            lab.notes.append(note)


def measure_telepresence(lab: Lab, round_index: int, transport: str) -> dict[str, float]:
    """Through the VIF: to the pod's IP, and to the Service by its name."""
    figures: dict[str, float] = {}
    with _telepresence_connected(lab, transport, figures):
        figures |= lab.pod_and_service(SERVICE_NAME)
        figures |= lab.dns(SERVICE_NAME, round_index)
    return figures


def measure_hold(lab: Lab, transport: str, count: int) -> dict[str, Any]:
    """``count`` idle connections through the VIF to the Service's ClusterIP, and the root
    daemon's and the manager's resident memory before and while they are held."""
    figures: dict[str, float] = {}
    with _telepresence_connected(lab, transport, figures) as status:
        root = int(status["root_daemon"]["pid"])
        manager = manager_pid(lab.directory)
        result: dict[str, Any] = {
            "hold_transport": transport,
            "root_daemon_rss_idle_MB": rss_mb(root),
            "manager_rss_idle_MB": rss_mb(manager),
        }
        command = [*MEASURING, "hold", "--host", lab.service, "--count", str(count)]
        argv, env = control.workstation_argv(lab.directory, command)
        process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line:
                process.wait()
                assert process.stderr is not None
                raise SystemExit(f"holding {count} connections failed: {process.stderr.read()}")
            held = json.loads(line)
            time.sleep(1.0)  # let both settle with all of them open
            result |= {
                "hold_requested": count,
                "held_connections": held["held"],
                "hold_unanswered": held["unanswered"],
                "hold_stalled": held["stalled"],
                "hold_open_s": held["open_s"],
                "root_daemon_rss_MB": rss_mb(root),
                "manager_rss_MB": rss_mb(manager),
            }
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if result.get("held_connections"):  # what each held connection costs, in kB (10^3 bytes)
        for daemon in ("root_daemon", "manager"):
            grown = result[f"{daemon}_rss_MB"] - result[f"{daemon}_rss_idle_MB"]
            result[f"{daemon}_kB_per_connection"] = round(
                grown * 1000 / result["held_connections"], 1
            )
    if result.get("hold_stalled"):
        lab.notes.append(
            f"holding stalled: {result['held_connections']} of {count} connections answered "
            f"({result['hold_unanswered']} more connected but never echoed) after "
            f"{result['hold_open_s']:.1f} s"
        )
    return result


def measure(directory: Path, rounds: int, mib: int, paths: list[str], hold: int) -> dict[str, Any]:
    lab_notes: list[str] = []
    if "sshuttle" in paths:
        lab_notes.append(sshuttle_peer.ensure_openssh_server(
            lambda line: print(f"  {line}", file=sys.stderr)
        ))  # fmt: skip
    control.up(directory, 1, lambda line: print(f"  sandbox: {line}", file=sys.stderr))
    result: dict[str, Any] = {"rounds": rounds, "mib": mib, "paths": paths}
    try:
        ips = prepare(directory)
        _kubectl(directory, "apply", "-f", "-", stdin=SERVICE)
        service = _kubectl(directory, "get", "service", "tcp-echo",
                           "-o", "jsonpath={.spec.clusterIP}")  # fmt: skip
        lab = Lab(directory, ips["echo"], service, ips["manager"], mib, notes=lab_notes)
        if "sshuttle" in paths:
            lab.sshd_files = sshuttle_peer.make_files(directory / "sshd")
            _kubectl(directory, "apply", "-f", "-",
                     stdin=sshuttle_peer.pod_manifest(lab.sshd_files))  # fmt: skip
            _kubectl(directory, "wait", "--for=condition=Ready", "pod/sshd", "--timeout=60s")
            lab.sshd = _kubectl(directory, "get", "pod", "sshd", "-o", "jsonpath={.status.podIP}")
        if "connect" in paths:
            result |= _connect_times(lab, rounds)
        measurers: dict[str, Callable[[Lab, int], dict[str, float]]] = {
            "baseline": measure_baseline,
            "socks": measure_socks,
            "sshuttle": measure_sshuttle,
            "tp-portforward": functools.partial(measure_telepresence, transport="portforward"),
            "tp-direct": functools.partial(measure_telepresence, transport="direct"),
        }
        runs: dict[str, list[dict[str, float]]] = {}
        for index in range(rounds):
            for path in paths:  # interleaved: each path meets the machine in the same states
                if path not in measurers:
                    continue
                start = time.perf_counter()
                runs.setdefault(path, []).append(measurers[path](lab, index))
                print(f"  round {index + 1}/{rounds}, {path}: {runs[path][-1]} "
                      f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)  # fmt: skip
        for path, path_runs in runs.items():
            key = path.replace("-", "_")
            for figure in path_runs[0]:
                values = [run[figure] for run in path_runs]
                if figure.endswith("_failed"):  # failed lookups: all rounds' together
                    result[f"{key}_{figure}"] = sum(values)
                    continue
                digits = 3 if figure.endswith("_s") else 2 if figure.endswith("_cpu") else 1
                result[f"{key}_{figure}"] = round(statistics.median(values), digits)
            result[f"{key}_runs"] = path_runs
        holder = next((p for p in ("tp-direct", "tp-portforward") if p in paths), None)
        if hold and holder:
            print(f"  holding {hold} connections through the VIF ({holder})", file=sys.stderr)
            result |= measure_hold(lab, holder.removeprefix("tp-"), hold)
        with contextlib.suppress(SystemExit):
            lab.telepresence("quit", "-s")
    finally:
        control.down(directory)
    for transport in ("direct", "portforward"):  # the DNS keys: VIF, either transport
        if f"tp_{transport}_dns_p50_us" in result:
            result["tp_dns_p50_us"] = result[f"tp_{transport}_dns_p50_us"]
            result["tp_dns_uncached_p50_us"] = result[f"tp_{transport}_dns_uncached_p50_us"]
            break
    result["notes"] = lab.notes
    result["targets"] = targets(result)
    return result


def _connect_times(lab: Lab, rounds: int) -> dict[str, Any]:
    cold, warm = [], []
    connect = [*CONNECT, "--socks", str(SOCKS_PORT)]
    for index in range(rounds):
        lab.telepresence("quit", "-s")
        cold.append(lab.timed(*connect))
        lab.telepresence("quit")
        warm.append(lab.timed(*connect))
        print(f"  round {index + 1}/{rounds}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s",
              file=sys.stderr)  # fmt: skip
    lab.telepresence("quit")
    return {
        "connect_cold_s": round(statistics.median(cold), 3),
        "connect_warm_s": round(statistics.median(warm), 3),
        "connect_cold_runs": [round(x, 3) for x in cold],
        "connect_warm_runs": [round(x, 3) for x in warm],
    }


#: The issue's targets: (name, figure, what it is compared with, and how).
def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the figures it compares and whether it is met (None: not measured)."""

    def check(name: str, value: str, limit: float | None, met: bool | None) -> dict[str, Any]:
        rounded = None if limit is None else round(limit, 1)
        return {"target": name, "value": result.get(value), "limit": rounded, "met": met}

    def get(key: str) -> float | None:
        value = result.get(key)
        return float(value) if value is not None else None

    direct, sshuttle, base = get("tp_direct_MBps"), get("sshuttle_MBps"), get("baseline_MBps")
    rtt, base_rtt = get("tp_direct_rtt_p50_us"), get("baseline_rtt_p50_us")
    rate, sshuttle_rate = get("tp_direct_conn_per_s"), get("sshuttle_conn_per_s")
    dns, rss = get("tp_dns_p50_us"), get("root_daemon_rss_MB")
    held, wanted = result.get("held_connections"), result.get("hold_requested")
    if rss is not None and held is not None and held < 10_000:
        held_met: bool | None = False  # the target is about 10,000 held
    else:
        held_met = None if rss is None else rss < 300

    def at_least(value: float | None, limit: float | None) -> bool | None:
        return None if value is None or limit is None else value >= limit

    def at_most(value: float | None, limit: float | None) -> bool | None:
        return None if value is None or limit is None else value <= limit

    limits = {
        "mbps_vs_sshuttle": 20 * sshuttle if sshuttle is not None else None,
        "mbps_vs_baseline": 0.3 * base if base is not None else None,
        "rtt": base_rtt + 150 if base_rtt is not None else None,
        "rate": 3 * sshuttle_rate if sshuttle_rate is not None else None,
    }
    return [
        check("tp_direct_MBps >= 20 x sshuttle_MBps", "tp_direct_MBps",
              limits["mbps_vs_sshuttle"], at_least(direct, limits["mbps_vs_sshuttle"])),
        check("tp_direct_MBps >= 0.3 x baseline_MBps", "tp_direct_MBps",
              limits["mbps_vs_baseline"], at_least(direct, limits["mbps_vs_baseline"])),
        check("tp_direct_rtt_p50_us <= baseline_rtt_p50_us + 150", "tp_direct_rtt_p50_us",
              limits["rtt"], at_most(rtt, limits["rtt"])),
        check("tp_direct_conn_per_s >= 3 x sshuttle_conn_per_s", "tp_direct_conn_per_s",
              limits["rate"], at_least(rate, limits["rate"])),
        check("tp_dns_p50_us <= 2000", "tp_dns_p50_us", 2000, at_most(dns, 2000)),
        check("connect_cold_s < 1.5", "connect_cold_s", 1.5, at_most(get("connect_cold_s"), 1.5)),
        check("root daemon < 300 MB RSS with 10,000 connections held"
              + (f" ({held} of {wanted} held)" if held is not None else ""),
              "root_daemon_rss_MB", 300, held_met),
    ]  # fmt: skip


def _cell(result: dict[str, Any], column: str, figure: str, higher: bool | None) -> str:
    value = result.get(f"{column}_{figure}")
    if value is None:
        return "-"
    base = result.get(f"baseline_{figure}")
    if figure.endswith("_failed"):
        return f"{value:.0f}"
    if higher is None or figure == "connect_s":
        return f"{value:.2f}"
    if column == "baseline" or base in (None, 0):
        return f"{value:,.1f}"
    if higher:
        return f"{value:,.1f} ({value / base:.2f}x)"
    return f"{value:,.0f} ({value - base:+,.0f})"


def table(result: dict[str, Any]) -> str:
    lines = []
    if "connect_cold_s" in result:
        lines += [
            f"telepresence connect --socks, cold (no daemons): {result['connect_cold_s']:.2f} s "
            f"(target < 1.5 s); warm (daemons running): {result['connect_warm_s']:.2f} s",
            "",
        ]
    columns = [(key, name) for key, name in COLUMNS if f"{key}_runs" in result]
    if columns:
        width = 20
        lines.append(f"{'median of ' + str(result['rounds']) + ' rounds':<32}"
                     + "".join(f"{name:>{width}}" for _, name in columns))  # fmt: skip
        for figure, label, higher in FIGURES:
            cells = [_cell(result, key, figure, higher) for key, _ in columns]
            if any(cell != "-" for cell in cells):
                lines.append(f"{label:<32}" + "".join(f"{cell:>{width}}" for cell in cells))
        lines += [
            "",
            "(x: times the baseline; +/-: microseconds more or less than the baseline.) To the",
            "echo pod's IP; Service: the baseline and sshuttle by its ClusterIP, Telepresence and",
            "SOCKS by its name tcp-echo.default. DNS: getaddrinfo() in the workstation; the",
            "baseline asks the cluster DNS over its route and sshuttle (--dns) the sshd pod's",
            "resolver for tcp-echo.default.svc.cluster.local, Telepresence its VIF for",
            "tcp-echo.default.",
        ]
    if "root_daemon_rss_MB" in result:
        lines += [
            "",
            f"{result['held_connections']:,} idle connections through the VIF "
            f"({result['hold_transport']}, opened in {result['hold_open_s']:.1f} s): "
            f"root daemon {result['root_daemon_rss_MB']:.1f} MB RSS "
            f"(idle {result['root_daemon_rss_idle_MB']:.1f}), "
            f"traffic-manager {result['manager_rss_MB']:.1f} MB "
            f"(idle {result['manager_rss_idle_MB']:.1f}); per connection "
            f"{result.get('root_daemon_kB_per_connection', 0):.1f} kB and "
            f"{result.get('manager_kB_per_connection', 0):.1f} kB",
        ]  # fmt: skip
    lines += ["", "targets:"]
    for target in result["targets"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        value, limit = target["value"], target["limit"]
        if value is not None and limit is not None:
            figures = f": {value:,.1f} against {limit:,.1f}"
        elif limit is not None:
            figures = f" ({limit:,.1f})"
        else:
            figures = ""
        lines.append(f"  {target['target']}{figures}: {met}")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks connect")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--mib", type=int, default=64, help="MiB per throughput run")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated, of {', '.join(PATHS)} (default: all)")  # fmt: skip
    parser.add_argument("--hold", type=int, default=10_000,
                        help="idle connections held through the VIF for RSS (0: skip)")  # fmt: skip
    parser.add_argument("--dir", type=Path, help="the sandbox's directory (default: a new one)")
    args = parser.parse_args(argv)
    paths = [path.strip() for path in args.paths.split(",") if path.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}; known: {', '.join(PATHS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="connect-bench-") as scratch:
        directory = args.dir or Path(scratch)
        result = measure(directory, args.rounds, args.mib, paths, args.hold)
    print(table(result))
    print(f"(the run took {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
