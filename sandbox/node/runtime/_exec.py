"""``pods/exec``: a command in a container over the WebSocket remote-command protocol.

The protocol is ``v5.channel.k8s.io`` as kubectl 1.32 speaks it, down to ``channel.k8s.io``;
the version decides what the client may send (resizes from v3, closing stdin from v5) and how
the final status travels (a ``Status`` object from v4, before that the bare message, and
nothing on success). What the client sends on stdin goes to the command, the command's output
comes back on stdout and stderr (both on stdout with a terminal), and when it exits its status
carries the exit code, so ``kubectl exec`` exits with it. A client that goes away kills the
command; a command that cannot start answers the kubelet's ``InternalError`` on the status
channel. How the command enters the container is :mod:`~sandbox.node.runtime._commands`.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from aiohttp import WSMsgType

from sandbox.apiserver import errors
from sandbox.node.runtime._channels import (
    CLOSE,
    ERROR,
    RESIZE,
    STDIN,
    channel_websocket,
    send_error,
)
from sandbox.node.runtime._commands import (
    DEFAULT_PATH,
    Command,
    ContainerProcess,
    TerminalStream,
    container_process,
    find_executable,
    start_command,
)
from sandbox.node.runtime._pods import flag, go_list, stream_container

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp import web

    from sandbox.node.runtime._pods import Containers

#: The remote-command subprotocols, newest first, and their versions.
EXEC_PROTOCOLS = {
    "v5.channel.k8s.io": 5,
    "v4.channel.k8s.io": 4,
    "v3.channel.k8s.io": 3,
    "v2.channel.k8s.io": 2,
    "channel.k8s.io": 1,
}


async def serve_exec(
    http: web.Request, pod: dict[str, Any], containers: Containers
) -> web.StreamResponse:
    """Answer a ``pods/exec`` request: run the command, then close the WebSocket."""
    query = http.query
    container = stream_container(pod, query.get("container", ""))
    command = query.getall("command", [])
    if not command:
        raise errors.bad_request("you must specify at least 1 command")
    tty, stdin = flag(query, "tty"), flag(query, "stdin")
    stdout, stderr = flag(query, "stdout"), flag(query, "stderr") and not tty
    if not (stdin or stdout or stderr):
        raise errors.bad_request("you must specify at least one of stdin, stdout, stderr")
    target = container_process(containers, pod, container)
    async with channel_websocket(http, "exec", EXEC_PROTOCOLS) as ws:
        version = EXEC_PROTOCOLS.get(ws.ws_protocol or "", 1)
        await ExecSession(ws, version, command).run(
            target, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
        )
    return ws


def exit_status(code: int, command: Sequence[str]) -> dict[str, Any]:
    """The ``Status`` the error channel carries when a command exits (protocol v4 and up)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"{go_list(command)}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def start_failure(message: str) -> dict[str, Any]:
    """The ``Status`` for a command that could not be started (the kubelet's InternalError)."""
    cause = f"error executing command in container: {message}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


class ExecSession:
    """One exec over an open WebSocket: client messages to the command, its output back,
    then its status on the error channel."""

    def __init__(self, ws: web.WebSocketResponse, version: int, command: Sequence[str]) -> None:
        self.ws = ws
        self.version = version
        self.command = list(command)

    async def run(
        self, container: ContainerProcess, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
    ) -> None:
        path = container.env.get("PATH", DEFAULT_PATH)
        if problem := find_executable(self.command[0], container.root, container.cwd, path):
            await self.send_status(start_failure(problem))
            return
        try:
            started = await start_command(
                container, self.command, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
            )
        except OSError as error:
            await self.send_status(start_failure(f"cannot start the command: {error}"))
            return
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._from_client, started, tasks.cancel_scope)
                async with anyio.create_task_group() as outputs:
                    for channel, stream in started.outputs:
                        outputs.start_soon(self._to_client, channel, stream, tasks.cancel_scope)
                code = await started.process.wait()
                await self.send_status(exit_status(code if code >= 0 else 128 - code, self.command))
                tasks.cancel_scope.cancel()
        finally:
            await started.kill()

    async def send_status(self, status: dict[str, Any]) -> None:
        if self.version >= 4:
            payload = json.dumps(status, separators=(",", ":")).encode()
        elif status["status"] == "Success":
            return
        else:
            payload = status["message"].encode()  # v1 to v3: the message as text
        await send_error(self.ws, ERROR, payload)

    async def _to_client(
        self, channel: int, stream: anyio.abc.ByteReceiveStream, scope: anyio.CancelScope
    ) -> None:
        prefix = bytes([channel])
        try:
            async for data in stream:
                await self.ws.send_bytes(prefix + data)
        except ConnectionResetError:
            scope.cancel()  # the client is gone: so is the command
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def _from_client(self, command: Command, scope: anyio.CancelScope) -> None:
        stdin = command.stdin
        async for message in self.ws:
            data = message.data
            if message.type is not WSMsgType.BINARY or not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and stdin is not None and payload:
                try:
                    await stdin.send(payload)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    stdin = None  # the command closed its input: drop the rest
            elif channel == RESIZE and command.terminal is not None and self.version >= 3:
                self._resize(command.terminal, payload)
            elif channel == CLOSE and self.version >= 5 and payload[:1] == bytes([STDIN]):
                if stdin is not None and command.terminal is None:
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await stdin.aclose()
                stdin = None
        scope.cancel()  # the client closed the connection: the command is killed

    @staticmethod
    def _resize(terminal: TerminalStream, payload: bytes) -> None:
        try:
            size = json.loads(payload)
            terminal.resize(int(size["Width"]), int(size["Height"]))
        except (ValueError, KeyError, TypeError):
            pass  # a malformed resize is ignored, as the kubelet does
