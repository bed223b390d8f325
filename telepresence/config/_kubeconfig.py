"""The kubeconfig as plain data: its contexts, and the cluster extensions Telepresence reads.

The files are the ones kubectl would read (:func:`telepresence.kube.kubeconfig_paths`: the
explicit argument, else ``KUBECONFIG``, else ``~/.kube/config``), merged as client-go merges
them: ``clusters``, ``contexts`` and ``users`` by name, the first file that names an entry
winning, and the first ``current-context`` that is set winning. A file ``KUBECONFIG`` lists
but that does not exist is skipped, as kubectl skips it; an explicit file must exist.

Nothing here talks to a cluster or loads credentials: this is what ``list-contexts`` shows
and what the manager-namespace rules need (a cluster's ``telepresence.io`` extension).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "NO_KUBECONFIG",
    "KubeContext",
    "KubeContextSummary",
    "KubeconfigError",
    "list_contexts",
    "read_kubeconfig",
]

NO_KUBECONFIG = "no kubeconfig: set KUBECONFIG or create ~/.kube/config"
#: The namespace of a context that names none, as kubectl defaults it.
DEFAULT_NAMESPACE = "default"
#: The sections merged by name, and the key that holds each entry's fields.
_SECTIONS = {"clusters": "cluster", "contexts": "context", "users": "user"}


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used for this; ``str()`` is one line saying why."""


@dataclass(frozen=True, slots=True)
class KubeContext:
    """A context of the kubeconfig, with its cluster.

    Attributes:
        name: The context's name.
        cluster: The name of its cluster.
        user: The name of its user (empty when it names none).
        server: The cluster's API server URL.
        namespace: The context's namespace (``default`` when it names none).
        extensions: The cluster's ``extensions``, by name (``telepresence.io``, say).
    """

    name: str
    cluster: str
    user: str
    server: str
    namespace: str
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KubeContextSummary:
    """One line of ``list-contexts``."""

    name: str
    cluster: str
    user: str
    namespace: str
    current: bool


@dataclass(slots=True)
class _Entry:
    """A named entry of a section, and the file it came from (for messages)."""

    source: str
    fields: dict[str, Any]


@dataclass(slots=True)
class _Merged:
    files: list[str]
    current_context: str = ""
    sections: dict[str, dict[str, _Entry]] = field(
        default_factory=lambda: {name: {} for name in _SECTIONS}
    )


def read_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> KubeContext:
    """The context ``context`` (by default the current one) of the kubeconfig.

    Args:
        kubeconfig: A kubeconfig file (or ``:``-separated files); None means kubectl's
            rules.
        context: A context name; None means the current context.

    Raises:
        KubeconfigError: No kubeconfig, a malformed file, no such context or no current
            one, or a context whose cluster is not defined.
    """
    merged = _load(kubeconfig)
    contexts = merged.sections["contexts"]
    name = context or merged.current_context
    if not name:
        raise KubeconfigError(
            f"no current context in the kubeconfig ({', '.join(merged.files)}):"
            f" pass a context, or run kubectl config use-context; {_available(contexts)}"
        )
    entry = contexts.get(name)
    if entry is None:
        raise KubeconfigError(f"no context {name!r} in the kubeconfig; {_available(contexts)}")
    cluster_name = _text(entry, "cluster")
    cluster = merged.sections["clusters"].get(cluster_name)
    if cluster is None:
        raise KubeconfigError(
            f"kubeconfig {entry.source}: context {name!r} names the cluster {cluster_name!r},"
            " which the kubeconfig does not define"
        )
    server = _text(cluster, "server")
    if not server:
        raise KubeconfigError(
            f"kubeconfig {cluster.source}: the cluster {cluster_name!r} has no server"
        )
    return KubeContext(
        name=name,
        cluster=cluster_name,
        user=_text(entry, "user"),
        server=server,
        namespace=_text(entry, "namespace") or DEFAULT_NAMESPACE,
        extensions=_extensions(cluster, cluster_name),
    )


def list_contexts(kubeconfig: str | None = None) -> list[KubeContextSummary]:
    """Every context of the kubeconfig, by name, the current one marked.

    Raises:
        KubeconfigError: No kubeconfig, or a malformed file.
    """
    merged = _load(kubeconfig)
    return [
        KubeContextSummary(
            name=name,
            cluster=_text(entry, "cluster"),
            user=_text(entry, "user"),
            namespace=_text(entry, "namespace") or DEFAULT_NAMESPACE,
            current=name == merged.current_context,
        )
        for name, entry in sorted(merged.sections["contexts"].items())
    ]


def _load(kubeconfig: str | None) -> _Merged:
    # Imported here: telepresence.kube loads the Kubernetes client (some 0.4 s), which every
    # user of this package (the CLI, the daemons' process helper) would otherwise pay for.
    from telepresence.kube import KubeTarget, kubeconfig_paths  # noqa: PLC0415

    paths = kubeconfig_paths(KubeTarget(kubeconfig=kubeconfig))
    if paths is None:
        raise KubeconfigError(NO_KUBECONFIG)
    merged = _Merged(files=[])
    listed = [path for path in paths.split(os.pathsep) if path]
    for path in listed:
        try:
            with open(path, encoding="utf-8") as file:
                document = yaml.safe_load(file)
        except FileNotFoundError as error:
            if kubeconfig:
                raise KubeconfigError(f"kubeconfig {path}: no such file") from error
            continue  # client-go skips the files of KUBECONFIG that do not exist
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else error.reason
            raise KubeconfigError(f"kubeconfig {path}: cannot be read: {reason}") from error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise KubeconfigError(f"kubeconfig {path}: not valid YAML{where}") from error
        merged.files.append(path)
        _merge(merged, path, document)
    if not merged.files:
        raise KubeconfigError(f"no kubeconfig: none of {', '.join(listed)} exists")
    return merged


def _merge(merged: _Merged, path: str, document: object) -> None:
    if document is None:
        return  # an empty file is an empty kubeconfig, as client-go reads it
    if not isinstance(document, dict):
        raise KubeconfigError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    current = document.get("current-context")
    if current and not merged.current_context:
        merged.current_context = str(current)
    for section, inner in _SECTIONS.items():
        entries = document.get(section) or []
        if not isinstance(entries, list):
            raise KubeconfigError(f"kubeconfig {path}: {section}: expected a list")
        for index, item in enumerate(entries):
            name = item.get("name") if isinstance(item, dict) else None
            fields = item.get(inner) if isinstance(item, dict) else None
            if not isinstance(name, str) or not name or not isinstance(fields, dict | None):
                raise KubeconfigError(
                    f"kubeconfig {path}: {section}[{index}]: expected name and {inner}"
                )
            merged.sections[section].setdefault(name, _Entry(path, fields or {}))


def _text(entry: _Entry, key: str) -> str:
    value = entry.fields.get(key)
    return value if isinstance(value, str) else ""


def _extensions(cluster: _Entry, name: str) -> dict[str, Any]:
    items = cluster.fields.get("extensions") or []
    if not isinstance(items, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
    ):
        raise KubeconfigError(
            f"kubeconfig {cluster.source}: cluster {name!r}: extensions:"
            " expected a list of name and extension"
        )
    extensions: dict[str, Any] = {}
    for item in items:
        extensions.setdefault(item["name"], item.get("extension"))
    return extensions


def _available(contexts: dict[str, _Entry]) -> str:
    if not contexts:
        return "it has no contexts"
    return f"available: {', '.join(sorted(contexts))}"
