"""Bad input over HTTP: every mistake gets the Status a real API server gives, nothing crashes.

These requests are what no well-behaved client sends, so they go out raw (aiohttp with the
admin's client certificate), and each answer is checked field by field.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from sandbox.apiserver import auth
from sandbox.apiserver.server import MAX_BODY
from telepresence.wire import tls

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sandbox.apiserver.run import Running

pytestmark = pytest.mark.anyio

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


class Raw:
    """Raw HTTP requests to the server, answering (status, decoded JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def __call__(
        self,
        method: str,
        path: str,
        body: bytes | str | AsyncIterator[bytes] | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data: Any = body.encode() if isinstance(body, str) else body
        if isinstance(data, bytes) and len(data) > 1 << 20:
            data = io.BytesIO(data)  # aiohttp warns about big bytes bodies
        async with self.session.request(
            method,
            self.url + path,
            data=data,
            headers={"Content-Type": content_type, **(headers or {})},
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def status(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        """The Status object of a failed request, checked for the common fields."""
        code, answer = await self(method, path, body, **kw)
        assert isinstance(answer, dict), answer
        assert answer["kind"] == "Status"
        assert answer["apiVersion"] == "v1"
        assert answer["status"] == "Failure"
        assert answer["code"] == code
        return answer


@pytest.fixture
async def raw(apiserver: Running) -> AsyncIterator[Raw]:
    credentials = auth.Credentials.load_or_create(apiserver.kubeconfig.parent / "pki")
    context = tls.client_context(credentials.ca.certificate, identity=credentials.admin)
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Raw(session, apiserver.url)


def configmap(name: str = "settings", **fields: Any) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}
    )


def bad_request(status: dict[str, Any]) -> str:
    assert (status["code"], status["reason"]) == (400, "BadRequest"), status
    message: str = status["message"]
    return message


async def test_malformed_json(raw: Raw) -> None:
    status = await raw.status("POST", CONFIGMAPS, '{"apiVersion": "v1", "kind": "ConfigMap", ')
    assert bad_request(status).startswith("error decoding request body")


@pytest.mark.parametrize(("body", "named"), [("[]", "list"), ('"cm"', "str"), ("42", "int")])
async def test_json_that_is_not_an_object(raw: Raw, body: str, named: str) -> None:
    status = await raw.status("POST", CONFIGMAPS, body)
    assert bad_request(status) == f"the request body must be a JSON object, not {named}"


async def test_empty_body(raw: Raw) -> None:
    status = await raw.status("POST", CONFIGMAPS, "")
    assert bad_request(status) == "the request body is empty"


async def test_wrong_kinds_for_the_resource(raw: Raw) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    status = await raw.status("POST", CONFIGMAPS, json.dumps(service))
    assert bad_request(status) == (
        "the kind in the data (Service) does not match the expected kind (ConfigMap)"
    )
    wrong_version = {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    status = await raw.status("POST", CONFIGMAPS, json.dumps(wrong_version))
    assert bad_request(status) == (
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    )
    # Nothing was stored by any of them.
    code, listed = await raw("GET", CONFIGMAPS)
    assert code == 200
    assert [item["metadata"]["name"] for item in listed["items"]] == ["kube-root-ca.crt"]


async def test_namespace_in_the_body_must_match_the_path(raw: Raw) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "b"}}
    status = await raw.status("POST", CONFIGMAPS, json.dumps(body))
    assert bad_request(status) == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413(raw: Raw, declared: bool) -> None:
    big = json.dumps({"kind": "Secret", "metadata": {"name": "big"}, "data": "x" * MAX_BODY})

    status = await raw.status(
        "POST", CONFIGMAPS, big.encode() if declared else pieces(big.encode())
    )
    assert (status["code"], status["reason"]) == (413, "RequestEntityTooLarge")
    assert status["message"] == f"Request entity too large: limit is {MAX_BODY}"
    # A ConfigMap's own limit is 1 MiB; one that fits arrives whole, in however many pieces.
    fits = configmap(data={"blob": "x" * ((1 << 20) - 4)}).encode()
    code, created = await raw("POST", CONFIGMAPS, fits if declared else pieces(fits))
    assert code == 201, created
    assert created["data"]["blob"] == "x" * ((1 << 20) - 4)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/widgets",
        "/apis/example.com/v1/widgets",
        "/apis/apps/v2/deployments",
        "/api/v2/pods",
        "/nonsense",
    ],
)
async def test_unknown_resources(raw: Raw, path: str) -> None:
    for method in ("GET", "POST"):
        status = await raw.status(method, path, "{}")
        assert (status["code"], status["reason"]) == (404, "NotFound")
        assert status["message"] == "the server could not find the requested resource"


RFC1123 = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character"
)


@pytest.mark.parametrize("name", ["Bad_Name", "-leading", "has space", "a" * 254])
async def test_invalid_names(raw: Raw, name: str) -> None:
    status = await raw.status("POST", CONFIGMAPS, configmap(name))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"].startswith(f'ConfigMap "{name}" is invalid: metadata.name: ')
    [cause] = status["details"]["causes"]
    assert cause["field"] == "metadata.name"
    assert cause["reason"] == "FieldValueInvalid"
    if len(name) > 253:
        assert "must be no more than 253 characters" in cause["message"]
    else:
        assert RFC1123 in cause["message"]


async def test_a_missing_name(raw: Raw) -> None:
    status = await raw.status("POST", CONFIGMAPS, configmap(""))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value: name or generateName is required",
            "field": "metadata.name",
        }
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?limit=abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ("?watch=1&timeoutSeconds=x", 'strconv.ParseInt: parsing "x": invalid syntax'),
        ("?labelSelector=a%20in%20(", "unable to parse requirement"),
        ("?fieldSelector=spec.nope%3D1", "field label not supported: spec.nope"),
        ("?watch=1&resourceVersion=abc", 'Invalid value: "abc"'),
    ],
)
async def test_bad_query_parameters(raw: Raw, apiserver: Running, query: str, message: str) -> None:
    status = await raw.status("GET", CONFIGMAPS + query)
    assert message in bad_request(status)
    # A watch that was refused holds nothing open.
    assert not any(apiserver.server.store._watchers.values())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", CONFIGMAPS),
        ("POST", CONFIGMAPS + "/x"),
        ("PATCH", CONFIGMAPS),
        ("POST", "/apis/apps/v1/namespaces/default/deployments/x/status"),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments"),
    ],
)
async def test_methods_a_resource_does_not_have(raw: Raw, method: str, path: str) -> None:
    status = await raw.status(method, path, "{}")
    assert (status["code"], status["reason"]) == (405, "MethodNotAllowed")
    assert status["message"] == "the server does not allow this method on the requested resource"


async def test_unauthenticated_and_unknown_token(apiserver: Running) -> None:
    credentials = auth.Credentials.load_or_create(apiserver.kubeconfig.parent / "pki")
    context = tls.client_context(credentials.ca.certificate)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(apiserver.url + CONFIGMAPS) as response:
            anonymous = await response.json()
        async with session.get(
            apiserver.url + CONFIGMAPS, headers={"Authorization": "Bearer wrong"}
        ) as response:
            wrong = await response.json()
    assert (anonymous["code"], anonymous["reason"]) == (403, "Forbidden")
    assert anonymous["message"] == (
        'configmaps is forbidden: User "system:anonymous" cannot list resource "configmaps"'
        ' in API group "" in the namespace "default"'
    )
    assert (wrong["code"], wrong["reason"], wrong["message"]) == (
        401,
        "Unauthorized",
        "Unauthorized",
    )


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            5,
            "cannot unmarshal number into Go struct field ConfigMap.metadata of type v1.ObjectMeta",
        ),
        ({"name": 5}, "cannot unmarshal number into Go struct field ObjectMeta.metadata.name"),
        ({"name": "x", "labels": []}, "unmarshal array into Go struct field ObjectMeta.metadata"),
        ({"name": "x", "labels": {"a": 1}}, "cannot unmarshal number into Go struct field"),
        ({"name": "x", "finalizers": "a"}, "cannot unmarshal string into Go struct field"),
    ],
)
async def test_metadata_of_the_wrong_types(raw: Raw, metadata: Any, message: str) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
    assert message in bad_request(await raw.status("POST", CONFIGMAPS, body))
    # The same through an update and a merge patch of an existing object.
    await raw("POST", CONFIGMAPS, configmap("x"))
    if isinstance(metadata, dict) and metadata.get("name") == "x":
        update = await raw.status("PUT", CONFIGMAPS + "/x", body)
        assert message in bad_request(update)
        patch = json.dumps({"metadata": metadata})
        patched = await raw.status(
            "PATCH", CONFIGMAPS + "/x", patch, content_type="application/merge-patch+json"
        )
        assert message in bad_request(patched)


async def test_the_server_still_serves_after_all_that(raw: Raw) -> None:
    bodies: list[str | bytes] = ["{", "[]", "", b"\xff\xfe", '{"metadata": 5}', "\x00"]
    for body in bodies:
        code, answer = await raw("POST", CONFIGMAPS, body)
        assert 400 <= code < 500, (body, code, answer)
    code, created = await raw("POST", CONFIGMAPS, configmap("fine", data={"a": "1"}))
    assert code == 201, created
