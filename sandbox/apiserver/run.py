"""Assemble and run the API server: credentials, store, bootstrap objects, HTTPS listener.

:func:`serve` is the whole server as one task: it binds, writes the kubeconfig, reports the
URL through ``task_status.started()``, and serves until cancelled, then closes every watch
and the listener. ``python -m sandbox apiserver`` runs it in the foreground; the tests and
``sandbox up`` run it in a task group of theirs.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from sandbox.apiserver import auth, rbac
from sandbox.apiserver.admission import Admission
from sandbox.apiserver.gc import GarbageCollector
from sandbox.apiserver.objects import NAMESPACES, Objects, now_rfc3339
from sandbox.apiserver.resources import Registry
from sandbox.apiserver.server import APIServer
from sandbox.apiserver.store import DEFAULT_HISTORY, Store

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from anyio.abc import TaskStatus

    from sandbox.apiserver.store import Change, Key

log = logging.getLogger("sandbox.apiserver")
#: The namespaces every cluster starts with.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBERNETES_SERVICE_IP = "10.96.0.1"
API_PORT = 6443


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening socket made by the caller (e.g. inside another network namespace), the
    URL clients use to reach it, and where to write a kubeconfig with that URL."""

    socket: socket.socket
    url: str
    kubeconfig: Path


@dataclass(frozen=True, slots=True)
class Running:
    """What a started server reports: where it listens and how to reach it."""

    url: str
    kubeconfig: Path
    server: APIServer


async def serve(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    history: int = DEFAULT_HISTORY,
    extra_ips: tuple[str, ...] = (),
    listeners: Sequence[Listener] = (),
    advertise: tuple[str, int] | None = None,
    pod_runtime: Any = None,
    task_status: TaskStatus[Running] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the API server until cancelled (see the module docstring).

    Args:
        directory: Where the credentials (``pki/``) and ``kubeconfig`` live.
        host: The address of the listener it binds itself (and the kubeconfig's server).
        port: Its port (0: any free one).
        history: Changes kept per resource for resuming watches.
        extra_ips: More addresses the serving certificate must name.
        listeners: More listening sockets, made by the caller, each with its own kubeconfig.
        advertise: ``(ip, port)`` where pods reach the server: the ``kubernetes`` Service's
            endpoints (none without it).
        pod_runtime: The kubelets' side of pods/log, exec and portforward.
        task_status: Gets the :class:`Running` server once it listens.
    """
    credentials = await anyio.to_thread.run_sync(
        auth.Credentials.load_or_create, directory / "pki", (host, *extra_ips)
    )
    store = Store(history=history)
    registry = Registry()
    admission = Admission(
        resolve_service=_service_resolver(store),
        namespace_labels=lambda name: (
            (store.get(NAMESPACES, "", name) or {}).get("metadata", {}).get("labels")
        ),
    )
    objects = Objects(store, registry, admission)
    authenticator = auth.Authenticator(
        credentials,
        lambda namespace, name: (
            (store.get(("", "serviceaccounts"), namespace, name) or {})
            .get("metadata", {})
            .get("uid")
        ),
    )
    authorizer = rbac.Authorizer(
        lambda resource, namespace: store.list(("rbac.authorization.k8s.io", resource), namespace)
    )
    _bootstrap(objects, credentials, advertise)
    collector = GarbageCollector(objects)

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(512)
    bound_port = listener.getsockname()[1]
    address = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
    url = f"https://{address}"
    server = APIServer(
        objects, authenticator, authorizer, server_address=address, pod_runtime=pod_runtime
    )
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    context = serving_context(directory / "pki")
    sites = [web.SockSite(runner, listener, ssl_context=context)]
    sites += [web.SockSite(runner, extra.socket, ssl_context=context) for extra in listeners]
    kubeconfig = directory / "kubeconfig"
    try:
        for site in sites:
            await site.start()
        auth.write_kubeconfig(kubeconfig, url, credentials)
        for extra in listeners:
            auth.write_kubeconfig(extra.kubeconfig, extra.url, credentials)
        log.info("serving on %s; kubeconfig: %s", url, kubeconfig)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collector.run, name="garbage collector")
            task_status.started(Running(url, kubeconfig, server))
            await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            store.close_watchers()
            # A TLS connection closes gracefully only when its peer answers the close; a
            # client that keeps an idle connection and never does would keep it open (up to
            # 30 s) after the server is gone. Those are cut once the handlers are done.
            handlers = runner.server.connections if runner.server else []
            transports = [h.transport for h in handlers if h.transport is not None]
            await runner.cleanup()
            listener.close()
            for extra in listeners:
                extra.socket.close()
            for transport in transports:
                transport.abort()


def serving_context(pki: Path) -> ssl.SSLContext:
    """The server's TLS settings, from the credentials ``Credentials.load_or_create`` saved
    in ``pki`` (the API server benchmark's baseline serves with the same)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The serving identity as Credentials.load_or_create saved it.
    context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
    # Client certificates are optional (tokens are the other way in) but, when presented,
    # verified against the cluster CA.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=pki / "ca.crt")
    context.set_alpn_protocols(["http/1.1"])
    return context


def _service_resolver(store: Store):  # type: ignore[no-untyped-def]
    async def resolve(namespace: str, name: str, port: int) -> tuple[str, int]:
        """A Service's first ready endpoint, as kube-apiserver dials webhooks (it does not
        go through the ClusterIP either, with --enable-aggregator-routing)."""
        endpoints = store.get(("", "endpoints"), namespace, name) or {}
        service = store.get(("", "services"), namespace, name) or {}
        target = port
        for service_port in service.get("spec", {}).get("ports", []):
            if service_port.get("port") == port:
                target = service_port.get("targetPort", port)
        for subset in endpoints.get("subsets", []):
            for address in subset.get("addresses", []):
                ports = subset.get("ports", [])
                chosen = next(
                    (
                        p["port"]
                        for p in ports
                        if isinstance(target, int) and p.get("port") == target
                    ),
                    None,
                ) or (ports[0]["port"] if ports else target)
                return address["ip"], int(chosen)
        raise OSError(f'no endpoints available for service "{name}"')

    return resolve


def _bootstrap(
    objects: Objects, credentials: auth.Credentials, advertise: tuple[str, int] | None
) -> None:
    """What a new cluster has: its namespaces, the kubernetes Service, default service
    accounts and root CA config maps in every namespace, and the default RBAC policy."""
    store = objects.store
    stamp = now_rfc3339(objects.clock)

    def put(key: Key, obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        if store.get(key, metadata.get("namespace", ""), metadata["name"]) is None:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", stamp)
            store.create(key, obj)

    for policy in rbac.bootstrap_policy():
        plural = "clusterroles" if policy["kind"] == "ClusterRole" else "clusterrolebindings"
        put(("rbac.authorization.k8s.io", plural), copy.deepcopy(policy))

    ca_pem = credentials.ca.certificate_pem.decode()

    def namespace_contents(change_key: Key, change: Change) -> None:
        # The service-account and root-CA-publisher controllers' work.
        if change_key != NAMESPACES or change.type != "ADDED":
            return
        name = change.object["metadata"]["name"]
        put(
            ("", "serviceaccounts"),
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name},
            },
        )
        put(
            ("", "configmaps"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": name},
                "data": {"ca.crt": ca_pem},
            },
        )

    store.listeners.append(namespace_contents)
    for name in SYSTEM_NAMESPACES:
        put(
            NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
    put(
        ("", "services"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": KUBERNETES_SERVICE_IP,
                "clusterIPs": [KUBERNETES_SERVICE_IP],
                "sessionAffinity": "None",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster",
                "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": API_PORT}
                ],
            },
            "status": {"loadBalancer": {}},
        },
    )
    if advertise is not None:
        ip, port = advertise
        # What kube-apiserver's endpoint reconciler keeps for the kubernetes Service.
        put(
            ("", "endpoints"),
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "subsets": [
                    {
                        "addresses": [{"ip": ip}],
                        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                    }
                ],
            },
        )
        put(
            ("discovery.k8s.io", "endpointslices"),
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        )
