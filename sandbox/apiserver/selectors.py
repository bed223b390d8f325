"""Label and field selectors, parsed from query strings and from ``LabelSelector`` objects.

The grammar is the one in k8s.io/apimachinery/pkg/labels (``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, comma meaning AND) and in .../fields (``=``,
``==``, ``!=`` only). Field selectors only accept the fields each kind indexes; any other is
refused with the server's own ``field label not supported`` error, as clients expect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.apiserver.errors import APIError, bad_request
from sandbox.apiserver.goformat import go_quote

Predicate = Callable[[Mapping[str, Any]], bool]

_LABEL_TERM = re.compile(
    r"""^\s*(?:
        (?P<neg>!)\s*(?P<absent>[^\s,!=()]+)
      | (?P<key>[^\s,!=()]+)\s*(?:
            (?P<op>==|!=|=)\s*(?P<value>[^\s,!=()]*)
          | \s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
        )?
    )\s*$""",
    re.VERBOSE,
)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` value lists."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [term for term in terms if term.strip()]


Requirement = tuple[str, str, frozenset[str]]  # key, operator, values


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse ``labelSelector``; raises ``BadRequest`` with the server's wording."""
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        match = _LABEL_TERM.match(term)
        if match is None:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        if match["neg"]:
            requirements.append((match["absent"], "DoesNotExist", frozenset()))
        elif match["op"]:
            op = "NotIn" if match["op"] == "!=" else "In"
            requirements.append((match["key"], op, frozenset({match["value"]})))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append((match["key"], "In" if match["setop"] == "in" else "NotIn", values))
        else:
            requirements.append((match["key"], "Exists", frozenset()))
    return requirements


class InvalidSelector(ValueError):
    """A ``LabelSelector`` that ``metav1.LabelSelectorAsSelector`` refuses; upstream's words."""


def requirements_from_selector(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """The requirements of a ``LabelSelector`` object: matchLabels and matchExpressions, ANDed;
    absent or empty selects everything.

    Raises:
        InvalidSelector: An unknown operator, or values that do not fit it (In and NotIn need
            some, Exists and DoesNotExist none), as ``labels.NewRequirement`` checks.
    """
    selector = selector or {}
    requirements: list[Requirement] = [
        (str(key), "In", frozenset({str(value)}))
        for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or ():
        key = str(expression.get("key", ""))
        operator = expression.get("operator")
        values = frozenset(str(v) for v in expression.get("values") or ())
        if operator in {"In", "NotIn"}:
            if not values:
                raise InvalidSelector("for 'in', 'notin' operators, values set can't be empty")
        elif operator in {"Exists", "DoesNotExist"}:
            if values:
                raise InvalidSelector("values set must be empty for exists and does not exist")
        else:
            raise InvalidSelector(
                f"{go_quote(str(operator))} is not a valid label selector operator"
            )
        requirements.append((key, str(operator), values))
    return requirements


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` object as the string ``metav1.LabelSelectorAsSelector(...).String()``
    gives: matchLabels as ``key=value``, expressions as ``key in (a,b)``, ``key notin (a)``,
    ``key`` and ``!key``, sorted by key and joined by commas."""
    selector = selector or {}
    terms: list[tuple[str, str]] = [
        (str(key), f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or ():
        key = str(expression.get("key", ""))
        values = ",".join(sorted(str(v) for v in expression.get("values") or ()))
        match expression.get("operator"):
            case "In":
                terms.append((key, f"{key} in ({values})"))
            case "NotIn":
                terms.append((key, f"{key} notin ({values})"))
            case "Exists":
                terms.append((key, key))
            case "DoesNotExist":
                terms.append((key, f"!{key}"))
    return ",".join(text for _, text in sorted(terms, key=lambda term: term[0]))


def labels_match(requirements: list[Requirement], labels: Mapping[str, Any] | None) -> bool:
    """Whether labels meet every requirement (NotIn also matches a missing label, as upstream)."""
    labels = labels or {}
    for key, operator, values in requirements:
        present = key in labels
        if operator == "In":
            if not present or str(labels[key]) not in values:
                return False
        elif operator == "NotIn":
            if present and str(labels[key]) in values:
                return False
        elif operator == "Exists":
            if not present:
                return False
        elif operator == "DoesNotExist":
            if present:
                return False
        else:
            return False
    return True


# Fields each kind indexes for field selectors (beyond metadata.name and metadata.namespace),
# as registered by kube-apiserver's storage for that kind.
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    ("", "events"): (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "replicationcontrollers"): ("status.replicas",),
    ("apps", "replicasets"): ("status.replicas",),
    ("batch", "jobs"): ("status.successful",),
    ("certificates.k8s.io", "certificatesigningrequests"): ("spec.signerName",),
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if path == "source" and isinstance(value, Mapping):  # events: source.component
        value = value.get("component")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(
    text: str, key: tuple[str, str], custom: tuple[str, ...] = ()
) -> Predicate:
    """Parse ``fieldSelector`` for the resource ``key`` (group, plural) into a predicate."""
    allowed = {"metadata.name", "metadata.namespace", *_FIELDS.get(key, ()), *custom}
    terms: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([^\s!=]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term.strip()}'")
        field, operator, value = match.groups()
        if field not in allowed:
            raise APIError(400, "BadRequest", f"field label not supported: {field}")
        terms.append((field, operator != "!=", value))

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) is equal for f, equal, v in terms)

    return predicate
