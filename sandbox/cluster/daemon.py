"""The sandbox cluster's process: every part of the cluster as one anyio program.

``python -m sandbox up`` starts it in the background (``python -m sandbox daemon``); it

1. removes what a killed sandbox of the same directory left, and builds the network
   (:mod:`~sandbox.cluster.network`);
2. opens a listener for the API server on the host's loopback (for tools on the host, with
   ``DIR/host.kubeconfig``), then moves itself into the fabric namespace, before any thread
   exists, so every socket it opens from then on is the fabric's: the API server for the
   workstation (``10.88.0.1:6443``, ``DIR/kubeconfig``) and the nodes (``10.89.0.1:6443``,
   behind the ``kubernetes`` Service), the cluster DNS, the corporate resolver, probes and
   port-forwards to pods;
3. runs the API server, the controllers, the scheduler, and per node a kubelet and a
   kube-proxy, writes ``DIR/state.json`` and reports ``ready`` on its progress pipe once
   every node is Ready;
4. on SIGTERM or SIGINT stops the pods gracefully, then removes every namespace it made
   (and with them every link, route and nftables table) and the processes inside.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import anyio

from sandbox.apiserver.objects import now_rfc3339
from sandbox.apiserver.run import Listener, Running, serve
from sandbox.cluster import addresses, corporate, network
from sandbox.cluster.scheduler import Scheduler
from sandbox.controllers import controllers
from sandbox.controllers.controller import Client
from sandbox.dns import DNSSettings, StoreView
from sandbox.dns import serve as serve_dns
from sandbox.node import netns
from sandbox.node.kubelet import Kubelet
from sandbox.node.podnet import PodNetwork
from sandbox.node.proxy import KubeProxy
from sandbox.node.runtime import PodRuntime

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from sandbox.apiserver.server import APIServer

log = logging.getLogger("sandbox")

STATE_FILE = "state.json"
HOST_KUBECONFIG = "host.kubeconfig"
NODES_KUBECONFIG = "nodes.kubeconfig"


@dataclass(frozen=True, slots=True)
class State:
    """What ``DIR/state.json`` records of a running sandbox."""

    pid: int
    prefix: str
    nodes: int
    kubeconfig: str
    host_kubeconfig: str
    api_url: str
    started: float

    @classmethod
    def load(cls, directory: Path) -> State | None:
        try:
            return cls(**json.loads((directory / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, directory: Path) -> None:
        temporary = directory / (STATE_FILE + ".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temporary.replace(directory / STATE_FILE)


def prefix_for(directory: Path) -> str:
    """The namespace-name prefix of the sandbox kept in ``directory`` (one per directory)."""
    digest = hashlib.sha1(str(directory.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"tps{digest[:5]}-"


def run(directory: Path, nodes: int, progress: Callable[[str], None]) -> None:
    """The daemon's whole life (see the module docstring); returns once torn down."""
    directory = directory.resolve()
    prefix = prefix_for(directory)
    plan = network.plan(prefix, nodes)
    try:
        anyio.run(network.tear_down, prefix)
        progress(f"creating the network: fabric, workstation and {nodes} node(s)")
        anyio.run(network.build, plan)
        host_listener = socket.socket()
        host_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen(512)
        _enter(netns.path(plan.fabric))
        anyio.run(_cluster, directory, plan, host_listener, progress)
    finally:
        # Also after a failure or a signal: nothing of this sandbox may outlive it. (Removing
        # the fabric while this process is still inside is fine: it goes when we exit.)
        anyio.run(network.tear_down, prefix)
        (directory / STATE_FILE).unlink(missing_ok=True)


def _enter(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


async def _cluster(
    directory: Path,
    plan: network.Network,
    host_listener: socket.socket,
    progress: Callable[[str], None],
) -> None:
    fabric_listener = socket.socket()
    fabric_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    fabric_listener.bind((addresses.FABRIC_IP, addresses.API_PORT))
    fabric_listener.listen(512)
    host_port = host_listener.getsockname()[1]
    async with anyio.create_task_group() as tasks:
        progress("starting the API server")
        running: Running = await tasks.start(
            lambda task_status: serve(
                directory,
                host=addresses.WORKSTATION_GATEWAY,
                port=addresses.API_PORT,
                extra_ips=(addresses.FABRIC_IP, addresses.KUBERNETES_SERVICE_IP),
                listeners=(
                    Listener(
                        host_listener,
                        f"https://127.0.0.1:{host_port}",
                        directory / HOST_KUBECONFIG,
                    ),
                    Listener(
                        fabric_listener,
                        f"https://{addresses.FABRIC_IP}:{addresses.API_PORT}",
                        directory / NODES_KUBECONFIG,
                    ),
                ),
                advertise=(addresses.FABRIC_IP, addresses.API_PORT),
                task_status=task_status,
            ),
            name="API server",
        )
        api = running.server
        _add_cluster_dns_service(api)
        progress("starting the cluster DNS, the corporate resolver and the controllers")
        await tasks.start(
            lambda task_status: serve_dns(
                StoreView(api.store),
                addresses.FABRIC_IP,
                addresses.DNS_PORT,
                settings=DNSSettings(
                    domain=addresses.CLUSTER_DOMAIN,
                    upstream=(addresses.WORKSTATION_GATEWAY, addresses.DNS_PORT),
                ),
                task_status=task_status,
            ),
            name="cluster DNS",
        )
        await tasks.start(
            lambda task_status: corporate.serve(
                addresses.WORKSTATION_GATEWAY, addresses.DNS_PORT, task_status=task_status
            ),
            name="corporate DNS",
        )
        client = Client(api.objects)
        for controller in [*controllers(api.objects), Scheduler(client)]:
            await tasks.start(controller.run, name=controller.name)
        kubelets: dict[str, Kubelet] = {}
        for node in plan.nodes:
            progress(f"starting {node.name}: kubelet and kube-proxy")
            kubelet = Kubelet(
                api,
                node.name,
                node.ip,
                PodNetwork(node.namespace, node.pod_cidr, plan.pod_prefix(node)),
                directory / "nodes" / node.name,
                cluster_dns=addresses.CLUSTER_DNS_IP,
                cluster_domain=addresses.CLUSTER_DOMAIN,
            )
            kubelets[node.name] = kubelet
            await tasks.start(kubelet.run, name=f"kubelet {node.name}")
            proxy = KubeProxy(api.store, node.namespace, node.ip)
            await tasks.start(proxy.run, name=f"kube-proxy {node.name}")
        api.pod_runtime = PodRuntime(_NodeContainers(kubelets))
        await _until_nodes_ready(api, len(plan.nodes))
        State(
            pid=os.getpid(),
            prefix=plan.prefix,
            nodes=len(plan.nodes),
            kubeconfig=str(running.kubeconfig),
            host_kubeconfig=str(directory / HOST_KUBECONFIG),
            api_url=running.url,
            started=time.time(),
        ).save(directory)
        progress("ready")
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                tasks.cancel_scope.cancel()
                break


class _NodeContainers:
    """The pod runtime's view of all kubelets: each pod is its node's kubelet's."""

    def __init__(self, kubelets: Mapping[str, Kubelet]) -> None:
        self.kubelets = kubelets

    def _of(self, pod: Mapping[str, Any]) -> Kubelet | None:
        return self.kubelets.get(pod.get("spec", {}).get("nodeName", ""))

    def container_pid(self, pod: Mapping[str, Any], container: str) -> int | None:
        kubelet = self._of(pod)
        return kubelet.container_pid(pod, container) if kubelet else None

    def log_file(
        self, pod: Mapping[str, Any], container: str, *, previous: bool = False
    ) -> Path | None:
        kubelet = self._of(pod)
        return kubelet.log_file(pod, container, previous=previous) if kubelet else None

    def is_running(self, pod: Mapping[str, Any], container: str) -> bool:
        kubelet = self._of(pod)
        return kubelet.is_running(pod, container) if kubelet else False


def _add_cluster_dns_service(api: APIServer) -> None:
    """The ``kube-dns`` Service in ``kube-system``: its ClusterIP is what pods' resolv.conf
    names; its endpoint is the DNS server in the fabric (it is not a pod here)."""
    store = api.store
    stamp = now_rfc3339(api.objects.clock)
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    objects: list[tuple[tuple[str, str], dict[str, Any]]] = [
        (
            ("", "services"),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": addresses.CLUSTER_DNS_IP,
                    "clusterIPs": [addresses.CLUSTER_DNS_IP],
                    "ipFamilies": ["IPv4"],
                    "ipFamilyPolicy": "SingleStack",
                    "sessionAffinity": "None",
                    "internalTrafficPolicy": "Cluster",
                    "ports": [{**p, "targetPort": 53} for p in ports],
                },
                "status": {"loadBalancer": {}},
            },
        ),
        (
            ("", "endpoints"),
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "subsets": [{"addresses": [{"ip": addresses.FABRIC_IP}], "ports": ports}],
            },
        ),
        (
            ("discovery.k8s.io", "endpointslices"),
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {**labels, "kubernetes.io/service-name": "kube-dns"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [addresses.FABRIC_IP], "conditions": {"ready": True}}],
                "ports": ports,
            },
        ),
    ]
    for key, template in objects:
        obj = copy.deepcopy(template)
        metadata = obj["metadata"]
        if store.get(key, metadata["namespace"], metadata["name"]) is None:
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = stamp
            store.create(key, obj)


async def _until_nodes_ready(api: APIServer, count: int) -> None:
    ready = anyio.Event()

    def check(*_: object) -> None:
        nodes = api.store.list(("", "nodes"))
        ready_nodes = [
            n
            for n in nodes
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in n.get("status", {}).get("conditions") or []
            )
        ]
        if len(ready_nodes) >= count:
            ready.set()

    api.store.listeners.append(check)
    try:
        check()
        with anyio.fail_after(60):
            await ready.wait()
    finally:
        api.store.listeners.remove(check)
