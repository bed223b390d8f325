"""``python -m manager`` as the image runs it: a process, its environment, SIGTERM.

Outside a pod the manager takes ``KUBECONFIG``'s cluster (here the sandbox API server of the
test, on loopback); everything else is exactly the chart's environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from .harness import MANAGER_NAMESPACE, Cluster, closed_port

if TYPE_CHECKING:
    from pathlib import Path

    from telepresence.wire import tls

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def environment(
    cluster: Cluster, tmp_path: Path, identity: tls.Identity, ca: tls.Identity
) -> dict[str, str]:
    """The chart's environment, with the TLS Secret's three files (``TLS_DIR``)."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(exist_ok=True)
    identity.save(tls_dir / "tls.crt", tls_dir / "tls.key")
    (tls_dir / "ca.crt").write_bytes(ca.certificate_pem)
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(
        LOG_LEVEL="debug",
        MANAGER_NAMESPACE=MANAGER_NAMESPACE,
        POD_IP="127.0.0.1",
        API_PORT=str(closed_port()),
        DATA_PORT=str(closed_port()),
        HEALTH_PORT=str(closed_port()),
        CONFIG_DIR=str(config_dir),
        TLS_DIR=str(tls_dir),
        KUBECONFIG=str(cluster.apiserver.kubeconfig),
    )
    return env


async def readyz(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /readyz HTTP/1.1\r\n\r\n")
        return await stream.receive()


async def test_serves_until_sigterm_then_exits_cleanly(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    env = environment(cluster, tmp_path, manager_identity, ca)
    lines: list[str] = []
    async with await anyio.open_process(
        [sys.executable, "-m", "manager"], env=env, stderr=subprocess.PIPE
    ) as process:
        assert process.stderr is not None
        log = TextReceiveStream(process.stderr)
        buffered = ""
        with anyio.fail_after(30):
            async for chunk in log:
                buffered += chunk
                lines = buffered.splitlines()
                if any("ready in namespace ambassador" in line for line in lines):
                    break
        assert (await readyz(int(env["HEALTH_PORT"]))).startswith(b"HTTP/1.1 200 ")
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            async for chunk in log:
                buffered += chunk
            assert await process.wait() == 0
    assert "SIGTERM: shutting down gracefully" in buffered
    assert "traffic-manager stopped" in buffered
    assert "Traceback" not in buffered


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL: 'chatty' is not a log level"),
        ({"API_PORT": "http"}, "API_PORT: 'http' is not a port number"),
        ({"TLS_DIR": "/nonexistent"}, "No such file or directory"),
    ],
)
async def test_cannot_start_says_why_in_one_line(
    *,
    cluster: Cluster,
    tmp_path: Path,
    manager_identity: tls.Identity,
    ca: tls.Identity,
    change: dict[str, str],
    message: str,
) -> None:
    env = environment(cluster, tmp_path, manager_identity, ca) | change
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-m", "manager"], env=env, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert message in stderr
    assert "traffic-manager: cannot start: " in stderr
    assert "Traceback" not in stderr


async def test_a_bad_configuration_file_is_named(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    env = environment(cluster, tmp_path, manager_identity, ca)
    (tmp_path / "config" / "namespaces.yaml").write_text("namespaces: staging\n")
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-m", "manager"], env=env, check=False)
    assert result.returncode == 1
    assert "namespaces.yaml: namespaces: expected a list of strings" in result.stderr.decode()


async def test_a_bad_ca_certificate_is_named(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    env = environment(cluster, tmp_path, manager_identity, ca)
    (tmp_path / "tls" / "ca.crt").write_text("not a certificate\n")
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-m", "manager"], env=env, check=False)
    assert result.returncode == 1
    assert f"{tmp_path / 'tls' / 'ca.crt'}: not a PEM certificate" in result.stderr.decode()


async def test_arguments_are_refused() -> None:
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-m", "manager", "serve"], check=False)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("usage: python -m manager")
