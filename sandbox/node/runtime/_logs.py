"""``pods/log``: a container's CRI log file as ``kubectl logs`` prints it.

The log request is checked as kube-apiserver's ``ValidatePodLogOptions`` checks it, and the
file chosen as the kubelet's ``validateContainerLogStatus`` does (the current instance's, the
previous one's, or the last one's while a crashed container waits to restart). The answer is
``text/plain``, chunked. containerd writes the file in the CRI log format (see
:class:`~sandbox.node.runtime.Containers`); :class:`LogFormatter` is the parsing and filtering
(``sinceTime``, ``timestamps``, ``limitBytes``), with no I/O, and :func:`tail_offset` finds
where ``tailLines`` start by reading the file backwards. ``follow`` polls the file and the
container, as the kubelet's reader does once it hits the end of the file: the stream ends when
the container stops (or a new instance starts) or the client goes away, and goes on in the new
file when the log is rotated.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from sandbox.apiserver import errors
from sandbox.node.runtime._pods import (
    READ_SIZE,
    Containers,
    container_status,
    flag,
    log_container,
    pod_name,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from multidict import MultiMapping

log = logging.getLogger("sandbox.node")
#: How often a followed log checks for more output and for its container's end.
FOLLOW_INTERVAL = 0.1
#: Go's ``time.RFC3339`` layout, as the kubelet's parse errors quote it.
RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"


async def serve_log(
    http: web.Request, pod: dict[str, Any], containers: Containers, follow_interval: float
) -> web.StreamResponse:
    """Answer a ``pods/log`` request: the container's output as text, followed if asked."""
    options = log_options(http.query, pod)
    container = log_container(pod, options.container)
    path = _log_file(containers, pod, container, options.previous)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(http)
    try:
        if path is not None:
            copy = LogCopy(containers, pod, container, options, follow_interval)
            await copy.run(http, response, path)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    except OSError as error:  # the file went away: the stream just ends, as upstream
        log.warning("reading the log of %s/%s: %s", pod_name(pod), container, error)
    return response


def _log_file(
    containers: Containers, pod: Mapping[str, Any], container: str, previous: bool
) -> Path | None:
    """The log file a request reads, or the kubelet's error (``validateContainerLogStatus``)."""
    name = pod_name(pod)
    if previous:
        path = containers.log_file(pod, container, previous=True)
        if path is None:
            raise errors.bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        return path
    status = container_status(pod, container) or {}
    state = status.get("state") or {}
    crashed = (status.get("lastState") or {}).get("terminated") is not None
    if containers.is_running(pod, container) or "running" in state:
        return containers.log_file(pod, container)
    if "terminated" in state or crashed:
        # A container waiting to restart shows its last instance's output, as upstream.
        path = containers.log_file(pod, container) or containers.log_file(
            pod, container, previous=True
        )
        if path is None:
            raise errors.bad_request(f'container "{container}" in pod "{name}" is terminated')
        return path
    reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
    raise errors.bad_request(
        f'container "{container}" in pod "{name}" is waiting to start: {reason}'
    )


def _integer(query: MultiMapping[str], name: str) -> int | None:
    value = query.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rfc3339_nanoseconds(text: str) -> int:
    """An RFC 3339 time (any fraction of a second, up to nanoseconds) as nanoseconds since the
    epoch; ValueError when it is not one."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(text)
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = dt.datetime.fromisoformat(f"{day}T{clock}{zone}")
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


@dataclass(frozen=True, slots=True)
class LogOptions:
    """A ``pods/log`` request's options (``PodLogOptions``)."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    since_ns: int | None = None
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


def log_options(query: MultiMapping[str], pod: Mapping[str, Any]) -> LogOptions:
    """The options of a log request, checked as ``ValidatePodLogOptions`` checks them."""
    since_seconds = _integer(query, "sinceSeconds")
    tail_lines = _integer(query, "tailLines")
    limit_bytes = _integer(query, "limitBytes")
    since_ns = None
    if since_time := query.get("sinceTime", ""):
        try:
            since_ns = rfc3339_nanoseconds(since_time)
        except ValueError:
            raise errors.bad_request(
                f'parsing time "{since_time}" as "{RFC3339_LAYOUT}": cannot parse '
                f'"{since_time}" as "2006"'
            ) from None
    problems: list[tuple[str, Any, str]] = []
    if tail_lines is not None and tail_lines < 0:
        problems.append(("tailLines", tail_lines, "must be greater than or equal to 0"))
    if limit_bytes is not None and limit_bytes < 1:
        problems.append(("limitBytes", limit_bytes, "must be greater than 0"))
    if since_seconds is not None:
        if since_time:
            why = "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
            raise _invalid_log_options(pod, [("", None, why)])
        if since_seconds < 1:
            problems.append(("sinceSeconds", since_seconds, "must be greater than 0"))
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    if problems:
        raise _invalid_log_options(pod, problems)
    return LogOptions(
        container=query.get("container", ""),
        follow=flag(query, "follow"),
        previous=flag(query, "previous"),
        since_ns=since_ns,
        timestamps=flag(query, "timestamps"),
        tail_lines=tail_lines,
        limit_bytes=limit_bytes,
    )


def _invalid_log_options(
    pod: Mapping[str, Any], problems: Sequence[tuple[str, Any, str]]
) -> errors.APIError:
    name = pod_name(pod)
    described = [
        f"{field}: Invalid value: {value}: {why}" if field else why
        for field, value, why in problems
    ]
    message = f'PodLogOptions "{name}" is invalid: ' + (
        described[0] if len(described) == 1 else f"[{', '.join(described)}]"
    )
    causes = [
        {"reason": "FieldValueInvalid", "message": text, "field": field}
        for (field, _, _), text in zip(problems, described, strict=True)
    ]
    details = {"name": name, "kind": "PodLogOptions", "causes": causes}
    return errors.APIError(422, "Invalid", message, details=details)


class LogFormatter:
    """CRI log records in, what ``kubectl logs`` prints out; no I/O.

    Records may arrive split anywhere (a read ends mid-record): the incomplete tail is kept
    for the next :meth:`feed`. As the kubelet does, a timestamp prefixes only records that
    start a line, records older than ``since_ns`` are dropped, and output stops after
    ``limit_bytes``.
    """

    def __init__(
        self,
        *,
        timestamps: bool = False,
        since_ns: int | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.timestamps = timestamps
        self.since_ns = since_ns
        self.remaining = limit_bytes
        self._pending = b""
        self._line_start = True

    @property
    def done(self) -> bool:
        """Whether ``limit_bytes`` have been produced: nothing more will be."""
        return self.remaining is not None and self.remaining <= 0

    def feed(self, data: bytes) -> bytes:
        """The output for every record that ``data`` completes."""
        buffer = self._pending + data if self._pending else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._pending = buffer
            return b""
        self._pending = buffer[end + 1 :]
        output = bytearray()
        for record in buffer[:end].split(b"\n"):
            self._format(record, output)
        if self.remaining is not None:
            del output[max(self.remaining, 0) :]
            self.remaining -= len(output)
        return bytes(output)

    def _format(self, record: bytes, output: bytearray) -> None:
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            return  # not a CRI record: the kubelet skips it too
        timestamp, _stream, tags = parts[:3]
        content = parts[3] if len(parts) == 4 else b""
        if self.since_ns is not None:
            try:
                if rfc3339_nanoseconds(timestamp.decode()) < self.since_ns:
                    return
            except ValueError:
                return
        if self.timestamps and self._line_start:
            output += timestamp
            output += b" "
        output += content
        self._line_start = tags.split(b":", 1)[0] != b"P"
        if self._line_start:
            output += b"\n"


class LogCopy:
    """One log request's copy from the log file(s) to the response."""

    def __init__(
        self,
        containers: Containers,
        pod: Mapping[str, Any],
        container: str,
        options: LogOptions,
        follow_interval: float,
    ) -> None:
        self.containers = containers
        self.pod = pod
        self.container = container
        self.options = options
        self.follow = options.follow and not options.previous
        self.follow_interval = follow_interval
        self.formatter = LogFormatter(
            timestamps=options.timestamps,
            since_ns=options.since_ns,
            limit_bytes=options.limit_bytes,
        )

    async def run(self, http: web.Request, response: web.StreamResponse, path: Path) -> None:
        offset = 0
        if self.options.tail_lines is not None:
            offset = await anyio.to_thread.run_sync(tail_offset, path, self.options.tail_lines)
        # A followed log that is rotated (renamed, a new file in its place) goes on there.
        while await self._copy_file(http, response, path, offset):
            offset = 0

    async def _copy_file(
        self, http: web.Request, response: web.StreamResponse, path: Path, offset: int
    ) -> bool:
        """Copy one file from ``offset``; True when it was rotated (a new one at ``path``)."""
        async with await anyio.open_file(path, "rb") as file:
            await file.seek(offset)
            while not self.formatter.done:
                # Whether it ran *before* reading to the end: all it wrote before it stopped
                # is then read.
                running = self.follow and self.containers.is_running(self.pod, self.container)
                chunk = await file.read(READ_SIZE)
                if chunk:
                    if output := self.formatter.feed(chunk):
                        await response.write(output)
                    continue
                if not running or http.transport is None or http.transport.is_closing():
                    return False
                if self.containers.log_file(self.pod, self.container) != path:
                    return False  # a new instance started: the one followed has ended
                if _replaced(path, file.wrapped.fileno()):
                    return True
                await anyio.sleep(self.follow_interval)
        return False


def tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` records of a log file start (a blocking read backwards)."""
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        # The byte at end - 1 ends the last record (or is part of one being written): only
        # the newlines before it separate records.
        position, window, found = end, end - 1, 0
        while position > 0:
            position = max(0, position - READ_SIZE)
            file.seek(position)
            block = file.read(max(0, window - position))
            index = len(block)
            while (index := block.rfind(b"\n", 0, index)) >= 0:
                found += 1
                if found == lines:
                    return position + index + 1
            window = position
        return 0


def _replaced(path: Path, fd: int) -> bool:
    """Whether ``path`` is now another file than the open ``fd`` (the log was rotated)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False  # between the rename and the new file: look again later
