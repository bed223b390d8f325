"""A client on the wire library, from the sandbox's workstation to the traffic-manager through
the port-forward transport: the laptop's side of ``connect`` before any routing.

The chart is installed with ``clientRbac`` binding the kubeconfig's ``developer`` user, who has
no other rights: that binding is what lets the developer find the manager's pod, port-forward
to it, and pass the manager's own authorization. The client (``session_client.py``) runs in
the workstation namespace, which cannot reach a pod or Service address by itself, so every
echo it gets came through the manager.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import telepresence
from tests.sandbox.test_cluster import Sandbox
from tests.telepresence.test_helm_sandbox import TELEPRESENCE

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)

CLIENT = str(Path(__file__).with_name("session_client.py"))
DEVELOPER_BINDING = (
    "clientRbac.create=true,clientRbac.subjects[0].kind=User,"
    "clientRbac.subjects[0].name=developer,"
    "clientRbac.subjects[0].apiGroup=rbac.authorization.k8s.io"
)
ECHO = """\
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: tcp, image: sandbox/tcp-echo, ports: [{containerPort: 7000}]}
    - {name: udp, image: sandbox/udp-echo, ports: [{containerPort: 7001, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
    - {name: tcp, port: 7000, protocol: TCP}
    - {name: udp, port: 7001, protocol: UDP}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody}
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One node, the traffic-manager installed (the developer bound by clientRbac), and an
    echo pod behind a Service."""
    directory = tmp_path_factory.mktemp("sandbox")
    box = Sandbox(directory)
    try:
        box.run("up", "--dir", str(directory), "--nodes", "1", timeout=180)
        installed = box.ws(TELEPRESENCE, "helm", "install", "--set", DEVELOPER_BINDING, check=False)
        assert installed.returncode == 0, installed.stderr
        box.kubectl("apply", "-f", "-", stdin=ECHO)
        box.kubectl("wait", "--for=condition=Ready", "pod/echo", "--timeout=60s")
        yield box
    finally:
        down = box.run("down", "--dir", str(directory), check=False)
        assert down.returncode == 0, down.stderr


def client(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    done = sandbox.ws(sys.executable, CLIENT, "--context", "sandbox-developer", *args, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_session_reaches_pods_services_and_names_through_the_manager(
    sandbox: Sandbox,
) -> None:
    pod = sandbox.get("pod", "echo")
    service = sandbox.get("service", "echo")
    (manager,) = sandbox.get("pods", "-n", "ambassador", "-l", "app=traffic-manager")["items"]
    report = client(
        sandbox,
        "--pod-ip",
        pod["status"]["podIP"],
        "--service-ip",
        service["spec"]["clusterIP"],
    )
    payload = report["payload"]

    # Arrived, with the cluster's facts as the manager discovered them.
    assert report["session"] == {
        "version": report["session"]["version"],
        "pod": manager["metadata"]["name"],
        "pod_subnets": ["10.244.0.0/24"],
        "service_subnet": "10.96.0.0/12",
        "dns": "10.96.0.10",
        "domain": "cluster.local.",
    }
    # The manager runs this checkout, as the client does.
    assert report["session"]["version"] == telepresence.__version__
    # TCP (200 kB echoed whole, then the echo's half-close) and UDP, to the pod and the Service.
    assert report["tcp_pod"] == payload
    assert report["tcp_service"] == payload
    assert report["udp_pod"] == payload[:2000]
    assert report["udp_service"] == payload[:2000]
    assert report["tcp_by_name"] == payload[:20]
    # Nothing listens on 7999: the manager's dial is refused, and it says so.
    assert report["closed_port"] == "refused"
    # echo.default through the manager pod's search path.
    assert report["dns"] == {
        "rcode": 0,
        "answers": [["echo.default.", 1, service["spec"]["clusterIP"]]],
    }


def test_a_token_without_the_right_is_refused_by_the_manager(sandbox: Sandbox) -> None:
    # The developer still port-forwards; the session asks with a token of an account that has
    # no rights: the manager's SubjectAccessReview turns it away.
    token = sandbox.kubectl("create", "token", "nobody").strip()
    report = client(sandbox, "--token", token)
    assert report["refused"] == (
        "SessionRefused: the traffic-manager refused to let you arrive: "
        'user "system:serviceaccount:default:nobody" may not create pods/portforward in '
        'namespace "ambassador": ask your cluster administrator for the Telepresence client '
        "role (the Helm chart's clientRbac)"
    )


def test_no_manager_is_the_documented_error(sandbox: Sandbox) -> None:
    done = sandbox.ws(
        sys.executable,
        CLIENT,
        "--context",
        "sandbox",
        "--manager-namespace",
        "staging",
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "ManagerNotFound: traffic manager not found in namespace staging: "
        "install it with telepresence helm install\n"
    )
