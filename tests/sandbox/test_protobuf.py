"""Protobuf request bodies: the wire reader, the Kubernetes specials, and kubectl end to end.

The unit tests build their bodies by hand from the protobuf encoding spec
(https://protobuf.dev/programming-guides/encoding/) and the field numbers of the Kubernetes
``generated.proto`` files; the end-to-end tests run kubectl 1.32 commands whose typed clients
send protobuf, and read back what the server stored.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.apiserver import auth
from sandbox.apiserver.protobuf import (
    KINDS,
    MAGIC,
    SCHEMA,
    ProtobufError,
    decode_message,
    decode_object,
    go_duration,
    int32,
    int64,
    iter_fields,
    read_varint,
)
from telepresence.wire import tls

if TYPE_CHECKING:
    from sandbox.apiserver.run import Running
    from tests.sandbox.conftest import Kubectl


# -- building bodies by hand, from the encoding spec -------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int goes out as its 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def number(field: int, value: int) -> bytes:
    return tag(field, 0) + varint(value)


def text(field: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return tag(field, 2) + varint(len(data)) + data


def message(field: int, *parts: bytes) -> bytes:
    return text(field, b"".join(parts))


def entry(field: int, key: str, value: str | bytes) -> bytes:
    return message(field, text(1, key), text(2, value))


def envelope(api_version: str, kind: str, raw: bytes, **extra: str) -> bytes:
    """``k8s\\x00`` and a runtime.Unknown, with the empty strings Go writes."""
    return (
        MAGIC
        + message(1, text(1, api_version), text(2, kind))
        + text(2, raw)
        + text(3, extra.get("contentEncoding", ""))
        + text(4, extra.get("contentType", ""))
    )


EMPTY_TIME = message(8, b"")  # ObjectMeta.creationTimestamp, as Go writes a zero Time


def metadata(name: str, *more: bytes) -> bytes:
    """ObjectMeta (field 1 of every object) the way Go writes it: every string, even empty."""
    return message(1, text(1, name), text(2, ""), text(3, ""), text(6, ""), EMPTY_TIME, *more)


def problem(body: bytes) -> str:
    with pytest.raises(ProtobufError) as caught:
        decode_object(body)
    return str(caught.value)


# -- the wire format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value", "end"),
    [
        (b"\x00", 0, 1),
        (b"\x01", 1, 1),
        (b"\x96\x01", 150, 2),  # the spec's own example
        (b"\xff" * 9 + b"\x01", (1 << 64) - 1, 10),
        (b"\x96\x01\x05", 150, 2),
    ],
)
def test_varints(data: bytes, value: int, end: int) -> None:
    assert read_varint(data, 0) == (value, end)


def test_a_varint_is_read_from_its_position() -> None:
    assert read_varint(b"\x05\xac\x02", 1) == (300, 3)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "ends inside a varint"),
        (b"\x96", "ends inside a varint"),
        (b"\xff" * 9 + b"\x02", "longer than 64 bits"),
        (b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    ],
)
def test_bad_varints(data: bytes, why: str) -> None:
    with pytest.raises(ProtobufError, match=why):
        read_varint(data, 0)


@pytest.mark.parametrize(
    ("value", "as_int32", "as_int64"),
    [
        (5, 5, 5),
        (-1, -1, -1),
        (-5, -5, -5),
        (2**31 - 1, 2**31 - 1, 2**31 - 1),
        (-(2**31), -(2**31), -(2**31)),
        (-(2**63), 0, -(2**63)),
        (2**32 + 7, 7, 2**32 + 7),  # int32 keeps the low 32 bits, as Go's int32(v)
    ],
)
def test_signed_ints(value: int, as_int32: int, as_int64: int) -> None:
    encoded = varint(value)
    if value < 0:
        assert len(encoded) == 10  # sign-extended to 64 bits, int32 too
    raw, _ = read_varint(encoded, 0)
    assert int32(raw) == as_int32
    assert int64(raw) == as_int64


def test_every_wire_type_is_read() -> None:
    data = (
        number(1, 150)
        + tag(2, 1)
        + (2**40).to_bytes(8, "little")
        + text(3, "abc")
        + tag(4, 5)
        + (7).to_bytes(4, "little")
        + number(536_870_911, 1)  # the largest field number
    )
    assert list(iter_fields(data)) == [
        (1, 0, 150),
        (2, 1, 2**40),
        (3, 2, b"abc"),
        (4, 5, 7),
        (536_870_911, 0, 1),
    ]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (tag(1, 3) + tag(1, 4), "is a group"),
        (tag(1, 4), "is a group"),
        (tag(1, 6), "wire type 6"),
        (tag(1, 7), "wire type 7"),
        (b"\x00\x00", "field number 0"),
        (varint(536_870_912 << 3), "field number 536870912"),
        (tag(1, 2) + varint(5) + b"ab", "ends inside field 1"),
        (tag(1, 1) + b"\x00\x00\x00", "ends inside field 1"),
        (tag(2, 5) + b"\x00", "ends inside field 2"),
        (tag(1, 0), "ends inside a varint"),
    ],
)
def test_malformed_records(data: bytes, why: str) -> None:
    with pytest.raises(ProtobufError, match=why):
        list(iter_fields(data))


# -- the Kubernetes specials -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (number(1, 1_704_164_645), "2024-01-02T03:04:05Z"),
        (number(1, 1_704_164_645) + number(2, 999_999_999), "2024-01-02T03:04:05Z"),
        (number(1, 0) + number(2, 0), "1970-01-01T00:00:00Z"),  # the epoch is a time
        (number(1, -86_400), "1969-12-31T00:00:00Z"),
        (b"", None),  # metav1.Time writes a zero time as an empty message
        (number(1, -62_135_596_800) + number(2, 0), None),  # or as Go's zero time.Time
    ],
)
def test_time(data: bytes, expected: str | None) -> None:
    assert decode_message("Time", data) == expected


def test_micro_time_keeps_microseconds() -> None:
    data = number(1, 1_704_164_645) + number(2, 123_456_789)
    assert decode_message("MicroTime", data) == "2024-01-02T03:04:05.123456Z"
    assert decode_message("MicroTime", number(1, 1_704_164_645)) == "2024-01-02T03:04:05.000000Z"


@pytest.mark.parametrize("data", [number(1, 2**62), number(1, 0) + number(2, -1)])
def test_a_time_out_of_range_is_an_error(data: bytes) -> None:
    with pytest.raises(ProtobufError, match="time"):
        decode_message("Time", data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (number(1, 0) + number(2, 8080) + text(3, ""), 8080),
        (number(1, 1) + number(2, 0) + text(3, "http"), "http"),
        (number(1, 0) + number(2, 0) + text(3, ""), 0),
        (number(1, 0) + number(2, -3), -3),
        (number(1, 1) + text(3, "25%"), "25%"),
    ],
)
def test_int_or_string(data: bytes, expected: int | str) -> None:
    assert decode_message("IntOrString", data) == expected


def test_int_or_string_of_another_type_is_an_error() -> None:
    with pytest.raises(ProtobufError, match="type 2"):
        decode_message("IntOrString", number(1, 2))


@pytest.mark.parametrize("quantity", ["500m", "1Gi", "0", "1e3"])
def test_quantity(quantity: str) -> None:
    assert decode_message("Quantity", text(1, quantity)) == quantity


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (-(3723 * 10**9 + 500_000_000), "-1h2m3.5s"),
    ],
)
def test_duration_as_go_prints_it(nanoseconds: int, expected: str) -> None:
    assert go_duration(nanoseconds) == expected
    assert decode_message("Duration", number(1, nanoseconds)) == expected


def test_raw_extension_holds_json() -> None:
    assert decode_message("RawExtension", text(1, b'{"a": [1, "b"]}')) == {"a": [1, "b"]}
    assert decode_message("RawExtension", b"") is None
    with pytest.raises(ProtobufError, match="does not hold JSON"):
        decode_message("RawExtension", text(1, b"\x08\x01"))


# -- whole objects -----------------------------------------------------------------------------


def test_a_namespace_as_go_writes_it() -> None:
    raw = metadata("team") + message(2, b"") + message(3, text(1, ""))
    assert decode_object(envelope("v1", "Namespace", raw)) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team"},
    }


def test_metadata_fields() -> None:
    raw = metadata(
        "web",
        entry(11, "app", "web"),
        entry(11, "empty", ""),  # a label may be empty
        entry(12, "note", "x"),
        message(13, text(1, "Deployment"), text(3, "web"), text(4, "u1"), text(5, "apps/v1"),
                number(6, 1), number(7, 0)),
        text(14, "example.com/cleanup"),
        message(9, number(1, 1_704_164_645), number(2, 0)),
        number(10, 30),
        number(7, 0),
    )  # fmt: skip
    decoded = decode_object(envelope("v1", "ConfigMap", raw))
    assert decoded["metadata"] == {
        "name": "web",
        "deletionTimestamp": "2024-01-02T03:04:05Z",
        "deletionGracePeriodSeconds": 30,
        "labels": {"app": "web", "empty": ""},
        "annotations": {"note": "x"},
        "ownerReferences": [
            {
                "kind": "Deployment",
                "name": "web",
                "uid": "u1",
                "apiVersion": "apps/v1",
                "controller": True,
                "blockOwnerDeletion": False,  # a pointer bool: false was set on purpose
            }
        ],
        "finalizers": ["example.com/cleanup"],
    }


def test_configmap_and_secret_data() -> None:
    configmap = metadata("settings") + entry(2, "mode", "fast") + entry(3, "blob", b"\x00\xff")
    assert decode_object(envelope("v1", "ConfigMap", configmap)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
        "binaryData": {"blob": "AP8="},
    }
    secret = metadata("creds") + entry(2, "password", b"s3cret") + text(3, "Opaque")
    secret += number(5, 0)  # immutable: false, set
    assert decode_object(envelope("v1", "Secret", secret)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"password": "czNjcmV0"},
        "type": "Opaque",
        "immutable": False,
    }


def test_zero_values_come_out_as_encoding_json_writes_them() -> None:
    container = message(
        2,
        text(1, "web"),
        text(2, "nginx"),
        text(5, ""),
        message(6, text(1, ""), number(2, 0), number(3, 80), text(4, "TCP"), text(5, "")),
        message(8, b""),
        number(16, 0),
        # livenessProbe: its ProbeHandler = 1 (inline in JSON), whose httpGet = 2.
        message(10, message(1, message(2, text(1, "/"), message(2, number(1, 1), text(3, "http")))),
                number(2, 0), number(4, 10)),
    )  # fmt: skip
    # Volume: name = 1, its VolumeSource = 2 (inline in JSON), whose emptyDir = 2, configMap = 19.
    volumes = message(1, text(1, "cache"), message(2, message(2, b""))) + message(
        1, text(1, "settings"), message(2, message(19, message(1, text(1, "cfg")), number(4, 0)))
    )
    pod = message(2, container, volumes, text(3, "Always"), number(4, 30), number(11, 0))
    spec = (
        number(1, 0)  # replicas: 0 is a pointer that was set
        + message(2, entry(1, "app", "web"))
        + message(3, message(1, EMPTY_TIME, entry(11, "app", "web")), pod)
        + message(4, text(1, ""))
        + number(5, 0)
        + number(7, 0)
    )
    decoded = decode_object(envelope("apps/v1", "Deployment", metadata("web") + message(2, spec)))
    assert decoded["spec"] == {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "volumes": [
                    {"name": "cache", "emptyDir": {}},
                    {"name": "settings", "configMap": {"name": "cfg", "optional": False}},
                ],
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "livenessProbe": {
                            "httpGet": {"path": "/", "port": "http"},
                            "periodSeconds": 10,
                        },
                    }
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
            },
        },
    }


def test_a_service_port_by_number_and_by_name() -> None:
    by_number = message(4, number(1, 0), number(2, 8080), text(3, ""))
    ports = message(1, text(1, "http"), text(2, "TCP"), number(3, 80), by_number, number(5, 0))
    ports += message(1, text(1, "admin"), number(3, 81), message(4, number(1, 1), text(3, "adm")))
    spec = message(2, ports, entry(2, "app", "web"), text(3, ""), text(4, "ClusterIP"))
    decoded = decode_object(envelope("v1", "Service", metadata("web") + spec))
    assert decoded["spec"] == {
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "admin", "port": 81, "targetPort": "adm"},
        ],
        "selector": {"app": "web"},
        "type": "ClusterIP",
    }


def test_negative_ints_in_objects() -> None:
    priority = metadata("low") + number(2, -5) + number(3, 0)
    assert decode_object(envelope("scheduling.k8s.io/v1", "PriorityClass", priority))["value"] == -5
    options = number(1, -1) + number(3, 0) + text(5, "All")
    assert decode_object(envelope("v1", "DeleteOptions", options)) == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": -1,
        "orphanDependents": False,
        "dryRun": ["All"],
    }


@pytest.mark.parametrize("api_version", ["v1", "meta.k8s.io/v1", "apps/v1", "batch/v1"])
def test_delete_options_of_any_group_version(api_version: str) -> None:
    decoded = decode_object(envelope(api_version, "DeleteOptions", text(4, "Foreground")))
    assert decoded["propagationPolicy"] == "Foreground"


def test_numbers_packed_or_not() -> None:
    packed = text(4, varint(1000) + varint(2000))
    unpacked = number(4, 1000) + number(4, 2000)
    assert decode_message("PodSecurityContext", packed) == {"supplementalGroups": [1000, 2000]}
    assert decode_message("PodSecurityContext", unpacked) == {"supplementalGroups": [1000, 2000]}


def test_a_message_sent_twice_is_merged() -> None:
    raw = message(1, text(1, "settings")) + message(1, text(3, "shop"))
    decoded = decode_object(envelope("v1", "ConfigMap", raw))
    assert decoded["metadata"] == {"name": "settings", "namespace": "shop"}


def test_a_map_entry_may_leave_out_its_value() -> None:
    decoded = decode_object(envelope("v1", "ConfigMap", message(2, text(1, "key"))))
    assert decoded["data"] == {"key": ""}


def test_a_self_subject_access_review() -> None:
    attributes = message(
        1, text(1, "team"), text(2, "list"), text(3, ""), text(5, "pods"),
        message(9, text(1, "app=web")),
    )  # fmt: skip
    status = message(3, number(1, 0), text(2, ""), text(3, ""), number(4, 0))
    raw = metadata("") + message(2, attributes) + status
    decoded = decode_object(envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", raw))
    assert decoded["spec"] == {
        "resourceAttributes": {
            "namespace": "team",
            "verb": "list",
            "resource": "pods",
            "labelSelector": {"rawSelector": "app=web"},
        }
    }
    assert "status" not in decoded


def test_a_lease_keeps_microseconds_and_an_empty_holder() -> None:
    spec = message(2, text(1, ""), number(2, 15), message(4, number(1, 1_704_164_645),
                                                          number(2, 5_000)))  # fmt: skip
    decoded = decode_object(envelope("coordination.k8s.io/v1", "Lease", metadata("l") + spec))
    assert decoded["spec"] == {
        "holderIdentity": "",  # how leader election releases a lease
        "leaseDurationSeconds": 15,
        "renewTime": "2024-01-02T03:04:05.000005Z",
    }


def test_every_kind_has_a_message() -> None:
    for kinds in KINDS.values():
        for kind in kinds:
            assert SCHEMA[kind].name.endswith("." + kind)


# -- what is refused, and how ------------------------------------------------------------------


def test_an_unknown_field_names_the_message_and_the_field() -> None:
    why = problem(envelope("v1", "Namespace", metadata("team") + number(9, 1)))
    assert "field 9 of k8s.io.api.core.v1.Namespace" in why
    assert "JSON" in why
    assert "kubectl apply" in why


def test_an_unknown_field_deep_inside_says_where() -> None:
    pod = message(2, message(2, text(1, "web"), number(99, 1)))
    raw = metadata("web") + message(2, message(3, pod))
    why = problem(envelope("apps/v1", "Deployment", raw))
    assert "field 99 of k8s.io.api.core.v1.Container" in why
    assert "spec.template.spec.containers[0]" in why


def test_a_volume_plugin_this_server_does_not_decode_is_refused() -> None:
    volume = message(1, text(1, "disk"), message(2, message(3, text(1, "pd-1"))))  # GCE PD
    raw = metadata("web") + message(2, message(3, message(2, volume)))
    assert "field 3 of k8s.io.api.core.v1.VolumeSource" in problem(
        envelope("apps/v1", "Deployment", raw)
    )


def test_a_wrong_wire_type_is_refused() -> None:
    why = problem(envelope("v1", "ConfigMap", message(1, number(1, 7))))
    assert "field 1 (name) of k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta" in why
    assert "wire type varint, not length-delimited" in why


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("v1", "Pod"), ("apps/v2", "Deployment"), ("example.com/v1", "Widget"), ("", "")],
)
def test_an_unknown_kind_is_refused(api_version: str, kind: str) -> None:
    why = problem(envelope(api_version, kind, b""))
    assert f'apiVersion "{api_version}"' in why
    assert "does not decode" in why


@pytest.mark.parametrize("body", [b"", b"{}", b"k8s", b"k8s\x01" + b"\x0a\x00"])
def test_what_is_no_envelope_is_refused(body: bytes) -> None:
    assert "k8s\\x00" in problem(body)


def test_a_compressed_envelope_is_refused() -> None:
    body = envelope("v1", "Namespace", metadata("team"), contentEncoding="gzip")
    assert 'contentEncoding is "gzip"' in problem(body)


def test_truncated_bodies_are_refused() -> None:
    type_meta = message(1, text(1, "v1"), text(2, "ConfigMap"))
    body = MAGIC + type_meta + text(2, metadata("settings") + entry(2, "mode", "fast"))
    between = len(MAGIC) + len(type_meta)  # an envelope without raw is an empty object
    for end in (*range(len(MAGIC) + 1, between), *range(between + 1, len(body))):
        with pytest.raises(ProtobufError, match="ends inside"):
            decode_object(body[:end])


def test_a_string_that_is_not_utf8_is_refused() -> None:
    assert "metadata.name is not valid UTF-8" in problem(
        envelope("v1", "ConfigMap", message(1, text(1, b"\xff\xfe")))
    )


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_an_error_never_a_crash(data: bytes) -> None:
    for body in (MAGIC + data, envelope("apps/v1", "Deployment", data)):
        try:
            decoded = decode_object(body)
        except ProtobufError:
            continue
        json.dumps(decoded)  # whatever decodes is JSON


# -- end to end: kubectl's typed clients -------------------------------------------------------


@pytest.mark.anyio
async def test_create_namespace_configmap_secret_and_serviceaccount(kubectl: Kubectl) -> None:
    assert "namespace/team created" in (await kubectl("create", "namespace", "team")).stdout
    assert (await kubectl.json("get", "namespace", "team"))["status"]["phase"] == "Active"

    await kubectl("create", "configmap", "settings", "-n", "team",
                  "--from-literal=mode=fast", "--from-literal=empty=")  # fmt: skip
    configmap = await kubectl.json("get", "configmap", "settings", "-n", "team")
    assert configmap["data"] == {"mode": "fast", "empty": ""}

    await kubectl("create", "secret", "generic", "creds", "-n", "team", "--from-literal=pw=s3cret")
    secret = await kubectl.json("get", "secret", "creds", "-n", "team")
    assert secret["data"] == {"pw": "czNjcmV0"}
    assert secret["type"] == "Opaque"

    await kubectl("create", "serviceaccount", "builder", "-n", "team")
    account = await kubectl.json("get", "serviceaccount", "builder", "-n", "team")
    assert account["metadata"]["namespace"] == "team"
    assert account["metadata"]["uid"]


@pytest.mark.anyio
async def test_create_roles_and_bindings(kubectl: Kubectl) -> None:
    await kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods,pods/log")
    role = await kubectl.json("get", "role", "pod-reader")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
    ]

    await kubectl("create", "clusterrole", "monitoring",
                  "--aggregation-rule=example.com/aggregate-to-monitoring=true")  # fmt: skip
    aggregated = await kubectl.json("get", "clusterrole", "monitoring")
    assert aggregated["aggregationRule"] == {
        "clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-monitoring": "true"}}]
    }
    await kubectl("create", "clusterrole", "url-reader", "--verb=get", "--non-resource-url=/logs")
    urls = await kubectl.json("get", "clusterrole", "url-reader")
    assert urls["rules"] == [{"nonResourceURLs": ["/logs"], "verbs": ["get"]}]

    await kubectl("create", "rolebinding", "read-pods", "--role=pod-reader", "--user=developer",
                  "--group=team-a", "--serviceaccount=default:builder")  # fmt: skip
    binding = await kubectl.json("get", "rolebinding", "read-pods")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "pod-reader",
    }
    assert [(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]] == [
        ("User", "developer", None),
        ("Group", "team-a", None),
        ("ServiceAccount", "builder", "default"),
    ]
    assert binding["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"

    await kubectl("create", "clusterrolebinding", "watch-urls", "--clusterrole=url-reader",
                  "--user=developer")  # fmt: skip
    cluster_binding = await kubectl.json("get", "clusterrolebinding", "watch-urls")
    assert cluster_binding["roleRef"]["kind"] == "ClusterRole"
    assert cluster_binding["subjects"][0]["name"] == "developer"


@pytest.mark.anyio
async def test_create_deployment(kubectl: Kubectl) -> None:
    await kubectl("create", "deployment", "web", "--image=sandbox/http-echo:1", "--port=8080",
                  "--replicas=3")  # fmt: skip
    deployment = await kubectl.json("get", "deployment", "web")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "web"}
    [container] = spec["template"]["spec"]["containers"]
    assert container["name"] == "http-echo"
    assert container["image"] == "sandbox/http-echo:1"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert deployment["metadata"]["generation"] == 1

    # replicas: 0 is a value the client set, not an empty field to drop.
    await kubectl("create", "deployment", "idle", "--image=sandbox/tcp-echo:1", "--replicas=0")
    assert (await kubectl.json("get", "deployment", "idle"))["spec"]["replicas"] == 0


@pytest.mark.anyio
async def test_create_services(kubectl: Kubectl) -> None:
    await kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    service = await kubectl.json("get", "service", "web")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["clusterIP"].startswith("10.")
    assert service["spec"]["selector"] == {"app": "web"}
    assert service["spec"]["ports"] == [
        {"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}
    ]

    await kubectl("create", "service", "externalname", "search", "--external-name=example.com")
    external = await kubectl.json("get", "service", "search")
    assert external["spec"]["type"] == "ExternalName"
    assert external["spec"]["externalName"] == "example.com"


@pytest.mark.anyio
async def test_create_token(kubectl: Kubectl) -> None:
    token = (await kubectl("create", "token", "default")).stdout.strip()
    claims = jwt_claims(token)
    assert claims["sub"] == "system:serviceaccount:default:default"

    await kubectl("create", "serviceaccount", "builder")
    token = (await kubectl("create", "token", "builder", "--audience=ci", "--duration=2h")).stdout
    claims = jwt_claims(token.strip())
    assert claims["sub"] == "system:serviceaccount:default:builder"
    assert claims["aud"] == ["ci"]
    assert claims["exp"] - claims["iat"] == 7200


def jwt_claims(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert header
    assert signature
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * -(len(payload) % 4))
    )
    return claims


@pytest.mark.anyio
async def test_auth_whoami(kubectl: Kubectl) -> None:
    admin = (await kubectl("auth", "whoami")).stdout
    assert "kubernetes-admin" in admin
    assert "system:masters" in admin
    developer = await kubectl.as_context("sandbox-developer").json("auth", "whoami")
    assert developer["kind"] == "SelfSubjectReview"
    assert developer["status"]["userInfo"]["username"] == auth.DEVELOPER_USER


@pytest.mark.anyio
async def test_auth_can_i_before_and_after_a_role_binding(kubectl: Kubectl) -> None:
    developer = kubectl.as_context("sandbox-developer")
    await kubectl("create", "namespace", "team")
    denied = await developer("auth", "can-i", "list", "pods", "-n", "team", check=False)
    assert denied.returncode == 1
    assert denied.stdout.strip() == "no"
    assert (await kubectl("auth", "can-i", "list", "pods", "-n", "team")).stdout.strip() == "yes"

    await kubectl(
        "create", "role", "pod-reader", "-n", "team", "--verb=get,list", "--resource=pods"
    )
    await kubectl("create", "rolebinding", "developer-reads-pods", "-n", "team",
                  "--role=pod-reader", f"--user={auth.DEVELOPER_USER}")  # fmt: skip
    allowed = await developer("auth", "can-i", "list", "pods", "-n", "team")
    assert allowed.stdout.strip() == "yes"
    still_denied = await developer("auth", "can-i", "delete", "pods", "-n", "team", check=False)
    assert (still_denied.returncode, still_denied.stdout.strip()) == (1, "no")
    elsewhere = await developer("auth", "can-i", "list", "pods", "-n", "default", check=False)
    assert elsewhere.returncode == 1

    listed = (await developer("auth", "can-i", "--list", "-n", "team")).stdout.splitlines()
    assert any(line.split()[0] == "pods" and line.endswith("[get list]") for line in listed)


@pytest.mark.anyio
async def test_create_the_other_kinds(kubectl: Kubectl) -> None:
    await kubectl("create", "job", "once", "--image=sandbox/tcp-echo:1")
    job = await kubectl.json("get", "job", "once")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    await kubectl("create", "cronjob", "nightly", "--image=sandbox/tcp-echo:1",
                  "--schedule=0 3 * * *")  # fmt: skip
    assert (await kubectl.json("get", "cronjob", "nightly"))["spec"]["schedule"] == "0 3 * * *"

    await kubectl("create", "ingress", "web", "--rule=shop.example.com/api*=web:8080")
    [rule] = (await kubectl.json("get", "ingress", "web"))["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/api",
            "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 8080}}},
        }
    ]

    await kubectl("create", "poddisruptionbudget", "web", "--selector=app=web",
                  "--max-unavailable=25%")  # fmt: skip
    budget = await kubectl.json("get", "poddisruptionbudget", "web")
    assert budget["spec"]["maxUnavailable"] == "25%"

    await kubectl("create", "priorityclass", "low", "--value=-10", "--description=batch")
    low = await kubectl.json("get", "priorityclass", "low")
    assert (low["value"], low["description"]) == (-10, "batch")

    await kubectl("create", "quota", "small", "--hard=cpu=500m,pods=2")
    quota = await kubectl.json("get", "resourcequota", "small")
    assert quota["spec"]["hard"] == {"cpu": "500m", "pods": "2"}


# -- end to end: what the server answers to a body it cannot decode ----------------------------


@pytest.mark.anyio
async def test_the_server_answers_a_bad_protobuf_body_with_bad_request(apiserver: Running) -> None:
    credentials = auth.Credentials.load_or_create(apiserver.kubeconfig.parent / "pki")
    context = tls.client_context(credentials.ca.certificate, identity=credentials.admin)
    headers = {"Content-Type": "application/vnd.kubernetes.protobuf"}
    path = apiserver.url + "/api/v1/namespaces/default/configmaps"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        unknown = envelope("v1", "ConfigMap", metadata("settings") + number(42, 1))
        async with session.post(path, data=unknown, headers=headers) as response:
            status = await response.json()
        assert response.status == 400
        assert status["kind"] == "Status"
        assert status["reason"] == "BadRequest"
        assert "field 42 of k8s.io.api.core.v1.ConfigMap" in status["message"]
        assert "JSON" in status["message"]

        async with session.post(path, data=b"k8s\x00\x0a", headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["reason"] == "BadRequest"

        good = envelope("v1", "ConfigMap", metadata("settings") + entry(2, "a", "b"))
        async with session.post(path, data=good, headers=headers) as response:
            assert response.status == 201
            assert (await response.json())["data"] == {"a": "b"}

        cbor = {"Content-Type": "application/cbor"}
        async with session.post(path, data=b"\xa0", headers=cbor) as response:
            assert response.status == 415

        # A typed client's delete sends DeleteOptions in protobuf too.
        options = envelope("v1", "DeleteOptions", number(1, 0) + text(4, "Background"))
        async with session.delete(path + "/settings", data=options, headers=headers) as response:
            assert response.status == 200
        async with session.get(path + "/settings") as response:
            assert response.status == 404
