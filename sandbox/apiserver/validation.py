"""Validation and defaulting of Kubernetes objects, worded as the real API server words them.

What it is for
--------------
Clients look closely at what the API server says when it refuses a write. ``kubectl apply`` prints
the Status message verbatim, Helm matches on it, and controllers read ``details.causes`` to find
the field at fault. So this module does not merely accept or refuse: it returns the same causes,
with the same reasons, field paths and messages, as upstream ``ValidateX`` functions in
``k8s.io/kubernetes/pkg/apis/*/validation`` and ``k8s.io/apimachinery/pkg/util/validation`` do,
for a faithful subset of their rules. :func:`invalid_message` then builds the Status message the
way ``apierrors.NewInvalid`` does.

How a write is checked
----------------------
The real server decodes a request, runs defaulting (``SetDefaults_*``), admission, then
validation; it validates the defaulted object. The caller here does the same: :func:`default`
first, then :func:`validate`. Validation therefore reports a missing ``restartPolicy`` or
``dnsPolicy`` as ``Required value``, as upstream does: on a real server those are never missing
by then. :func:`validate` with ``old`` runs update validation: object-meta immutability, then the
kind's rules, then its immutable fields.

How messages are rendered
-------------------------
A cause's message is ``field.Error.ErrorBody()``: the error type's text (``Invalid value``,
``Required value``, ...), then the bad value, then the detail. Strings are quoted as Go's ``%q``;
integers and booleans print plainly; anything else (a map of labels, a label selector, a list)
has been printed as JSON since Kubernetes 1.34, so a mismatched template now reads
``Invalid value: {"app":"web"}: `selector` does not match template `labels```. Upstream renders
its *internal* types, which have no JSON tags: their fields print with Go names
(``{"APIGroup":...,"Kind":...,"Name":...}``), and this module builds those structs in field order.

Tables rather than chains
-------------------------
Kinds map to their validators, defaulters and name rules through dicts keyed by
``(group, kind)``; a kind not in them (a custom resource, or a built-in not modelled) gets only
metadata validation, which is what the apiextensions server does for custom resources.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sandbox.apiserver.goformat import go_quote
from sandbox.apiserver.selectors import labels_match, requirements_from_selector

__all__ = [
    "Cause",
    "decode_error",
    "default",
    "invalid_message",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_qualified_name",
    "is_valid_label_value",
    "validate",
    "validate_name",
]

type Obj = dict[str, Any]

# API groups, as the (group, kind) keys below spell them.
CORE: Final = ""
APPS: Final = "apps"
BATCH: Final = "batch"
RBAC: Final = "rbac.authorization.k8s.io"
APIEXT: Final = "apiextensions.k8s.io"
ADMISSION: Final = "admissionregistration.k8s.io"
COORDINATION: Final = "coordination.k8s.io"
EVENTS: Final = "events.k8s.io"
DISCOVERY: Final = "discovery.k8s.io"


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of a Status's ``details.causes``, as ``apierrors.NewInvalid`` fills it.

    Attributes:
        reason: The cause type, e.g. ``FieldValueRequired`` or ``FieldValueInvalid``.
        message: The error body without the field, e.g. ``Required value``.
        field: The field path, e.g. ``spec.template.spec.containers[0].image``.
    """

    reason: str
    message: str
    field: str

    def as_status_cause(self) -> dict[str, str]:
        """Returns the cause as the JSON object a Status carries (``reason``, ``message``,
        ``field``)."""
        return {"reason": self.reason, "message": self.message, "field": self.field}


# ---------------------------------------------------------------------------------------------
# Go value rendering (fmt's %q, encoding/json)
# ---------------------------------------------------------------------------------------------


class _GoStruct(dict[str, Any]):
    """A Go struct to render as JSON: fields keep their declared order (maps sort their keys)."""


def _json_string(text: str) -> str:
    # encoding/json escapes <, > and & for HTML safety, and U+2028/U+2029, but not other
    # non-ASCII runes.
    encoded = json.dumps(text, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(raw, escaped)
    return encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_json(value: Any) -> str:
    """Renders ``value`` as Go's ``json.Marshal`` would: compact, map keys sorted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, _GoStruct):
        return "{" + ",".join(f"{_json_string(k)}:{_go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_json_string(str(k))}:{_go_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return _json_string(str(value))


def _go_float(value: float) -> str:
    text = repr(value)
    return text.removesuffix(".0")


def _render(value: Any) -> str:
    """Renders a bad value as ``field.Error.ErrorBody`` does (Kubernetes 1.34 and later)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return _go_json(value)


# ---------------------------------------------------------------------------------------------
# Collecting errors (k8s.io/apimachinery/pkg/util/validation/field)
# ---------------------------------------------------------------------------------------------

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
DUPLICATE: Final = "FieldValueDuplicate"
FORBIDDEN: Final = "FieldValueForbidden"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
NOT_FOUND: Final = "FieldValueNotFound"

_TYPE_TEXT: Final = {
    REQUIRED: "Required value",
    INVALID: "Invalid value",
    NOT_SUPPORTED: "Unsupported value",
    DUPLICATE: "Duplicate value",
    FORBIDDEN: "Forbidden",
    TOO_LONG: "Too long",
    TOO_MANY: "Too many",
    NOT_FOUND: "Not found",
}

# Upstream's immutability detail (apimachinery's FieldImmutableErrorMsg).
IMMUTABLE: Final = "field is immutable"


class _Errors:
    """An ``ErrorList`` under construction; each method is the ``field`` constructor of its name."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def _add(self, reason: str, path: str, body: str, detail: str) -> None:
        message = f"{body}: {detail}" if detail else body
        self.causes.append(Cause(reason, message, path))

    def required(self, path: str, detail: str = "") -> None:
        self._add(REQUIRED, path, _TYPE_TEXT[REQUIRED], detail)

    def forbidden(self, path: str, detail: str) -> None:
        self._add(FORBIDDEN, path, _TYPE_TEXT[FORBIDDEN], detail)

    def too_long(self, path: str, max_length: int) -> None:
        unit = "byte" if max_length == 1 else "bytes"
        self._add(TOO_LONG, path, _TYPE_TEXT[TOO_LONG], f"may not be more than {max_length} {unit}")

    def too_many(self, path: str, actual: int, maximum: int) -> None:
        unit = "item" if maximum == 1 else "items"
        body = f"{_TYPE_TEXT[TOO_MANY]}: {actual}"
        self._add(TOO_MANY, path, body, f"must have at most {maximum} {unit}")

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self._add(INVALID, path, f"{_TYPE_TEXT[INVALID]}: {_render(value)}", detail)

    def not_supported(self, path: str, value: Any, valid: Sequence[str]) -> None:
        detail = "supported values: " + ", ".join(go_quote(v) for v in valid) if valid else ""
        self._add(NOT_SUPPORTED, path, f"{_TYPE_TEXT[NOT_SUPPORTED]}: {_render(value)}", detail)

    def duplicate(self, path: str, value: Any) -> None:
        self._add(DUPLICATE, path, f"{_TYPE_TEXT[DUPLICATE]}: {_render(value)}", "")

    def not_found(self, path: str, value: Any) -> None:
        self._add(NOT_FOUND, path, f"{_TYPE_TEXT[NOT_FOUND]}: {_render(value)}", "")

    def each_invalid(self, path: str, value: Any, messages: Iterable[str]) -> None:
        """One ``Invalid`` per message, as upstream's ``for _, msg := range ...`` loops add."""
        for msg in messages:
            self.invalid(path, value, msg)

    def immutable(self, path: str, new: Any, old: Any) -> None:
        """``ValidateImmutableField``: reports the new value when it differs from the old."""
        if _semantic(new) != _semantic(old):
            self.invalid(path, new, IMMUTABLE)


def _semantic(value: Any) -> Any:
    # apiequality.Semantic.DeepEqual treats a nil and an empty map or slice alike for most fields
    # once they have been through the internal types.
    if value in ({}, [], None, ""):
        return None
    return value


def invalid_message(kind: str, name: str, causes: Sequence[Cause], *, group: str = "") -> str:
    """Builds the Status message of a 422 Invalid, as ``apierrors.NewInvalid`` does.

    Args:
        kind: The kind, already qualified (``Deployment.apps``) or bare (``ConfigMap``).
        name: The object's name (may be empty for a generateName create).
        causes: The causes, in order; repeated messages are shown once.
        group: When given, qualifies a bare ``kind`` as ``schema.GroupKind.String`` does.

    Returns:
        ``'Deployment.apps "web" is invalid: [spec.selector: Required value, ...]'``, without
        brackets for a single cause.
    """
    qualified = f"{kind}.{group}" if group else kind
    head = f"{qualified} {go_quote(name)} is invalid"
    seen: list[str] = []
    for cause in causes:
        text = f"{cause.field}: {cause.message}"
        if text not in seen:
            seen.append(text)
    if not seen:
        return head
    if len(seen) == 1:
        return f"{head}: {seen[0]}"
    return f"{head}: [{', '.join(seen)}]"


# ---------------------------------------------------------------------------------------------
# String formats (k8s.io/apimachinery/pkg/util/validation, .../api/validate/content)
# ---------------------------------------------------------------------------------------------

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG: Final = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character"
)
_QNAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_FMT: Final = "(" + _QNAME_FMT + ")?"
_LABEL_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_CONFIG_KEY_FMT: Final = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_MSG: Final = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
)
_PERCENT_FMT: Final = "[0-9]+%"
_PERCENT_MSG: Final = "a valid percent string must be a numeric string followed by an ending '%'"

_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE: Final = re.compile(_DNS1035_LABEL_FMT)
_QNAME_RE: Final = re.compile(_QNAME_FMT)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_CONFIG_KEY_RE: Final = re.compile(_CONFIG_KEY_FMT)
_PERCENT_RE: Final = re.compile(_PERCENT_FMT)
_PORT_NAME_CHARSET_RE: Final = re.compile("[-a-z0-9]+")
_PORT_NAME_LETTER_RE: Final = re.compile("[a-z]")

_DNS1123_LABEL_MAX: Final = 63
_DNS1123_SUBDOMAIN_MAX: Final = 253
_LABEL_VALUE_MAX: Final = 63
_TOTAL_ANNOTATION_SIZE: Final = 256 * 1024
_MAX_SECRET_SIZE: Final = 1024 * 1024


def _full(pattern: re.Pattern[str], value: str) -> bool:
    # Go's regexps are anchored with ^...$; fullmatch is the same and ignores a final newline.
    return pattern.fullmatch(value) is not None


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # validation.RegexError, including its quirk of a double space before "or" when there are
    # several examples ("'my-name',  or '123-abc'").
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    msg += " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            msg += " or "
        msg += f"'{example}', "
    return msg + f"regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _range_error(low: int, high: int) -> str:
    return f"must be between {low} and {high}, inclusive"


def is_dns1123_label(value: str) -> list[str]:
    """Checks an RFC 1123 label (``validation.IsDNS1123Label``).

    Args:
        value: The candidate, e.g. a namespace or container name.

    Returns:
        Upstream's messages; empty when valid.
    """
    errs: list[str] = []
    if len(value) > _DNS1123_LABEL_MAX:
        errs.append(_max_len_error(_DNS1123_LABEL_MAX))
    if not _full(_DNS1123_LABEL_RE, value):
        if _full(_DNS1123_SUBDOMAIN_RE, value):
            # A valid subdomain that is not a valid label: having checked the length, dots.
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Checks an RFC 1123 subdomain (``validation.IsDNS1123Subdomain``), the usual object name.

    Args:
        value: The candidate.

    Returns:
        Upstream's messages; empty when valid.
    """
    errs: list[str] = []
    if len(value) > _DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len_error(_DNS1123_SUBDOMAIN_MAX))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Checks an RFC 1035 label (``validation.IsDNS1035Label``): a Service's name.

    Args:
        value: The candidate.

    Returns:
        Upstream's messages; empty when valid.
    """
    errs: list[str] = []
    if len(value) > _DNS1123_LABEL_MAX:
        errs.append(_max_len_error(_DNS1123_LABEL_MAX))
    if not _full(_DNS1035_LABEL_RE, value):
        errs.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Checks a qualified name, the form of label and annotation keys (``content.IsLabelKey``).

    Args:
        value: The candidate, e.g. ``app.kubernetes.io/name``.

    Returns:
        Upstream's messages; empty when valid.
    """
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + msg for msg in is_dns1123_subdomain(prefix))
    else:
        return [
            "a valid label key "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > _LABEL_VALUE_MAX:
        errs.append("name part " + _max_len_error(_LABEL_VALUE_MAX))
    if not _full(_QNAME_RE, name):
        errs.append(
            "name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    """Checks a label value (``content.IsLabelValue``): 63 characters at most, possibly empty.

    Args:
        value: The candidate.

    Returns:
        Upstream's messages; empty when valid.
    """
    errs: list[str] = []
    if len(value) > _LABEL_VALUE_MAX:
        errs.append(_max_len_error(_LABEL_VALUE_MAX))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def _has_chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def _is_config_map_key(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > _DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len_error(_DNS1123_SUBDOMAIN_MAX))
    if not _full(_CONFIG_KEY_RE, value):
        errs.append(
            _regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")
        )
    return errs + _has_chdir_prefix(value)


def _is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [_range_error(1, 65535)]


def _is_valid_port_name(port: str) -> list[str]:
    errs: list[str] = []
    if len(port) > 15:
        errs.append(_max_len_error(15))
    if not _full(_PORT_NAME_CHARSET_RE, port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER_RE.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port.startswith("-") or port.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _is_env_var_name(value: str) -> list[str]:
    # RelaxedEnvironmentVariableValidation is GA (1.34): any printable ASCII but '='.
    errs: list[str] = []
    if not value:
        errs.append("environment variable name must be non-empty")
    if any(ord(ch) > 127 or not ch.isprintable() or ch == "=" for ch in value):
        errs.append(
            "a valid environment variable name must consist only of printable ASCII characters "
            "other than '='"
        )
    return errs


def _is_valid_ip(value: str) -> bool:
    # netutils.ParseIPSloppy also takes IPv4 octets with leading zeros.
    try:
        ipaddress.ip_address(value)
    except ValueError:
        parts = value.split(".")
        return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts)
    return True


_LINK_LOCAL_MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/24")


def _non_special_ip(errs: _Errors, path: str, value: str) -> None:
    # apivalidation.ValidateNonSpecialIP: endpoints may not point at these ranges.
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return
    if addr.is_unspecified:
        errs.invalid(path, value, "may not be unspecified (0.0.0.0)")
    elif addr.is_loopback:
        errs.invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
    elif addr.is_link_local:
        errs.invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    elif addr in _LINK_LOCAL_MULTICAST_V4 or (
        # net.IP.IsLinkLocalMulticast: ff02::/16 and the other "ffX2" scopes.
        addr.version == 6 and addr.packed[0] == 0xFF and addr.packed[1] & 0x0F == 0x02
    ):
        errs.invalid(
            path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        )


# ---------------------------------------------------------------------------------------------
# Names: the rule each kind's strategy passes to ValidateObjectMeta
# ---------------------------------------------------------------------------------------------

type _NameFn = Callable[[str, bool], list[str]]


def _mask_trailing_dash(name: str) -> str:
    # apimachinery's maskTrailingDash, quirk and all: it drops the last *two* characters.
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def _name_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def _name_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def _name_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def _name_path_segment(name: str, prefix: bool) -> list[str]:
    # path.ValidatePathSegmentName: what RBAC objects and the generic registry accept.
    if not prefix and name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{bad}'" for bad in ("/", "%") if bad in name]


_NAME_RULES: Final[dict[tuple[str, str], _NameFn]] = {
    (CORE, "Namespace"): _name_dns_label,
    (CORE, "Service"): _name_dns1035_label,
    # Legacy core/v1 Events skip strategy name checks; the registry's generic check remains.
    (CORE, "Event"): _name_path_segment,
    (RBAC, "Role"): _name_path_segment,
    (RBAC, "ClusterRole"): _name_path_segment,
    (RBAC, "RoleBinding"): _name_path_segment,
    (RBAC, "ClusterRoleBinding"): _name_path_segment,
}


def validate_name(group: str, kind: str, name: str, *, prefix: bool = False) -> list[str]:
    """Checks an object name with the rule its kind's strategy uses.

    Most kinds take a DNS-1123 subdomain (253 characters); a Namespace a DNS-1123 label (63); a
    Service an RFC 1035 label (it must start with a letter, as it becomes a DNS name and an
    environment variable prefix); RBAC objects any path segment (no ``/`` or ``%``, not ``.`` or
    ``..``).

    Args:
        group: API group, ``""`` for the core group.
        kind: Kind, e.g. ``Service``.
        name: The name, or a generateName prefix when ``prefix`` is set.
        prefix: Checks a generateName prefix: a trailing ``-`` is allowed.

    Returns:
        Upstream's messages; empty when valid.
    """
    rule = _NAME_RULES.get((group, kind), _name_dns_subdomain)
    return rule(name, prefix)


# Scope of the built-in kinds, for the namespace checks of ValidateObjectMeta.
_CLUSTER_SCOPED: Final = frozenset(
    {
        (CORE, "Namespace"),
        (CORE, "Node"),
        (CORE, "PersistentVolume"),
        (RBAC, "ClusterRole"),
        (RBAC, "ClusterRoleBinding"),
        (APIEXT, "CustomResourceDefinition"),
        (ADMISSION, "MutatingWebhookConfiguration"),
        (ADMISSION, "ValidatingWebhookConfiguration"),
        (ADMISSION, "ValidatingAdmissionPolicy"),
        (ADMISSION, "ValidatingAdmissionPolicyBinding"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("apiregistration.k8s.io", "APIService"),
        ("networking.k8s.io", "IngressClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
    }
)
_NAMESPACED: Final = frozenset(
    {
        (CORE, kind)
        for kind in (
            "Pod",
            "Service",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Endpoints",
            "Event",
            "PersistentVolumeClaim",
            "PodTemplate",
            "ReplicationController",
            "LimitRange",
            "ResourceQuota",
        )
    }
    | {
        (APPS, "Deployment"),
        (APPS, "ReplicaSet"),
        (APPS, "StatefulSet"),
        (APPS, "DaemonSet"),
        (APPS, "ControllerRevision"),
        (BATCH, "Job"),
        (BATCH, "CronJob"),
        (RBAC, "Role"),
        (RBAC, "RoleBinding"),
        (COORDINATION, "Lease"),
        (EVENTS, "Event"),
        (DISCOVERY, "EndpointSlice"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("policy", "PodDisruptionBudget"),
        ("autoscaling", "HorizontalPodAutoscaler"),
    }
)


def _scope(group: str, kind: str) -> bool | None:
    if (group, kind) in _NAMESPACED:
        return True
    if (group, kind) in _CLUSTER_SCOPED:
        return False
    return None


# ---------------------------------------------------------------------------------------------
# Reading loosely typed JSON objects without tripping over wrong types
# ---------------------------------------------------------------------------------------------


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _i(value: Any, fallback: int = 0) -> int:
    if isinstance(value, bool):
        return fallback
    return value if isinstance(value, int) else fallback


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


# ---------------------------------------------------------------------------------------------
# Object metadata (apimachinery/pkg/api/validation/objectmeta.go, meta/v1/validation)
# ---------------------------------------------------------------------------------------------


def _validate_labels(errs: _Errors, labels: Any, path: str) -> None:
    # ValidateLabels reports every bad key and value at the map's path, not the entry's. Go
    # walks the map in random order; sorted keys make the order stable.
    for key, value in sorted(_d(labels).items()):
        errs.each_invalid(path, key, is_qualified_name(key))
        if isinstance(value, str):
            errs.each_invalid(path, value, is_valid_label_value(value))


def _validate_annotations(errs: _Errors, annotations: Any, path: str) -> None:
    items = _d(annotations)
    for key in sorted(items):
        # A qualified name, except that case does not matter.
        errs.each_invalid(path, key, is_qualified_name(key.lower()))
    size = sum(len(k.encode()) + len(_s(v).encode()) for k, v in items.items())
    if size > _TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, _TOTAL_ANNOTATION_SIZE)


def _validate_owner_references(errs: _Errors, refs: Any, path: str) -> None:
    first_controller = ""
    for ref in _l(refs):
        ref_d = _d(ref)
        api_version = _s(ref_d.get("apiVersion"))
        version = api_version.rsplit("/", 1)[-1] if api_version.count("/") <= 1 else ""
        if not version:
            errs.invalid(f"{path}.apiVersion", api_version, "version must not be empty")
        if not _s(ref_d.get("kind")):
            errs.invalid(f"{path}.kind", _s(ref_d.get("kind")), "must not be empty")
        if not _s(ref_d.get("name")):
            errs.invalid(f"{path}.name", _s(ref_d.get("name")), "must not be empty")
        if not _s(ref_d.get("uid")):
            errs.invalid(f"{path}.uid", _s(ref_d.get("uid")), "must not be empty")
        if ref_d.get("controller") is True:
            current = f"{_s(ref_d.get('kind'))}/{_s(ref_d.get('name'))}"
            if first_controller:
                errs.invalid(
                    path,
                    refs,
                    'Only one reference can have Controller set to true. Found "true" in '
                    f"references for {first_controller} and {current}",
                )
            else:
                first_controller = current


def _validate_finalizers(errs: _Errors, finalizers: Any, path: str) -> None:
    for finalizer in _l(finalizers):
        if isinstance(finalizer, str):
            errs.each_invalid(path, finalizer, is_qualified_name(finalizer))


def _validate_object_meta(
    errs: _Errors, meta: Obj, name_fn: _NameFn, namespaced: bool | None, path: str = "metadata"
) -> None:
    """``ValidateObjectMetaAccessor``: names, namespace, labels, annotations, owners."""
    generate_name = _s(meta.get("generateName"))
    if generate_name:
        errs.each_invalid(f"{path}.generateName", generate_name, name_fn(generate_name, True))
    name = _s(meta.get("name"))
    if not name:
        errs.required(f"{path}.name", "name or generateName is required")
    else:
        errs.each_invalid(f"{path}.name", name, name_fn(name, False))
    namespace = _s(meta.get("namespace"))
    if namespaced is True:
        if not namespace:
            errs.required(f"{path}.namespace")
        else:
            errs.each_invalid(f"{path}.namespace", namespace, _name_dns_label(namespace, False))
    elif namespaced is False and namespace:
        errs.forbidden(f"{path}.namespace", "not allowed on this type")
    generation = _i(meta.get("generation"))
    if generation < 0:
        errs.invalid(f"{path}.generation", generation, "must be greater than or equal to 0")
    _validate_labels(errs, meta.get("labels"), f"{path}.labels")
    _validate_annotations(errs, meta.get("annotations"), f"{path}.annotations")
    _validate_owner_references(errs, meta.get("ownerReferences"), f"{path}.ownerReferences")
    _validate_finalizers(errs, meta.get("finalizers"), f"{path}.finalizers")


def _validate_object_meta_update(errs: _Errors, new: Obj, old: Obj, path: str = "metadata") -> None:
    """``ValidateObjectMetaAccessorUpdate``, less what the registry settles before validation
    (resourceVersion, generation and timestamps are copied from the stored object by
    ``rest.BeforeUpdate``)."""
    if old.get("deletionTimestamp"):
        extra = sorted(set(_l(new.get("finalizers"))) - set(_l(old.get("finalizers"))))
        if extra:
            listed = "[]string{" + ", ".join(go_quote(str(f)) for f in extra) + "}"
            errs.forbidden(
                f"{path}.finalizers",
                f"no new finalizers can be added if the object is being deleted, found new "
                f"finalizers {listed}",
            )
    for key in ("name", "namespace", "uid"):
        new_value, old_value = _s(new.get(key)), _s(old.get(key))
        if new_value != old_value:
            errs.invalid(f"{path}.{key}", new_value, IMMUTABLE)
    _validate_labels(errs, new.get("labels"), f"{path}.labels")
    _validate_annotations(errs, new.get("annotations"), f"{path}.annotations")
    _validate_owner_references(errs, new.get("ownerReferences"), f"{path}.ownerReferences")
    _validate_finalizers(errs, new.get("finalizers"), f"{path}.finalizers")


# ---------------------------------------------------------------------------------------------
# Label selectors (meta/v1/validation, labels.Selector)
# ---------------------------------------------------------------------------------------------

_SELECTOR_OPS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def _validate_label_selector(errs: _Errors, selector: Any, path: str) -> None:
    sel = _d(selector)
    _validate_labels(errs, sel.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(_l(sel.get("matchExpressions"))):
        expr_d = _d(expr)
        epath = f"{path}.matchExpressions[{i}]"
        operator = _s(expr_d.get("operator"))
        values = _l(expr_d.get("values"))
        if operator in ("In", "NotIn"):
            if not values:
                errs.required(
                    f"{epath}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(
                    f"{epath}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
        else:
            errs.invalid(f"{epath}.operator", operator, "not a valid selector operator")
        errs.each_invalid(
            f"{epath}.key", _s(expr_d.get("key")), is_qualified_name(_s(expr_d.get("key")))
        )
        for j, value in enumerate(values):
            if isinstance(value, str):
                errs.each_invalid(f"{epath}.values[{j}]", value, is_valid_label_value(value))


def _selector_convertible(selector: Any) -> bool:
    """Whether ``metav1.LabelSelectorAsSelector`` would succeed."""
    probe = _Errors()
    _validate_label_selector(probe, selector, "")
    return not probe.causes


def _selector_is_empty(selector: Any) -> bool:
    sel = _d(selector)
    return not _d(sel.get("matchLabels")) and not _l(sel.get("matchExpressions"))


def _selector_matches(selector: Any, labels: Any) -> bool:
    """``labels.Selector.Matches`` for a selector already checked convertible; a nil selector
    matches nothing, an empty one everything."""
    if selector is None:
        return False
    sel = _d(selector)
    shaped = {
        "matchLabels": _d(sel.get("matchLabels")),
        "matchExpressions": [_d(e) for e in _l(sel.get("matchExpressions"))],
    }
    return labels_match(requirements_from_selector(shaped), _d(labels))


def _selector_value(selector: Any) -> Any:
    """A ``*metav1.LabelSelector`` as JSON renders it (the versioned type, with ``omitempty``)."""
    if selector is None:
        return None
    sel = _d(selector)
    out = _GoStruct()
    if _d(sel.get("matchLabels")):
        out["matchLabels"] = dict(sel["matchLabels"])
    exprs = []
    for expr in _l(sel.get("matchExpressions")):
        expr_d = _d(expr)
        item = _GoStruct(key=_s(expr_d.get("key")), operator=_s(expr_d.get("operator")))
        if _l(expr_d.get("values")):
            item["values"] = list(expr_d["values"])
        exprs.append(item)
    if exprs:
        out["matchExpressions"] = exprs
    return out


def _labels_value(labels: Any) -> Any:
    """A ``map[string]string`` as JSON renders it: ``null`` when absent."""
    return dict(labels) if isinstance(labels, dict) else None


def _int_or_string_value(value: Any) -> Any:
    """An ``intstr.IntOrString`` as its ``MarshalJSON`` renders it (zero value: ``0``)."""
    return value if isinstance(value, int | str) else 0


# ---------------------------------------------------------------------------------------------
# Pods and pod templates (pkg/apis/core/validation)
# ---------------------------------------------------------------------------------------------

_PORT_PROTOCOLS: Final = ("SCTP", "TCP", "UDP")
_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")
_DNS_POLICIES: Final = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
_TERMINATION_MESSAGE_POLICIES: Final = ("File", "FallbackToLogsOnError")
_TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_POD_UPDATABLE: Final = (
    "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _validate_volumes(errs: _Errors, volumes: Any, path: str) -> set[str]:
    """``ValidateVolumes``: returns the names that passed, for the volume mounts to check."""
    names: set[str] = set()
    for i, vol in enumerate(_l(volumes)):
        vol_d = _d(vol)
        vpath = f"{path}[{i}]"
        local = _Errors()
        sources = [k for k, v in vol_d.items() if k != "name" and v is not None]
        if not sources:
            local.required(vpath, "must specify a volume type")
        for extra in sources[1:]:
            local.forbidden(f"{vpath}.{extra}", "may not specify more than 1 volume type")
        name = _s(vol_d.get("name"))
        if not name:
            local.required(f"{vpath}.name")
        else:
            local.each_invalid(f"{vpath}.name", name, is_dns1123_label(name))
        if name in names:
            local.duplicate(f"{vpath}.name", name)
        if local.causes:
            errs.causes.extend(local.causes)
        else:
            names.add(name)
    return names


def _validate_container_ports(errs: _Errors, ports: Any, path: str) -> None:
    names: set[str] = set()
    for i, port in enumerate(_l(ports)):
        port_d = _d(port)
        ppath = f"{path}[{i}]"
        name = _s(port_d.get("name"))
        if name:
            msgs = _is_valid_port_name(name)
            if msgs:
                errs.each_invalid(f"{ppath}.name", name, msgs)
            elif name in names:
                errs.duplicate(f"{ppath}.name", name)
            else:
                names.add(name)
        container_port = _i(port_d.get("containerPort"))
        if container_port == 0:
            errs.required(f"{ppath}.containerPort")
        else:
            errs.each_invalid(
                f"{ppath}.containerPort", container_port, _is_valid_port_num(container_port)
            )
        host_port = _i(port_d.get("hostPort"))
        if host_port:
            errs.each_invalid(f"{ppath}.hostPort", host_port, _is_valid_port_num(host_port))
        protocol = _s(port_d.get("protocol"))
        if not protocol:
            errs.required(f"{ppath}.protocol")
        elif protocol not in _PORT_PROTOCOLS:
            errs.not_supported(f"{ppath}.protocol", protocol, _PORT_PROTOCOLS)


def _validate_key_selector(errs: _Errors, selector: Any, path: str) -> None:
    sel = _d(selector)
    name = _s(sel.get("name"))
    errs.each_invalid(f"{path}.name", name, _name_dns_subdomain(name, False))
    key = _s(sel.get("key"))
    if not key:
        errs.required(f"{path}.key")
    else:
        errs.each_invalid(f"{path}.key", key, _is_config_map_key(key))


_ENV_SOURCES: Final = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def _validate_env(errs: _Errors, env: Any, path: str) -> None:
    for i, var in enumerate(_l(env)):
        var_d = _d(var)
        epath = f"{path}[{i}]"
        name = _s(var_d.get("name"))
        if not name:
            errs.required(f"{epath}.name")
        errs.each_invalid(f"{epath}.name", name, _is_env_var_name(name))
        value_from = var_d.get("valueFrom")
        if value_from is None:
            continue
        from_d = _d(value_from)
        present = [k for k in _ENV_SOURCES if from_d.get(k) is not None]
        for key in ("configMapKeyRef", "secretKeyRef"):
            if key in present:
                _validate_key_selector(errs, from_d[key], f"{epath}.valueFrom.{key}")
        if not present:
            errs.invalid(
                f"{epath}.valueFrom",
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or "
                "`secretKeyRef`",
            )
        elif _s(var_d.get("value")):
            errs.invalid(f"{epath}.valueFrom", "", "may not be specified when `value` is not empty")
        elif len(present) > 1:
            errs.invalid(
                f"{epath}.valueFrom", "", "may not have more than one field specified at a time"
            )


def _validate_volume_mounts(errs: _Errors, mounts: Any, volumes: set[str], path: str) -> None:
    seen: set[str] = set()
    for i, mount in enumerate(_l(mounts)):
        mount_d = _d(mount)
        mpath = f"{path}[{i}]"
        name = _s(mount_d.get("name"))
        if not name:
            errs.required(f"{mpath}.name")
        if name not in volumes:
            errs.not_found(f"{mpath}.name", name)
        mount_path = _s(mount_d.get("mountPath"))
        if not mount_path:
            errs.required(f"{mpath}.mountPath")
        if mount_path in seen:
            errs.invalid(f"{mpath}.mountPath", mount_path, "must be unique")
        seen.add(mount_path)


def _validate_container_common(errs: _Errors, ctr: Obj, volumes: set[str], path: str) -> None:
    """``validateContainerCommon``: what regular, init and ephemeral containers share."""
    name = _s(ctr.get("name"))
    if not name:
        errs.required(f"{path}.name")
    else:
        errs.each_invalid(f"{path}.name", name, is_dns1123_label(name))
    # Only emptiness is checked: " " is a special image token in some pod templates.
    if not _s(ctr.get("image")):
        errs.required(f"{path}.image")
    policy = _s(ctr.get("terminationMessagePolicy"))
    if not policy:
        errs.required(f"{path}.terminationMessagePolicy")
    elif policy not in _TERMINATION_MESSAGE_POLICIES:
        errs.not_supported(
            f"{path}.terminationMessagePolicy", policy, _TERMINATION_MESSAGE_POLICIES
        )
    _validate_container_ports(errs, ctr.get("ports"), f"{path}.ports")
    _validate_env(errs, ctr.get("env"), f"{path}.env")
    _validate_volume_mounts(errs, ctr.get("volumeMounts"), volumes, f"{path}.volumeMounts")
    pull = _s(ctr.get("imagePullPolicy"))
    if not pull:
        errs.required(f"{path}.imagePullPolicy")
    elif pull not in _PULL_POLICIES:
        errs.not_supported(f"{path}.imagePullPolicy", pull, _PULL_POLICIES)


def _validate_tolerations(errs: _Errors, tolerations: Any, path: str) -> None:
    for i, tol in enumerate(_l(tolerations)):
        tol_d = _d(tol)
        tpath = f"{path}[{i}]"
        key, operator = _s(tol_d.get("key")), _s(tol_d.get("operator"))
        value, effect = _s(tol_d.get("value")), _s(tol_d.get("effect"))
        if key:
            errs.each_invalid(f"{tpath}.key", key, is_qualified_name(key))
        if not key and operator != "Exists":
            errs.invalid(
                f"{tpath}.operator",
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and '
                'all keys"',
            )
        if tol_d.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(
                f"{tpath}.effect",
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        if operator in ("Equal", ""):
            msgs = is_valid_label_value(value)
            if msgs:
                errs.invalid(f"{tpath}.operator", value, ";".join(msgs))
        elif operator == "Exists":
            if value:
                errs.invalid(
                    f"{tpath}.operator",
                    _GoStruct(
                        Key=key,
                        Operator=operator,
                        Value=value,
                        Effect=effect,
                        TolerationSeconds=tol_d.get("tolerationSeconds"),
                    ),
                    "value must be empty when `operator` is 'Exists'",
                )
        else:
            errs.not_supported(f"{tpath}.operator", operator, ("Equal", "Exists"))
        if effect and effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{tpath}.effect", effect, _TAINT_EFFECTS)


def _validate_pod_spec(errs: _Errors, spec: Obj, path: str) -> None:
    """``ValidatePodSpec``, for the rules modelled here, in upstream's order."""
    volumes = _validate_volumes(errs, spec.get("volumes"), f"{path}.volumes")
    containers = _l(spec.get("containers"))
    names: set[str] = set()
    if not containers:
        errs.required(f"{path}.containers")
    for i, ctr in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        ctr_d = _d(ctr)
        _validate_container_common(errs, ctr_d, volumes, cpath)
        name = _s(ctr_d.get("name"))
        if name in names:
            errs.duplicate(f"{cpath}.name", name)
        else:
            names.add(name)
    # Init container names must be unique across regular and init containers.
    for i, ctr in enumerate(_l(spec.get("initContainers"))):
        cpath = f"{path}.initContainers[{i}]"
        ctr_d = _d(ctr)
        _validate_container_common(errs, ctr_d, volumes, cpath)
        restart = ctr_d.get("restartPolicy")
        if restart is not None and restart != "Always":
            errs.not_supported(f"{cpath}.restartPolicy", restart, ("Always",))
        name = _s(ctr_d.get("name"))
        if name in names:
            errs.duplicate(f"{cpath}.name", name)
        elif name:
            names.add(name)
    restart_policy = _s(spec.get("restartPolicy"))
    if not restart_policy:
        errs.required(f"{path}.restartPolicy")
    elif restart_policy not in _RESTART_POLICIES:
        errs.not_supported(f"{path}.restartPolicy", restart_policy, _RESTART_POLICIES)
    dns_policy = _s(spec.get("dnsPolicy"))
    if not dns_policy:
        errs.required(f"{path}.dnsPolicy")
    elif dns_policy not in _DNS_POLICIES:
        errs.not_supported(f"{path}.dnsPolicy", dns_policy, _DNS_POLICIES)
    _validate_labels(errs, spec.get("nodeSelector"), f"{path}.nodeSelector")
    for i, secret in enumerate(_l(spec.get("imagePullSecrets"))):
        if not _s(_d(secret).get("name")):
            errs.required(f"{path}.imagePullSecrets[{i}].name")
    sa_name = _s(spec.get("serviceAccountName"))
    if sa_name:
        errs.each_invalid(
            f"{path}.serviceAccountName", sa_name, _name_dns_subdomain(sa_name, False)
        )
    node_name = _s(spec.get("nodeName"))
    if node_name:
        errs.each_invalid(f"{path}.nodeName", node_name, _name_dns_subdomain(node_name, False))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not 1 <= deadline <= 2**31 - 1:
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline, _range_error(1, 2**31 - 1))
    for key in ("hostname", "subdomain"):
        value = _s(spec.get(key))
        if value:
            errs.each_invalid(f"{path}.{key}", value, is_dns1123_label(value))
    _validate_tolerations(errs, spec.get("tolerations"), f"{path}.tolerations")


def _validate_pod_template(errs: _Errors, template: Any, path: str) -> None:
    """``ValidatePodTemplateSpec``; note upstream reports template labels at
    ``<path>.labels``, not ``<path>.metadata.labels``."""
    tmpl = _d(template)
    meta = _d(tmpl.get("metadata"))
    _validate_labels(errs, meta.get("labels"), f"{path}.labels")
    _validate_annotations(errs, meta.get("annotations"), f"{path}.annotations")
    spec = _d(tmpl.get("spec"))
    _validate_pod_spec(errs, spec, f"{path}.spec")
    if _l(spec.get("ephemeralContainers")):
        errs.forbidden(
            f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template"
        )


def _validate_pod(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    _validate_pod_spec(errs, spec, "spec")
    if old is None:
        if _l(spec.get("ephemeralContainers")):
            errs.forbidden("spec.ephemeralContainers", "cannot be set on create")
        return
    old_spec = _d(old.get("spec"))
    for key in ("containers", "initContainers"):
        if len(_l(spec.get(key))) != len(_l(old_spec.get(key))):
            errs.forbidden(f"spec.{key}", "pod updates may not add or remove containers")
            return
    # ValidatePodUpdate: copy the mutable fields of the new spec onto the old and compare.
    munged = copy.deepcopy(old_spec)
    for key in ("containers", "initContainers"):
        for old_ctr, new_ctr in zip(_l(munged.get(key)), _l(spec.get(key)), strict=True):
            if isinstance(old_ctr, dict):
                if "image" in _d(new_ctr):
                    old_ctr["image"] = new_ctr["image"]
                else:
                    old_ctr.pop("image", None)
    for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        if key in spec:
            munged[key] = spec[key]
        else:
            munged.pop(key, None)
    old_tolerations = _l(old_spec.get("tolerations"))
    new_tolerations = _l(spec.get("tolerations"))
    if all(t in new_tolerations for t in old_tolerations):
        munged["tolerations"] = new_tolerations
    if munged != spec:
        errs.forbidden("spec", f"pod updates may not change fields other than {_POD_UPDATABLE}")


# ---------------------------------------------------------------------------------------------
# Workloads (pkg/apis/apps/validation, pkg/apis/batch/validation)
# ---------------------------------------------------------------------------------------------


def _nonnegative(errs: _Errors, value: Any, path: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")


def _validate_workload_selector(
    errs: _Errors, spec: Obj, what: str, *, required: bool = True
) -> None:
    """The selector checks every controller shares: present, valid, non-empty, and matching
    the template's labels (``ValidatePodTemplateSpecForReplicaSet``)."""
    selector = spec.get("selector")
    if selector is None:
        if required:
            errs.required("spec.selector")
    else:
        _validate_label_selector(errs, selector, "spec.selector")
        if _selector_is_empty(selector):
            errs.invalid(
                "spec.selector", _selector_value(selector), f"empty selector is invalid for {what}"
            )
    if selector is not None and not _selector_convertible(selector):
        errs.invalid("spec.selector", _selector_value(selector), "invalid label selector")
        return
    labels = _get(spec, "template", "metadata", "labels")
    empty = selector is not None and _selector_is_empty(selector)
    if not empty and not _selector_matches(selector, labels):
        errs.invalid(
            "spec.template.metadata.labels",
            _labels_value(labels),
            "`selector` does not match template `labels`",
        )


def _validate_restart_always(errs: _Errors, spec: Obj) -> None:
    policy = _get(spec, "template", "spec", "restartPolicy")
    if isinstance(policy, str) and policy and policy != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", policy, ("Always",))


def _validate_int_or_percent(errs: _Errors, value: Any, path: str) -> None:
    if isinstance(value, str):
        if not _full(_PERCENT_RE, value):
            errs.invalid(path, value, _regex_error(_PERCENT_MSG, _PERCENT_FMT, "1%", "93%"))
        elif int(value[:-1]) > 100 and path.endswith("maxUnavailable"):
            errs.invalid(path, value, "must not be greater than 100%")
    else:
        _nonnegative(errs, _i(value), path)


def _int_or_percent_is_zero(value: Any) -> bool:
    if isinstance(value, str):
        return value.removesuffix("%") in ("0", "")
    return _i(value) == 0


def _validate_deployment(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    _nonnegative(errs, spec.get("replicas"), "spec.replicas")
    _validate_workload_selector(errs, spec, "deployment")
    _validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_restart_always(errs, spec)
    strategy = _d(spec.get("strategy"))
    stype = _s(strategy.get("type"))
    rolling = strategy.get("rollingUpdate")
    if stype == "Recreate":
        if rolling is not None:
            errs.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
    elif stype == "RollingUpdate":
        if rolling is None:
            errs.required(
                "spec.strategy.rollingUpdate", "this should be defaulted and never be nil"
            )
        else:
            ru = _d(rolling)
            path = "spec.strategy.rollingUpdate"
            _validate_int_or_percent(errs, ru.get("maxUnavailable"), f"{path}.maxUnavailable")
            _validate_int_or_percent(errs, ru.get("maxSurge"), f"{path}.maxSurge")
            if _int_or_percent_is_zero(ru.get("maxUnavailable")) and _int_or_percent_is_zero(
                ru.get("maxSurge")
            ):
                errs.invalid(
                    f"{path}.maxUnavailable",
                    _int_or_string_value(ru.get("maxUnavailable")),
                    "may not be 0 when `maxSurge` is 0",
                )
    else:
        rolling_value = None
        if rolling is not None:
            rolling_value = _GoStruct(
                MaxUnavailable=_int_or_string_value(_d(rolling).get("maxUnavailable")),
                MaxSurge=_int_or_string_value(_d(rolling).get("maxSurge")),
            )
        errs.not_supported(
            "spec.strategy",
            _GoStruct(Type=stype, RollingUpdate=rolling_value),
            ("Recreate", "RollingUpdate"),
        )
    min_ready = _i(spec.get("minReadySeconds"))
    _nonnegative(errs, min_ready, "spec.minReadySeconds")
    _nonnegative(errs, spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int):
        _nonnegative(errs, deadline, "spec.progressDeadlineSeconds")
        if deadline <= min_ready:
            errs.invalid(
                "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
            )
    if old is not None:
        # apps/v1 forbids changing the selector (the strategy's ValidateUpdate).
        old_spec = _d(old.get("spec"))
        if _selector_value(spec.get("selector")) != _selector_value(old_spec.get("selector")):
            errs.invalid("spec.selector", _selector_value(spec.get("selector")), IMMUTABLE)


def _validate_replica_set(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    _nonnegative(errs, spec.get("replicas"), "spec.replicas")
    _nonnegative(errs, spec.get("minReadySeconds"), "spec.minReadySeconds")
    # Upstream's ReplicaSet validation says "deployment" here too.
    _validate_workload_selector(errs, spec, "deployment")
    _validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_restart_always(errs, spec)
    if old is not None:
        old_spec = _d(old.get("spec"))
        if _selector_value(spec.get("selector")) != _selector_value(old_spec.get("selector")):
            errs.invalid("spec.selector", _selector_value(spec.get("selector")), IMMUTABLE)


def _validate_stateful_set(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    policy = _s(spec.get("podManagementPolicy"))
    if not policy:
        errs.required("spec.podManagementPolicy")
    elif policy not in ("OrderedReady", "Parallel"):
        errs.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    strategy = _d(spec.get("updateStrategy"))
    stype = _s(strategy.get("type"))
    if not stype:
        errs.required("spec.updateStrategy")
    elif stype == "OnDelete":
        if strategy.get("rollingUpdate") is not None:
            errs.invalid(
                "spec.updateStrategy.rollingUpdate",
                strategy["rollingUpdate"],
                "only allowed for updateStrategy 'RollingUpdate'",
            )
    elif stype == "RollingUpdate":
        partition = _get(strategy, "rollingUpdate", "partition")
        _nonnegative(errs, partition, "spec.updateStrategy.rollingUpdate.partition")
    else:
        errs.invalid(
            "spec.updateStrategy",
            _GoStruct(Type=stype, RollingUpdate=strategy.get("rollingUpdate")),
            "must be 'RollingUpdate' or 'OnDelete'",
        )
    _nonnegative(errs, spec.get("replicas"), "spec.replicas")
    _nonnegative(errs, spec.get("minReadySeconds"), "spec.minReadySeconds")
    # serviceName has been optional since 1.32 and was never validated by the server.
    _validate_workload_selector(errs, spec, "statefulset")
    _validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_restart_always(errs, spec)
    if old is not None:
        # ValidateStatefulSetUpdate: only these spec fields may change.
        mutable = (
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        )
        old_spec = _d(old.get("spec"))
        rest_new = {k: v for k, v in spec.items() if k not in mutable}
        rest_old = {k: v for k, v in old_spec.items() if k not in mutable}
        if rest_new != rest_old:
            errs.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )


def _validate_daemon_set(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    _validate_workload_selector(errs, spec, "daemonset", required=False)
    _validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_restart_always(errs, spec)
    _nonnegative(errs, spec.get("minReadySeconds"), "spec.minReadySeconds")
    _nonnegative(errs, spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    stype = _s(_get(spec, "updateStrategy", "type"))
    if stype and stype not in ("OnDelete", "RollingUpdate"):
        errs.not_supported("spec.updateStrategy", stype, ("OnDelete", "RollingUpdate"))
    if old is not None:
        old_spec = _d(old.get("spec"))
        if _selector_value(spec.get("selector")) != _selector_value(old_spec.get("selector")):
            errs.invalid("spec.selector", _selector_value(spec.get("selector")), IMMUTABLE)


def _validate_job(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"):
        _nonnegative(errs, spec.get(key), f"spec.{key}")
    _validate_pod_template(errs, spec.get("template"), "spec.template")
    policy = _get(spec, "template", "spec", "restartPolicy")
    if policy not in ("OnFailure", "Never"):
        errs.not_supported("spec.template.spec.restartPolicy", policy, ("OnFailure", "Never"))
    if old is not None:
        old_spec = _d(old.get("spec"))
        if _selector_value(spec.get("selector")) != _selector_value(old_spec.get("selector")):
            errs.invalid("spec.selector", _selector_value(spec.get("selector")), IMMUTABLE)


# ---------------------------------------------------------------------------------------------
# Services, config and identity (pkg/apis/core/validation)
# ---------------------------------------------------------------------------------------------

_SERVICE_TYPES: Final = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_SESSION_AFFINITIES: Final = ("ClientIP", "None")


def _cluster_ips(spec: Obj) -> list[str]:
    # The service registry keeps clusterIP and clusterIPs in step before validating.
    ips = [ip for ip in _l(spec.get("clusterIPs")) if isinstance(ip, str)]
    if not ips and _s(spec.get("clusterIP")):
        ips = [spec["clusterIP"]]
    return ips


def _validate_service(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    stype = _s(spec.get("type"))
    ports = _l(spec.get("ports"))
    ips = _cluster_ips(spec)
    headless = ips == ["None"]
    if old is not None:
        _validate_cluster_ip_update(errs, spec, _d(old.get("spec")))
    if not ports and not headless and stype != "ExternalName":
        errs.required("spec.ports")
    if stype in ("LoadBalancer", "NodePort") and headless:
        errs.invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {stype} services")
    if stype == "LoadBalancer":
        for i, port in enumerate(ports):
            if _i(_d(port).get("port")) == 10250:
                errs.invalid(
                    f"spec.ports[{i}]",
                    10250,
                    "may not expose port 10250 externally since it is used by kubelet",
                )
    if stype == "ExternalName":
        if ips:
            errs.forbidden("spec.clusterIPs", "may not be set for ExternalName services")
        if _l(spec.get("ipFamilies")):
            errs.forbidden("spec.ipFamilies", "may not be set for ExternalName services")
        if spec.get("ipFamilyPolicy") is not None:
            errs.forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services")
        # The value (a CNAME) may have a trailing dot to denote it as fully qualified.
        cname = _s(spec.get("externalName")).removesuffix(".")
        if cname:
            errs.each_invalid("spec.externalName", cname, is_dns1123_subdomain(cname))
        else:
            errs.required("spec.externalName")
    names: set[str] = set()
    for i, port in enumerate(ports):
        _validate_service_port(errs, _d(port), len(ports) > 1, names, f"spec.ports[{i}]")
    if spec.get("selector") is not None:
        _validate_labels(errs, spec.get("selector"), "spec.selector")
    affinity = _s(spec.get("sessionAffinity"))
    if not affinity:
        errs.required("spec.sessionAffinity")
    elif affinity not in _SESSION_AFFINITIES:
        errs.not_supported("spec.sessionAffinity", affinity, _SESSION_AFFINITIES)
    elif affinity == "None" and spec.get("sessionAffinityConfig") is not None:
        errs.forbidden(
            "spec.sessionAffinityConfig", "must not be set when session affinity is None"
        )
    for i, ip in enumerate(ips):
        if not (i == 0 and ip == "None") and not _is_valid_ip(ip):
            errs.invalid(
                f"spec.clusterIPs[{i}]",
                ip,
                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
    for i, ip in enumerate(_l(spec.get("externalIPs"))):
        if not _is_valid_ip(_s(ip)):
            errs.invalid(
                f"spec.externalIPs[{i}]",
                _s(ip),
                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        else:
            _non_special_ip(errs, f"spec.externalIPs[{i}]", _s(ip))
    if not stype:
        errs.required("spec.type")
    elif stype not in _SERVICE_TYPES:
        errs.not_supported("spec.type", stype, _SERVICE_TYPES)
    if stype == "ClusterIP":
        for i, port in enumerate(ports):
            if _i(_d(port).get("nodePort")):
                errs.forbidden(
                    f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"
                )
    node_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        port_d = _d(port)
        node_port = _i(port_d.get("nodePort"))
        if node_port:
            key = (_s(port_d.get("protocol")), node_port)
            if key in node_ports:
                errs.duplicate(f"spec.ports[{i}].nodePort", node_port)
            node_ports.add(key)
    seen_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        port_d = _d(port)
        pkey = (_s(port_d.get("protocol")), _i(port_d.get("port")))
        if pkey in seen_ports:
            # The key is an internal core.ServicePort with only Protocol and Port set.
            value = _GoStruct(
                Name="", Protocol=pkey[0], AppProtocol=None, Port=pkey[1], TargetPort=0, NodePort=0
            )
            errs.duplicate(f"spec.ports[{i}]", value)
        seen_ports.add(pkey)
    itp = spec.get("internalTrafficPolicy")
    if itp is not None and itp not in ("Cluster", "Local"):
        errs.not_supported("spec.internalTrafficPolicy", itp, ("Cluster", "Local"))


def _validate_service_port(
    errs: _Errors, port: Obj, require_name: bool, names: set[str], path: str
) -> None:
    name = _s(port.get("name"))
    if require_name and not name:
        errs.required(f"{path}.name")
    elif name:
        errs.each_invalid(f"{path}.name", name, is_dns1123_label(name))
        if name in names:
            errs.duplicate(f"{path}.name", name)
        else:
            names.add(name)
    number = _i(port.get("port"))
    errs.each_invalid(f"{path}.port", number, _is_valid_port_num(number))
    protocol = _s(port.get("protocol"))
    if not protocol:
        errs.required(f"{path}.protocol")
    elif protocol not in _PORT_PROTOCOLS:
        errs.not_supported(f"{path}.protocol", protocol, _PORT_PROTOCOLS)
    target = port.get("targetPort")
    if isinstance(target, str):
        errs.each_invalid(f"{path}.targetPort", target, _is_valid_port_name(target))
    else:
        errs.each_invalid(f"{path}.targetPort", _i(target), _is_valid_port_num(_i(target)))
    app_protocol = port.get("appProtocol")
    if isinstance(app_protocol, str):
        errs.each_invalid(f"{path}.appProtocol", app_protocol, is_qualified_name(app_protocol))


def _validate_cluster_ip_update(errs: _Errors, spec: Obj, old_spec: Obj) -> None:
    """``validateUpgradeDowngradeClusterIPs``: a Service's cluster IPs may not change once set.

    The caller, like the real service registry, copies the allocated IPs of the stored Service
    into an update that omits them before validating.
    """
    if "ExternalName" in (_s(spec.get("type")), _s(old_spec.get("type"))):
        return
    new_ips, old_ips = _cluster_ips(spec), _cluster_ips(old_spec)
    if new_ips == ["None"] and old_ips == ["None"]:
        return
    if len(old_ips) == len(new_ips):
        for i, ip in enumerate(old_ips):
            if ip != new_ips[i]:
                errs.invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set")
    elif len(old_ips) > len(new_ips):
        if not new_ips:
            errs.invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset")
        elif new_ips[0] != old_ips[0]:
            errs.invalid("spec.clusterIPs[0]", new_ips, "may not change once set")
    elif old_ips and new_ips[0] != old_ips[0]:
        errs.invalid("spec.clusterIPs[0]", new_ips, "may not change once set")


def _validate_config_map(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    data, binary = _d(obj.get("data")), _d(obj.get("binaryData"))
    total = 0
    for key in sorted(data):
        errs.each_invalid(f"data[{key}]", key, _is_config_map_key(key))
        if key in binary:
            errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
        total += len(_s(data[key]).encode())
    for key in sorted(binary):
        errs.each_invalid(f"binaryData[{key}]", key, _is_config_map_key(key))
        if key in data:
            errs.invalid(f"binaryData[{key}]", key, "duplicate of key present in data")
        total += _decoded_len(binary[key])
    if total > _MAX_SECRET_SIZE:
        # An empty path: the error refers to the whole object.
        errs.too_long("", _MAX_SECRET_SIZE)
    if old is not None:
        _validate_immutable_data(errs, obj, old, ("data", "binaryData"))


def _validate_immutable_data(errs: _Errors, obj: Obj, old: Obj, fields: Sequence[str]) -> None:
    if old.get("immutable") is not True:
        return
    if obj.get("immutable") is not True:
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for key in fields:
        if _semantic(obj.get(key)) != _semantic(old.get(key)):
            errs.forbidden(key, "field is immutable when `immutable` is set")


def _decoded_len(value: Any) -> int:
    try:
        return len(base64.b64decode(_s(value), validate=False))
    except ValueError:
        return 0


def _validate_secret(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    if old is not None:
        new_type, old_type = _s(obj.get("type")), _s(old.get("type"))
        if new_type != old_type:
            errs.invalid("type", new_type, IMMUTABLE)
        _validate_immutable_data(errs, obj, old, ("data",))
    data = _d(obj.get("data"))
    total = 0
    for key in sorted(data):
        errs.each_invalid(f"data[{key}]", key, _is_config_map_key(key))
        total += _decoded_len(data[key])
    if total > _MAX_SECRET_SIZE:
        errs.too_long("data", _MAX_SECRET_SIZE)
    stype = _s(obj.get("type"))
    # The keys each well-known type requires (ValidateSecret's switch).
    if stype == "kubernetes.io/service-account-token":
        annotations = _d(_get(obj, "metadata", "annotations"))
        if not _s(annotations.get("kubernetes.io/service-account.name")):
            errs.required("metadata.annotations[kubernetes.io/service-account.name]")
    elif stype == "kubernetes.io/dockercfg":
        if ".dockercfg" not in data:
            errs.required("data[.dockercfg]")
    elif stype == "kubernetes.io/dockerconfigjson":
        if ".dockerconfigjson" not in data:
            errs.required("data[.dockerconfigjson]")
    elif stype == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errs.required("data[username]")
            errs.required("data[password]")
    elif stype == "kubernetes.io/ssh-auth":
        if not data.get("ssh-privatekey"):
            errs.required("data[ssh-privatekey]")
    elif stype == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                errs.required(f"data[{key}]")


def _validate_namespace(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    for finalizer in _l(_get(obj, "spec", "finalizers")):
        value = _s(finalizer)
        errs.each_invalid("spec.finalizers", value, is_qualified_name(value))
        if "/" not in value and value != "kubernetes":
            errs.invalid(
                "spec.finalizers",
                value,
                "name is neither a standard finalizer name nor is it fully qualified",
            )


def _validate_event(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    """``legacyValidateEvent`` for core/v1 Events: the involved object's namespace must agree."""
    namespace = _s(_get(obj, "metadata", "namespace"))
    involved = _d(obj.get("involvedObject"))
    involved_ns = _s(involved.get("namespace"))
    if not obj.get("eventTime"):
        if not involved_ns:
            if namespace not in ("", "default"):
                errs.invalid(
                    "involvedObject.namespace", involved_ns, "does not match event.namespace"
                )
        elif namespace != involved_ns:
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
        for key, field_name in (
            ("reportingComponent", "reportingComponent"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
        ):
            if not _s(obj.get(key)):
                errs.required(field_name)
    errs.each_invalid("namespace", namespace, is_dns1123_subdomain(namespace))


def _validate_events_v1_event(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    """events.k8s.io Events, strictly validated on create (paths use the internal names)."""
    namespace = _s(_get(obj, "metadata", "namespace"))
    regarding_ns = _s(_get(obj, "regarding", "namespace"))
    if not regarding_ns and namespace not in ("default", "kube-system"):
        errs.invalid("involvedObject.namespace", regarding_ns, "does not match event.namespace")
    for key in ("reportingController", "reportingInstance", "action", "reason"):
        if not _s(obj.get(key)):
            errs.required(key)
    if old is None:
        if not obj.get("eventTime"):
            errs.required("eventTime")
        etype = _s(obj.get("type"))
        if etype not in ("Normal", "Warning"):
            errs.invalid("type", "", f"has invalid value: {etype}")


def _validate_endpoint_slice(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    address_type = _s(obj.get("addressType"))
    if not address_type:
        errs.required("addressType")
    elif address_type not in ("FQDN", "IPv4", "IPv6"):
        errs.not_supported("addressType", address_type, ("FQDN", "IPv4", "IPv6"))
    endpoints = _l(obj.get("endpoints"))
    if len(endpoints) > 1000:
        errs.too_many("endpoints", len(endpoints), 1000)
        endpoints = []
    for i, endpoint in enumerate(endpoints):
        addresses = _l(_d(endpoint).get("addresses"))
        apath = f"endpoints[{i}].addresses"
        if not addresses:
            errs.required(apath, "must contain at least 1 address")
        elif len(addresses) > 100:
            errs.too_many(apath, len(addresses), 100)
        for j, address in enumerate(addresses):
            _validate_slice_address(errs, address_type, _s(address), f"{apath}[{j}]")
    ports = _l(obj.get("ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        port_d = _d(port)
        ppath = f"ports[{i}]"
        name = _s(port_d.get("name"))
        if name:
            errs.each_invalid(f"{ppath}.name", name, is_dns1123_label(name))
        if name in names:
            errs.duplicate(f"{ppath}.name", name)
        names.add(name)
        protocol = port_d.get("protocol")
        if protocol is None:
            errs.required(f"{ppath}.protocol")
        elif protocol not in _PORT_PROTOCOLS:
            errs.not_supported(f"{ppath}.protocol", protocol, _PORT_PROTOCOLS)
    if old is not None:
        errs.immutable("addressType", address_type, _s(old.get("addressType")))


def _validate_slice_address(errs: _Errors, address_type: str, address: str, path: str) -> None:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        parsed = None
    if address_type == "IPv4":
        if not isinstance(parsed, ipaddress.IPv4Address):
            errs.invalid(path, address, "must be a valid IPv4 address")
        else:
            _non_special_ip(errs, path, address)
    elif address_type == "IPv6":
        if not isinstance(parsed, ipaddress.IPv6Address):
            errs.invalid(path, address, "must be a valid IPv6 address")
        else:
            _non_special_ip(errs, path, address)
    elif address_type == "FQDN":
        errs.each_invalid(
            path, address.removesuffix("."), is_dns1123_subdomain(address.removesuffix("."))
        )


def _validate_lease(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    _nonnegative(errs, spec.get("leaseTransitions"), "spec.leaseTransitions")


# ---------------------------------------------------------------------------------------------
# RBAC (pkg/apis/rbac/validation)
# ---------------------------------------------------------------------------------------------


def _validate_policy_rules(errs: _Errors, obj: Obj, *, namespaced: bool) -> None:
    for i, rule in enumerate(_l(obj.get("rules"))):
        rule_d = _d(rule)
        path = f"rules[{i}]"
        if not _l(rule_d.get("verbs")):
            errs.required(f"{path}.verbs", "verbs must contain at least one value")
        urls = _l(rule_d.get("nonResourceURLs"))
        if urls:
            if namespaced:
                errs.invalid(
                    f"{path}.nonResourceURLs",
                    urls,
                    "namespaced rules cannot apply to non-resource URLs",
                )
            if any(_l(rule_d.get(k)) for k in ("apiGroups", "resources", "resourceNames")):
                errs.invalid(
                    f"{path}.nonResourceURLs",
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            continue
        if not _l(rule_d.get("apiGroups")):
            errs.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        if not _l(rule_d.get("resources")):
            errs.required(f"{path}.resources", "resource rules must supply at least one resource")


def _validate_role(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_policy_rules(errs, obj, namespaced=True)


def _validate_cluster_role(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_policy_rules(errs, obj, namespaced=False)
    aggregation = obj.get("aggregationRule")
    if aggregation is not None:
        selectors = _l(_d(aggregation).get("clusterRoleSelectors"))
        if not selectors:
            errs.required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            )
        for i, selector in enumerate(selectors):
            _validate_label_selector(errs, selector, f"aggregationRule.clusterRoleSelectors[{i}]")


def _role_ref_value(role_ref: Any) -> _GoStruct:
    ref = _d(role_ref)
    return _GoStruct(
        APIGroup=_s(ref.get("apiGroup")), Kind=_s(ref.get("kind")), Name=_s(ref.get("name"))
    )


def _validate_binding(errs: _Errors, obj: Obj, old: Obj | None, *, namespaced: bool) -> None:
    ref = _d(obj.get("roleRef"))
    if _s(ref.get("apiGroup")) != RBAC:
        errs.not_supported("roleRef.apiGroup", _s(ref.get("apiGroup")), (RBAC,))
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if _s(ref.get("kind")) not in kinds:
        errs.not_supported("roleRef.kind", _s(ref.get("kind")), kinds)
    name = _s(ref.get("name"))
    if not name:
        errs.required("roleRef.name")
    else:
        errs.each_invalid("roleRef.name", name, _name_path_segment(name, False))
    for i, subject in enumerate(_l(obj.get("subjects"))):
        _validate_subject(errs, _d(subject), namespaced, f"subjects[{i}]")
    if old is not None and _role_ref_value(ref) != _role_ref_value(old.get("roleRef")):
        errs.invalid("roleRef", _role_ref_value(ref), "cannot change roleRef")


def _validate_subject(errs: _Errors, subject: Obj, namespaced: bool, path: str) -> None:
    name, kind, api_group = (_s(subject.get(k)) for k in ("name", "kind", "apiGroup"))
    if not name:
        errs.required(f"{path}.name")
    if kind == "ServiceAccount":
        if name:
            errs.each_invalid(f"{path}.name", name, _name_dns_subdomain(name, False))
        if api_group:
            errs.not_supported(f"{path}.apiGroup", api_group, ("",))
        if not namespaced and not _s(subject.get("namespace")):
            errs.required(f"{path}.namespace")
    elif kind in ("User", "Group"):
        if api_group != RBAC:
            errs.not_supported(f"{path}.apiGroup", api_group, (RBAC,))
    else:
        errs.not_supported(f"{path}.kind", kind, ("ServiceAccount", "User", "Group"))


def _validate_role_binding(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_binding(errs, obj, old, namespaced=True)


def _validate_cluster_role_binding(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_binding(errs, obj, old, namespaced=False)


# ---------------------------------------------------------------------------------------------
# CustomResourceDefinitions (apiextensions-apiserver/pkg/apis/apiextensions/validation)
# ---------------------------------------------------------------------------------------------


def _crd_versions_value(versions: list[Any]) -> list[_GoStruct]:
    # The internal CustomResourceDefinitionVersion, its scalar fields in declared order.
    return [
        _GoStruct(
            Name=_s(_d(v).get("name")),
            Served=_d(v).get("served") is True,
            Storage=_d(v).get("storage") is True,
            Deprecated=_d(v).get("deprecated") is True,
            DeprecationWarning=_d(v).get("deprecationWarning"),
            Schema=_d(v).get("schema"),
            Subresources=_d(v).get("subresources"),
            AdditionalPrinterColumns=_d(v).get("additionalPrinterColumns"),
            SelectableFields=_d(v).get("selectableFields"),
        )
        for v in versions
    ]


def _validate_crd(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    spec = _d(obj.get("spec"))
    group = _s(spec.get("group"))
    names = _d(spec.get("names"))
    plural = _s(names.get("plural"))
    name = _s(_get(obj, "metadata", "name"))
    if name and name != f"{plural}.{group}":
        errs.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    if not group:
        errs.required("spec.group")
    else:
        errs.each_invalid("spec.group", group, is_dns1123_subdomain(group))
        if len(group.split(".")) < 2:
            errs.invalid("spec.group", group, "should be a domain with at least one dot")
    scope = _s(spec.get("scope"))
    if not scope:
        errs.required("spec.scope")
    elif scope not in ("Cluster", "Namespaced"):
        errs.not_supported("spec.scope", scope, ("Cluster", "Namespaced"))
    versions = _l(spec.get("versions"))
    seen: set[str] = set()
    unique = True
    storage = 0
    for i, version in enumerate(versions):
        version_d = _d(version)
        vname = _s(version_d.get("name"))
        if vname in seen:
            unique = False
        seen.add(vname)
        if version_d.get("storage") is True:
            storage += 1
        msgs = is_dns1035_label(vname)
        if msgs:
            errs.invalid(f"spec.versions[{i}].name", vname, ",".join(msgs))
        schema = _get(version_d, "schema", "openAPIV3Schema")
        if schema is None:
            errs.required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required")
        elif not _s(_d(schema).get("type")):
            errs.required(
                f"spec.versions[{i}].schema.openAPIV3Schema.type", "must not be empty at the root"
            )
    if not versions:
        errs.required("spec.versions", "must have exactly one version marked as storage version")
    elif storage != 1:
        errs.invalid(
            "spec.versions",
            _crd_versions_value(versions),
            "must have exactly one version marked as storage version",
        )
    if not unique:
        errs.invalid(
            "spec.versions", _crd_versions_value(versions), "must contain unique version names"
        )
    for key in ("plural", "singular", "kind", "listKind"):
        if not _s(names.get(key)):
            errs.required(f"spec.names.{key}")
    for key in ("plural", "singular"):
        value = _s(names.get(key))
        msgs = is_dns1035_label(value)
        if value and msgs:
            errs.invalid(f"spec.names.{key}", value, ",".join(msgs))
    for key in ("kind", "listKind"):
        value = _s(names.get(key))
        msgs = is_dns1035_label(value.lower())
        if value and msgs:
            errs.invalid(
                f"spec.names.{key}",
                value,
                "may have mixed case, but should otherwise match: " + ",".join(msgs),
            )
    if _s(names.get("kind")) and names.get("kind") == names.get("listKind"):
        errs.invalid(
            "spec.names.listKind", names["listKind"], "kind and listKind may not be the same"
        )
    for key in ("shortNames", "categories"):
        for i, value in enumerate(_l(names.get(key))):
            msgs = is_dns1035_label(_s(value))
            if msgs:
                errs.invalid(f"spec.names.{key}[{i}]", _s(value), ",".join(msgs))
    if old is not None:
        old_spec = _d(old.get("spec"))
        old_names = _d(old_spec.get("names"))
        established = any(
            _d(c).get("type") == "Established" and _d(c).get("status") == "True"
            for c in _l(_get(old, "status", "conditions"))
        )
        if established:
            errs.immutable("spec.scope", scope, _s(old_spec.get("scope")))
            errs.immutable("spec.names.kind", _s(names.get("kind")), _s(old_names.get("kind")))
        errs.immutable("spec.group", group, _s(old_spec.get("group")))
        errs.immutable("spec.names.plural", plural, _s(old_names.get("plural")))


# ---------------------------------------------------------------------------------------------
# Admission webhooks (pkg/apis/admissionregistration/validation)
# ---------------------------------------------------------------------------------------------


def _is_fully_qualified_name(errs: _Errors, path: str, name: str) -> None:
    if not name:
        errs.required(path)
        return
    msgs = is_dns1123_subdomain(name)
    if msgs:
        errs.invalid(path, name, ",".join(msgs))
    elif len(name.split(".")) < 3:
        errs.invalid(
            path, name, "should be a domain with at least three segments separated by dots"
        )


def _validate_webhook_url(errs: _Errors, path: str, url: str) -> None:
    form = "; desired format: https://host[/path]"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https":
        errs.invalid(path, parsed.scheme, "'https' is the only allowed URL scheme" + form)
    if not parsed.netloc:
        errs.invalid(path, parsed.netloc, "host must be specified" + form)
    if "@" in parsed.netloc:
        errs.invalid(
            path, parsed.netloc.rsplit("@", 1)[0], "user information is not permitted in the URL"
        )
    if parsed.fragment:
        errs.invalid(path, parsed.fragment, "fragments are not permitted in the URL")
    if parsed.query:
        errs.invalid(path, parsed.query, "query parameters are not permitted in the URL")


def _validate_webhook_service(errs: _Errors, path: str, service: Obj) -> None:
    if not _s(service.get("name")):
        errs.required(f"{path}.name", "service name is required")
    if not _s(service.get("namespace")):
        errs.required(f"{path}.namespace", "service namespace is required")
    port = _i(service.get("port"), 443)
    msgs = _is_valid_port_num(port)
    if msgs:
        errs.invalid(f"{path}.port", port, "port is not valid: " + ", ".join(msgs))
    svc_path = service.get("path")
    if isinstance(svc_path, str) and svc_path not in ("", "/"):
        if svc_path == "//":
            errs.invalid(f"{path}.path", svc_path, "segment[0] may not be empty")
        elif not svc_path.startswith("/"):
            errs.invalid(f"{path}.path", svc_path, "must start with a '/'")


def _validate_webhooks(errs: _Errors, obj: Obj, *, mutating: bool) -> None:
    seen: set[str] = set()
    for i, hook in enumerate(_l(obj.get("webhooks"))):
        hook_d = _d(hook)
        path = f"webhooks[{i}]"
        name = _s(hook_d.get("name"))
        _is_fully_qualified_name(errs, f"{path}.name", name)
        for key, valid in (
            ("failurePolicy", ("Fail", "Ignore")),
            ("matchPolicy", ("Equivalent", "Exact")),
        ):
            value = hook_d.get(key)
            if value is not None and value not in valid:
                errs.not_supported(f"{path}.{key}", value, valid)
        side_effects = hook_d.get("sideEffects")
        if side_effects is None:
            errs.required(f"{path}.sideEffects", "must specify one of None, NoneOnDryRun")
        elif side_effects not in ("None", "NoneOnDryRun"):
            errs.not_supported(f"{path}.sideEffects", side_effects, ("None", "NoneOnDryRun"))
        timeout = hook_d.get("timeoutSeconds")
        if isinstance(timeout, int) and not 1 <= timeout <= 30:
            errs.invalid(
                f"{path}.timeoutSeconds",
                timeout,
                "the timeout value must be between 1 and 30 seconds",
            )
        reinvocation = hook_d.get("reinvocationPolicy")
        if mutating and reinvocation is not None and reinvocation not in ("IfNeeded", "Never"):
            errs.not_supported(f"{path}.reinvocationPolicy", reinvocation, ("IfNeeded", "Never"))
        client = _d(hook_d.get("clientConfig"))
        url, service = client.get("url"), client.get("service")
        if (url is None) == (service is None):
            errs.required(f"{path}.clientConfig", "exactly one of url or service is required")
        elif isinstance(url, str):
            _validate_webhook_url(errs, f"{path}.clientConfig.url", url)
        else:
            _validate_webhook_service(errs, f"{path}.clientConfig.service", _d(service))
        versions = _l(hook_d.get("admissionReviewVersions"))
        vpath = f"{path}.admissionReviewVersions"
        if not versions:
            errs.required(vpath, "must specify one of v1, v1beta1")
        else:
            seen_versions: set[str] = set()
            for j, version in enumerate(versions):
                value = _s(version)
                if value in seen_versions:
                    errs.invalid(f"{vpath}[{j}]", value, "duplicate version")
                    continue
                seen_versions.add(value)
                errs.each_invalid(f"{vpath}[{j}]", value, is_dns1035_label(value))
            if not seen_versions & {"v1", "v1beta1"}:
                errs.invalid(vpath, versions, "must include at least one of v1, v1beta1")
        if name:
            if name in seen:
                errs.duplicate(f"{path}.name", name)
            seen.add(name)


def _validate_mutating_webhooks(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_webhooks(errs, obj, mutating=True)


def _validate_validating_webhooks(errs: _Errors, obj: Obj, old: Obj | None) -> None:
    _validate_webhooks(errs, obj, mutating=False)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

type _Validator = Callable[[_Errors, Obj, Obj | None], None]

_VALIDATORS: Final[dict[tuple[str, str], _Validator]] = {
    (CORE, "Pod"): _validate_pod,
    (CORE, "Service"): _validate_service,
    (CORE, "ConfigMap"): _validate_config_map,
    (CORE, "Secret"): _validate_secret,
    (CORE, "Namespace"): _validate_namespace,
    (CORE, "Event"): _validate_event,
    (APPS, "Deployment"): _validate_deployment,
    (APPS, "ReplicaSet"): _validate_replica_set,
    (APPS, "StatefulSet"): _validate_stateful_set,
    (APPS, "DaemonSet"): _validate_daemon_set,
    (BATCH, "Job"): _validate_job,
    (RBAC, "Role"): _validate_role,
    (RBAC, "ClusterRole"): _validate_cluster_role,
    (RBAC, "RoleBinding"): _validate_role_binding,
    (RBAC, "ClusterRoleBinding"): _validate_cluster_role_binding,
    (APIEXT, "CustomResourceDefinition"): _validate_crd,
    (ADMISSION, "MutatingWebhookConfiguration"): _validate_mutating_webhooks,
    (ADMISSION, "ValidatingWebhookConfiguration"): _validate_validating_webhooks,
    (COORDINATION, "Lease"): _validate_lease,
    (EVENTS, "Event"): _validate_events_v1_event,
    (DISCOVERY, "EndpointSlice"): _validate_endpoint_slice,
}


def validate(
    group: str, kind: str, obj: Obj, old: Obj | None = None, *, namespaced: bool | None = None
) -> list[Cause]:
    """Validates a (defaulted) object as the API server's strategy for its kind would.

    Args:
        group: API group, ``""`` for the core group.
        kind: Kind, e.g. ``Deployment``.
        obj: The object as the client sent it, after :func:`default`; its namespace set from
            the request's path.
        old: The stored object, for an update; ``None`` for a create.
        namespaced: The kind's scope, for the namespace checks; inferred for built-in kinds.
            When unknown (a custom resource and no value given), the namespace is not checked.

    Returns:
        The causes, in upstream's order; empty when the object is valid.
    """
    errs = _Errors()
    meta = _d(obj.get("metadata"))
    if namespaced is None:
        namespaced = _scope(group, kind)
    if old is None:
        name_fn = _NAME_RULES.get((group, kind), _name_dns_subdomain)
        _validate_object_meta(errs, meta, name_fn, namespaced)
    else:
        _validate_object_meta_update(errs, meta, _d(old.get("metadata")))
    validator = _VALIDATORS.get((group, kind))
    if validator is not None:
        validator(errs, obj, old)
    return errs.causes


# ---------------------------------------------------------------------------------------------
# Decoding: what the server refuses with 400 before validation
# ---------------------------------------------------------------------------------------------

_B64_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _go_base64_error(text: str) -> int | None:
    """Where Go's ``base64.StdEncoding.Decode`` fails on ``text``, or ``None`` if it decodes.

    A port of ``decodeQuantum``: newlines are skipped, padding is required, and the offset it
    reports is the one ``CorruptInputError`` carries.
    """
    si = 0
    n = len(text)
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return si - j
            ch = text[si]
            si += 1
            if ch in _B64_ALPHABET:
                j += 1
                continue
            if ch in "\r\n":
                continue
            if ch != "=":
                return si - 1
            # Padding: it must come at the third or fourth place of a quantum.
            if j in (0, 1):
                return si - 1
            if j == 2:
                while si < n and text[si] in "\r\n":
                    si += 1
                if si == n:
                    return n
                if text[si] != "=":
                    return si - 1
                si += 1
            while si < n and text[si] in "\r\n":
                si += 1
            if si < n:
                return si
            return None
    return None


_BINARY_FIELDS: Final[dict[tuple[str, str], str]] = {
    (CORE, "Secret"): "data",
    (CORE, "ConfigMap"): "binaryData",
}


def decode_error(group: str, kind: str, obj: Obj) -> str | None:
    """Finds what would stop the server decoding ``obj``: base64 fields that are not base64.

    ``Secret.data`` and ``ConfigMap.binaryData`` are ``[]byte`` in Go and travel as base64; a bad
    value fails JSON decoding, before any validation, and the server answers 400 BadRequest.

    Args:
        group: API group.
        kind: Kind.
        obj: The object as the client sent it.

    Returns:
        The BadRequest message (``Secret in version "v1" cannot be handled as a Secret: illegal
        base64 data at input byte 4``), or ``None`` if the object decodes.
    """
    field_name = _BINARY_FIELDS.get((group, kind))
    if field_name is None:
        return None
    for value in _d(obj.get(field_name)).values():
        if not isinstance(value, str):
            continue
        offset = _go_base64_error(value)
        if offset is not None:
            version = _s(obj.get("apiVersion")).rsplit("/", 1)[-1] or "v1"
            return (
                f"{kind} in version {go_quote(version)} cannot be handled as a {kind}: "
                f"illegal base64 data at input byte {offset}"
            )
    return None


# ---------------------------------------------------------------------------------------------
# Defaulting (pkg/apis/*/v1/defaults.go, plus what admission adds to every pod)
# ---------------------------------------------------------------------------------------------


def _image_tag(image: str) -> str:
    """The tag ``parsers.ParseImageName`` finds: ``latest`` when neither tag nor digest is set."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    if not tag and not digest:
        return "latest"
    return tag


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    _default_http_get(probe.get("httpGet"))


def _default_http_get(action: Any) -> None:
    if isinstance(action, dict):
        if not action.get("path"):
            action["path"] = "/"
        if not action.get("scheme"):
            action["scheme"] = "HTTP"


def _default_container(ctr: Any) -> None:
    """``SetDefaults_Container`` and the defaults of what a container holds."""
    if not isinstance(ctr, dict):
        return
    if not ctr.get("imagePullPolicy"):
        # A "latest" tag, or none, pulls every time; anything else only when missing.
        tag = _image_tag(_s(ctr.get("image")))
        ctr["imagePullPolicy"] = "Always" if tag == "latest" else "IfNotPresent"
    if not ctr.get("terminationMessagePath"):
        ctr["terminationMessagePath"] = "/dev/termination-log"
    if not ctr.get("terminationMessagePolicy"):
        ctr["terminationMessagePolicy"] = "File"
    # Resources is a struct, not a pointer, in v1.Container: it always serialises.
    if not isinstance(ctr.get("resources"), dict):
        ctr["resources"] = {}
    for port in _l(ctr.get("ports")):
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(ctr.get(key))
    for handler in _d(ctr.get("lifecycle")).values():
        _default_http_get(_d(handler).get("httpGet"))
    for var in _l(ctr.get("env")):
        value_from = _d(_d(var).get("valueFrom"))
        field_ref = value_from.get("fieldRef")
        if isinstance(field_ref, dict) and not field_ref.get("apiVersion"):
            field_ref["apiVersion"] = "v1"
        resource_ref = value_from.get("resourceFieldRef")
        if isinstance(resource_ref, dict):
            resource_ref.setdefault("divisor", "0")


_VOLUME_MODE_DEFAULTS: Final = ("secret", "configMap", "downwardAPI", "projected")


def _default_volume(volume: Any) -> None:
    if not isinstance(volume, dict):
        return
    if not any(v is not None for k, v in volume.items() if k != "name"):
        # SetDefaults_Volume: a volume with no source is an emptyDir.
        volume["emptyDir"] = {}
    for key in _VOLUME_MODE_DEFAULTS:
        source = volume.get(key)
        if isinstance(source, dict):
            source.setdefault("defaultMode", 0o644)
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict):
        host_path.setdefault("type", "")
    for projection in _l(_d(volume.get("projected")).get("sources")):
        token = _d(projection).get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)
    for item in _l(_d(volume.get("downwardAPI")).get("items")):
        field_ref = _d(item).get("fieldRef")
        if isinstance(field_ref, dict) and not field_ref.get("apiVersion"):
            field_ref["apiVersion"] = "v1"


def _default_pod_spec(spec: Obj) -> None:
    """``SetDefaults_PodSpec``, for pods and pod templates alike."""
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    # Conversion keeps the deprecated serviceAccount field equal to serviceAccountName.
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for ctr in _l(spec.get(key)):
            _default_container(ctr)
    for volume in _l(spec.get("volumes")):
        _default_volume(volume)


def _default_pod_template(template: Any) -> None:
    if isinstance(template, dict):
        spec = template.get("spec")
        if isinstance(spec, dict):
            _default_pod_spec(spec)


_DEFAULT_TOLERATIONS: Final = (
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
)


def _default_pod(obj: Obj) -> None:
    """``SetDefaults_Pod`` and ``SetDefaults_PodSpec``, then what admission adds to every pod:
    the ServiceAccount plugin's ``default`` account, the Priority plugin's priority 0, and the
    DefaultTolerationSeconds plugin's 300 s tolerations of not-ready and unreachable nodes."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers"):
        for ctr in _l(spec.get(key)):
            # A limit without a request makes the request equal the limit (pods only).
            resources = _d(_d(ctr).get("resources"))
            limits = resources.get("limits")
            if isinstance(limits, dict) and limits:
                requests = resources.setdefault("requests", {})
                for name, quantity in limits.items():
                    requests.setdefault(name, quantity)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            for ctr in _l(spec.get(key)):
                for port in _l(_d(ctr).get("ports")):
                    if isinstance(port, dict) and not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    _default_pod_spec(spec)
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
        spec["serviceAccount"] = "default"
    if not spec.get("priorityClassName"):
        spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        for key in _DEFAULT_TOLERATIONS:
            if not any(
                _d(t).get("key") == key and _d(t).get("effect") in ("NoExecute", "", None)
                for t in tolerations
            ):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_pod_template(spec.get("template"))


def _default_replica_set(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_pod_template(spec.get("template"))


def _default_stateful_set(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            strategy.setdefault("rollingUpdate", {})
        rolling = strategy.get("rollingUpdate")
        if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
            rolling.setdefault("partition", 0)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    if isinstance(retention, dict):
        for key in ("whenDeleted", "whenScaled"):
            if not retention.get(key):
                retention[key] = "Retain"
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_pod_template(spec.get("template"))
    for claim in _l(spec.get("volumeClaimTemplates")):
        claim_spec = _d(claim).get("spec")
        if isinstance(claim_spec, dict):
            claim_spec.setdefault("volumeMode", "Filesystem")


def _default_daemon_set(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", 1)
                rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_pod_template(spec.get("template"))


def _default_job(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else 6
    labels = _get(spec, "template", "metadata", "labels")
    meta = obj.setdefault("metadata", {})
    if isinstance(labels, dict) and isinstance(meta, dict) and not meta.get("labels"):
        meta["labels"] = dict(labels)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podReplacementPolicy") is None:
        failed = spec.get("podFailurePolicy") is not None
        spec["podReplacementPolicy"] = "Failed" if failed else "TerminatingOrFailed"
    _default_pod_template(spec.get("template"))


def _default_cron_job(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    _default_pod_template(_get(spec, "jobTemplate", "spec", "template"))


def _default_service(obj: Obj) -> None:
    """``SetDefaults_Service`` plus the IP-family fields the service registry fills on create.

    Allocating the cluster IP itself is left to the caller.
    """
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    stype = spec["type"]
    for port in _l(spec.get("ports")):
        if not isinstance(port, dict):
            continue
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    externally_accessible = stype in ("LoadBalancer", "NodePort") or (
        stype == "ClusterIP" and bool(_l(spec.get("externalIPs")))
    )
    if externally_accessible and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and stype in (
        "ClusterIP",
        "NodePort",
        "LoadBalancer",
    ):
        spec["internalTrafficPolicy"] = "Cluster"
    if stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if stype != "ExternalName":
        # A single-stack IPv4 cluster. Headless Services without a selector ask for both
        # families, as upstream's registry does, and get the one the cluster has.
        headless = _cluster_ips(spec) == ["None"]
        if spec.get("ipFamilyPolicy") is None:
            selectorless = headless and not _d(spec.get("selector"))
            spec["ipFamilyPolicy"] = "RequireDualStack" if selectorless else "SingleStack"
        if not _l(spec.get("ipFamilies")):
            spec["ipFamilies"] = ["IPv4"]


def _default_secret(obj: Obj) -> None:
    # Conversion from v1 merges stringData into data (stringData wins) and drops it.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(_s(value).encode()).decode()
    if not obj.get("type"):
        obj["type"] = "Opaque"


def _default_namespace(obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    name = _s(_d(meta).get("name"))
    if name and isinstance(meta, dict):
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels["kubernetes.io/metadata.name"] = name
    # The strategy adds the "kubernetes" finalizer on create; an update keeps the stored list,
    # so only a missing list is filled here.
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict) and spec.get("finalizers") is None:
        spec["finalizers"] = ["kubernetes"]
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Active"


def _default_endpoints(obj: Obj) -> None:
    for subset in _l(obj.get("subsets")):
        for port in _l(_d(subset).get("ports")):
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"


def _default_endpoint_slice(obj: Obj) -> None:
    for port in _l(obj.get("ports")):
        if isinstance(port, dict):
            if port.get("name") is None:
                port["name"] = ""
            if port.get("protocol") is None:
                port["protocol"] = "TCP"


def _default_binding(obj: Obj) -> None:
    # RoleRef is a struct, not a pointer: even a binding without one gets the group.
    ref = obj.setdefault("roleRef", {})
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = RBAC
    for subject in _l(obj.get("subjects")):
        if isinstance(subject, dict) and not subject.get("apiGroup"):
            if subject.get("kind") in ("User", "Group"):
                subject["apiGroup"] = RBAC
            elif subject.get("kind") == "ServiceAccount":
                subject["apiGroup"] = ""


def _default_crd(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict):
        kind = _s(names.get("kind"))
        if not names.get("singular"):
            names["singular"] = kind.lower()
        if not names.get("listKind") and kind:
            names["listKind"] = kind + "List"
    if spec.get("conversion") is None:
        spec["conversion"] = {"strategy": "None"}
    service = _get(spec, "conversion", "webhook", "clientConfig", "service")
    if isinstance(service, dict):
        service.setdefault("port", 443)
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("storedVersions"):
        stored = [v["name"] for v in _l(spec.get("versions")) if _d(v).get("storage") is True]
        if stored:
            status["storedVersions"] = stored[:1]


def _default_webhooks(obj: Obj, *, mutating: bool) -> None:
    for hook in _l(obj.get("webhooks")):
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in _l(hook.get("rules")):
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")
        service = _get(hook, "clientConfig", "service")
        if isinstance(service, dict):
            service.setdefault("port", 443)


type _Defaulter = Callable[[Obj], None]

_DEFAULTERS: Final[dict[tuple[str, str], _Defaulter]] = {
    (CORE, "Pod"): _default_pod,
    (CORE, "PodTemplate"): lambda obj: _default_pod_template(obj.get("template")),
    (CORE, "ReplicationController"): _default_replica_set,
    (CORE, "Service"): _default_service,
    (CORE, "Secret"): _default_secret,
    (CORE, "Namespace"): _default_namespace,
    (CORE, "Endpoints"): _default_endpoints,
    (APPS, "Deployment"): _default_deployment,
    (APPS, "ReplicaSet"): _default_replica_set,
    (APPS, "StatefulSet"): _default_stateful_set,
    (APPS, "DaemonSet"): _default_daemon_set,
    (BATCH, "Job"): _default_job,
    (BATCH, "CronJob"): _default_cron_job,
    (RBAC, "RoleBinding"): _default_binding,
    (RBAC, "ClusterRoleBinding"): _default_binding,
    (APIEXT, "CustomResourceDefinition"): _default_crd,
    (ADMISSION, "MutatingWebhookConfiguration"): lambda obj: _default_webhooks(obj, mutating=True),
    (ADMISSION, "ValidatingWebhookConfiguration"): lambda obj: _default_webhooks(
        obj, mutating=False
    ),
    (DISCOVERY, "EndpointSlice"): _default_endpoint_slice,
}


def default(group: str, kind: str, obj: Obj) -> None:
    """Fills defaults in place, as the API server's defaulting (and pod admission) does.

    Only absent fields are filled, so calling it again, or on an update, changes nothing the
    client set. Kinds without defaults are left alone.

    Args:
        group: API group, ``""`` for the core group.
        kind: Kind, e.g. ``Pod``.
        obj: The decoded object; changed in place.
    """
    defaulter = _DEFAULTERS.get((group, kind))
    if defaulter is not None:
        defaulter(obj)
