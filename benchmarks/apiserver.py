"""API server benchmark: the sandbox's Kubernetes API server against a minimal HTTPS server.

Three processes. This one is the client. It starts the API server (``python -m sandbox
apiserver``) and a baseline server (this module with ``baseline``). When there are two cores
or more, both servers are pinned to one core and the client to another (``--no-pin`` leaves
them to the scheduler). So client and server do not share an event loop, and the figures are
the server's.

The baseline is what any JSON server on aiohttp and TLS costs. It has the same TLS material
and settings as the API server: the sandbox's serving certificate, and client certificates
verified against the sandbox CA. It answers the same URLs with the same JSON, but keeps the
objects in a dict per namespace: no validation, admission, authorization, managed fields,
history or resource types. The same client code runs against both servers.

The client authenticates as the sandbox admin (a client certificate in ``system:masters``)
and verifies the server against the sandbox CA. After a warm-up in a namespace of its own
(connections, and each kind of request a few times), it measures in another:

- create: ``--objects`` config maps POSTed by ``--concurrency`` workers. Each worker has one
  request in flight on a connection of its own, like a client with a connection pool.
  Figures: objects/s and per-request latency.
- list: all of them in one response, and in pages of ``--page`` with ``continue``. Figures:
  objects/s and time, from each request's send to the last byte of its response (the
  client's decoding is not counted), median of ``--repeat`` runs.
- watch fan-out: ``--watchers`` watches on the namespace, one connection each, through two
  phases of ``--updates`` updates (PUTs of whole config maps): one writer, then ``--writers``
  writers on as many config maps. A writer sends its next update only when every watcher has
  its previous one, so the server's queues stay short and the latency is the server's, not the
  length of a backlog. Figures: the time from an update's send to each watcher's receipt of
  its event (p50 and p99; "all": to the last of the watchers), and updates/s delivered to
  every watcher.

Everything is checked. Every create must answer 201 with the object sent. Each list, whole or
paged, must hold exactly the created names, in key order, without gap or repeat. Every watcher
must receive exactly the updates of both phases as MODIFIED events, each once, in the order of
the resourceVersions the updates were answered with.

A round starts a new pair of server processes and runs each phase on each server in turn
(the order alternates between rounds), so that both servers meet the machine in the same
state. The figures are the median of ``--rounds`` rounds; the JSON keeps every round's.

CPU time is read from ``/proc`` for each server and from this process for the client. When a
server is below a full core and the client at one, the client sets the pace, not the server;
when both are below one, they wait for each other (or for the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from aiohttp import web

from benchmarks._stats import percentile
from sandbox.apiserver.run import serving_context

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.abc import TaskStatus

NAMESPACE = "benchmark"
#: Where the warm-up's objects go, apart from the measured ones.
WARM_UP = "warm-up"
PREFIX = "bench-"
#: How a watch event names its update: the replaced config map's only data key.
SEQUENCE = re.compile(rb'"seq":"(\d+)"')
STARTUP_SECONDS = 30.0


class Mismatch(Exception):
    """A server answered something other than what the benchmark sent or expected."""


def configmaps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def _encode(document: Any) -> bytes:
    # The API server's encoding (sandbox.apiserver.objects.encode): compact separators.
    return json.dumps(document, separators=(",", ":")).encode()


# -- the baseline server process -------------------------------------------------------------


@dataclass
class Collection:
    """One namespace's config maps in the baseline, and its open watches."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # sorted: lists follow key order, as etcd's
    watches: set[asyncio.Queue[bytes]] = field(default_factory=set)


class Baseline:
    """The least an HTTPS server must do to answer the benchmark's requests.

    Config maps live in a dict per namespace; one counter versions the writes; each open
    watch is a queue that every replace puts the encoded event line on, once, as the API
    server does.
    """

    def __init__(self) -> None:
        self.namespaces: dict[str, Collection] = {}
        self.version = 1

    def application(self) -> web.Application:
        app = web.Application(client_max_size=12 * 1024 * 1024)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/api/v1/namespaces", self.create_namespace)
        app.router.add_post("/api/v1/namespaces/{namespace}/configmaps", self.create)
        app.router.add_get("/api/v1/namespaces/{namespace}/configmaps", self.list_or_watch)
        app.router.add_put("/api/v1/namespaces/{namespace}/configmaps/{name}", self.replace)
        return app

    def _stamp(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        self.version += 1
        metadata = obj.setdefault("metadata", {})
        metadata["namespace"] = namespace
        metadata["resourceVersion"] = str(self.version)
        return obj

    @staticmethod
    def _json(document: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=_encode(document), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def create_namespace(self, request: web.Request) -> web.Response:
        namespace = json.loads(await request.read())
        self.namespaces.setdefault(namespace["metadata"]["name"], Collection())
        return self._json(namespace, status=201)

    async def create(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        obj = self._stamp(json.loads(await request.read()), namespace)
        collection = self.namespaces[namespace]
        name = obj["metadata"]["name"]
        if name in collection.objects:
            return self._json({"kind": "Status", "code": 409}, status=409)
        collection.objects[name] = obj
        bisect.insort(collection.names, name)
        return self._json(obj, status=201)

    async def replace(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        obj = self._stamp(json.loads(await request.read()), namespace)
        collection = self.namespaces[namespace]
        collection.objects[request.match_info["name"]] = obj
        line = _encode({"type": "MODIFIED", "object": obj}) + b"\n"
        for queue in collection.watches:
            queue.put_nowait(line)
        return self._json(obj)

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        collection = self.namespaces[request.match_info["namespace"]]
        if request.query.get("watch") == "true":
            return await self._watch(request, collection)
        names = collection.names
        start = (
            bisect.bisect_right(names, request.query["continue"])
            if "continue" in request.query
            else 0
        )
        limit = int(request.query.get("limit") or 0)
        end = min(start + limit, len(names)) if limit else len(names)
        metadata = {"resourceVersion": str(self.version)}
        if end < len(names):
            metadata["continue"] = names[end - 1]
        items = [collection.objects[name] for name in names[start:end]]
        return self._json(
            {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": metadata, "items": items}
        )

    @staticmethod
    async def _watch(request: web.Request, collection: Collection) -> web.StreamResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        collection.watches.add(queue)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            while True:
                await response.write(await queue.get())
        finally:
            collection.watches.discard(queue)


def serve_baseline(pki: Path) -> None:
    """Serve on a free loopback port, print it as JSON, and stop on SIGTERM or SIGINT."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    web.run_app(
        Baseline().application(),
        sock=listener,
        ssl_context=serving_context(pki),
        access_log=None,
        print=None,
        # Watches end only when the client goes; do not wait for them on SIGTERM.
        shutdown_timeout=1,
    )


# -- the server processes --------------------------------------------------------------------


@dataclass
class Server:
    """A server under test, in a process of its own."""

    name: str
    url: str
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """User and system time the process has used (fields 14 and 15 of /proc/PID/stat)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (both servers stop cleanly on it), then SIGKILL if it takes too long."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of a process on these cores (the affinity call moves one thread)."""
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(thread.name), cpus)


def start_apiserver(
    stack: contextlib.ExitStack, directory: Path, number: int, history: int, profile: Path | None
) -> Server:
    """``python -m sandbox apiserver`` on a free port; its URL is read from its log."""
    log_path = directory / f"apiserver-{number}.log"
    command = [sys.executable, "-m", "sandbox", "apiserver", "--dir", str(directory)]
    command += ["--port", "0", "--history", str(history)]
    if profile is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
    log = stack.enter_context(log_path.open("wb"))
    process = stack.enter_context(subprocess.Popen(command, stdout=log, stderr=log))
    stack.callback(_stop, process)
    deadline = time.monotonic() + STARTUP_SECONDS
    while (found := re.search(r"API server on (https://\S+);", log_path.read_text())) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise Mismatch(f"the API server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Server("API server", found[1], process)


def start_baseline(stack: contextlib.ExitStack, pki: Path) -> Server:
    command = [sys.executable, "-m", "benchmarks.apiserver", "baseline", str(pki)]
    process = stack.enter_context(subprocess.Popen(command, stdout=subprocess.PIPE))
    stack.callback(_stop, process)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise Mismatch("the baseline server did not start")
    return Server("baseline", f"https://127.0.0.1:{json.loads(line)['port']}", process)


# -- the client: measurements ----------------------------------------------------------------


@dataclass
class Usage:
    """Wall time of one phase, and the CPU time the server and the client spent in it."""

    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def figures(self, phase: str) -> dict[str, float]:
        return {
            f"{phase}_server_cpu": self.server_cpu / self.wall,
            f"{phase}_client_cpu": self.client_cpu / self.wall,
        }


@contextlib.contextmanager
def measured(server: Server) -> Iterator[Usage]:
    usage = Usage()
    wall, server_cpu, client_cpu = time.perf_counter(), server.cpu_seconds(), time.process_time()
    yield usage
    usage.wall = time.perf_counter() - wall
    usage.server_cpu = server.cpu_seconds() - server_cpu
    usage.client_cpu = time.process_time() - client_cpu


def configmap(index: int, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The object created: about 600 bytes of JSON, the size of a small application config."""
    name = f"{PREFIX}{index:05d}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "benchmark", "index": str(index)},
        },
        "data": {f"key-{k}": f"{name} value {k} " + "x" * 80 for k in range(4)},
    }


def client_context(pki: Path) -> ssl.SSLContext:
    """The admin's client certificate, and the sandbox CA to verify the server with."""
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return context


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    """One GET: its time from send to the last byte, and the body."""
    start = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
    elapsed = time.perf_counter() - start
    _check(response.status == 200, f"GET {url}: HTTP {response.status}: {body[:300]!r}")
    return elapsed, body


async def _put(session: aiohttp.ClientSession, url: str, obj: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    async with session.put(url, data=_encode(obj), headers=headers) as response:
        answer = await response.read()
    _check(response.status == 200, f"PUT {url}: HTTP {response.status}: {answer[:300]!r}")
    result: dict[str, Any] = json.loads(answer)
    return result


async def create_namespace(session: aiohttp.ClientSession, server: Server, name: str) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    async with session.post(f"{server.url}/api/v1/namespaces", json=namespace) as response:
        _check(response.status == 201, f"{server.name}: namespace: HTTP {response.status}")


async def create_all(
    session: aiohttp.ClientSession, server: Server, namespace: str, count: int, concurrency: int
) -> list[float]:
    """POST ``count`` config maps, ``concurrency`` at a time; their latencies, in seconds."""
    bodies = [configmap(index, namespace) for index in range(count)]
    encoded = [_encode(body) for body in bodies]
    url = server.url + configmaps(namespace)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    answers: list[tuple[int, int, bytes]] = []

    async def worker(first: int) -> None:
        for index in range(first, count, concurrency):
            start = time.perf_counter()
            async with session.post(url, data=encoded[index], headers=headers) as response:
                answer = await response.read()
            latencies.append(time.perf_counter() - start)
            answers.append((index, response.status, answer))

    async with anyio.create_task_group() as tasks:
        for first in range(concurrency):
            tasks.start_soon(worker, first, name=f"create worker {first}")
    for index, status, answer in answers:
        _check(status == 201, f"{server.name}: create {index}: HTTP {status}: {answer[:300]!r}")
        created = json.loads(answer)
        sent = bodies[index]
        _check(
            created["metadata"]["name"] == sent["metadata"]["name"]
            and created.get("data") == sent["data"],
            f"{server.name}: create {index} answered another object: {answer[:300]!r}",
        )
    return latencies


async def warm_up(session: aiohttp.ClientSession, server: Server, concurrency: int) -> None:
    """Each kind of request a few times, in a namespace of its own: the pool's connections
    (TLS handshakes) and both processes' first-use costs (imports, caches) land here, not
    in a figure."""
    await create_namespace(session, server, WARM_UP)
    await create_all(session, server, WARM_UP, 8 * concurrency, concurrency)
    await _get(session, server.url + configmaps(WARM_UP))
    await _get(session, server.url + configmaps(WARM_UP) + "?limit=10")
    obj = configmap(0, WARM_UP)
    await _put(session, f"{server.url}{configmaps(WARM_UP)}/{obj['metadata']['name']}", obj)


async def create(
    session: aiohttp.ClientSession, server: Server, count: int, concurrency: int
) -> dict[str, float]:
    await create_namespace(session, server, NAMESPACE)
    with measured(server) as usage:
        latencies = await create_all(session, server, NAMESPACE, count, concurrency)
    return {
        "create_per_s": count / usage.wall,
        "create_p50_ms": percentile(latencies, 0.5) * 1e3,
        "create_p99_ms": percentile(latencies, 0.99) * 1e3,
        **usage.figures("create"),
    }


def _names(document: dict[str, Any]) -> list[str]:
    # The API server's namespace also holds kube-root-ca.crt, as a real cluster's does.
    names = [item["metadata"]["name"] for item in document["items"]]
    return [name for name in names if name.startswith(PREFIX)]


async def list_whole(
    session: aiohttp.ClientSession, server: Server, expected: list[str]
) -> tuple[float, int]:
    elapsed, body = await _get(session, server.url + configmaps(NAMESPACE))
    _check(
        _names(json.loads(body)) == expected,
        f"{server.name}: the list is not the objects created, in order",
    )
    return elapsed, len(body)


async def list_paged(
    session: aiohttp.ClientSession, server: Server, expected: list[str], page: int
) -> tuple[float, int]:
    """Follow ``continue`` to the end; the time is the requests', not the client's decoding."""
    elapsed, names, pages, token = 0.0, [], 0, ""
    while True:
        query = f"?limit={page}" + (f"&continue={token}" if token else "")
        seconds, body = await _get(session, server.url + configmaps(NAMESPACE) + query)
        document = json.loads(body)
        elapsed += seconds
        pages += 1
        items = document["items"]
        _check(len(items) <= page, f"{server.name}: {len(items)} items in a page of {page}")
        names += _names(document)
        token = document["metadata"].get("continue", "")
        if not token:
            break
    _check(names == expected, f"{server.name}: the pages are not the objects created, in order")
    return elapsed, pages


async def lists(
    session: aiohttp.ClientSession, server: Server, count: int, page: int, repeat: int
) -> dict[str, float]:
    expected = [f"{PREFIX}{index:05d}" for index in range(count)]
    whole, paged = [], []
    size = pages = 0
    with measured(server) as usage:
        for _ in range(repeat):
            seconds, size = await list_whole(session, server, expected)
            whole.append(seconds)
            seconds, pages = await list_paged(session, server, expected, page)
            paged.append(seconds)
    return {
        "list_ms": statistics.median(whole) * 1e3,
        "list_per_s": count / statistics.median(whole),
        "list_bytes": size,
        "paged_ms": statistics.median(paged) * 1e3,
        "paged_per_s": count / statistics.median(paged),
        "pages": pages,
        **usage.figures("list"),
    }


@dataclass
class Deliveries:
    """Which watchers have which update; wakes an update's writer when all of them have it."""

    updates: int
    watchers: int
    counts: list[int] = field(init=False)
    complete: list[anyio.Event] = field(init=False)
    #: Per watcher: (time received, event line), in the order received.
    received: list[list[tuple[float, bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [0] * self.updates
        self.complete = [anyio.Event() for _ in range(self.updates)]

    def arrived(self, sequence: int) -> None:
        _check(0 <= sequence < self.updates, f"an event for update {sequence}, never sent")
        self.counts[sequence] += 1
        if self.counts[sequence] == self.watchers:
            self.complete[sequence].set()


async def watch(
    session: aiohttp.ClientSession,
    url: str,
    deliveries: Deliveries,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """One watcher: started once the server has answered (the watch is registered then);
    keeps each line with the time it came, and decodes nothing until the run is over."""
    lines: list[tuple[float, bytes]] = []
    deliveries.received.append(lines)
    async with session.get(url) as response:
        _check(response.status == 200, f"watch: HTTP {response.status}")
        task_status.started()
        while len(lines) < deliveries.updates:
            line = await response.content.readline()
            received = time.perf_counter()
            _check(bool(line), f"a watch ended after {len(lines)} of {deliveries.updates} events")
            found = SEQUENCE.search(line)
            _check(found is not None, f"a watch event that is no update: {line[:300]!r}")
            assert found is not None
            lines.append((received, line))
            deliveries.arrived(int(found[1]))


async def fan_out(
    session: aiohttp.ClientSession,
    server: Server,
    context: ssl.SSLContext,
    settings: Settings,
) -> dict[str, float]:
    """The same watches through two phases: ``--updates`` updates one at a time, then as many
    again from ``--writers`` writers at once."""
    updates, writers = settings.updates, settings.writers
    _, body = await _get(session, f"{server.url}{configmaps(NAMESPACE)}?limit=1")
    version = json.loads(body)["metadata"]["resourceVersion"]
    # From the current version: no initial ADDED events, only what follows.
    url = f"{server.url}{configmaps(NAMESPACE)}?watch=true&resourceVersion={version}"
    deliveries = Deliveries(2 * updates, settings.watchers)
    sent = [0.0] * deliveries.updates
    versions = [0] * deliveries.updates

    async def writer(number: int, sequences: range) -> None:
        obj = configmap(number)
        target = f"{server.url}{configmaps(NAMESPACE)}/{obj['metadata']['name']}"
        for sequence in sequences:
            obj["data"] = {"seq": str(sequence)}
            sent[sequence] = time.perf_counter()
            answer = await _put(session, target, obj)
            versions[sequence] = int(answer["metadata"]["resourceVersion"])
            await deliveries.complete[sequence].wait()

    async def phase(first: int, writers: int) -> Usage:
        with measured(server) as usage:
            async with anyio.create_task_group() as writing:
                for number in range(writers):
                    sequences = range(first + number, first + updates, writers)
                    writing.start_soon(writer, number, sequences, name=f"writer {number}")
        return usage

    connector = aiohttp.TCPConnector(ssl=context, limit=settings.watchers)
    without_deadline = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=without_deadline) as streams:
        try:
            with anyio.fail_after(settings.timeout):
                async with anyio.create_task_group() as watching:
                    for number in range(settings.watchers):
                        await watching.start(
                            watch, streams, url, deliveries, name=f"watch {number}"
                        )
                    one = await phase(0, 1)
                    many = await phase(updates, writers)
        except TimeoutError:
            missing = sum(1 for count in deliveries.counts if count < settings.watchers)
            raise Mismatch(
                f"{server.name}: {missing} of {deliveries.updates} updates had not reached all "
                f"{settings.watchers} watchers after {settings.timeout:.0f} s"
            ) from None
    arrivals = _check_deliveries(server, deliveries, versions)
    return {
        "event_bytes": len(deliveries.received[0][0][1]),
        **_fan_out_figures("fanout_one", range(updates), arrivals, sent, one),
        **_fan_out_figures("fanout_many", range(updates, 2 * updates), arrivals, sent, many),
    }


def _check_deliveries(
    server: Server, deliveries: Deliveries, versions: list[int]
) -> list[list[float]]:
    """Each watcher must have every update, once, in the order the server committed them
    (the order of the resourceVersions the updates were answered with). Returns the times
    each update reached the watchers."""
    expected = sorted((version, sequence) for sequence, version in enumerate(versions))
    arrivals: list[list[float]] = [[] for _ in versions]
    for number, lines in enumerate(deliveries.received):
        seen = []
        for received, line in lines:
            event = json.loads(line)
            metadata = event["object"]["metadata"]
            _check(
                event["type"] == "MODIFIED" and metadata["namespace"] == NAMESPACE,
                f"{server.name}: watch {number}: unexpected event {line[:300]!r}",
            )
            sequence = int(event["object"]["data"]["seq"])
            seen.append((int(metadata["resourceVersion"]), sequence))
            arrivals[sequence].append(received)
        _check(
            seen == expected,
            f"{server.name}: watch {number} did not get each update once, in commit order",
        )
    return arrivals


def _fan_out_figures(
    phase: str, sequences: range, arrivals: list[list[float]], sent: list[float], usage: Usage
) -> dict[str, float]:
    each = [time - sent[s] for s in sequences for time in arrivals[s]]
    to_all = [max(arrivals[s]) - sent[s] for s in sequences]
    return {
        f"{phase}_updates_per_s": len(sequences) / usage.wall,
        f"{phase}_p50_ms": percentile(each, 0.5) * 1e3,
        f"{phase}_p99_ms": percentile(each, 0.99) * 1e3,
        f"{phase}_all_p50_ms": percentile(to_all, 0.5) * 1e3,
        f"{phase}_all_p99_ms": percentile(to_all, 0.99) * 1e3,
        **usage.figures(phase),
    }


@dataclass
class Settings:
    objects: int
    concurrency: int
    page: int
    repeat: int
    watchers: int
    updates: int
    writers: int
    timeout: float
    rounds: int
    pin: bool


async def measure(
    servers: list[Server], context: ssl.SSLContext, settings: Settings
) -> dict[str, dict[str, float]]:
    """One round: each phase on each server in turn, so that both meet the same moment's
    machine (a burst of load elsewhere moves both, not one)."""
    figures: dict[str, dict[str, float]] = {server.name: {} for server in servers}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for server in servers:
            connector = aiohttp.TCPConnector(ssl=context, limit=settings.concurrency)
            deadline = aiohttp.ClientTimeout(total=settings.timeout)
            session = aiohttp.ClientSession(connector=connector, timeout=deadline)
            sessions[server.name] = await stack.enter_async_context(session)
            await warm_up(session, server, settings.concurrency)
        for server in servers:
            session = sessions[server.name]
            figures[server.name] |= await create(
                session, server, settings.objects, settings.concurrency
            )
        for server in servers:
            session = sessions[server.name]
            figures[server.name] |= await lists(
                session, server, settings.objects, settings.page, settings.repeat
            )
        for server in servers:
            session = sessions[server.name]
            figures[server.name] |= await fan_out(session, server, context, settings)
    return figures


def run(settings: Settings, profile: Path | None) -> list[dict[str, dict[str, float]]]:
    """``settings.rounds`` rounds, each with a new pair of server processes (the same
    credentials); the figures of each round."""
    allowed = os.sched_getaffinity(0)
    cores = sorted(allowed)
    pin = settings.pin and len(cores) >= 2
    rounds = []
    with tempfile.TemporaryDirectory(prefix="apiserver-bench-") as temporary:
        directory = Path(temporary)
        for number in range(settings.rounds):
            with contextlib.ExitStack() as stack:
                stack.callback(_pin, os.getpid(), allowed)
                # Every write of the round stays resumable, though the watches start at the
                # current version and need none of it.
                history = 10 * settings.concurrency + settings.objects + 2 * settings.updates
                apiserver = start_apiserver(stack, directory, number, history, profile)
                baseline = start_baseline(stack, directory / "pki")
                if pin:
                    # Client and servers never trade places; the servers share a core, as
                    # only one of them works at a time.
                    for server in (apiserver, baseline):
                        _pin(server.process.pid, {cores[1]})
                    _pin(os.getpid(), {cores[0]})
                context = client_context(directory / "pki")
                # Who goes first alternates, so that neither always meets a warmer machine.
                order = [baseline, apiserver] if number % 2 == 0 else [apiserver, baseline]
                figures = anyio.run(measure, order, context, settings)
            rounds.append(
                {"apiserver": figures[apiserver.name], "baseline": figures[baseline.name]}
            )
    return rounds


def median_of(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        side: {key: statistics.median(r[side][key] for r in rounds) for key in rounds[0][side]}
        for side in ("apiserver", "baseline")
    }


# -- the report ------------------------------------------------------------------------------

#: (key, label, format) of each figure in the table; the sizes say how much more the API
#: server sends (its objects carry managedFields, uid and creationTimestamp).
ROWS = [
    ("create_per_s", "create: objects/s", "{:.0f}"),
    ("create_p50_ms", "create: latency p50, ms", "{:.2f}"),
    ("create_p99_ms", "create: latency p99, ms", "{:.2f}"),
    ("list_per_s", "list, whole: objects/s", "{:.0f}"),
    ("list_ms", "list, whole: ms", "{:.1f}"),
    ("list_bytes", "list, whole: bytes", "{:.0f}"),
    ("paged_per_s", "list, pages: objects/s", "{:.0f}"),
    ("paged_ms", "list, pages: ms", "{:.1f}"),
    ("event_bytes", "watch event: bytes", "{:.0f}"),
    ("fanout_one_updates_per_s", "watch, 1 writer: updates/s", "{:.0f}"),
    ("fanout_one_p50_ms", "watch, 1 writer: p50, ms", "{:.2f}"),
    ("fanout_one_p99_ms", "watch, 1 writer: p99, ms", "{:.2f}"),
    ("fanout_one_all_p99_ms", "watch, 1 writer: all p99, ms", "{:.2f}"),
    ("fanout_many_updates_per_s", "watch, {writers} writers: updates/s", "{:.0f}"),
    ("fanout_many_p50_ms", "watch, {writers} writers: p50, ms", "{:.2f}"),
    ("fanout_many_p99_ms", "watch, {writers} writers: p99, ms", "{:.2f}"),
    ("fanout_many_all_p99_ms", "watch, {writers} writers: all p99, ms", "{:.2f}"),
]
PHASES = {
    "create": "create",
    "list": "list (whole and pages)",
    "fanout_one": "watch, 1 writer",
    "fanout_many": "watch, {writers} writers",
}


def print_table(results: dict[str, dict[str, float]], settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    server, baseline = results["apiserver"], results["baseline"]
    console = Console()
    table = Table(
        title=(
            f"API server and baseline, median of {settings.rounds} rounds: {settings.objects} "
            f"config maps, {settings.concurrency} creates in flight; {settings.watchers} "
            f"watchers, {settings.updates} updates a phase"
        )
    )
    table.add_column("figure")
    table.add_column("API server", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("x baseline", justify="right")
    for key, label, form in ROWS:
        table.add_row(
            label.format(writers=settings.writers),
            form.format(server[key]),
            form.format(baseline[key]),
            f"{server[key] / baseline[key]:.2f}",
        )
    console.print(table)
    usage = Table(title="CPU: share of one core used during each phase")
    usage.add_column("phase")
    usage.add_column("API server", justify="right")
    usage.add_column("its client", justify="right")
    usage.add_column("baseline", justify="right")
    usage.add_column("its client", justify="right")
    for phase, label in PHASES.items():
        usage.add_row(
            label.format(writers=settings.writers),
            f"{server[f'{phase}_server_cpu']:.0%}",
            f"{server[f'{phase}_client_cpu']:.0%}",
            f"{baseline[f'{phase}_server_cpu']:.0%}",
            f"{baseline[f'{phase}_client_cpu']:.0%}",
        )
    console.print(usage)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks apiserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--objects", type=int, default=2000, help="config maps created")
    parser.add_argument("--concurrency", type=int, default=32, help="creates in flight")
    parser.add_argument("--page", type=int, default=500, help="limit of a paged list")
    parser.add_argument("--repeat", type=int, default=5, help="lists timed; the median counts")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--updates", type=int, default=1000, help="updates in each watch phase")
    parser.add_argument(
        "--writers", type=int, default=16, help="updates in flight in the second watch phase"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds a phase may take")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, new processes each; the median counts"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave the processes to the scheduler instead of one core for the client and "
        "one for the servers",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the API server under cProfile and write its stats to this file (one round)",
    )
    args = parser.parse_args(argv)
    counts = (args.objects, args.concurrency, args.page, args.repeat, args.watchers, args.rounds)
    if min(counts) < 1:
        parser.error("counts must be at least 1")
    if not 1 <= args.writers <= min(args.objects, args.updates):
        parser.error("--writers must be between 1 and --objects and --updates")
    settings = Settings(
        objects=args.objects,
        concurrency=args.concurrency,
        page=args.page,
        repeat=args.repeat,
        watchers=args.watchers,
        updates=args.updates,
        writers=args.writers,
        timeout=args.timeout,
        rounds=1 if args.profile else args.rounds,
        pin=args.pin,
    )
    try:
        rounds = run(settings, args.profile.resolve() if args.profile else None)
    except (Mismatch, ExceptionGroup) as error:
        # A check that failed inside a task group arrives wrapped in an exception group.
        mismatches, others = (error, None) if isinstance(error, Mismatch) else error.split(Mismatch)
        if mismatches is None or others is not None:
            raise
        # Several watchers often find the same fault: say it once.
        for message in dict.fromkeys(str(leaf) for leaf in _leaves(mismatches)):
            print(f"error: {message}", file=sys.stderr)
        return 1
    results = median_of(rounds)
    print_table(results, settings)
    if args.json:
        ratios = {key: results["apiserver"][key] / results["baseline"][key] for key, *_ in ROWS}
        document = {"settings": vars(settings), **results, "ratio": ratios, "rounds": rounds}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "baseline":
        serve_baseline(Path(sys.argv[2]))
    else:
        sys.exit(main())
