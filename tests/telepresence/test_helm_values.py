"""The pieces of ``telepresence helm`` that need no cluster: Helm's ``--set`` grammar and value
merging, the CLI's flag spelling and durations, and how a rollout is described."""

from __future__ import annotations

from typing import Any

import pytest

from telepresence import cli, helm
from telepresence.helm import ValuesError, cluster
from telepresence.helm.values import coalesce, parse_set, parse_set_json

pytestmark = pytest.mark.timeout(10)


def set_values(*arguments: str, string: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for argument in arguments:
        parse_set(argument, values, string=string)
    return values


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("logLevel=debug", {"logLevel": "debug"}),
        ("a=1,b=two", {"a": 1, "b": "two"}),
        ("port=8081", {"port": 8081}),
        ("negative=-5", {"negative": -5}),
        ("zero=0", {"zero": 0}),
        ("padded=0042", {"padded": "0042"}),
        ("ratio=1.5", {"ratio": "1.5"}),
        ("huge=99999999999999999999", {"huge": "99999999999999999999"}),
        ("underscored=1_000", {"underscored": "1_000"}),
        ("on=true,off=FALSE", {"on": True, "off": False}),
        ("gone=null", {"gone": None}),
        ("empty=", {"empty": ""}),
        ("empty=,next=1", {"empty": "", "next": 1}),
        ("trailing=1,", {"trailing": 1}),
        ("namespaces={dev,staging}", {"namespaces": ["dev", "staging"]}),
        ("mixed={1,true,x},after=1", {"mixed": [1, True, "x"], "after": 1}),
        ("braces={}", {"braces": [""]}),
        (
            "client.dns.includeSuffixes={.private}",
            {"client": {"dns": {"includeSuffixes": [".private"]}}},
        ),
        ("a.b=1,a.c=2", {"a": {"b": 1, "c": 2}}),
        ("list[0]=a,list[2]=c", {"list": ["a", None, "c"]}),
        (
            "subjects[0].kind=User,subjects[0].name=jane",
            {"subjects": [{"kind": "User", "name": "jane"}]},
        ),
        ("grid[1][0]=x", {"grid": [None, ["x"]]}),
        ("list[0]={a,b}", {"list": [["a", "b"]]}),
        (
            r"podAnnotations.example\.com/owner=platform",
            {"podAnnotations": {"example.com/owner": "platform"}},
        ),
        (r"text=a\,b", {"text": "a,b"}),
        (r"path=C:\\dir", {"path": "C:\\dir"}),
    ],
)
def test_set_as_helm_parses_it(argument: str, expected: dict[str, Any]) -> None:
    assert set_values(argument) == expected


def test_set_merges_into_what_is_there() -> None:
    values = set_values("a.b=1", "a.c=2", "list[1]=y", "list[0]=x", "a.b=3")
    assert values == {"a": {"b": 3, "c": 2}, "list": ["x", "y"]}


def test_set_string_keeps_strings() -> None:
    assert set_values("a=true,b=1,c=null,d={1,2}", string=True) == {
        "a": "true",
        "b": "1",
        "c": "null",
        "d": ["1", "2"],
    }


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("logLevel", "key 'logLevel' has no value"),
        ("a.b", "key 'b' has no value"),
        ("a,b=1", "key 'a' has no value (cannot end with ,)"),
        ("a.=1", "key map 'a' has no value"),
        ("list[x]=1", "list index [x] is not a number"),
        ("list[-1]=1", "negative list index [-1]"),
        ("list[70000]=1", "list index [70000] is larger than 65536"),
        ("list[0", "list index [0 is not closed with ]"),
        ("list[0]", "list item [0] has no value"),
        ("list[0]x=1", "unexpected 'x' after the list index [0]"),
        ("list={a,b", "list must terminate with '}'"),
        ("a=1,a.b=2", "'a' is a number, not a map"),
        ("a=x,a[0]=2", "'a' is a string, not a list"),
        (".".join("abcdefghijklmnopqrstuvwxyzABCDEF") + "=1", "names nest deeper than 30 levels"),
    ],
)
def test_malformed_set(argument: str, message: str) -> None:
    with pytest.raises(ValuesError) as raised:
        set_values(argument)
    assert str(raised.value) == f"--set {argument!r}: {message}"


def test_set_json() -> None:
    values: dict[str, Any] = {"client": {"dns": {"lookupTimeout": "3s"}}}
    parse_set_json('client.dns={"includeSuffixes": [".private"]} ,tolerations=[],gone=', values)
    assert values == {
        "client": {"dns": {"includeSuffixes": [".private"]}},
        "tolerations": [],
        "gone": None,
    }
    parse_set_json('{"client": {"dns": {"lookupTimeout": "1s"}}, "logLevel": "debug"}', values)
    assert values["client"] == {"dns": {"includeSuffixes": [".private"], "lookupTimeout": "1s"}}
    assert values["logLevel"] == "debug"
    with pytest.raises(ValuesError, match=r"^--set-json 'a=\[1': the value is not JSON: "):
        parse_set_json("a=[1", {})
    with pytest.raises(ValuesError, match=r"^--set-json 'a=1 2': unexpected '2' after a JSON"):
        parse_set_json("a=1 2", {})


def test_sources_apply_in_helms_order(tmp_path: Any) -> None:
    first = tmp_path / "first.yaml"
    first.write_text("a: file1\nb: file1\nm: {x: 1, y: 1}\n")
    second = tmp_path / "second.yaml"
    second.write_text("b: file2\nm: {y: 2}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    sources = helm.ValueSources(
        files=(str(first), str(second), str(empty)),
        set=("c=set", "d=set"),
        set_string=("d=0",),
        set_json=('c="json"', 'e={"from": "json"}'),
    )
    # Files left to right, then --set-json, --set, --set-string, whatever the flags' order.
    assert sources.resolve() == {
        "a": "file1",
        "b": "file2",
        "m": {"x": 1, "y": 2},
        "c": "set",
        "d": "0",
        "e": {"from": "json"},
    }


def test_bad_values_files(tmp_path: Any) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1\n")
    with pytest.raises(ValuesError, match=rf"^the values file {broken} is not valid YAML \(line"):
        helm.ValueSources(files=(str(broken),)).resolve()
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ValuesError, match=r"must hold a map of values, not a string$"):
        helm.ValueSources(files=(str(scalar),)).resolve()


def test_null_removes_a_default() -> None:
    defaults = {"a": 1, "m": {"x": 1, "y": 2}, "keep": True}
    assert coalesce({"a": None, "m": {"y": None, "z": 3}}, defaults) == {
        "m": {"x": 1, "z": 3},
        "keep": True,
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--create-namespace=false"], ["--no-create-namespace"]),
        (["--create-namespace=True"], ["--create-namespace"]),
        (["--wait=0", "--timeout", "5s"], ["--no-wait", "--timeout", "5s"]),
        (["--reuse-values=true", "--reset-values=false"], ["--reuse-values"]),
        (["--set", "--wait=false"], ["--set", "--wait=false"]),
        (["--create-namespace=maybe"], ["--create-namespace=maybe"]),
        (["--", "--wait=false"], ["--", "--wait=false"]),
    ],
)
def test_boolean_flags_take_pflag_values(args: list[str], expected: list[str]) -> None:
    assert cli.normalise_boolean_flags(["helm", "install", *args]) == ["helm", "install", *expected]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1s", "2 m", "1x", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        cli.parse_duration(text)


def test_the_cli_defaults_are_the_librarys() -> None:
    assert cli.DEFAULT_MANAGER_NAMESPACE == helm.DEFAULT_MANAGER_NAMESPACE
    assert cli.parse_duration(cli.DEFAULT_TIMEOUT) == helm.DEFAULT_WAIT


def test_the_embedded_chart_is_the_clients_version() -> None:
    from telepresence import __version__

    chart = helm.embedded_chart()
    assert (chart.name, chart.version, chart.app_version) == (
        "telepresence-oss",
        __version__,
        __version__,
    )


def test_a_missing_chart_says_so(tmp_path: Any) -> None:
    with pytest.raises(helm.ChartNotFound, match=r"reinstall telepresence$"):
        helm.embedded_chart((tmp_path / "nowhere",))


def deployment(generation: int, observed: int, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (deployment(2, 1), (False, "the Deployment's new spec is not picked up yet")),
        (deployment(1, 1), (False, "0 of 1 pods updated")),
        (deployment(2, 2, replicas=2, updatedReplicas=1), (False, "1 old pod not replaced yet")),
        (deployment(1, 1, replicas=1, updatedReplicas=1), (False, "0 of 1 pods available")),
        (
            deployment(1, 1, replicas=1, updatedReplicas=1, availableReplicas=1),
            (True, "ready"),
        ),
    ],
)
def test_rollout_state(state: dict[str, Any], expected: tuple[bool, str]) -> None:
    assert cluster.rollout_state(state) == expected


def pod(name: str, created: str, status: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created, **metadata},
        "spec": {"nodeName": "node-0"},
        "status": status,
    }


def test_describe_pods() -> None:
    waiting = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "ready": False,
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image\n "x"',
                    }
                },
            }
        ],
    }
    running = {
        "phase": "Running",
        "containerStatuses": [{"ready": False, "restartCount": 2, "state": {"running": {}}}],
    }
    ready = {"phase": "Running", "containerStatuses": [{"ready": True, "state": {"running": {}}}]}
    crashed = {
        "phase": "Running",
        "containerStatuses": [
            {"ready": False, "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
        ],
    }
    unscheduled = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available",
            }
        ],
    }
    assert cluster.describe_pods([]) == "no pod yet"
    assert cluster.describe_pods(
        [
            pod("a", "2025-01-01T00:00:01Z", waiting),
            pod("b", "2025-01-01T00:00:02Z", running),
            pod("c", "2025-01-01T00:00:03Z", ready),
            pod("d", "2025-01-01T00:00:04Z", ready, deletionTimestamp="2025-01-01T00:00:05Z"),
            pod("e", "2025-01-01T00:00:05Z", crashed),
            pod("f", "2025-01-01T00:00:06Z", unscheduled),
        ]
    ) == (
        "pod f: Unschedulable: 0/1 nodes are available; pod e: Error (exit code 1); "
        "pod d: terminating; pod c: ready; pod b: running, not ready yet (2 restarts); "
        'pod a: ImagePullBackOff: Back-off pulling image "x"'
    )
