"""The configuration files, the environment, and the label selectors of namespaces.yaml."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import pytest

from manager import config
from manager.config import ConfigError
from manager.scope import LabelSelector, NamespaceSelection, Requirement
from manager.settings import TRACE, Settings, SettingsError, log_level

if TYPE_CHECKING:
    from pathlib import Path


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


def test_an_empty_or_missing_directory_is_the_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "missing") == config.load(tmp_path)
    loaded = config.load(tmp_path)
    assert loaded.client == config.ClientConfig()
    assert loaded.client.connection_ttl == 24 * 3600
    assert loaded.client.endpoint_dial == 3.0
    assert loaded.namespaces.everything


def test_client_yaml(tmp_path: Path) -> None:
    write(
        tmp_path,
        "client.yaml",
        """
        connectionTTL: 1h30m
        dns:
          includeSuffixes: [.private]
          excludeSuffixes: [.com]
          lookupTimeout: 8s
        routing:
          alsoProxySubnets: [192.168.50.0/24, "fd00::/64"]
          neverProxySubnets: [10.244.0.129/25]
        timeouts:
          endpointDial: 250ms
          agentInstall: 2m
          ftpReadWrite: 1m
        images: {registry: ignored}
        """.replace("\n        ", "\n"),
    )
    client = config.load(tmp_path).client
    assert client.connection_ttl == 5400
    assert client.dns == config.DNSConfig((".private",), (".com",), 8.0)
    assert client.routing.also_proxy_subnets == (
        ipaddress.ip_network("192.168.50.0/24"),
        ipaddress.ip_network("fd00::/64"),
    )
    assert client.routing.never_proxy_subnets == (ipaddress.ip_network("10.244.0.128/25"),)
    assert client.endpoint_dial == 0.25
    assert client.timeouts["agentInstall"] == 120


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("client.yaml", "dns: [a]", "client.yaml: dns: expected a mapping, got list"),
        ("client.yaml", "dns: {includeSuffixes: .com}", "client.yaml: dns.includeSuffixes:"),
        ("client.yaml", "routing: {alsoProxySubnets: [nonsense]}", "routing.alsoProxySubnets"),
        ("client.yaml", "timeouts: {endpointDial: soon}", "client.yaml: timeouts.endpointDial:"),
        ("client.yaml", "connectionTTL: -1s", "connectionTTL"),
        ("client.yaml", "{unclosed", "client.yaml: not valid YAML"),
        ("client.yaml", "- a list", "client.yaml: the document: expected a mapping"),
        ("namespaces.yaml", "namespaces: [Dev]", "namespaces.yaml: namespaces: 'Dev'"),
        (
            "namespaces.yaml",
            "namespaces: [a]\nnamespaceSelector: {matchLabels: {a: b}}",
            "either namespaces or namespaceSelector",
        ),
        (
            "namespaces.yaml",
            "namespaceSelector: {matchExpressions: [{key: a, operator: Like, values: [b]}]}",
            "namespaceSelector.matchExpressions[0].operator",
        ),
        (
            "namespaces.yaml",
            "namespaceSelector: {matchExpressions: [{key: a, operator: In}]}",
            "needs at least one value",
        ),
        ("agent.yaml", "just text", "agent.yaml: the document: expected a mapping"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, file: str, text: str, message: str) -> None:
    write(tmp_path, file, text)
    with pytest.raises(ConfigError) as raised:
        config.load(tmp_path)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1.5h", 5400), ("0", 0), (15, 15), (0.25, 0.25)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert config.duration(text, "f", "k") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "1x", "s", "1m 30s", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ConfigError):
        config.duration(text, "f", "k")


def test_a_namespace_list_is_a_static_selection(tmp_path: Path) -> None:
    write(tmp_path, "namespaces.yaml", "namespaces: [dev, staging]")
    selection = config.load(tmp_path).namespaces
    assert selection == NamespaceSelection(names=frozenset({"dev", "staging"}))
    assert selection.static
    assert not selection.everything
    assert selection.describe() == "namespaces dev, staging"


@pytest.mark.parametrize(
    "selector",
    [
        "{matchLabels: {kubernetes.io/metadata.name: dev}}",
        "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [dev]}]}",
    ],
)
def test_a_selector_that_only_names_namespaces_is_static(tmp_path: Path, selector: str) -> None:
    write(tmp_path, "namespaces.yaml", f"namespaceSelector: {selector}")
    assert config.load(tmp_path).namespaces == NamespaceSelection(names=frozenset({"dev"}))


@pytest.mark.parametrize(
    "selector",
    [
        "{matchLabels: {team: a}}",
        "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}",
        "{matchLabels: {kubernetes.io/metadata.name: dev, team: a}}",
    ],
)
def test_other_selectors_are_dynamic(tmp_path: Path, selector: str) -> None:
    write(tmp_path, "namespaces.yaml", f"namespaceSelector: {selector}")
    selection = config.load(tmp_path).namespaces
    assert selection.names is None
    assert selection.selector is not None


def test_label_selector_semantics() -> None:
    selector = LabelSelector(
        (
            Requirement("team", "In", ("a", "b")),
            Requirement("env", "NotIn", ("prod",)),
            Requirement("owner", "Exists"),
            Requirement("frozen", "DoesNotExist"),
        )
    )
    assert selector.matches({"team": "a", "owner": "x"})
    assert selector.matches({"team": "b", "owner": "x", "env": "dev"})
    assert not selector.matches({"team": "c", "owner": "x"})
    assert not selector.matches({"team": "a", "owner": "x", "env": "prod"})
    assert not selector.matches({"team": "a"})
    assert not selector.matches({"team": "a", "owner": "x", "frozen": ""})
    assert LabelSelector(()).matches({})
    assert str(selector) == "team in (a, b), env notin (prod), owner, !frozen"


def test_later_files_are_kept(tmp_path: Path) -> None:
    write(tmp_path, "agent.yaml", "image: {name: tel2}")
    assert config.load(tmp_path).later["agent.yaml"] == {"image": {"name": "tel2"}}


def test_settings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "LOG_LEVEL": "debug",
            "MANAGER_NAMESPACE": "staging",
            "POD_IP": "10.244.0.5",
            "API_PORT": "9081",
            "DATA_PORT": "9082",
            "HEALTH_PORT": "9083",
            "CONFIG_DIR": str(tmp_path),
            "TLS_DIR": "/tls",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        }
    )
    assert settings.log_level == logging.DEBUG
    assert settings.namespace == "staging"
    assert settings.pod_ip == ipaddress.ip_address("10.244.0.5")
    assert (settings.api_port, settings.data_port, settings.health_port) == (9081, 9082, 9083)
    assert settings.config_dir == tmp_path
    assert settings.kubernetes_service_host == "10.96.0.1"
    assert settings.kubeconfig is None


def test_defaults_are_the_charts() -> None:
    settings = Settings.from_environ({"MANAGER_NAMESPACE": "ambassador"})
    assert (settings.api_port, settings.data_port, settings.health_port) == (8081, 8082, 8083)
    assert str(settings.config_dir) == "/etc/traffic-manager"
    assert str(settings.tls_dir) == "/var/run/secrets/traffic-manager-tls"
    assert settings.log_level == logging.INFO


@pytest.mark.parametrize(
    ("variable", "value"),
    [("API_PORT", "http"), ("DATA_PORT", "70000"), ("POD_IP", "pod"), ("LOG_LEVEL", "loud")],
)
def test_bad_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({"MANAGER_NAMESPACE": "x", variable: value})
    assert str(raised.value).startswith(f"{variable}: ")


def test_log_levels() -> None:
    assert log_level("TRACE") == TRACE
    assert log_level("warn") == log_level("warning") == logging.WARNING
