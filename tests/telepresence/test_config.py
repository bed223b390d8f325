"""config.yml, the XDG directories, the pushed client configuration, and the manager namespace.

Each test writes the files a user would have (config.yml, kubeconfigs) into ``tmp_path`` and
asserts on what the user would see: the values in effect, the warnings, the one-line errors.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import textwrap
from typing import TYPE_CHECKING

import pytest
from google.protobuf.duration_pb2 import Duration

from telepresence.config import (
    ClusterConfig,
    Config,
    ConfigError,
    KubeconfigError,
    PrivateDirectoryError,
    Timeouts,
    cache_dir,
    config_dir,
    config_path,
    effective,
    ensure_private_dir,
    list_contexts,
    load_config,
    logs_dir,
    manager_namespace,
    parse_duration,
    read_kubeconfig,
    runtime_dir,
)
from telepresence.wire.proto import manager_pb2 as pb

if TYPE_CHECKING:
    from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> tuple[Config, list[str]]:
    return load_config(write(tmp_path / "config.yml", text))


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'config.yml'}: ")
    return message


# config.yml


def test_defaults_are_the_original_clients() -> None:
    config = Config()
    assert config.timeouts == Timeouts(
        agent_install=120,
        apply=60,
        cluster_connect=20,
        connectivity_check=0.5,
        endpoint_dial=3,
        helm=30,
        intercept=30,
        proxy_dial=5,
        roundtrip_latency=2,
        traffic_manager_api=15,
        traffic_manager_connect=60,
    )
    assert (config.log_levels.user_daemon, config.log_levels.root_daemon) == ("info", "info")
    assert config.cluster.default_manager_namespace is None
    assert config.cluster.mapped_namespaces == []
    assert config.dns.include_suffixes == []
    assert config.dns.exclude_suffixes is None
    assert config.dns.lookup_timeout == 8
    assert config.routing.also_proxy_subnets == []
    assert config.routing.never_proxy_subnets == []
    assert config.routing.allow_conflicting_subnets == []
    assert config.model_fields_set == set()


@pytest.mark.parametrize("text", ["", "\n", "# nothing set yet\n", "---\n"])
def test_an_empty_file_is_the_defaults(tmp_path: Path, text: str) -> None:
    assert load(tmp_path, text) == (Config(), [])


def test_a_missing_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nowhere" / "config.yml") == (Config(), [])


def test_every_section_parses(tmp_path: Path) -> None:
    config, warnings = load(
        tmp_path,
        """
        timeouts:
          agentInstall: 2m
          apply: 90
          clusterConnect: 10s
          connectivityCheck: 250ms
          endpointDial: 1.5
          helm: 1m30s
          intercept: 45s
          proxyDial: 7s
          roundtripLatency: 1s
          trafficManagerAPI: 20s
          trafficManagerConnect: 2m
        logLevels:
          userDaemon: debug
          rootDaemon: TRACE
        cluster:
          defaultManagerNamespace: staging
          mappedNamespaces: [default, dev]
        dns:
          includeSuffixes: [.private]
          excludeSuffixes: [.com, .io]
          lookupTimeout: 4s
        routing:
          alsoProxySubnets: [192.168.50.0/24, "fd00::/64"]
          neverProxySubnets: [10.0.5.0/24]
          allowConflictingSubnets: [10.96.0.0/12]
        """,
    )
    assert warnings == []
    assert config.timeouts == Timeouts(
        agent_install=120,
        apply=90,
        cluster_connect=10,
        connectivity_check=0.25,
        endpoint_dial=1.5,
        helm=90,
        intercept=45,
        proxy_dial=7,
        roundtrip_latency=1,
        traffic_manager_api=20,
        traffic_manager_connect=120,
    )
    assert config.log_levels.user_daemon == "debug"
    assert config.log_levels.root_daemon == "trace"
    assert config.cluster == ClusterConfig(
        default_manager_namespace="staging", mapped_namespaces=["default", "dev"]
    )
    assert config.dns.include_suffixes == [".private"]
    assert config.dns.exclude_suffixes == [".com", ".io"]
    assert config.dns.lookup_timeout == 4
    assert config.routing.also_proxy_subnets == [
        ipaddress.ip_network("192.168.50.0/24"),
        ipaddress.ip_network("fd00::/64"),
    ]
    assert config.routing.never_proxy_subnets == [ipaddress.ip_network("10.0.5.0/24")]
    assert config.routing.allow_conflicting_subnets == [ipaddress.ip_network("10.96.0.0/12")]


def test_the_file_says_which_keys_it_set(tmp_path: Path) -> None:
    config, _ = load(tmp_path, "timeouts:\n  helm: 1m\n  intercept: ~\ndns:\n")
    assert config.model_fields_set == {"timeouts"}
    assert config.timeouts.model_fields_set == {"helm"}
    assert config.timeouts.intercept == 30  # a key without a value is not set


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3s", 3.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("10ns", 10e-9),
        ("0", 0.0),
        ("10", 10.0),
        (" 2.5 ", 2.5),
        (2.5, 2.5),
        (10, 10.0),
        (0, 0.0),
    ],
)
def test_durations_in_both_forms(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("yaml_value", "seconds"), [("90s", 90.0), ("1m30s", 90.0), ("90", 90.0), ("1.5e1", 15.0)]
)
def test_durations_in_the_file(tmp_path: Path, yaml_value: str, seconds: float) -> None:
    config, _ = load(tmp_path, f"timeouts:\n  endpointDial: {yaml_value}\n")
    assert config.timeouts.endpoint_dial == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3 parsecs", "'3 parsecs' is not a duration (such as 3s, 1m30s or 2.5)"),
        ("1x", "'1x' is not a duration"),
        ("s", "'s' is not a duration"),
        ("", "'' is not a duration"),
        ("inf", "'inf' is not a duration"),
        (float("inf"), "inf is not a duration"),
        ("-5s", "'-5s' is negative: a duration is 0 or more"),
        (-1, "-1 is negative"),
        (True, "the boolean true is not a duration"),
        ([1], "a list is not a duration"),
    ],
)
def test_what_is_not_a_duration(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(value)
    assert message in str(caught.value)


def test_unknown_keys_warn_with_the_file_and_the_dotted_path(tmp_path: Path) -> None:
    config, warnings = load(
        tmp_path,
        """
        images:
          registry: example.com
        timeouts:
          frobnicate: 3s
          agent_install: 1s
          helm: 1m
        cluster:
          virtualIPSubnet: 211.55.48.0/20
        logLevels:
          cli: debug
        """,
    )
    path = tmp_path / "config.yml"
    assert warnings == [
        f"{path}: unknown key images (ignored)",
        f"{path}: unknown key timeouts.frobnicate (ignored)",
        # Attribute names are not keys: the file uses the original's camelCase only.
        f"{path}: unknown key timeouts.agent_install (ignored)",
        f"{path}: unknown key cluster.virtualIPSubnet (ignored)",
        f"{path}: unknown key logLevels.cli (ignored)",
    ]
    assert config.timeouts.helm == 60
    assert config.timeouts.agent_install == 120


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "timeouts:\n  endpointDial: 3 parsecs\n",
            "timeouts.endpointDial: '3 parsecs' is not a duration (such as 3s, 1m30s or 2.5)",
        ),
        (
            "routing:\n  alsoProxySubnets: [10.0.0.0/8, 10.300.0.0/16]\n",
            "routing.alsoProxySubnets[1]: '10.300.0.0/16' is not a subnet in CIDR notation",
        ),
        (
            "routing:\n  neverProxySubnets: [10.0.0.1/24]\n",
            "routing.neverProxySubnets[0]: '10.0.0.1/24' has host bits set"
            " (the subnet would be 10.0.0.0/24)",
        ),
        (
            "routing:\n  allowConflictingSubnets: [10.0.0.1]\n",
            "routing.allowConflictingSubnets[0]: '10.0.0.1' is not a subnet in CIDR notation"
            " (such as 10.0.0.0/16): it has no prefix length",
        ),
        (
            "routing:\n  alsoProxySubnets: 10.0.0.0/8\n",
            "routing.alsoProxySubnets: expected a list, got the string '10.0.0.0/8'",
        ),
        (
            "logLevels:\n  userDaemon: debgu\n",
            "logLevels.userDaemon: 'debgu' is not a log level"
            " (one of trace, debug, info, warning, error)",
        ),
        ("timeouts:\n  - helm: 1m\n", "timeouts: expected a mapping, got a list"),
        ("dns: [.local]\n", "dns: expected a mapping, got a list"),
        (
            "cluster:\n  defaultManagerNamespace: Staging\n",
            "cluster.defaultManagerNamespace: 'Staging' is not a namespace name",
        ),
        (
            "cluster:\n  mappedNamespaces: [dev, 5]\n",
            "cluster.mappedNamespaces[1]: expected a namespace name, got the number 5",
        ),
        (
            "dns:\n  excludeSuffixes: ['.com', 'not a suffix']\n",
            "dns.excludeSuffixes[1]: 'not a suffix' is not a DNS suffix",
        ),
        ("- timeouts\n", "expected a mapping of settings, got a list"),
    ],
)
def test_bad_values_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in load_error(tmp_path, text)


def test_every_bad_value_is_in_the_one_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "timeouts:\n  helm: soon\n  apply: later\n")
    problems = message.split(": ", 1)[1].split("; ")
    assert sorted(problem.split(" is not")[0] for problem in problems) == [
        "timeouts.apply: 'later'",
        "timeouts.helm: 'soon'",
    ]


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "timeouts:\n  helm: 1m\n  apply: [1m\n")
    assert "line 4" in message
    assert "not valid YAML" in message


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.yml").mkdir()
    with pytest.raises(ConfigError, match=r"config\.yml: cannot be read"):
        load_config(tmp_path / "config.yml")


# Directories


def test_xdg_variables_are_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert config_dir() == tmp_path / "config" / "telepresence"
    assert config_path() == tmp_path / "config" / "telepresence" / "config.yml"
    assert cache_dir() == tmp_path / "cache" / "telepresence"
    assert logs_dir() == tmp_path / "cache" / "telepresence" / "logs"
    assert runtime_dir() == tmp_path / "run" / "telepresence"


@pytest.mark.parametrize("value", [None, "", "relative/path"])
def test_unset_empty_or_relative_xdg_variables_mean_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert config_path() == tmp_path / ".config" / "telepresence" / "config.yml"
    assert logs_dir() == tmp_path / ".cache" / "telepresence" / "logs"
    assert str(runtime_dir()) == f"/tmp/telepresence-{os.getuid()}"


def test_load_config_reads_the_xdg_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    write(tmp_path / "telepresence" / "config.yml", "timeouts:\n  helm: 2m\n")
    config, _ = load_config()
    assert config.timeouts.helm == 120


def test_ensure_private_dir_creates_it_for_the_user_only(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "telepresence"
    assert ensure_private_dir(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert ensure_private_dir(path) == path  # and takes it as it is the next time


def test_ensure_private_dir_keeps_a_directory_others_can_only_read(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    assert ensure_private_dir(path) == path


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_ensure_private_dir_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "telepresence"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(PrivateDirectoryError, match=f"can be written by other users .*{mode:04o}"):
        ensure_private_dir(path)


def test_ensure_private_dir_refuses_another_users_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "telepresence"
    path.mkdir(mode=0o700)
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with pytest.raises(PrivateDirectoryError, match=f"belongs to another user \\(uid {owner}\\)"):
        ensure_private_dir(path)


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "telepresence").write_text("")
    with pytest.raises(PrivateDirectoryError, match="not a directory"):
        ensure_private_dir(tmp_path / "telepresence")


# What the traffic-manager pushes


def ipnet(text: str) -> pb.IPNet:
    network = ipaddress.ip_network(text)
    return pb.IPNet(ip=network.network_address.packed, mask=network.prefixlen)


PUSHED = pb.ClientConfig(
    dns=pb.DNSConfig(
        include_suffixes=[".corp"],
        exclude_suffixes=[".com"],
        lookup_timeout=Duration(seconds=2, nanos=500_000_000),
    ),
    routing=pb.RoutingConfig(
        also_proxy_subnets=[ipnet("192.168.50.0/24")],
        never_proxy_subnets=[ipnet("10.0.5.0/24")],
    ),
    timeouts=pb.Timeouts(
        endpoint_dial=Duration(seconds=9), traffic_manager_api=Duration(seconds=40)
    ),
)


def test_pushed_values_fill_what_the_file_did_not_set() -> None:
    config = effective(Config(), PUSHED)
    assert config.dns.include_suffixes == [".corp"]
    assert config.dns.exclude_suffixes == [".com"]
    assert config.dns.lookup_timeout == 2.5
    assert config.routing.also_proxy_subnets == [ipaddress.ip_network("192.168.50.0/24")]
    assert config.routing.never_proxy_subnets == [ipaddress.ip_network("10.0.5.0/24")]
    assert config.routing.allow_conflicting_subnets == []  # not pushed: the default
    assert config.timeouts.endpoint_dial == 9
    assert config.timeouts.traffic_manager_api == 40
    assert config.timeouts.helm == 30  # not pushed: the default


def test_what_the_file_sets_wins_key_by_key(tmp_path: Path) -> None:
    local, _ = load(
        tmp_path,
        """
        timeouts:
          endpointDial: 1s
        dns:
          excludeSuffixes: []
        routing:
          neverProxySubnets: [172.16.0.0/12]
        cluster:
          defaultManagerNamespace: staging
        """,
    )
    config = effective(local, PUSHED)
    # Set by the file: kept, even an empty list.
    assert config.timeouts.endpoint_dial == 1
    assert config.dns.exclude_suffixes == []
    assert config.routing.never_proxy_subnets == [ipaddress.ip_network("172.16.0.0/12")]
    assert config.cluster.default_manager_namespace == "staging"
    # Beside them in the same sections, what the file left out: pushed.
    assert config.timeouts.traffic_manager_api == 40
    assert config.dns.include_suffixes == [".corp"]
    assert config.dns.lookup_timeout == 2.5
    assert config.routing.also_proxy_subnets == [ipaddress.ip_network("192.168.50.0/24")]
    # And the result still says what the file set.
    assert config.timeouts.model_fields_set == {"endpoint_dial"}
    assert config.model_fields_set == local.model_fields_set


def test_an_empty_push_changes_nothing(tmp_path: Path) -> None:
    local, _ = load(tmp_path, "timeouts:\n  helm: 1m\n")
    assert effective(local, pb.ClientConfig()) == local


def test_a_malformed_pushed_subnet_is_an_error() -> None:
    pushed = pb.ClientConfig(
        routing=pb.RoutingConfig(also_proxy_subnets=[pb.IPNet(ip=b"\x0a\x00\x00\x01", mask=8)])
    )
    with pytest.raises(ConfigError, match=r"routing\.alsoProxySubnets\[0\]: not a subnet"):
        effective(Config(), pushed)


# The kubeconfig and the manager namespace

# The cluster extension exactly as the traffic-manager installation guide shows it.
STAGING_CLUSTER = """
apiVersion: v1
clusters:
- cluster:
    server: https://127.0.0.1
    extensions:
    - name: telepresence.io
      extension:
        cluster:
          defaultManagerNamespace: staging
  name: example-cluster
contexts:
- name: example
  context:
    cluster: example-cluster
    user: alice
current-context: example
users:
- name: alice
  user: {token: secret}
"""

OTHER_CLUSTERS = """
apiVersion: v1
clusters:
- name: example-cluster
  cluster: {server: https://shadowed.example}
- name: kind
  cluster: {server: https://127.0.0.1:6443}
contexts:
- name: kind
  context: {cluster: kind, user: kind-admin, namespace: dev}
- name: example
  context: {cluster: kind, user: shadowed}
current-context: kind
users:
- name: kind-admin
  user: {}
"""


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No KUBECONFIG and an empty home: only the files a test names exist."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("no_kubeconfig")
def test_the_kubeconfig_extension_as_the_guide_shows_it(tmp_path: Path) -> None:
    kubeconfig = write(tmp_path / "kubeconfig", STAGING_CLUSTER)
    context = read_kubeconfig(str(kubeconfig), None)
    assert (context.name, context.cluster, context.user) == ("example", "example-cluster", "alice")
    assert context.server == "https://127.0.0.1"
    assert context.namespace == "default"
    assert context.extensions == {
        "telepresence.io": {"cluster": {"defaultManagerNamespace": "staging"}}
    }
    assert manager_namespace(None, context.extensions, Config()) == ("staging", "kubeconfig")


@pytest.mark.usefixtures("no_kubeconfig")
def test_manager_namespace_precedence(tmp_path: Path) -> None:
    extensions = read_kubeconfig(str(write(tmp_path / "kubeconfig", STAGING_CLUSTER))).extensions
    config, _ = load(tmp_path, "cluster:\n defaultManagerNamespace: from-config\n")
    # The flag over everything; the kubeconfig over config.yml; config.yml over the default.
    assert manager_namespace("from-flag", extensions, config) == ("from-flag", "flag")
    assert manager_namespace(None, extensions, config) == ("staging", "kubeconfig")
    assert manager_namespace(None, {}, config) == ("from-config", "config.yml")
    assert manager_namespace(None, None, Config()) == ("ambassador", "default")
    assert manager_namespace("", None, Config()) == ("ambassador", "default")


def test_manager_namespace_from_the_raw_extension_list() -> None:
    raw = [
        {"name": "example.com", "extension": {"x": 1}},
        {"name": "telepresence.io", "extension": {"cluster": {"defaultManagerNamespace": "qa"}}},
    ]
    assert manager_namespace(None, raw, Config()) == ("qa", "kubeconfig")


def test_manager_namespace_from_the_older_extension_form() -> None:
    extensions = {"telepresence.io": {"manager": {"namespace": "legacy"}}}
    assert manager_namespace(None, extensions, Config()) == ("legacy", "kubeconfig")


def test_an_extension_without_the_key_falls_through() -> None:
    extensions = {"telepresence.io": {"cluster": {"mappedNamespaces": ["a"]}}}
    assert manager_namespace(None, extensions, Config()) == ("ambassador", "default")


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        ({"cluster": {"defaultManagerNamespace": 5}}, "expected a namespace name, got the number"),
        ({"cluster": {"defaultManagerNamespace": "Bad_NS"}}, "'Bad_NS' is not a namespace name"),
        ({"cluster": ["staging"]}, "cluster: expected a mapping, got a list"),
        ("staging", "expected a mapping, got the string 'staging'"),
    ],
)
def test_a_bad_extension_is_an_error(extension: object, message: str) -> None:
    with pytest.raises(KubeconfigError, match=r"telepresence\.io extension") as caught:
        manager_namespace(None, {"telepresence.io": extension}, Config())
    assert message in str(caught.value)


@pytest.mark.usefixtures("no_kubeconfig")
def test_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "first", STAGING_CLUSTER)
    second = write(tmp_path / "second", OTHER_CLUSTERS)
    missing = tmp_path / "missing"
    monkeypatch.setenv("KUBECONFIG", f"{first}::{missing}:{second}")
    # The current context and every name the first file defines come from it...
    current = read_kubeconfig(None, None)
    assert (current.name, current.user, current.server) == (
        "example",
        "alice",
        "https://127.0.0.1",
    )
    # ...and the names only the second file defines from that one.
    kind = read_kubeconfig(None, "kind")
    assert (kind.cluster, kind.user, kind.server, kind.namespace) == (
        "kind",
        "kind-admin",
        "https://127.0.0.1:6443",
        "dev",
    )
    assert kind.extensions == {}


@pytest.mark.usefixtures("no_kubeconfig")
def test_the_default_kubeconfig_is_in_the_home_directory(tmp_path: Path) -> None:
    write(tmp_path / "home" / ".kube" / "config", OTHER_CLUSTERS)
    assert read_kubeconfig().name == "kind"


@pytest.mark.usefixtures("no_kubeconfig")
def test_no_kubeconfig() -> None:
    with pytest.raises(KubeconfigError) as caught:
        read_kubeconfig()
    assert str(caught.value) == "no kubeconfig: set KUBECONFIG or create ~/.kube/config"


@pytest.mark.usefixtures("no_kubeconfig")
def test_kubeconfig_lists_only_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone"))
    with pytest.raises(KubeconfigError, match=r"no kubeconfig: none of .*gone exists"):
        list_contexts()


@pytest.mark.usefixtures("no_kubeconfig")
def test_an_explicit_kubeconfig_must_exist(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="gone: no such file"):
        read_kubeconfig(str(tmp_path / "gone"))


@pytest.mark.usefixtures("no_kubeconfig")
def test_no_such_context_lists_the_available_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "first", STAGING_CLUSTER)
    second = write(tmp_path / "second", OTHER_CLUSTERS)
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    with pytest.raises(KubeconfigError) as caught:
        read_kubeconfig(None, "prod")
    assert str(caught.value) == "no context 'prod' in the kubeconfig; available: example, kind"


@pytest.mark.usefixtures("no_kubeconfig")
def test_no_current_context(tmp_path: Path) -> None:
    kubeconfig = write(tmp_path / "kubeconfig", STAGING_CLUSTER.replace("current-context", "x"))
    with pytest.raises(KubeconfigError, match=r"no current context .*available: example"):
        read_kubeconfig(str(kubeconfig))


@pytest.mark.usefixtures("no_kubeconfig")
def test_a_context_of_an_undefined_cluster(tmp_path: Path) -> None:
    text = "contexts:\n- name: lost\n  context: {cluster: nowhere}\ncurrent-context: lost\n"
    with pytest.raises(KubeconfigError, match="names the cluster 'nowhere', which the"):
        read_kubeconfig(str(write(tmp_path / "kubeconfig", text)))


@pytest.mark.usefixtures("no_kubeconfig")
def test_list_contexts_marks_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "first", STAGING_CLUSTER)
    second = write(tmp_path / "second", OTHER_CLUSTERS)
    monkeypatch.setenv("KUBECONFIG", f"{second}:{first}")
    assert [(c.name, c.cluster, c.user, c.namespace, c.current) for c in list_contexts(None)] == [
        ("example", "kind", "shadowed", "default", False),  # the second file's wins now
        ("kind", "kind", "kind-admin", "dev", True),
    ]


@pytest.mark.usefixtures("no_kubeconfig")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [\n", "not valid YAML (line 2)"),
        ("- a list\n", "not a kubeconfig (expected a mapping)"),
        ("contexts: {kind: {}}\n", "contexts: expected a list"),
        ("clusters:\n- cluster: {server: https://x}\n", "clusters[0]: expected name and cluster"),
    ],
)
def test_a_malformed_kubeconfig_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    kubeconfig = write(tmp_path / "broken", text)
    with pytest.raises(KubeconfigError) as caught:
        list_contexts(str(kubeconfig))
    assert str(caught.value).startswith(f"kubeconfig {kubeconfig}: ")
    assert message in str(caught.value)
