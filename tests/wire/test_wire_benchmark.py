"""The wire benchmark runs end to end (tiny amounts, every backend) and writes its JSON.

It measures nothing here: the figures are only checked to be there and positive, so that the
benchmark cannot rot between the runs that do measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

KEYS = (
    "raw_tls_MBps",
    "mux_1_MBps",
    "mux_64_MBps",
    "raw_rtt_p50_us",
    "raw_rtt_p99_us",
    "mux_rtt_p50_us",
    "mux_rtt_p99_us",
)


@pytest.mark.timeout(120)
def test_the_wire_benchmark_runs_on_every_backend(tmp_path: Path) -> None:
    output = tmp_path / "wire.json"
    command = [sys.executable, "-m", "benchmarks", "wire", "--json", str(output)]
    command += ["--mib", "1", "--rounds", "2", "--round-trips", "20"]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "targets (issue 2)" in result.stdout
    document = json.loads(output.read_text())
    assert [figures["backend"] for figures in document["backends"]] == [
        "asyncio",
        "uvloop",
        "trio",
    ]
    for figures in document["backends"]:
        assert all(figures[key] > 0 for key in KEYS), figures
        assert figures["round_trips"] == 20
    assert document["raw_tls_MBps"] == document["backends"][0]["raw_tls_MBps"]
