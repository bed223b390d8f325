"""All the workload controllers as one task, as kube-controller-manager runs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from sandbox.controllers.controller import Client
from sandbox.controllers.deployment import DeploymentController
from sandbox.controllers.endpoints import EndpointsController, EndpointSliceController
from sandbox.controllers.replicaset import ReplicaSetController
from sandbox.controllers.statefulset import StatefulSetController

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from sandbox.apiserver.objects import Objects
    from sandbox.controllers.controller import Controller


def controllers(objects: Objects) -> list[Controller]:
    """One of each controller, writing through ``objects``."""
    client = Client(objects)
    return [
        DeploymentController(client),
        ReplicaSetController(client),
        StatefulSetController(client),
        EndpointsController(client),
        EndpointSliceController(client),
    ]


async def run_controllers(
    objects: Objects, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run every controller until cancelled; started once all of them listen to the store."""
    async with anyio.create_task_group() as tasks:
        for controller in controllers(objects):
            await tasks.start(controller.run, name=controller.name)
        task_status.started()
