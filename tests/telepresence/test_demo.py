"""``python -m sandbox demo`` (what ``./dev demo``, the README's first command, runs): the
cluster serves the demo app, and after ``telepresence connect`` the workstation reaches it
by the same names; the demo leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.timeout(300)


def test_the_demo_serves_in_the_cluster_and_then_on_the_workstation() -> None:
    # A short directory: the daemons' unix sockets live under it (108 bytes at most).
    with tempfile.TemporaryDirectory(prefix="tpdemo-") as directory:
        done = subprocess.run(
            [sys.executable, "-m", "sandbox", "demo", "--dir", directory],
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    before, _, after = done.stdout.partition("$ telepresence connect --namespace default")
    assert after, done.stdout
    # Before connecting, the workstation reaches no cluster address.
    assert "curl: (7) Failed to connect to " in before
    for name in ("echo", "echo.default", "echo.default.svc.cluster.local"):
        section = after.split(f"$ curl -sS --max-time 10 http://{name}/demo\n", 1)[1]
        assert section.startswith("pod: echo-"), (name, section[:200])
        assert f"Host: {name}\n" in section
    assert "  VIF: tel0, routing " in after
    assert "Disconnected; daemons stopped" in after
    assert "sandbox: down; nothing left behind" in done.stderr
