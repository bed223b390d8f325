"""``telepresence helm`` end to end: from the sandbox's workstation, against a cluster that
runs the traffic-manager (this checkout's ``python -m manager``, the image the chart names).

One sandbox (one node) serves the module. The commands run in the workstation namespace, as a
user's laptop runs them, and wait as they do by default; what they did is checked with kubectl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from telepresence.cli import ExitCode
from tests.sandbox.test_cluster import Sandbox

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)

TELEPRESENCE = str(Path(sys.executable).with_name("telepresence"))
MANAGER = "app=traffic-manager,telepresence=manager"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    box = Sandbox(directory)
    try:
        box.run("up", "--dir", str(directory), "--nodes", "1", timeout=180)
        yield box
    finally:
        down = box.run("down", "--dir", str(directory), check=False)
        assert down.returncode == 0, down.stderr


def telepresence(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """``telepresence ARGS`` in the workstation (the sandbox allows it two minutes)."""
    return sandbox.ws(TELEPRESENCE, *args, check=False)


def manager_pods(sandbox: Sandbox, namespace: str = "ambassador") -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = sandbox.get("pods", "-n", namespace, "-l", MANAGER)["items"]
    return pods


def logs(sandbox: Sandbox, pod: dict[str, Any]) -> str:
    return sandbox.kubectl("logs", "-n", "ambassador", pod["metadata"]["name"])


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_an_image_that_cannot_be_pulled_times_out_and_is_uninstalled(sandbox: Sandbox) -> None:
    done = telepresence(
        sandbox,
        "helm",
        "install",
        "-n",
        "broken",
        "--set",
        "image.name=nowhere",
        "--timeout",
        "15s",
    )
    assert done.returncode == ExitCode.TIMEOUT, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert error.startswith(
        "telepresence helm install: error: the traffic-manager in namespace broken did not "
        "become ready within 15s (0 of 1 pods available; pod traffic-manager-"
    )
    # What the kubelet says about the image is what the user reads.
    assert "ImagePullBackOff" in error or "ErrImagePull" in error
    assert error.endswith("; it was uninstalled again")
    assert "Waiting for the traffic-manager: 0 of 1 pods available; pod " in done.stderr
    assert (
        sandbox.get("deployments,services,configmaps", "-n", "broken", "-l", MANAGER)["items"] == []
    )


def test_install_upgrade_uninstall(sandbox: Sandbox) -> None:
    installed = telepresence(sandbox, "helm", "install", "--timeout", "90s")
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("Traffic Manager installed successfully\n")
    assert installed.stderr.splitlines()[-1] == (
        "The traffic-manager in namespace ambassador is ready"
    )
    (pod,) = manager_pods(sandbox)
    # The traffic-manager answers its readiness probe (python -m manager serves /readyz).
    assert is_ready(pod)
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["LOG_LEVEL"] == "info"
    assert " DEBUG " not in logs(sandbox, pod)

    # The upgrade rolls the pod: the new one runs with the new level, the old one is gone.
    upgraded = telepresence(sandbox, "helm", "upgrade", "--set", "logLevel=debug")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith("Traffic Manager upgraded successfully\n")
    (rolled,) = manager_pods(sandbox)
    assert rolled["metadata"]["name"] != pod["metadata"]["name"]
    assert is_ready(rolled)
    (container,) = rolled["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["LOG_LEVEL"] == "debug"
    # ...and the level is in effect: the new manager logs at debug level.
    assert " DEBUG " in logs(sandbox, rolled)

    # Uninstall waits for the pod to be gone and leaves nothing of the release behind.
    removed = telepresence(sandbox, "helm", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Traffic Manager uninstalled successfully\n"
    assert manager_pods(sandbox) == []
    left = sandbox.get(
        "deployments,services,serviceaccounts,configmaps,secrets,roles,rolebindings",
        "-n",
        "ambassador",
    )["items"]
    assert sorted((item["kind"], item["metadata"]["name"]) for item in left) == [
        ("ConfigMap", "kube-root-ca.crt"),
        ("ServiceAccount", "default"),
    ]
    cluster_wide = json.loads(
        sandbox.kubectl("get", "clusterroles,clusterrolebindings", "-o", "json")
    )["items"]
    assert not [item for item in cluster_wide if "ambassador" in item["metadata"]["name"]]
