"""Admission webhooks called as kube-apiserver calls them, against real HTTPS webhooks.

Every webhook here is an aiohttp server on 127.0.0.1 with a certificate from a throwaway CA.
Rule and selector matching is checked with a "tripwire": a webhook at a closed port under
``failurePolicy: Fail``, which denies the request exactly when it is called.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import web

from sandbox.apiserver.admission import Admission, AdmissionDenied, AdmissionRequest
from telepresence.wire.tls import Identity, create_ca, issue_certificate, server_context

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

pytestmark = pytest.mark.anyio

type Review = dict[str, Any]
type Handler = Callable[[Review], Awaitable[Review | web.StreamResponse]]

USER = {"username": "alice", "uid": "1234", "groups": ["dev", "system:authenticated"]}
NAMESPACES: dict[str, dict[str, str]] = {
    "default": {"env": "dev", "kubernetes.io/metadata.name": "default"},
    "prod": {"env": "prod", "kubernetes.io/metadata.name": "prod"},
}
POD_RULE = {
    "operations": ["CREATE", "UPDATE", "DELETE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["pods"],
    "scope": "*",
}


@pytest.fixture
def anyio_backend() -> str:
    # The module uses aiohttp, which runs on asyncio only.
    return "asyncio"


# Webhook servers


class WebhookServer:
    """An HTTPS server whose paths are webhooks; it records every review it receives."""

    def __init__(self, ca: Identity) -> None:
        self.ca = ca
        self.port = 0
        self.handlers: dict[str, Handler] = {}
        self.reviews: defaultdict[str, list[Review]] = defaultdict(list)
        self.requests: defaultdict[str, list[web.Request]] = defaultdict(list)
        #: Set on shutdown, to release handlers that wait (the slow webhook).
        self.release = asyncio.Event()

    def route(self, path: str, handler: Handler) -> str:
        """Serve ``handler`` at ``path``; return its URL."""
        self.handlers[path] = handler
        return f"https://127.0.0.1:{self.port}{path}"

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        review = await request.json()
        self.reviews[request.path].append(review)
        self.requests[request.path].append(request)
        result = await self.handlers[request.path](review)
        return result if isinstance(result, web.StreamResponse) else web.json_response(result)


@asynccontextmanager
async def serve(ca: Identity, identity: Identity) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(ca)
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.dispatch)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(identity))
        await site.start()
        server.port = runner.addresses[0][1]
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture(scope="module")
def ca() -> Identity:
    return create_ca("admission test CA")


@pytest.fixture(scope="module")
def identity(ca: Identity) -> Identity:
    return issue_certificate(
        ca,
        "webhook",
        dns_names=["webhook.default.svc", "localhost"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )


@pytest.fixture
async def server(ca: Identity, identity: Identity) -> AsyncIterator[WebhookServer]:
    async with serve(ca, identity) as started:
        yield started


@pytest.fixture
def dead_url() -> str:
    """An HTTPS URL at a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}/"


class Services:
    """A ServiceResolver with a table of endpoints; it records what it was asked."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str, int], tuple[str, int]] = {}
        self.asked: list[tuple[str, str, int]] = []

    async def resolve(self, namespace: str, name: str, port: int) -> tuple[str, int]:
        self.asked.append((namespace, name, port))
        try:
            return self.endpoints[namespace, name, port]
        except KeyError:
            raise LookupError(f'service "{namespace}/{name}" has no endpoints') from None


@pytest.fixture
def services() -> Services:
    return Services()


@pytest.fixture
def admission(services: Services) -> Admission:
    return Admission(resolve_service=services.resolve, namespace_labels=NAMESPACES.get)


# Responses


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def answer(review: Review, **response: Any) -> Review:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], **response},
    }


def allowing(**response: Any) -> Handler:
    async def handle(review: Review) -> Review:
        return answer(review, allowed=True, **response)

    return handle


def denying(status: Mapping[str, Any] | None = None, *, delay: float = 0) -> Handler:
    async def handle(review: Review) -> Review:
        await asyncio.sleep(delay)
        if status is None:
            return answer(review, allowed=False)
        return answer(review, allowed=False, status=dict(status))

    return handle


def patching(make: Callable[[Review], list[dict[str, Any]]], **response: Any) -> Handler:
    """A webhook answering with the JSON patch ``make`` computes from the object it gets."""

    async def handle(review: Review) -> Review:
        patch = json.dumps(make(review["request"]["object"]))
        return answer(review, allowed=True, patchType="JSONPatch", patch=b64(patch), **response)

    return handle


def add_label(key: str, value: str) -> Handler:
    return patching(lambda _: [{"op": "add", "path": f"/metadata/labels/{key}", "value": value}])


# Configurations and requests


def configuration(kind: str, name: str, *webhooks: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": list(webhooks),
    }


def mutating(name: str, *webhooks: Mapping[str, Any]) -> dict[str, Any]:
    return configuration("MutatingWebhookConfiguration", name, *webhooks)


def validating(name: str, *webhooks: Mapping[str, Any]) -> dict[str, Any]:
    return configuration("ValidatingWebhookConfiguration", name, *webhooks)


def webhook(
    name: str, url: str | None = None, ca: Identity | None = None, **fields: Any
) -> dict[str, Any]:
    """A v1 webhook for pods; a field given as None is left out."""
    client_config: dict[str, Any] = {"url": url}
    if ca is not None:
        client_config["caBundle"] = b64(ca.certificate_pem)
    spec: dict[str, Any] = {
        "name": name,
        "clientConfig": client_config,
        "rules": [POD_RULE],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        **fields,
    }
    return {key: value for key, value in spec.items() if value is not None}


def pod(namespace: str = "default", labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": namespace,
            "labels": dict({"app": "web"} if labels is None else labels),
        },
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    }


def pod_request(operation: str = "CREATE", **changes: Any) -> AdmissionRequest:
    namespace = changes.pop("namespace", "default")
    obj = pod(namespace)
    request = AdmissionRequest(
        operation=operation,
        group="",
        version="v1",
        kind="Pod",
        resource="pods",
        subresource="",
        namespace=namespace,
        name="web",
        user=USER,
        object=None if operation == "DELETE" else obj,
        old_object=obj if operation in {"UPDATE", "DELETE"} else None,
        options={"kind": f"{operation.title()}Options", "apiVersion": "meta.k8s.io/v1"},
    )
    return replace(request, **changes)


def node_request() -> AdmissionRequest:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {}}}
    return AdmissionRequest("CREATE", "", "v1", "Node", "nodes", "", "", "n1", USER, node, None)


def namespace_request(operation: str, name: str, labels: Mapping[str, str]) -> AdmissionRequest:
    metadata = {"name": name, "labels": dict(labels)}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    return AdmissionRequest(
        operation,
        "",
        "v1",
        "Namespace",
        "namespaces",
        "",
        # kube-apiserver gives requests for an existing Namespace the namespace's own name.
        "" if operation == "CREATE" else name,
        name,
        USER,
        None if operation == "DELETE" else namespace,
        None if operation == "CREATE" else namespace,
    )


def internal_error(message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


async def denial(call: Awaitable[object]) -> AdmissionDenied:
    with pytest.raises(AdmissionDenied) as caught:
        await call
    return caught.value


# Mutation


async def test_mutating_webhook_patches_the_object(
    admission: Admission, server: WebhookServer
) -> None:
    url = server.route("/label", add_label("injected", "yes"))
    config = mutating("injector", webhook("label.example.com", url, server.ca))
    request = pod_request()

    result = await admission.mutate([config], request)

    assert result is not None
    assert result["metadata"]["labels"] == {"app": "web", "injected": "yes"}
    assert request.object is not None
    assert request.object["metadata"]["labels"] == {"app": "web"}, "the input is not modified"


async def test_review_is_an_admission_k8s_io_v1_request(
    admission: Admission, server: WebhookServer
) -> None:
    url = server.route("/review", allowing())
    config = mutating("c", webhook("review.example.com", url, server.ca, timeoutSeconds=7))
    request = pod_request("UPDATE", subresource="status")
    request = replace(request, user={**USER, "extra": {"scopes": ("a", "b")}})
    config["webhooks"][0]["rules"] = [{**POD_RULE, "resources": ["pods/status"]}]

    await admission.mutate([config], request)

    [review] = server.reviews["/review"]
    [http_request] = server.requests["/review"]
    assert http_request.query_string == "timeout=7s"
    assert http_request.content_type == "application/json"
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    body = review["request"]
    assert uuid.UUID(body.pop("uid")).version == 4
    assert body == {
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "status",
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "requestSubResource": "status",
        "name": "web",
        "namespace": "default",
        "operation": "UPDATE",
        "userInfo": {
            "username": "alice",
            "uid": "1234",
            "groups": ["dev", "system:authenticated"],
            "extra": {"scopes": ["a", "b"]},
        },
        "object": pod(),
        "oldObject": pod(),
        "dryRun": False,
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
    }


async def test_webhooks_run_by_configuration_name_then_in_order(
    admission: Admission, server: WebhookServer
) -> None:
    def append(name: str) -> Handler:
        def ops(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
            seen = obj["metadata"].get("annotations", {}).get("order")
            order = f"{seen},{name}" if seen else name
            return [{"op": "add", "path": "/metadata/annotations", "value": {"order": order}}]

        return patching(ops)

    hooks = {
        name: webhook(name, server.route(f"/{name}", append(name)), server.ca) for name in "xyz"
    }
    configs = [mutating("b-config", hooks["x"]), mutating("a-config", hooks["y"], hooks["z"])]

    result = await admission.mutate(configs, pod_request())

    assert result is not None
    assert result["metadata"]["annotations"] == {"order": "y,z,x"}
    # Each webhook saw the object as the previous one patched it.
    assert "annotations" not in server.reviews["/y"][0]["request"]["object"]["metadata"]
    assert server.reviews["/z"][0]["request"]["object"]["metadata"]["annotations"] == {"order": "y"}
    assert server.reviews["/x"][0]["request"]["object"]["metadata"]["annotations"] == {
        "order": "y,z"
    }


@pytest.mark.parametrize(
    ("policy", "reader_calls", "labeller_calls", "seen"),
    [("IfNeeded", 2, 2, "yes"), ("Never", 1, 1, "no")],
)
async def test_reinvocation_after_a_later_webhook_changes_the_object(
    *,
    admission: Admission,
    server: WebhookServer,
    policy: str,
    reader_calls: int,
    labeller_calls: int,
    seen: str,
) -> None:
    def read(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
        value = "yes" if "b" in obj["metadata"]["labels"] else "no"
        return [{"op": "add", "path": "/metadata/annotations", "value": {"seen-b": value}}]

    reader = webhook(
        "reader.example.com",
        server.route("/reader", patching(read)),
        server.ca,
        reinvocationPolicy=policy,
    )
    labeller = webhook(
        "labeller.example.com",
        server.route("/labeller", add_label("b", "1")),
        server.ca,
        reinvocationPolicy="IfNeeded",
    )

    result = await admission.mutate([mutating("a", reader, labeller)], pod_request())

    assert result is not None
    assert result["metadata"]["annotations"] == {"seen-b": seen}
    assert result["metadata"]["labels"] == {"app": "web", "b": "1"}
    assert len(server.reviews["/reader"]) == reader_calls
    # The labeller's own change never makes it due. With IfNeeded, the reader changes the
    # object again in the reinvocation round, after the labeller's first call, so upstream
    # calls the labeller in that round too; there is no third round.
    assert len(server.reviews["/labeller"]) == labeller_calls
    if policy == "IfNeeded":
        again = server.reviews["/reader"][1]["request"]["object"]
        assert again["metadata"]["labels"] == {"app": "web", "b": "1"}


async def test_unchanged_object_is_not_reinvoked(
    admission: Admission, server: WebhookServer
) -> None:
    first = webhook(
        "first.example.com",
        server.route("/first", allowing()),
        server.ca,
        reinvocationPolicy="IfNeeded",
    )
    # A patch that leaves the object as it was is no change.
    same = patching(lambda _: [{"op": "replace", "path": "/metadata/name", "value": "web"}])
    second = webhook("second.example.com", server.route("/second", same), server.ca)

    await admission.mutate([mutating("a", first, second)], pod_request())

    assert len(server.reviews["/first"]) == 1


async def test_patch_that_cannot_apply_is_an_internal_error_even_when_ignored(
    admission: Admission, server: WebhookServer
) -> None:
    bad = patching(lambda _: [{"op": "replace", "path": "/spec/nothing", "value": 1}])
    config = mutating(
        "c",
        webhook("bad.example.com", server.route("/bad", bad), server.ca, failurePolicy="Ignore"),
    )

    error = await denial(admission.mutate([config], pod_request()))

    assert error.code == 500
    assert error.status["reason"] == "InternalError"
    assert error.status["message"].startswith("Internal error occurred: ")


async def test_delete_sends_the_old_object_and_may_not_be_patched(
    admission: Admission, server: WebhookServer
) -> None:
    allow = webhook("allow.example.com", server.route("/allow", allowing()), server.ca)
    request = pod_request("DELETE")

    assert await admission.mutate([mutating("c", allow)], request) is None
    [review] = server.reviews["/allow"]
    assert review["request"]["object"] is None
    assert review["request"]["oldObject"] == pod()
    assert review["request"]["operation"] == "DELETE"

    patch = webhook("patch.example.com", server.route("/patch", add_label("x", "y")), server.ca)
    error = await denial(admission.mutate([mutating("c", patch)], request))
    assert error.status == internal_error(
        'admission webhook "patch.example.com" attempted to modify the object,'
        " which is not supported for this operation"
    )


# Validation


@pytest.mark.parametrize(
    ("status", "code", "reason", "message"),
    [
        pytest.param(
            {"code": 403, "reason": "Forbidden", "message": "no pods today"},
            403,
            "Forbidden",
            'admission webhook "deny.example.com" denied the request: no pods today',
            id="with-status",
        ),
        pytest.param(
            None,
            400,
            None,
            'admission webhook "deny.example.com" denied the request without explanation',
            id="without-status",
        ),
        pytest.param(
            {"code": 200, "status": "Success", "reason": "Gone"},
            400,
            "Gone",
            'admission webhook "deny.example.com" denied the request: Gone',
            id="success-code-raised",
        ),
    ],
)
async def test_validating_webhook_denies(
    *,
    admission: Admission,
    server: WebhookServer,
    status: dict[str, Any] | None,
    code: int,
    reason: str | None,
    message: str,
) -> None:
    url = server.route("/deny", denying(status))
    config = validating("policy", webhook("deny.example.com", url, server.ca))

    error = await denial(admission.validate([config], pod_request()))

    assert error.code == code
    assert error.status["status"] == "Failure"
    assert error.status["kind"] == "Status"
    assert error.status.get("reason") == reason
    assert error.status["message"] == message
    assert str(error) == message


async def test_validating_webhooks_run_concurrently(
    admission: Admission, server: WebhookServer
) -> None:
    arrived = 0
    both = asyncio.Event()

    async def rendezvous(review: Review) -> Review:
        # Each waits for the other: called one after the other, the first would time out.
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        with anyio.move_on_after(3):
            await both.wait()
        return answer(review, allowed=both.is_set())

    hooks = [webhook(n, server.route(f"/{n}", rendezvous), server.ca) for n in ("a", "b")]

    await admission.validate([validating("c", *hooks)], pod_request())

    assert arrived == 2


async def test_validation_reports_the_first_denial_to_arrive(
    admission: Admission, server: WebhookServer
) -> None:
    slow = webhook(
        "slow.example.com",
        server.route("/slow", denying({"message": "slow"}, delay=0.3)),
        server.ca,
    )
    fast = webhook(
        "fast.example.com", server.route("/fast", denying({"message": "fast"})), server.ca
    )

    error = await denial(admission.validate([validating("c", slow, fast)], pod_request()))

    assert (
        error.status["message"] == 'admission webhook "fast.example.com" denied the request: fast'
    )
    assert len(server.reviews["/slow"]) == 1, "every webhook is called"


async def test_validating_webhook_may_not_patch(
    admission: Admission, server: WebhookServer
) -> None:
    url = server.route("/patch", add_label("x", "y"))
    config = validating("c", webhook("patch.example.com", url, server.ca))

    error = await denial(admission.validate([config], pod_request()))

    assert error.status == internal_error(
        'failed calling webhook "patch.example.com": received invalid webhook response:'
        " validating webhook may not return response.patch"
    )


async def test_warnings_are_collected_once(admission: Admission, server: WebhookServer) -> None:
    mutator = webhook(
        "m.example.com",
        server.route("/m", allowing(warnings=["deprecated field", "deprecated field"])),
        server.ca,
    )
    validator = webhook(
        "v.example.com",
        server.route("/v", allowing(warnings=["deprecated field", "image is not pinned"])),
        server.ca,
    )
    warnings: list[str] = []

    await admission.mutate([mutating("m", mutator)], pod_request(), warnings=warnings)
    await admission.validate([validating("v", validator)], pod_request(), warnings=warnings)

    assert warnings == ["deprecated field", "image is not pinned"]


# Failures


async def test_fail_policy_rejects_when_the_webhook_is_down(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    port = int(dead_url.rsplit(":", 1)[1].strip("/"))
    config = validating(
        "c", webhook("dead.example.com", dead_url, ca, timeoutSeconds=None, failurePolicy=None)
    )

    error = await denial(admission.validate([config], pod_request()))

    assert error.status == internal_error(
        'failed calling webhook "dead.example.com": failed to call webhook:'
        f' Post "https://127.0.0.1:{port}/?timeout=10s":'
        f" dial tcp 127.0.0.1:{port}: connect: connection refused"
    )
    assert error.code == 500


async def test_ignore_policy_admits_when_the_webhook_is_down(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    hook = webhook("dead.example.com", dead_url, ca, failurePolicy="Ignore")
    request = pod_request()

    assert await admission.mutate([mutating("c", hook)], request) == request.object
    await admission.validate([validating("c", hook)], request)


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_timeout(admission: Admission, server: WebhookServer, policy: str) -> None:
    async def slow(review: Review) -> Review:
        with anyio.move_on_after(10):
            await server.release.wait()
        return answer(review, allowed=True)

    url = server.route("/slow", slow)
    config = validating(
        "c", webhook("slow.example.com", url, server.ca, timeoutSeconds=1, failurePolicy=policy)
    )
    started = time.monotonic()

    if policy == "Fail":
        error = await denial(admission.validate([config], pod_request()))
        assert error.status == internal_error(
            'failed calling webhook "slow.example.com": failed to call webhook:'
            f' Post "{url}?timeout=1s": context deadline exceeded'
        )
    else:
        await admission.validate([config], pod_request())
    assert 0.9 < time.monotonic() - started < 5


async def test_ca_bundle_mismatch_fails_tls(admission: Admission, server: WebhookServer) -> None:
    url = server.route("/allow", allowing())
    other_ca = create_ca("another CA")
    config = validating("c", webhook("tls.example.com", url, other_ca))

    error = await denial(admission.validate([config], pod_request()))

    assert error.status["message"] == (
        'Internal error occurred: failed calling webhook "tls.example.com": failed to call'
        f' webhook: Post "{url}?timeout=5s": tls: failed to verify certificate:'
        " x509: certificate signed by unknown authority"
    )
    assert server.reviews["/allow"] == []


async def test_ca_bundle_without_certificates_fails_the_call(
    admission: Admission, dead_url: str
) -> None:
    hook = webhook("pem.example.com", dead_url)
    hook["clientConfig"]["caBundle"] = b64("not a certificate")

    error = await denial(admission.validate([validating("c", hook)], pod_request()))

    assert error.status == internal_error(
        'failed calling webhook "pem.example.com": could not get REST client:'
        " unable to load root certificates: unable to parse bytes as PEM block"
    )


async def test_certificate_for_another_name_fails_tls(admission: Admission, ca: Identity) -> None:
    only_service = issue_certificate(ca, "svc", dns_names=["webhook.default.svc"], server=True)
    async with serve(ca, only_service) as server:
        url = server.route("/allow", allowing())
        config = validating("c", webhook("tls.example.com", url, ca))

        error = await denial(admission.validate([config], pod_request()))

    assert error.status["message"].endswith(
        "tls: failed to verify certificate: x509: certificate is not valid for 127.0.0.1"
    )


async def test_wrong_uid_in_the_response_is_an_error(
    admission: Admission, server: WebhookServer
) -> None:
    async def wrong(review: Review) -> Review:
        response = answer(review, allowed=True)
        response["response"]["uid"] = "not-the-request"
        return response

    config = validating("c", webhook("uid.example.com", server.route("/uid", wrong), server.ca))

    error = await denial(admission.validate([config], pod_request()))

    uid = server.reviews["/uid"][0]["request"]["uid"]
    assert error.status == internal_error(
        'failed calling webhook "uid.example.com": received invalid webhook response:'
        f' expected response.uid="{uid}", got "not-the-request"'
    )


async def test_response_must_be_a_v1_admission_review(
    admission: Admission, server: WebhookServer
) -> None:
    async def untyped(review: Review) -> Review:
        return {"response": {"uid": review["request"]["uid"], "allowed": True}}

    config = validating("c", webhook("kind.example.com", server.route("/k", untyped), server.ca))

    error = await denial(admission.validate([config], pod_request()))

    assert error.status["message"] == (
        'Internal error occurred: failed calling webhook "kind.example.com": received invalid'
        " webhook response: expected webhook response of admission.k8s.io/v1,"
        " Kind=AdmissionReview, got /, Kind="
    )


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(
            web.Response(status=500, text="boom"),
            'an error on the server ("boom") has prevented the request from succeeding',
            id="500",
        ),
        pytest.param(
            web.json_response(
                {"kind": "Status", "status": "Failure", "message": "go away", "code": 403},
                status=403,
            ),
            "go away",
            id="status",
        ),
        pytest.param(
            web.Response(status=404),
            "the server could not find the requested resource",
            id="404",
        ),
        pytest.param(
            web.Response(status=200, text="not json"),
            "couldn't get version/kind; json parse error:"
            " Expecting value: line 1 column 1 (char 0)",
            id="not-json",
        ),
    ],
)
async def test_unusable_http_answer_is_a_call_error(
    admission: Admission, server: WebhookServer, response: web.Response, reason: str
) -> None:
    async def handle(review: Review) -> web.Response:
        return response

    config = validating("c", webhook("http.example.com", server.route("/h", handle), server.ca))

    error = await denial(admission.validate([config], pod_request()))

    assert error.status == internal_error(
        f'failed calling webhook "http.example.com": failed to call webhook: {reason}'
    )


async def test_review_version_is_the_first_the_webhook_accepts(
    admission: Admission, server: WebhookServer
) -> None:
    async def beta(review: Review) -> Review:
        # v1beta1 answers are checked for neither kind nor uid, as upstream.
        return {"response": {"uid": "anything", "allowed": True}}

    versions = ["v2", "v1beta1", "v1"]
    hook = webhook("beta.example.com", server.route("/beta", beta), server.ca)
    hook["admissionReviewVersions"] = versions

    await admission.validate([validating("c", hook)], pod_request())

    assert server.reviews["/beta"][0]["apiVersion"] == "admission.k8s.io/v1beta1"

    hook["admissionReviewVersions"] = ["v2"]
    error = await denial(admission.validate([validating("c", hook)], pod_request()))
    assert error.status == internal_error(
        'failed calling webhook "beta.example.com": could not create admission objects:'
        " webhook does not accept v1 or v1beta1 AdmissionReview"
    )


@pytest.mark.parametrize(("side_effects", "admitted"), [("NoneOnDryRun", True), ("Some", False)])
async def test_dry_run_needs_a_webhook_without_side_effects(
    admission: Admission, server: WebhookServer, side_effects: str, admitted: bool
) -> None:
    url = server.route("/dry", allowing())
    config = validating("c", webhook("dry.example.com", url, server.ca, sideEffects=side_effects))
    request = pod_request(dry_run=True)

    if admitted:
        await admission.validate([config], request)
        assert server.reviews["/dry"][0]["request"]["dryRun"] is True
    else:
        error = await denial(admission.validate([config], request))
        assert error.code == 400
        assert error.status["reason"] == "BadRequest"
        assert (
            error.status["message"]
            == 'admission webhook "dry.example.com" does not support dry run'
        )
        assert server.reviews["/dry"] == []


# Services


async def test_service_client_config_dials_through_the_resolver(
    admission: Admission, services: Services, ca: Identity
) -> None:
    # The certificate names only the Service: TLS succeeds only if that name is verified.
    only_service = issue_certificate(ca, "svc", dns_names=["webhook.default.svc"], server=True)
    async with serve(ca, only_service) as server:
        server.route("/mutate", add_label("via", "service"))
        services.endpoints["default", "webhook", 8443] = ("127.0.0.1", server.port)
        hook = webhook("svc.example.com", ca=ca)
        hook["clientConfig"] = {
            "service": {
                "namespace": "default",
                "name": "webhook",
                "path": "/mutate/",
                "port": 8443,
            },
            "caBundle": b64(ca.certificate_pem),
        }

        result = await admission.mutate([mutating("c", hook)], pod_request())

        [http_request] = server.requests["/mutate"]
        assert http_request.host == "webhook.default.svc:8443"
    assert result is not None
    assert result["metadata"]["labels"]["via"] == "service"
    assert services.asked == [("default", "webhook", 8443)]


async def test_service_without_endpoints_fails_the_call(
    admission: Admission, services: Services, ca: Identity
) -> None:
    hook = webhook("svc.example.com", ca=ca)
    hook["clientConfig"] = {"service": {"namespace": "default", "name": "webhook"}}

    error = await denial(admission.validate([validating("c", hook)], pod_request()))

    assert services.asked == [("default", "webhook", 443)]
    assert error.status == internal_error(
        'failed calling webhook "svc.example.com": failed to call webhook:'
        ' Post "https://webhook.default.svc:443/?timeout=5s":'
        ' service "default/webhook" has no endpoints'
    )


# Matching


def tripwire(url: str, ca: Identity, **fields: Any) -> dict[str, Any]:
    """A validating configuration whose webhook fails, and so denies, whenever it is called."""
    return validating("tripwire", webhook("tripwire.example.com", url, ca, **fields))


async def is_called(
    admission: Admission, config: Mapping[str, Any], request: AdmissionRequest
) -> bool:
    message = ""
    try:
        await admission.validate([config], request)
    except AdmissionDenied as error:
        message = error.status["message"]
    if not message:
        return False
    assert "connection refused" in message
    return True


def status_request() -> AdmissionRequest:
    return pod_request("UPDATE", subresource="status")


@pytest.mark.parametrize(
    ("rule", "request_", "called"),
    [
        pytest.param({}, pod_request(), True, id="pods"),
        pytest.param({"operations": ["UPDATE"]}, pod_request(), False, id="other-operation"),
        pytest.param({"operations": ["*"]}, pod_request("DELETE"), True, id="any-operation"),
        pytest.param({"operations": ["CONNECT"]}, pod_request("DELETE"), False, id="connect"),
        pytest.param({"apiGroups": ["apps"]}, pod_request(), False, id="other-group"),
        pytest.param({"apiGroups": ["*"]}, pod_request(), True, id="any-group"),
        pytest.param({"apiVersions": ["v1beta1"]}, pod_request(), False, id="other-version"),
        pytest.param({"resources": ["deployments"]}, pod_request(), False, id="other-resource"),
        pytest.param({"resources": ["*"]}, pod_request(), True, id="star"),
        pytest.param({}, status_request(), False, id="pods-not-status"),
        pytest.param({"resources": ["*"]}, status_request(), False, id="star-not-status"),
        pytest.param({"resources": ["pods/status"]}, status_request(), True, id="pods/status"),
        pytest.param({"resources": ["pods/status"]}, pod_request(), False, id="status-not-pods"),
        pytest.param({"resources": ["pods/*"]}, status_request(), True, id="pods/*"),
        pytest.param({"resources": ["*/status"]}, status_request(), True, id="*/status"),
        pytest.param({"resources": ["*/*"]}, status_request(), True, id="*/*-status"),
        pytest.param({"resources": ["*/*"]}, pod_request(), True, id="*/*-main"),
        pytest.param({"scope": "Namespaced"}, pod_request(), True, id="namespaced-pod"),
        pytest.param({"scope": "Cluster"}, pod_request(), False, id="cluster-pod"),
        pytest.param(
            {"scope": "Cluster", "resources": ["nodes"]}, node_request(), True, id="cluster-node"
        ),
        pytest.param(
            {"scope": "Namespaced", "resources": ["nodes"]},
            node_request(),
            False,
            id="namespaced-node",
        ),
        pytest.param(
            {"scope": "Namespaced", "resources": ["namespaces"]},
            namespace_request("UPDATE", "prod", {}),
            False,
            id="namespaced-namespace",
        ),
        pytest.param(
            {"scope": "Cluster", "resources": ["namespaces"]},
            namespace_request("UPDATE", "prod", {}),
            True,
            id="cluster-namespace",
        ),
    ],
)
async def test_rules(
    *,
    admission: Admission,
    dead_url: str,
    ca: Identity,
    rule: dict[str, Any],
    request_: AdmissionRequest,
    called: bool,
) -> None:
    config = tripwire(dead_url, ca, rules=[{**POD_RULE, **rule}])

    assert await is_called(admission, config, request_) is called


def selector(*expressions: tuple[str, str, list[str]], **labels: str) -> dict[str, Any]:
    return {
        "matchLabels": labels,
        "matchExpressions": [{"key": k, "operator": o, "values": v} for k, o, v in expressions],
    }


ALL_RESOURCES = [
    {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}
]


@pytest.mark.parametrize(
    ("fields", "request_", "called"),
    [
        pytest.param({"namespaceSelector": {}}, pod_request(), True, id="ns-empty"),
        pytest.param(
            {"namespaceSelector": selector(env="dev")}, pod_request(), True, id="ns-label"
        ),
        pytest.param(
            {"namespaceSelector": selector(env="dev")},
            pod_request(namespace="prod"),
            False,
            id="ns-label-other",
        ),
        pytest.param(
            {"namespaceSelector": selector(("env", "In", ["prod", "staging"]))},
            pod_request(namespace="prod"),
            True,
            id="ns-in",
        ),
        pytest.param(
            {"namespaceSelector": selector(("env", "NotIn", ["prod"]))},
            pod_request(namespace="prod"),
            False,
            id="ns-notin",
        ),
        pytest.param(
            {"namespaceSelector": selector(("team", "NotIn", ["a"]))},
            pod_request(),
            True,
            id="ns-notin-absent",
        ),
        pytest.param(
            {"namespaceSelector": selector(("env", "Exists", []))},
            pod_request(),
            True,
            id="ns-exists",
        ),
        pytest.param(
            {"namespaceSelector": selector(("env", "DoesNotExist", []))},
            pod_request(),
            False,
            id="ns-doesnotexist",
        ),
        pytest.param(
            {"namespaceSelector": selector(env="nowhere"), "rules": ALL_RESOURCES},
            node_request(),
            True,
            id="ns-cluster-scoped-never-exempt",
        ),
        pytest.param(
            {"namespaceSelector": selector(env="new"), "rules": ALL_RESOURCES},
            namespace_request("CREATE", "fresh", {"env": "new"}),
            True,
            id="ns-namespace-own-labels",
        ),
        pytest.param(
            {"namespaceSelector": selector(env="dev"), "rules": ALL_RESOURCES},
            namespace_request("CREATE", "fresh", {"env": "new"}),
            False,
            id="ns-namespace-own-labels-other",
        ),
        pytest.param(
            {"namespaceSelector": selector(env="prod"), "rules": ALL_RESOURCES},
            namespace_request("DELETE", "prod", {}),
            True,
            id="ns-namespace-delete-stored-labels",
        ),
        pytest.param({"objectSelector": selector(app="web")}, pod_request(), True, id="obj-label"),
        pytest.param({"objectSelector": selector(app="db")}, pod_request(), False, id="obj-other"),
        pytest.param(
            {"objectSelector": selector(("tier", "DoesNotExist", []))},
            pod_request(),
            True,
            id="obj-doesnotexist",
        ),
        pytest.param(
            {"objectSelector": selector(app="web")},
            pod_request("DELETE"),
            True,
            id="obj-delete-old-object",
        ),
        pytest.param(
            {"objectSelector": selector(app="web")},
            pod_request("UPDATE", object=pod(labels={})),
            True,
            id="obj-old-object-matches",
        ),
        pytest.param(
            {"objectSelector": selector(app="web")},
            pod_request("CREATE", object=pod(labels={"app": "db"})),
            False,
            id="obj-new-object-only",
        ),
    ],
)
async def test_selectors(
    *,
    admission: Admission,
    dead_url: str,
    ca: Identity,
    fields: dict[str, Any],
    request_: AdmissionRequest,
    called: bool,
) -> None:
    assert await is_called(admission, tripwire(dead_url, ca, **fields), request_) is called


async def test_namespace_selector_for_a_missing_namespace_is_not_found(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    config = tripwire(dead_url, ca, namespaceSelector=selector(env="dev"))

    error = await denial(admission.validate([config], pod_request(namespace="ghost")))

    assert error.code == 404
    assert error.status["reason"] == "NotFound"
    assert error.status["message"] == 'namespaces "ghost" not found'


async def test_invalid_selector_is_an_internal_error_when_rules_match(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    bad = {"matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]}]}

    error = await denial(
        admission.validate([tripwire(dead_url, ca, objectSelector=bad)], pod_request())
    )
    assert error.status == internal_error('"Near" is not a valid label selector operator')

    config = tripwire(
        dead_url, ca, objectSelector=bad, rules=[{**POD_RULE, "resources": ["nodes"]}]
    )
    await admission.validate([config], pod_request())


async def test_match_conditions_are_not_evaluated(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    conditions = [{"name": "never", "expression": "false"}]

    assert await is_called(
        admission, tripwire(dead_url, ca, matchConditions=conditions), pod_request()
    )


async def test_admission_configuration_objects_are_exempt(
    admission: Admission, dead_url: str, ca: Identity
) -> None:
    config = tripwire(dead_url, ca, rules=ALL_RESOURCES)
    request = AdmissionRequest(
        "CREATE",
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "",
        "",
        "tripwire",
        USER,
        config,
        None,
    )

    assert not await is_called(admission, config, request)
    assert await admission.mutate([config], request) == config
