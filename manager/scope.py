"""Which namespaces a traffic-manager manages: all of them, a fixed list, or a label selector.

The Helm chart's ``namespaces`` (a list) and ``namespaceSelector`` (a label selector on
namespaces) end up in ``namespaces.yaml``. As the reference defines it, a selector is *static*
when it has exactly one requirement, on the key ``kubernetes.io/metadata.name`` with the
operator ``In`` and at least one value (``matchLabels`` entries count as ``key In [value]``).
A static selection names its namespaces, and the chart gives the manager a Role in each; a
dynamic one is evaluated against the namespaces' labels as they change, with cluster roles.
No selection at all means every namespace, and a cluster-wide manager.

This module is the selection as data, and the label-selector semantics of Kubernetes
(``k8s.io/apimachinery/pkg/labels``); :mod:`manager.inventory` applies it to the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The label every namespace carries with its own name (Kubernetes 1.21+).
NAME_LABEL = "kubernetes.io/metadata.name"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry (a ``matchLabels`` entry is ``key In [value]``)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case "In":
                return self.key in labels and labels[self.key] in self.values
            case "NotIn":
                return self.key not in labels or labels[self.key] not in self.values
            case "Exists":
                return self.key in labels
            case "DoesNotExist":
                return self.key not in labels
        raise ValueError(f"unknown label selector operator {self.operator!r}")

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        return f"{self.key} {self.operator.lower()} ({', '.join(self.values)})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A label selector: every requirement must match (an empty selector matches all)."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def static_names(self) -> frozenset[str] | None:
        """The namespaces a static selector names (see the module docstring), or None when
        the selector is dynamic."""
        if len(self.requirements) != 1:
            return None
        (only,) = self.requirements
        if only.key == NAME_LABEL and only.operator == "In" and only.values:
            return frozenset(only.values)
        return None

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.requirements) or "(everything)"


@dataclass(frozen=True, slots=True)
class NamespaceSelection:
    """The namespaces the manager serves.

    Attributes:
        names: A static selection: exactly these namespaces.
        selector: A dynamic selection: the namespaces whose labels match.

    Neither set: every namespace.
    """

    names: frozenset[str] | None = None
    selector: LabelSelector | None = None

    @property
    def everything(self) -> bool:
        """Whether the manager is cluster-wide (no selection)."""
        return self.names is None and self.selector is None

    @property
    def static(self) -> bool:
        return self.names is not None

    def describe(self) -> str:
        """For logs and error messages."""
        if self.names is not None:
            return "namespaces " + ", ".join(sorted(self.names))
        if self.selector is not None:
            return f"namespaces selected by {self.selector}"
        return "all namespaces"

    @classmethod
    def of(cls, selector: LabelSelector) -> NamespaceSelection:
        """The selection for a ``namespaceSelector``: static when it only names namespaces."""
        names = selector.static_names()
        return cls(names=names) if names is not None else cls(selector=selector)
