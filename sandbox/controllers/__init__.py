"""In-process workload controllers: what kube-controller-manager does for the sandbox.

Deployments, ReplicaSets, StatefulSets, Endpoints and EndpointSlices, each a control loop
that reacts to the API server's store (:mod:`.controller`) and writes through its
``Objects`` like any client. Garbage collection is the API server's (``sandbox.apiserver.gc``);
running pods is the kubelet's: a pod stays Pending until something writes its status.

Usage::

    async with anyio.create_task_group() as tasks:
        await tasks.start(run_controllers, running.server.objects)
"""

from __future__ import annotations

from sandbox.controllers.manager import controllers, run_controllers

__all__ = ["controllers", "run_controllers"]
