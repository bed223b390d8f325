"""Fixtures for the API server tests: a running server, and kubectl pointed at it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from sandbox.apiserver.run import Running


@pytest.fixture
def anyio_backend() -> str:
    # The API server is an aiohttp application, and its clients (kubernetes-asyncio, helm-sdkpy)
    # run on asyncio only.
    return "asyncio"


@dataclass
class Kubectl:
    """kubectl as a user runs it, against the sandbox's kubeconfig."""

    kubeconfig: Path
    home: Path
    context: str | None = None

    async def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, deadline: float = 30
    ) -> subprocess.CompletedProcess[str]:
        command = ["kubectl", f"--kubeconfig={self.kubeconfig}"]
        if self.context:
            command.append(f"--context={self.context}")
        env = {**os.environ, "HOME": str(self.home), "KUBECACHEDIR": str(self.home / "cache")}
        with anyio.fail_after(deadline):
            result = await anyio.run_process(
                [*command, *args], input=stdin.encode() if stdin else None, check=False, env=env
            )
        completed = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{completed.stderr}"
            )
        return completed

    async def json(self, *args: str) -> Any:
        return json.loads((await self(*args, "-o", "json")).stdout)

    def as_context(self, context: str) -> Kubectl:
        return Kubectl(self.kubeconfig, self.home, context)


@pytest.fixture
def kubectl(apiserver: Running, tmp_path: Path) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.fail(
            "kubectl is not installed: these tests drive the API server with the real kubectl "
            "(1.32); install it (it comes with the machine image) and run them again"
        )
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(apiserver.kubeconfig, home)
