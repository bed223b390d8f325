"""The connect commands' own logic, without daemons: the version-skew warning, the text
status, repeatable comma-separated flags, and what a failure looks like."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typer.testing import CliRunner

from telepresence import __version__
from telepresence.cli import _connect, app
from telepresence.client import ConnectionStatus, DaemonInfo, VIFInfo
from telepresence.errors import ExitCode

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_a_manager_of_another_version_is_a_warning() -> None:
    same = ConnectionStatus(state="connected", manager_version=__version__)
    assert _connect._version_skew(same) == ""
    other = ConnectionStatus(state="connected", manager_version="9.9.9")
    assert _connect._version_skew(other) == (
        f"the traffic-manager is version 9.9.9 and this client {__version__}: upgrade the one "
        "that is older (telepresence helm upgrade)"
    )


def test_the_text_status_names_every_part() -> None:
    status = ConnectionStatus(
        state="reconnecting",
        error="traffic manager not found in namespace ambassador",
        context="prod",
        cluster_server="https://10.0.0.1:6443",
        namespace="default",
        manager_namespace="ambassador",
        manager_namespace_source="kubeconfig",
        transport="portforward",
        socks_address="127.0.0.1:1080",
        user_daemon=DaemonInfo("user-daemon", "0.1.0", 42, "/tmp/connector.log"),
    )
    assert _connect._describe(status).splitlines() == [
        "User daemon: running (v0.1.0, pid 42)",
        "  Status: reconnecting (traffic manager not found in namespace ambassador)",
        "  Kubernetes context: prod (https://10.0.0.1:6443)",
        "  Namespace: default",
        "  Manager namespace: ambassador (from kubeconfig)",
        "  Transport: portforward",
        "  SOCKS5/HTTP CONNECT proxy: 127.0.0.1:1080",
        "Root daemon: not running",
    ]


def test_repeatable_flags_take_comma_separated_lists() -> None:
    assert _connect._split(["a,b", " c ", "", "d,,e"]) == ["a", "b", "c", "d", "e"]
    assert _connect._split(None) == []


def test_a_bad_log_duration_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["loglevel", "debug", "--duration", "soon"])
    assert result.exit_code == 2
    assert "--duration" in result.output


def test_the_text_status_shows_the_vif_and_its_conflicts() -> None:
    status = ConnectionStatus(
        state="connected",
        root_daemon=DaemonInfo("root-daemon", "0.1.0", 43, "/tmp/daemon.log"),
        root_data_plane="connected",
        vif=VIFInfo(
            device="tel0",
            routed=["10.96.0.0/12"],
            never_proxied=["10.96.7.0/24"],
            conflicts=["10.244.0.0/16 overlaps the route to 10.244.3.0/24 on docker0"],
            dns_address="10.96.0.10:53",
            dns_mode="redirect",
        ),
    )
    lines = _connect._describe(status).splitlines()
    assert lines[-5:] == [
        "  Data plane: connected",
        "  VIF: tel0, routing 10.96.0.0/12",
        "  DNS: 10.96.0.10:53 (redirect)",
        "  Never proxied: 10.96.7.0/24",
        "  Not routed: 10.244.0.0/16 overlaps the route to 10.244.3.0/24 on docker0",
    ]


def test_a_socket_path_too_long_for_unix_sockets_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = tmp_path / ("r" * 100)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    result = CliRunner().invoke(app, ["connect"])
    assert result.exit_code == ExitCode.DAEMON, result.output
    assert "longer than a unix socket allows (107 bytes)" in result.output
    assert "set XDG_RUNTIME_DIR to a shorter directory" in result.output
