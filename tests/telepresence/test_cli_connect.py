"""The connect commands' own logic, without daemons: the version-skew warning, the text
status, repeatable comma-separated flags, and what a failure looks like."""

from __future__ import annotations

from typer.testing import CliRunner

from telepresence import __version__
from telepresence.cli import _connect, app
from telepresence.client import ConnectionStatus, DaemonInfo


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
