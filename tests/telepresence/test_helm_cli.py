"""``telepresence helm install | upgrade | uninstall | lint``, run as a user runs them, against
the sandbox's API server; what they did is read back through the Kubernetes API.

Every command that would wait for the traffic-manager to be ready gets ``--no-wait`` (nothing
runs pods here), except the tests about waiting, which either play the Deployment controller
or let a short ``--timeout`` run out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
import yaml
from kubernetes_asyncio import client

from telepresence import __version__, helm
from telepresence.cli import ExitCode
from tests.telepresence.conftest import CHART_KINDS

if TYPE_CHECKING:
    from pathlib import Path

    from tests.telepresence.conftest import Cluster, Outcome

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_WAIT = "--no-wait"
INSTALLED = "Traffic Manager installed successfully"
UPGRADED = "Traffic Manager upgraded successfully"
UNINSTALLED = "Traffic Manager uninstalled successfully"


def one_error(outcome: Outcome, command: str) -> str:
    """The single error line of a failed command (and that there is nothing else wrong: no
    traceback, nothing on stdout), without its ``telepresence <command>: error: `` prefix."""
    prefix = f"telepresence {command}: error: "
    lines = outcome.stderr.splitlines()
    assert "Traceback" not in outcome.stderr
    assert len(outcome.error_lines) == 1, outcome.stderr
    (line,) = outcome.error_lines
    assert line.startswith(prefix), line
    assert line == lines[-1]
    assert "successfully" not in outcome.stdout
    return line.removeprefix(prefix)


async def test_install_with_defaults(cluster: Cluster) -> None:
    outcome = await cluster.telepresence("helm", "install", NO_WAIT)
    assert outcome.exit_code == ExitCode.OK, outcome.stderr
    assert outcome.stdout.startswith(INSTALLED + "\n")
    # The chart's notes follow: where it is and what it manages.
    assert "The traffic-manager 0.1.0 is installed in namespace ambassador" in outcome.stdout
    assert "It manages all namespaces." in outcome.stdout
    assert outcome.stderr == "Installing the traffic-manager 0.1.0 in namespace ambassador\n"

    # --create-namespace is the default: the manager namespace was made.
    assert await cluster.namespace_exists("ambassador")
    made = await cluster.helm_made()
    assert made >= {
        ("Deployment", "ambassador", "traffic-manager"),
        ("Service", "ambassador", "traffic-manager"),
        ("ServiceAccount", "ambassador", "traffic-manager"),
        ("ConfigMap", "ambassador", "traffic-manager"),
        ("Secret", "ambassador", "traffic-manager-tls"),
        ("Secret", "ambassador", "sh.helm.release.v1.traffic-manager.v1"),
        ("Role", "ambassador", "traffic-manager-config"),
        ("RoleBinding", "ambassador", "traffic-manager-config"),
        ("ClusterRole", "", "traffic-manager-ambassador"),
        ("ClusterRoleBinding", "", "traffic-manager-ambassador"),
    }
    # The chart of the client's own version, running the image of that version.
    deployment = await cluster.deployment()
    assert deployment["metadata"]["labels"]["helm.sh/chart"] == f"telepresence-oss-{__version__}"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/telepresenceio/tel2:{__version__}"
    assert (await cluster.manager_env())["LOG_LEVEL"] == "info"


async def test_install_again_says_to_upgrade(cluster: Cluster) -> None:
    assert (await cluster.telepresence("helm", "install", NO_WAIT)).exit_code == 0
    before = await cluster.helm_made()

    again = await cluster.telepresence("helm", "install", NO_WAIT)
    assert again.exit_code == ExitCode.RELEASE_STATE
    assert one_error(again, "helm install") == (
        'traffic-manager version "0.1.0" is already installed in namespace ambassador, '
        "use 'telepresence helm upgrade' instead to replace it"
    )
    assert await cluster.helm_made() == before


async def test_upgrade_set_then_reuse_values_then_reset_values(cluster: Cluster) -> None:
    assert (await cluster.telepresence("helm", "install", NO_WAIT)).exit_code == 0

    upgraded = await cluster.telepresence("helm", "upgrade", "--set", "logLevel=debug", NO_WAIT)
    assert upgraded.exit_code == 0, upgraded.stderr
    assert upgraded.stdout.startswith(UPGRADED + "\n")
    assert "from 0.1.0 (revision 1) to 0.1.0" in upgraded.stderr
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"

    # --reuse-values keeps logLevel and merges the new value over it (the reference's own
    # example of --set with a list).
    reused = await cluster.telepresence(
        "helm",
        "upgrade",
        "--reuse-values",
        "--set",
        "intercept.environment.excluded={DATABASE_PASSWORD,API_KEY}",
        NO_WAIT,
    )
    assert reused.exit_code == 0, reused.stderr
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"
    intercept = yaml.safe_load((await cluster.manager_config())["intercept.yaml"])
    assert intercept["environment"]["excluded"] == ["DATABASE_PASSWORD", "API_KEY"]

    # No values at all: Helm keeps the current ones.
    kept = await cluster.telepresence("helm", "upgrade", NO_WAIT)
    assert kept.exit_code == 0, kept.stderr
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"

    # --reset-values drops them all: back to the chart's defaults.
    reset = await cluster.telepresence("helm", "upgrade", "--reset-values", NO_WAIT)
    assert reset.exit_code == 0, reset.stderr
    assert (await cluster.manager_env())["LOG_LEVEL"] == "info"
    intercept = yaml.safe_load((await cluster.manager_config())["intercept.yaml"])
    assert intercept["environment"]["excluded"] == []


async def test_upgrade_with_values_and_neither_flag_replaces_the_values(cluster: Cluster) -> None:
    assert (
        await cluster.telepresence("helm", "install", "--set", "logLevel=debug", NO_WAIT)
    ).exit_code == 0
    outcome = await cluster.telepresence("helm", "upgrade", "--set", "apiPort=9081", NO_WAIT)
    assert outcome.exit_code == 0, outcome.stderr
    env = await cluster.manager_env()
    assert (env["LOG_LEVEL"], env["API_PORT"]) == ("info", "9081")


async def test_upgrade_installs_when_there_is_nothing_to_upgrade(cluster: Cluster) -> None:
    outcome = await cluster.telepresence("helm", "upgrade", "--set", "logLevel=debug", NO_WAIT)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.startswith(INSTALLED + "\n")
    assert "No traffic-manager in namespace ambassador: installing it" in outcome.stderr
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"


async def test_reuse_and_reset_values_exclude_each_other(cluster: Cluster) -> None:
    outcome = await cluster.telepresence(
        "helm", "upgrade", "--reuse-values", "--reset-values", NO_WAIT
    )
    assert outcome.exit_code == ExitCode.USAGE
    assert "--reuse-values and --reset-values exclude each other" in outcome.stderr


async def test_values_files_in_order_and_set_over_them(cluster: Cluster, tmp_path: Path) -> None:
    first = tmp_path / "first.yaml"
    first.write_text(
        "logLevel: debug\napiPort: 9081\nclient:\n  dns:\n    excludeSuffixes: [.com]\n"
    )
    second = tmp_path / "second.yaml"
    second.write_text("logLevel: trace\nclient:\n  dns:\n    includeSuffixes: [.private]\n")
    outcome = await cluster.telepresence(
        "helm",
        "install",
        "-f",
        str(first),
        "--values",
        str(second),
        "--set",
        "dataPort=9082",
        NO_WAIT,
    )
    assert outcome.exit_code == 0, outcome.stderr
    env = await cluster.manager_env()
    # The later file wins; maps merge key by key; --set goes over both.
    assert (env["LOG_LEVEL"], env["API_PORT"], env["DATA_PORT"]) == ("trace", "9081", "9082")
    dns = yaml.safe_load((await cluster.manager_config())["client.yaml"])["dns"]
    assert (dns["excludeSuffixes"], dns["includeSuffixes"]) == ([".com"], [".private"])


async def test_a_missing_or_malformed_values_file(cluster: Cluster, tmp_path: Path) -> None:
    missing = await cluster.telepresence("helm", "install", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == ExitCode.BAD_VALUES
    assert one_error(missing, "helm install") == (
        f"cannot read the values file {tmp_path / 'nope.yaml'}: No such file or directory"
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- logLevel: debug\n")
    not_a_map = await cluster.telepresence("helm", "install", "-f", str(listed))
    assert not_a_map.exit_code == ExitCode.BAD_VALUES
    assert one_error(not_a_map, "helm install") == (
        f"the values file {listed} must hold a map of values, not a list"
    )
    assert not await cluster.namespace_exists("ambassador")


async def test_static_namespaces_get_role_pairs_exactly_there(cluster: Cluster) -> None:
    await cluster.create_namespaces("dev", "staging", "prod")
    outcome = await cluster.telepresence(
        "helm", "install", "--set", "namespaces={dev,staging}", NO_WAIT
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert "It manages the namespaces dev, staging." in outcome.stdout
    made = await cluster.helm_made()
    pairs = {
        kind: {namespace for k, namespace, name in made if k == kind and name == "traffic-manager"}
        for kind in ("Role", "RoleBinding")
    }
    assert pairs == {"Role": {"dev", "staging"}, "RoleBinding": {"dev", "staging"}}
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    assert not (await rbac.list_namespaced_role("prod")).items


async def test_uninstall_removes_everything_the_chart_made(cluster: Cluster) -> None:
    await cluster.create_namespaces("dev", "staging")
    outcome = await cluster.telepresence(
        "helm",
        "install",
        "--set",
        "namespaces={dev,staging}",
        "--set",
        "clientRbac.create=true,clientRbac.subjects[0].kind=User",
        "--set",
        "clientRbac.subjects[0].name=jane,clientRbac.subjects[0].apiGroup=rbac.authorization.k8s.io",
        NO_WAIT,
    )
    assert outcome.exit_code == 0, outcome.stderr
    before = await cluster.helm_made()
    # What the API shows is exactly what the release's manifest holds, and Helm's record.
    release = await helm.current_release(helm.Target(kubeconfig=cluster.kubeconfig))
    assert release is not None
    manifest = {
        (
            obj["kind"],
            "" if not CHART_KINDS[obj["kind"]] else obj["metadata"].get("namespace", "ambassador"),
            obj["metadata"]["name"],
        )
        for obj in release.objects
    }
    assert before == {*manifest, ("Secret", "ambassador", "sh.helm.release.v1.traffic-manager.v1")}
    assert {kind for kind, _, _ in before} == set(CHART_KINDS)

    removed = await cluster.telepresence("helm", "uninstall")
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout == UNINSTALLED + "\n"
    assert await cluster.helm_made() == set()
    # The namespace stays, as with helm uninstall.
    assert await cluster.namespace_exists("ambassador")

    again = await cluster.telepresence("helm", "uninstall")
    assert again.exit_code == ExitCode.RELEASE_STATE
    assert one_error(again, "helm uninstall") == (
        "traffic-manager is not installed in namespace ambassador"
    )


async def test_the_reference_collision_is_one_line_and_a_distinct_exit_status(
    cluster: Cluster,
) -> None:
    await cluster.create_namespaces("dev", "staging", "prod")
    first = await cluster.telepresence_process(
        "helm", "install", "--namespace", "dev", "--set", "namespaces={dev,staging}", NO_WAIT
    )
    assert first.exit_code == 0, first.stderr
    made_by_first = await cluster.helm_made("dev")

    second = await cluster.telepresence_process(
        "helm", "install", "--namespace", "prod", "--set", "namespaces={staging,prod}", NO_WAIT
    )
    assert second.exit_code == ExitCode.REJECTED
    message = one_error(second, "helm install")
    # As the reference prints it (the template that checks is ours, not the original's).
    assert message.startswith("execution error at (telepresence-oss/templates/")
    assert message.endswith("): traffic-manager in namespace dev already manages namespace staging")
    assert await cluster.helm_made("prod") == set()
    assert await cluster.helm_made("dev") == made_by_first


async def test_bad_set_syntax_is_one_message(cluster: Cluster) -> None:
    cases = {
        "logLevel": "--set 'logLevel': key 'logLevel' has no value",
        "namespaces[0]": "--set 'namespaces[0]': list item [0] has no value",
        "namespaces[x]=dev": "--set 'namespaces[x]=dev': list index [x] is not a number",
        "namespaces={dev,staging": "--set 'namespaces={dev,staging': list must terminate with '}'",
    }
    for argument, expected in cases.items():
        outcome = await cluster.telepresence("helm", "install", "--set", argument, NO_WAIT)
        assert outcome.exit_code == ExitCode.BAD_VALUES, (argument, outcome.stderr)
        assert one_error(outcome, "helm install") == expected
    bad_json = await cluster.telepresence(
        "helm", "install", "--set-json", "namespaces=[dev", NO_WAIT
    )
    assert bad_json.exit_code == ExitCode.BAD_VALUES
    assert one_error(bad_json, "helm install").startswith(
        "--set-json 'namespaces=[dev': the value is not JSON: "
    )
    # Nothing reached the cluster.
    assert not await cluster.namespace_exists("ambassador")


async def test_a_schema_violation_is_one_message(cluster: Cluster) -> None:
    outcome = await cluster.telepresence(
        "helm", "install", "--set", "logLevel=loud,bogus=1", "--set-string", "apiPort=80", NO_WAIT
    )
    assert outcome.exit_code == ExitCode.REJECTED
    message = one_error(outcome, "helm install")
    assert message.startswith("the values do not match the chart's schema: ")
    for problem in (
        "logLevel: value must be one of 'trace', 'debug', 'info', 'warning', 'warn', 'error'",
        "values: additional properties 'bogus' not allowed",
        "apiPort: got string, want integer",
    ):
        assert problem in message
    assert await cluster.helm_made() == set()


async def test_set_string_and_set_json(cluster: Cluster) -> None:
    outcome = await cluster.telepresence(
        "helm",
        "install",
        "--set-json",
        'client.routing={"alsoProxySubnets":["10.200.0.0/16"]}',
        "--set-string",
        "podAnnotations.example\\.com/build=0042",
        NO_WAIT,
    )
    assert outcome.exit_code == 0, outcome.stderr
    routing = yaml.safe_load((await cluster.manager_config())["client.yaml"])["routing"]
    assert routing["alsoProxySubnets"] == ["10.200.0.0/16"]
    deployment = await cluster.deployment()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/build"] == "0042"


async def test_no_create_namespace(cluster: Cluster) -> None:
    for flag in ("--create-namespace=false", "--no-create-namespace"):
        outcome = await cluster.telepresence("helm", "install", "-n", "elsewhere", flag, NO_WAIT)
        assert outcome.exit_code == ExitCode.FAILED, outcome.stderr
        assert one_error(outcome, "helm install") == (
            "namespace elsewhere does not exist: create it, or leave out --create-namespace=false"
        )
    assert not await cluster.namespace_exists("elsewhere")
    await cluster.create_namespaces("elsewhere")
    outcome = await cluster.telepresence(
        "helm", "install", "-n", "elsewhere", "--create-namespace=false", NO_WAIT
    )
    assert outcome.exit_code == 0, outcome.stderr


async def test_manager_namespace_kubeconfig_and_context(cluster: Cluster) -> None:
    outcome = await cluster.telepresence(
        "helm",
        "install",
        "--manager-namespace",
        "staging",
        "--kubeconfig",
        cluster.kubeconfig,
        "--context",
        "sandbox",
        NO_WAIT,
        env={"KUBECONFIG": None},
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert "telepresence connect --manager-namespace staging" in outcome.stdout
    assert ("Deployment", "staging", "traffic-manager") in await cluster.helm_made("staging")

    unknown = await cluster.telepresence("helm", "uninstall", "-n", "staging", "--context", "nope")
    assert unknown.exit_code == ExitCode.UNREACHABLE
    assert one_error(unknown, "helm uninstall") == (
        'cannot reach the cluster: context "nope" does not exist'
    )


async def test_no_cluster_at_all(cluster: Cluster, tmp_path: Path) -> None:
    outcome = await cluster.telepresence(
        "helm", "install", NO_WAIT, env={"KUBECONFIG": str(tmp_path / "missing")}
    )
    assert outcome.exit_code == ExitCode.UNREACHABLE
    assert one_error(outcome, "helm install").startswith("cannot reach the cluster: ")


async def test_install_waits_until_the_traffic_manager_is_available(cluster: Cluster) -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(cluster.mark_available)
        outcome = await cluster.telepresence("helm", "install", "--timeout", "30s")
    assert outcome.exit_code == 0, outcome.stderr
    # Plain progress lines (stderr is not a terminal): the step, what it waited for, done.
    lines = outcome.stderr.splitlines()
    assert lines[0] == "Installing the traffic-manager 0.1.0 in namespace ambassador"
    assert lines[-1] == "The traffic-manager in namespace ambassador is ready"
    assert all(line.startswith("Waiting for the traffic-manager: ") for line in lines[1:-1])
    assert outcome.stdout.startswith(INSTALLED)


async def test_an_install_not_ready_in_time_is_uninstalled(cluster: Cluster) -> None:
    outcome = await cluster.telepresence("helm", "install", "--timeout", "1s")
    assert outcome.exit_code == ExitCode.TIMEOUT
    assert one_error(outcome, "helm install") == (
        "the traffic-manager in namespace ambassador did not become ready within 1s "
        "(the Deployment's new spec is not picked up yet; no pod yet); "
        "it was uninstalled again"
    )
    assert await cluster.helm_made() == set()


async def test_an_upgrade_not_ready_in_time_stays(cluster: Cluster) -> None:
    assert (await cluster.telepresence("helm", "install", NO_WAIT)).exit_code == 0
    outcome = await cluster.telepresence(
        "helm", "upgrade", "--set", "logLevel=debug", "--timeout", "1s"
    )
    assert outcome.exit_code == ExitCode.TIMEOUT
    assert one_error(outcome, "helm upgrade").endswith(
        "; revision 2 stays in place: correct it with 'telepresence helm upgrade', "
        "or remove it with 'telepresence helm uninstall'"
    )
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"


async def test_lint(cluster: Cluster, tmp_path: Path) -> None:
    clean = await cluster.telepresence("helm", "lint")
    assert clean.exit_code == 0, clean.stderr
    assert clean.stdout == (
        f"==> Linting telepresence-oss {__version__}\n\n1 chart(s) linted, 0 chart(s) failed\n"
    )
    values = tmp_path / "values.yaml"
    values.write_text("namespaces: [dev, staging]\nclientRbac: {create: true, subjects: []}\n")
    with_values = await cluster.telepresence(
        "helm",
        "lint",
        "-f",
        str(values),
        "--set",
        "clientRbac.subjects[0].kind=User",
        "--set",
        "clientRbac.subjects[0].name=jane,logLevel=debug",
    )
    assert with_values.exit_code == 0, with_values.stdout

    broken = await cluster.telepresence("helm", "lint", "--set", "logLevel=loud")
    assert broken.exit_code == ExitCode.REJECTED
    assert "[ERROR] values.yaml" in broken.stdout
    assert "1 chart(s) linted, 1 chart(s) failed" in broken.stdout
    assert one_error(broken, "helm lint").startswith(
        "the chart does not lint with these values: values.yaml (ERROR)"
    )


async def test_rbac_only_has_nothing_to_wait_for(cluster: Cluster) -> None:
    # Waiting is the default; with rbac.only there is no traffic-manager to wait for.
    outcome = await cluster.telepresence("helm", "install", "--set", "rbac.only=true")
    assert outcome.exit_code == 0, outcome.stderr
    assert "installed only RBAC objects" in outcome.stdout
    made = await cluster.helm_made()
    assert {kind for kind, _, _ in made} == {
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",  # Helm's record of the release
    }


async def test_install_upgrade_flag_is_deprecated_but_works(cluster: Cluster) -> None:
    assert (await cluster.telepresence("helm", "install", NO_WAIT)).exit_code == 0
    outcome = await cluster.telepresence(
        "helm", "install", "--upgrade", "--set", "logLevel=debug", NO_WAIT
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.startswith("Flag --upgrade has been deprecated, use ")
    assert outcome.stdout.startswith(UPGRADED)
    assert (await cluster.manager_env())["LOG_LEVEL"] == "debug"
