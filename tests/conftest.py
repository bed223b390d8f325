"""Shared fixtures: every async test runs on asyncio, asyncio with uvloop, and trio (unless a
folder's conftest narrows ``anyio_backend``); ``apiserver`` is the sandbox's API server,
in-process on a loopback port, for the tests that need a cluster to talk to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from sandbox.apiserver.run import Running, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

ANYIO_BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[Running]:
    async with anyio.create_task_group() as tasks:
        running: Running = await tasks.start(
            lambda task_status: serve(tmp_path / "cluster", port=0, task_status=task_status)
        )
        yield running
        tasks.cancel_scope.cancel()
