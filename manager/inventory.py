"""The namespaces the manager serves, and the addresses of the pods and Services in them.

Namespace scope is honoured everywhere through this one object: the data plane asks it
whether a destination belongs to a managed pod or Service, the DNS lookups whether a name
is under a managed namespace, and the cluster info takes the pods' addresses from it when the
nodes do not say their pod subnets.

How much it watches depends on the selection (:mod:`manager.scope`):

- static (``dev``, ``staging``): no namespaces (the names are known); pods and Services with
  one watch per namespace, as the chart's Roles allow no more;
- dynamic (a label selector): all namespaces, to evaluate the selector on their labels; pods
  and Services cluster-wide, kept for the matching namespaces;
- all namespaces: pods cluster-wide, only when the cluster info needs their addresses.

The pods of ``hostNetwork`` pods are left out: their addresses are their nodes'.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from manager import kube
from manager.informer import Reflector

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from manager.changes import Signal
    from manager.scope import NamespaceSelection

log = logging.getLogger(__name__)

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Addresses:
    """What the inventory keeps of a pod or a Service."""

    namespace: str
    ips: frozenset[IPAddress]


class Inventory:
    """The managed namespaces and their pods' and Services' addresses.

    Args:
        kubernetes: The API server.
        selection: Which namespaces are managed.
        changed: Notified whenever the namespaces or the addresses change.
        watch_pods: Whether to keep pods' addresses when every namespace is managed (they are
            always kept for a namespaced manager, whose policy needs them).
    """

    def __init__(
        self,
        kubernetes: kube.Kubernetes,
        selection: NamespaceSelection,
        changed: Signal,
        *,
        watch_pods: bool = False,
    ) -> None:
        self.selection = selection
        self._changed = changed
        self._owners: dict[IPAddress, str] | None = None  # address -> namespace, rebuilt lazily
        self._namespaces: Reflector[dict[str, str]] | None = None
        self._pods: list[Reflector[Addresses]] = []
        self._services: list[Reflector[Addresses]] = []
        if selection.names is not None:
            for name in sorted(selection.names):
                self._pods.append(self._reflector(kubernetes, kube.PODS, pod_addresses, name))
                self._services.append(
                    self._reflector(kubernetes, kube.SERVICES, service_addresses, name)
                )
        elif selection.selector is not None:
            self._namespaces = Reflector(kubernetes, kube.NAMESPACES, _labels, self._on_change)
            self._pods.append(self._reflector(kubernetes, kube.PODS, pod_addresses, None))
            self._services.append(
                self._reflector(kubernetes, kube.SERVICES, service_addresses, None)
            )
        elif watch_pods:
            self._pods.append(self._reflector(kubernetes, kube.PODS, pod_addresses, None))

    def _reflector(
        self, kubernetes: kube.Kubernetes, kind: kube.Kind, extract: Any, namespace: str | None
    ) -> Reflector[Addresses]:
        return Reflector(kubernetes, kind, extract, self._on_change, namespace=namespace)

    def _on_change(self) -> None:
        self._owners = None
        self._changed.notify()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; started once every first list is done.

        Raises:
            kube.Forbidden: RBAC does not allow a first list (the chart's roles are missing).
        """
        reflectors: list[Reflector[Any]] = [*self._pods, *self._services]
        if self._namespaces is not None:
            reflectors.insert(0, self._namespaces)
        async with anyio.create_task_group() as tasks:
            for reflector in reflectors:
                await tasks.start(reflector.run, name=f"watch {reflector.name}")
            log.info(
                "serving %s; watching %s",
                self.selection.describe(),
                ", ".join(r.name for r in reflectors) or "nothing",
            )
            task_status.started()

    # -- questions -----------------------------------------------------------------------------

    def manages(self, namespace: str) -> bool:
        """Whether ``namespace`` is one this manager serves."""
        selection = self.selection
        if selection.names is not None:
            return namespace in selection.names
        if selection.selector is not None:
            assert self._namespaces is not None
            labels = self._namespaces.items.get(("", namespace))
            return labels is not None and selection.selector.matches(labels)
        return True

    def managed_namespaces(self) -> frozenset[str] | None:
        """The managed namespaces now, or None for all of them."""
        selection = self.selection
        if selection.names is not None:
            return selection.names
        if selection.selector is not None:
            assert self._namespaces is not None
            return frozenset(
                name
                for (_, name), labels in self._namespaces.items.items()
                if selection.selector.matches(labels)
            )
        return None

    def pod_ips(self) -> set[IPAddress]:
        """The addresses of the pods in the managed namespaces (that are watched)."""
        return self._addresses(self._pods)

    def service_ips(self) -> set[IPAddress]:
        """The ClusterIPs of the Services in the managed namespaces (namespaced managers)."""
        return self._addresses(self._services)

    def owns(self, address: IPAddress) -> bool:
        """Whether ``address`` is a managed pod's or Service's (namespaced managers)."""
        if self._owners is None:
            self._owners = {
                ip: item.namespace
                for reflector in (*self._pods, *self._services)
                for item in reflector.items.values()
                if self.manages(item.namespace)
                for ip in item.ips
            }
        return address in self._owners

    def _addresses(self, reflectors: list[Reflector[Addresses]]) -> set[IPAddress]:
        return {
            ip
            for reflector in reflectors
            for item in reflector.items.values()
            if self.manages(item.namespace)
            for ip in item.ips
        }


def _labels(obj: kube.Object) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def pod_addresses(obj: kube.Object) -> Addresses | None:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    texts = [entry.get("ip") for entry in status.get("podIPs") or []] or [status.get("podIP")]
    ips = frozenset(_parse_ips(texts))
    if not ips:
        return None
    return Addresses(str((obj.get("metadata") or {}).get("namespace") or ""), ips)


def service_addresses(obj: kube.Object) -> Addresses | None:
    spec = obj.get("spec") or {}
    texts = spec.get("clusterIPs") or [spec.get("clusterIP")]
    ips = frozenset(_parse_ips(texts))
    if not ips:
        return None  # headless or ExternalName: no address of its own
    return Addresses(str((obj.get("metadata") or {}).get("namespace") or ""), ips)


def _parse_ips(texts: list[Any]) -> list[IPAddress]:
    ips = []
    for text in texts:
        if isinstance(text, str) and text and text != "None":
            try:
                ips.append(ipaddress.ip_address(text))
            except ValueError:
                continue
    return ips
