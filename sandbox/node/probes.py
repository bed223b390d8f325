"""Probes and lifecycle hooks, as the kubelet's prober runs them.

:func:`run_handler` runs one handler of a probe or a hook against a container instance
(:class:`Target`) and says whether it succeeded, with upstream's wording of a failure, which
``kubectl describe`` shows in ``Unhealthy`` events:

- ``exec``: the command, run inside the container (the launcher joins its network, UTS and
  mount namespaces and its root, the way ``kubectl exec`` enters it); success is exit 0 and
  the message is the command's output.
- ``httpGet``: ``GET`` to the pod's IP (or ``host``) with ``User-Agent: kube-probe/1.32``;
  any status from 200 to 399 succeeds. ``HTTPS`` does not verify the certificate, as the
  kubelet does not.
- ``tcpSocket``: a connection that opens.
- ``grpc``: ``grpc.health.v1.Health/Check`` over HTTP/2 without TLS; ``SERVING`` succeeds.
- ``sleep`` (hooks only): waits.

Connections go through a :data:`Dialer`. In the sandbox the cluster's process runs in the
network namespace that routes to every pod, so the default (:func:`connect_tcp`) reaches pod
IPs; a test living elsewhere hands in one that dials from inside the node's namespace.

:class:`Prober` runs one container instance's probes with upstream's timing and thresholds:
the startup probe first (nothing else runs until it succeeds), then liveness and readiness
side by side, every ``periodSeconds`` after ``initialDelaySeconds``, each attempt bounded by
``timeoutSeconds``; ``successThreshold`` results in a row make a container ready,
``failureThreshold`` in a row make it unready or, for liveness and startup, end it.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import h2.config
import h2.connection
import h2.events
from anyio.streams.tls import TLSStream

from sandbox.apiserver.goformat import go_quote
from sandbox.node import netns

if TYPE_CHECKING:
    from anyio.abc import ByteStream

#: Opens a TCP connection to ``(host, port)``.
Dialer = Callable[[str, int], Awaitable["ByteStream"]]

USER_AGENT = "kube-probe/1.32"
#: Upstream's defaults (``SetDefaults_Probe``), for probes that did not come through defaulting.
DEFAULTS: Mapping[str, int] = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
#: How much of a response or of a command's output is read.
MAX_OUTPUT = 10 * 1024
GRPC_SERVING = 1
GRPC_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


async def connect_tcp(host: str, port: int) -> ByteStream:
    """The default dialer: a connection from the namespace this process runs in."""
    return await anyio.connect_tcp(host, port)


@dataclass(frozen=True, slots=True)
class Target:
    """The container instance a handler acts on."""

    name: str
    pod_ip: str
    #: Its named ports (``ports[].name`` to ``containerPort``).
    ports: Mapping[str, int]
    #: Its main process, for ``exec``; None when it is not running.
    pid: int | None
    env: Mapping[str, str]
    working_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    message: str = ""


class _Failed(Exception):
    """A handler failed; the message is upstream's."""


async def run_handler(
    action: Mapping[str, Any], target: Target, dialer: Dialer, *, time_limit: float | None
) -> Outcome:
    """Run the handler of a probe or hook (see the module docstring); never raises for a
    failure of the container's, only returns one."""
    try:
        if "exec" in action:
            command = [str(word) for word in action["exec"].get("command") or []]
            return await _exec(command, target, time_limit)
        if "httpGet" in action:
            return await _http_get(action["httpGet"], target, dialer, time_limit)
        if "tcpSocket" in action:
            return await _tcp_socket(action["tcpSocket"], target, dialer, time_limit)
        if "grpc" in action:
            return await _grpc(action["grpc"], target, dialer, time_limit)
        if "sleep" in action:
            await anyio.sleep(float(action["sleep"].get("seconds", 0)))
            return Outcome(True)
    except _Failed as failure:
        return Outcome(False, str(failure))
    except OSError as error:  # the launcher itself could not run
        return Outcome(False, str(error))
    return Outcome(False, "unknown probe or hook handler")


def _port(value: Any, target: Target) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if value in target.ports:
        return int(target.ports[value])
    raise _Failed(f"couldn't find port: {value} in container {target.name}")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: BaseException) -> str:
    """Go's words for a failed dial (``connect: connection refused``)."""
    causes: list[BaseException] = [error]
    if isinstance(error.__cause__, BaseExceptionGroup):
        causes = [*error.__cause__.exceptions, error]  # anyio's "all attempts failed"
    elif error.__cause__ is not None:
        causes.insert(0, error.__cause__)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno:
            return f"connect: {os.strerror(cause.errno).lower()}"
    return str(error).lower()


async def _dial(dialer: Dialer, host: str, port: int) -> ByteStream:
    try:
        return await dialer(host, port)
    except OSError as error:
        raise _Failed(f"dial tcp {_host_port(host, port)}: {_reason(error)}") from error


async def _exec(command: list[str], target: Target, time_limit: float | None) -> Outcome:
    if target.pid is None:
        return Outcome(False, f"container {target.name} is not running")
    proc = f"/proc/{target.pid}"
    argv = [*netns.ENTER, "--net", f"{proc}/ns/net", "--uts", f"{proc}/ns/uts"]
    argv += ["--mnt", f"{proc}/ns/mnt", "--root", f"{proc}/root"]
    if target.working_dir:
        argv += ["--chdir", target.working_dir]
    with anyio.move_on_after(time_limit) as scope:
        result = await anyio.run_process(
            [*argv, "--", *command], env=dict(target.env), check=False, stderr=subprocess.STDOUT
        )
    if scope.cancelled_caught:
        return Outcome(False, f"command {go_quote(' '.join(command))} timed out")
    output = result.stdout[:MAX_OUTPUT].decode(errors="replace")
    if result.returncode == 0:
        return Outcome(True, output)
    return Outcome(
        False,
        output.strip() or f"command {go_quote(' '.join(command))} exited with {result.returncode}",
    )


async def _http_get(
    action: Mapping[str, Any], target: Target, dialer: Dialer, time_limit: float | None
) -> Outcome:
    scheme = str(action.get("scheme") or "HTTP").upper()
    host = str(action.get("host") or target.pod_ip)
    port = _port(action.get("port"), target)
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    authority = _host_port(host, port)
    url = f"{scheme.lower()}://{authority}{path}"
    headers = {"host": ("Host", authority), "user-agent": ("User-Agent", USER_AGENT)}
    headers["accept"] = ("Accept", "*/*")
    for header in action.get("httpHeaders") or []:
        headers[str(header["name"]).lower()] = (str(header["name"]), str(header.get("value", "")))
    headers["connection"] = ("Connection", "close")
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.values())
    with anyio.move_on_after(time_limit) as scope:
        try:
            stream = await _dial(dialer, host, port)
        except _Failed as failure:
            raise _Failed(f'Get "{url}": {failure}') from None
        try:
            if scheme == "HTTPS":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                stream = await TLSStream.wrap(
                    stream, hostname=host, ssl_context=context, standard_compatible=False
                )
            await stream.send((request + "\r\n").encode())
            status_line = await _read_line(stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError) as error:
            raise _Failed(f'Get "{url}": {str(error) or "EOF"}') from error
        finally:
            await anyio.aclose_forcefully(stream)
    if scope.cancelled_caught:
        return Outcome(
            False,
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
            "headers)",
        )
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return Outcome(False, f'Get "{url}": malformed HTTP response {go_quote(status_line)}')
    code = int(parts[1])
    if 200 <= code < 400:
        return Outcome(True)
    return Outcome(False, f"HTTP probe failed with statuscode: {code}")


async def _read_line(stream: ByteStream) -> str:
    data = b""
    while b"\r\n" not in data and len(data) < MAX_OUTPUT:
        data += await stream.receive()
    return data.split(b"\r\n", 1)[0].decode("latin-1")


async def _tcp_socket(
    action: Mapping[str, Any], target: Target, dialer: Dialer, time_limit: float | None
) -> Outcome:
    host = str(action.get("host") or target.pod_ip)
    port = _port(action.get("port"), target)
    with anyio.move_on_after(time_limit) as scope:
        stream = await _dial(dialer, host, port)
        await anyio.aclose_forcefully(stream)
    if scope.cancelled_caught:
        return Outcome(False, f"dial tcp {_host_port(host, port)}: i/o timeout")
    return Outcome(True)


async def _grpc(
    action: Mapping[str, Any], target: Target, dialer: Dialer, time_limit: float | None
) -> Outcome:
    """``grpc.health.v1.Health/Check`` for ``service`` (h2 by hand: grpclib dials for itself
    and cannot take the injected dialer)."""
    port = int(action.get("port", 0))
    authority = _host_port(target.pod_ip, port)
    service = str(action.get("service") or "").encode()
    message = b"\x0a" + _varint(len(service)) + service if service else b""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    with anyio.move_on_after(time_limit) as scope:
        try:
            stream = await _dial(dialer, target.pod_ip, port)
        except _Failed as failure:
            raise _Failed(
                f"timeout: failed to connect service {go_quote(authority)} within "
                f"{time_limit or 0:g}s: {failure}"
            ) from None
        try:
            connection.initiate_connection()
            stream_id = connection.get_next_available_stream_id()
            connection.send_headers(
                stream_id,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/grpc.health.v1.Health/Check"),
                    (":authority", authority),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("user-agent", USER_AGENT),
                ],
            )
            frame = b"\x00" + len(message).to_bytes(4, "big") + message
            connection.send_data(stream_id, frame, end_stream=True)
            body, trailers = await _grpc_exchange(connection, stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as error:
            raise _Failed(f"error: health rpc failed: {str(error) or 'EOF'}") from error
        finally:
            await anyio.aclose_forcefully(stream)
    if scope.cancelled_caught:
        return Outcome(False, f"timeout: health rpc did not complete within {time_limit or 0:g}s")
    status = trailers.get("grpc-status", "0")
    if status != "0":
        return Outcome(
            False,
            f"error: health rpc failed: rpc error: code = {status} desc = "
            f"{trailers.get('grpc-message', '')}",
        )
    serving = _health_status(body[5:])
    if serving == GRPC_SERVING:
        return Outcome(True)
    name = GRPC_STATUS_NAMES.get(serving, str(serving))
    return Outcome(False, f'service unhealthy (responded with "{name}")')


async def _grpc_exchange(
    connection: h2.connection.H2Connection, stream: ByteStream
) -> tuple[bytes, dict[str, str]]:
    body = b""
    trailers: dict[str, str] = {}
    await stream.send(connection.data_to_send())
    while True:
        for event in connection.receive_data(await stream.receive()):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                trailers.update({str(k): str(v) for k, v in event.headers or []})
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                return body, trailers
        if pending := connection.data_to_send():
            await stream.send(pending)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _health_status(message: bytes) -> int:
    """Field 1 (``status``, a varint) of a ``HealthCheckResponse``; 0 when absent."""
    if len(message) >= 2 and message[0] == 0x08:
        return message[1] & 0x7F
    return 0


# -- the prober --------------------------------------------------------------------------------


def settings(probe: Mapping[str, Any]) -> dict[str, int]:
    return {key: int(probe.get(key) or default) for key, default in DEFAULTS.items()}


class Prober:
    """One container instance's probes (see the module docstring).

    Args:
        spec: the container's spec (its ``startupProbe``, ``livenessProbe``,
            ``readinessProbe``).
        target: the instance.
        dialer: how to reach the pod.
        on_started: the startup probe succeeded (at once without one).
        on_ready: readiness changed (ready at once without a readiness probe).
        on_unhealthy: a probe attempt failed, with the event's message.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        target: Target,
        dialer: Dialer,
        *,
        on_started: Callable[[], None],
        on_ready: Callable[[bool], None],
        on_unhealthy: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.target = target
        self.dialer = dialer
        self.on_started = on_started
        self.on_ready = on_ready
        self.on_unhealthy = on_unhealthy

    async def run(self) -> str:
        """Probe until cancelled; returns only when the container must be killed, with the
        reason (upstream's ``Killing`` event message)."""
        name = self.target.name
        startup = self.spec.get("startupProbe")
        if startup and not await self._until(startup, "Startup", lambda ok: ok):
            return f"Container {name} failed startup probe, will be restarted"
        self.on_started()
        async with anyio.create_task_group() as tasks:
            readiness = self.spec.get("readinessProbe")
            if readiness:
                tasks.start_soon(self._readiness, readiness)
            else:
                self.on_ready(True)
            liveness = self.spec.get("livenessProbe")
            if not liveness:
                await anyio.sleep_forever()  # until the container exits
            else:
                await self._until(liveness, "Liveness", lambda ok: False)
                tasks.cancel_scope.cancel()
        return f"Container {name} failed liveness probe, will be restarted"

    async def _until(
        self, probe: Mapping[str, Any], kind: str, done: Callable[[bool], bool]
    ) -> bool:
        """Probe until ``done(result)`` holds (True) or ``failureThreshold`` attempts fail in a
        row (False)."""
        timing = settings(probe)
        failures = 0
        await anyio.sleep(timing["initialDelaySeconds"])
        while True:
            ok = await self._attempt(probe, kind, timing)
            if done(ok):
                return True
            failures = 0 if ok else failures + 1
            if failures >= timing["failureThreshold"]:
                return False
            await anyio.sleep(timing["periodSeconds"])

    async def _readiness(self, probe: Mapping[str, Any]) -> None:
        timing = settings(probe)
        ready = False
        streak = 0  # > 0: successes in a row, < 0: failures in a row
        await anyio.sleep(timing["initialDelaySeconds"])
        while True:
            ok = await self._attempt(probe, "Readiness", timing)
            streak = max(streak, 0) + 1 if ok else min(streak, 0) - 1
            if not ready and streak >= timing["successThreshold"]:
                ready = True
                self.on_ready(True)
            elif ready and -streak >= timing["failureThreshold"]:
                ready = False
                self.on_ready(False)
            await anyio.sleep(timing["periodSeconds"])

    async def _attempt(
        self, probe: Mapping[str, Any], kind: str, timing: Mapping[str, int]
    ) -> bool:
        outcome = await run_handler(
            probe, self.target, self.dialer, time_limit=float(timing["timeoutSeconds"])
        )
        if not outcome.success:
            self.on_unhealthy(f"{kind} probe failed: {outcome.message}")
        return outcome.success
