"""The Endpoints and EndpointSlice controllers: a Service's selector and its pods' readiness.

For each Service with a selector (one without is someone else's to fill, and left alone),
the pods of its namespace that the selector matches and that have an IP are its endpoints:

- Endpoints (``pkg/controller/endpoint``): ready pods under ``addresses``, others under
  ``notReadyAddresses`` (all under ``addresses`` with ``publishNotReadyAddresses``);
  terminating and finished pods are left out. Addresses with the same resolved ports share
  a subset, sorted by IP (``RepackSubsets``).
- EndpointSlices (``pkg/controller/endpointslice``): one slice per set of resolved ports,
  named ``<service>-<5 random>``, labelled ``kubernetes.io/service-name`` and
  ``endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io``, owned by the
  Service; terminating pods stay with the conditions ``ready`` (serving and not
  terminating), ``serving`` (Ready) and ``terminating``.

A service port's ``targetPort`` may name a container port; it resolves per pod against the
containers' ports of that name and protocol, and a pod without one is left out of that port
(``FindPort``). A pod whose ``spec.hostname`` is set and whose ``spec.subdomain`` is the
Service's name (a StatefulSet pod under its governing Service) carries that hostname, which
the cluster DNS serves. A Service that goes takes its Endpoints and slices with it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox.apiserver.selectors import labels_match, requirements_from_selector
from sandbox.controllers import pods as podutil
from sandbox.controllers.controller import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    PODS,
    SERVICES,
    Controller,
    ObjectKey,
    editable,
    key_of,
)

if TYPE_CHECKING:
    from sandbox.apiserver.store import Change, Key, Obj

log = logging.getLogger("sandbox.controllers.endpoints")
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
#: ``--max-endpoints-per-slice``'s default.
MAX_ENDPOINTS_PER_SLICE = 100


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One pod as a Service's endpoint: where it is, how ready, and its resolved ports."""

    pod: Obj
    ip: str
    ports: tuple[tuple[str, int, str, str | None], ...]  # name, port, protocol, appProtocol
    serving: bool
    terminating: bool
    hostname: str | None

    @property
    def ready(self) -> bool:
        return self.serving and not self.terminating


def selector_of(service: Obj) -> dict[str, str] | None:
    """The Service's selector; None (an empty one too, as the API stores it) for none."""
    return service.get("spec", {}).get("selector") or None


def headless(service: Obj) -> bool:
    return bool(service.get("spec", {}).get("clusterIP") == "None")


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """``FindPort``: a numeric targetPort as it is, a named one from the pod's containers
    (and restartable init containers, the sidecars)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    spec = pod.get("spec", {})
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for container in [*(spec.get("containers") or []), *sidecars]:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def pod_ipv4(pod: Obj) -> str | None:
    status = pod.get("status", {})
    candidates = [entry.get("ip") for entry in status.get("podIPs") or []]
    candidates.append(status.get("podIP"))
    for candidate in candidates:
        if candidate:
            try:
                if ipaddress.ip_address(candidate).version == 4:
                    return str(candidate)
            except ValueError:
                continue
    return None


def endpoints_of(service: Obj, pods: list[Obj], *, include_terminating: bool) -> list[Endpoint]:
    """The Service's endpoints among ``pods`` (``ShouldPodBeInEndpoints`` and ports)."""
    selector = selector_of(service)
    if selector is None:
        return []
    requirements = requirements_from_selector({"matchLabels": selector})
    spec = service.get("spec", {})
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    name = service["metadata"]["name"]
    found = []
    for pod in pods:
        if not labels_match(requirements, pod["metadata"].get("labels")):
            continue
        if podutil.terminal(pod):
            continue
        terminating = podutil.deleting(pod)
        if terminating and not include_terminating:
            continue
        ip = pod_ipv4(pod)
        if ip is None:
            continue
        ports = []
        for service_port in spec.get("ports") or []:
            number = find_port(pod, service_port)
            if number is None:
                log.debug("pod %s has no port %s", pod["metadata"]["name"], service_port)
                continue
            ports.append(
                (
                    service_port.get("name", ""),
                    number,
                    service_port.get("protocol", "TCP"),
                    service_port.get("appProtocol"),
                )
            )
        if not spec.get("ports") and not headless(service):
            continue  # a Service with ports asks for some, a headless one may have none
        pod_spec = pod.get("spec", {})
        hostname = (
            pod_spec.get("hostname")
            if pod_spec.get("hostname") and pod_spec.get("subdomain") == name
            else None
        )
        found.append(
            Endpoint(
                pod=pod,
                ip=ip,
                ports=tuple(ports),
                serving=publish_not_ready or podutil.ready(pod),
                terminating=terminating,
                hostname=hostname,
            )
        )
    return found


def _service_of_pod_change(store_list: Any, change: Change) -> set[ObjectKey]:
    """The Services whose selector matched the pod before or after the change."""
    keys = set()
    for pod in (change.object, change.previous):
        if pod is None:
            continue
        namespace = pod["metadata"].get("namespace", "")
        for service in store_list(SERVICES, namespace):
            selector = selector_of(service)
            if selector is not None and all(
                (pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items()
            ):
                keys.add(key_of(service))
    return keys


def _target_ref(pod: Obj) -> dict[str, Any]:
    metadata = pod["metadata"]
    return {
        "kind": "Pod",
        "namespace": metadata.get("namespace", ""),
        "name": metadata["name"],
        "uid": metadata.get("uid"),
    }


def _managed_labels(service: Obj) -> dict[str, str]:
    """The Service's labels, plus ``service.kubernetes.io/headless`` for a headless one."""
    labels = dict(service["metadata"].get("labels") or {})
    if headless(service):
        labels[HEADLESS] = ""
    else:
        labels.pop(HEADLESS, None)
    return labels


class EndpointsController(Controller):
    name = "endpoints-controller"
    primary = SERVICES

    def on_change(self, key: Key, change: Change) -> None:
        if key in (SERVICES, ENDPOINTS):
            self.queue.add(key_of(change.object))
        elif key == PODS:
            for service in _service_of_pod_change(self.store.list, change):
                self.queue.add(service)

    async def sync(self, key: ObjectKey) -> None:
        namespace, name = key
        service = self.store.get(SERVICES, namespace, name)
        current = self.store.get(ENDPOINTS, namespace, name)
        if service is None:
            if current is not None:
                await self.client.delete(ENDPOINTS, current)
            return
        if selector_of(service) is None:
            return
        include = bool(service.get("spec", {}).get("publishNotReadyAddresses"))
        found = endpoints_of(service, self.store.list(PODS, namespace), include_terminating=include)
        labels = _managed_labels(service)
        if service.get("spec", {}).get("ports"):
            # Endpoints lists a pod under the ports it has; one with none is not listed.
            found = [endpoint for endpoint in found if endpoint.ports]
        subsets = _subsets(found)
        if current is None:
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "labels": labels},
            }
            if subsets:
                body["subsets"] = subsets
            await self.client.create(ENDPOINTS, namespace, body)
            return
        if (
            current.get("subsets", []) == subsets
            and (current["metadata"].get("labels") or {}) == labels
        ):
            return
        updated = editable(current)
        updated["metadata"]["labels"] = labels
        if subsets:
            updated["subsets"] = subsets
        else:
            updated.pop("subsets", None)
        await self.client.update(ENDPOINTS, updated)


def _subsets(found: list[Endpoint]) -> list[Obj]:
    """``RepackSubsets``: addresses grouped by their ports, each list sorted by IP."""
    groups: dict[tuple[Any, ...], dict[str, list[Obj]]] = {}
    for endpoint in found:
        address: dict[str, Any] = {"ip": endpoint.ip}
        if endpoint.hostname:
            address["hostname"] = endpoint.hostname
        if node := endpoint.pod.get("spec", {}).get("nodeName"):
            address["nodeName"] = node
        address["targetRef"] = _target_ref(endpoint.pod)
        group = groups.setdefault(endpoint.ports, {"addresses": [], "notReadyAddresses": []})
        group["addresses" if endpoint.serving else "notReadyAddresses"].append(address)
    subsets = []
    for ports, group in sorted(groups.items(), key=lambda item: item[0]):
        subset: dict[str, Any] = {}
        for field in ("addresses", "notReadyAddresses"):
            if group[field]:
                subset[field] = sorted(group[field], key=lambda a: ipaddress.ip_address(a["ip"]))
        if ports:
            subset["ports"] = [_port(*port) for port in ports]
        subsets.append(subset)
    return subsets


def _port(name: str, number: int, protocol: str, app_protocol: str | None) -> dict[str, Any]:
    port: dict[str, Any] = {"port": number, "protocol": protocol}
    if name:
        port["name"] = name
    if app_protocol:
        port["appProtocol"] = app_protocol
    return port


class EndpointSliceController(Controller):
    name = "endpointslice-controller"
    primary = SERVICES

    def on_change(self, key: Key, change: Change) -> None:
        if key == SERVICES:
            self.queue.add(key_of(change.object))
        elif key == ENDPOINT_SLICES:
            labels = change.object["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY) == SLICE_CONTROLLER and labels.get(SERVICE_NAME):
                namespace = change.object["metadata"].get("namespace", "")
                self.queue.add((namespace, labels[SERVICE_NAME]))
        elif key == PODS:
            for service in _service_of_pod_change(self.store.list, change):
                self.queue.add(service)

    def _slices_of(self, namespace: str, name: str) -> list[Obj]:
        return [
            s
            for s in self.store.list(ENDPOINT_SLICES, namespace)
            if (s["metadata"].get("labels") or {}).get(SERVICE_NAME) == name
            and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == SLICE_CONTROLLER
        ]

    async def sync(self, key: ObjectKey) -> None:
        namespace, name = key
        service = self.store.get(SERVICES, namespace, name)
        existing = self._slices_of(namespace, name)
        if service is None or selector_of(service) is None:
            # Gone (its ownerReference would take the slices too), or not ours to fill.
            for stale in existing if service is None else []:
                await self.client.delete(ENDPOINT_SLICES, stale)
            return
        found = endpoints_of(service, self.store.list(PODS, namespace), include_terminating=True)
        wanted = _slices(service, found)
        # Reuse slices with the same ports, in creation order; create or delete the rest.
        unused = sorted(existing, key=lambda s: s["metadata"].get("creationTimestamp", ""))
        for body in wanted:
            match = next((s for s in unused if s.get("ports", []) == body["ports"]), None)
            if match is None:
                body["metadata"]["generateName"] = podutil.generate_name(name)
                await self.client.create(ENDPOINT_SLICES, namespace, body)
                continue
            unused.remove(match)
            if all(match.get(k) == body.get(k) for k in ("endpoints", "ports", "addressType")) and (
                match["metadata"].get("labels") == body["metadata"]["labels"]
            ):
                continue
            updated = editable(match)
            updated["metadata"]["labels"] = body["metadata"]["labels"]
            updated["metadata"]["ownerReferences"] = body["metadata"]["ownerReferences"]
            for field in ("endpoints", "ports", "addressType"):
                updated[field] = body[field]
            await self.client.update(ENDPOINT_SLICES, updated)
        for stale in unused:
            await self.client.delete(ENDPOINT_SLICES, stale)


def _slices(service: Obj, found: list[Endpoint]) -> list[Obj]:
    """The slices a Service wants: one per set of ports (at least one, maybe empty), of at
    most :data:`MAX_ENDPOINTS_PER_SLICE` endpoints, each sorted by IP."""
    metadata = service["metadata"]
    labels = {
        **_managed_labels(service),
        SERVICE_NAME: metadata["name"],
        MANAGED_BY: SLICE_CONTROLLER,
    }
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    groups: dict[tuple[Any, ...], list[Endpoint]] = {}
    for endpoint in found:
        groups.setdefault(endpoint.ports, []).append(endpoint)
    if not groups:
        # An empty slice still says "no endpoints" rather than "not looked at yet".
        service_ports = tuple(
            (p.get("name", ""), None, p.get("protocol", "TCP"), p.get("appProtocol"))
            for p in service.get("spec", {}).get("ports") or []
        )
        groups[service_ports] = []
    slices = []
    for ports, members in sorted(groups.items(), key=lambda item: repr(item[0])):
        members.sort(key=lambda e: ipaddress.ip_address(e.ip))
        for start in range(0, max(len(members), 1), MAX_ENDPOINTS_PER_SLICE):
            chunk = members[start : start + MAX_ENDPOINTS_PER_SLICE]
            slices.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"labels": dict(labels), "ownerReferences": [owner]},
                    "addressType": "IPv4",
                    "endpoints": [_slice_endpoint(e) for e in chunk],
                    "ports": [_slice_port(*port) for port in ports],
                }
            )
    return slices


def _slice_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "addresses": [endpoint.ip],
        "conditions": {
            "ready": endpoint.ready,
            "serving": endpoint.serving,
            "terminating": endpoint.terminating,
        },
    }
    if endpoint.hostname:
        entry["hostname"] = endpoint.hostname
    if node := endpoint.pod.get("spec", {}).get("nodeName"):
        entry["nodeName"] = node
    entry["targetRef"] = _target_ref(endpoint.pod)
    return entry


def _slice_port(
    name: str, number: int | None, protocol: str, app_protocol: str | None
) -> dict[str, Any]:
    port: dict[str, Any] = {"name": name, "protocol": protocol}
    if number is not None:
        port["port"] = number
    if app_protocol:
        port["appProtocol"] = app_protocol
    return port
