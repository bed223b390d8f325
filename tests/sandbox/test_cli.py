"""``python -m sandbox apiserver``: the foreground server as a user runs it."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


def start(directory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", "apiserver", "--dir", str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_url(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    for line in server.stderr:
        if match := re.search(r"API server on (https://\S+);", line):
            return match.group(1)
    raise AssertionError(f"the server ended before it served (exit {server.wait()})")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed: this test drives the server with kubectl")
    with start(tmp_path / "cluster", "--port", "0") as server:
        try:
            url = wait_for_url(server)
            kubeconfig = tmp_path / "cluster" / "kubeconfig"
            config = yaml.safe_load(kubeconfig.read_text())
            assert config["clusters"][0]["cluster"]["server"] == url
            listed = subprocess.run(
                ["kubectl", f"--kubeconfig={kubeconfig}", "get", "namespaces", "-o", "name"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
                env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
            )
            assert "namespace/default" in listed.stdout.split()
            server.send_signal(signum)
            assert server.wait(timeout=10) == 0
        finally:
            if server.poll() is None:
                server.kill()
        assert server.stderr is not None
        rest = server.stderr.read()
    assert f"{signum.name}: stopping" in rest


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with start(tmp_path / "cluster", "--port", str(port)) as server:
            _, stderr = server.communicate(timeout=30)
    assert server.returncode == 1
    assert f"error: cannot serve on 127.0.0.1:{port}: Address already in use" in stderr
    assert "Traceback" not in stderr
