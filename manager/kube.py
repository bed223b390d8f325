"""The Kubernetes adapter: the only module of the manager that imports kubernetes-asyncio.

The manager needs little of the API: reviews (TokenReview, SubjectAccessReview), lists and
watches of a few kinds, one get, one dry-run create. It reads objects as plain JSON
dictionaries rather than the client's model classes: the manager looks at a handful of fields,
and building models for every pod of a cluster-wide watch would cost more than the rest of
the watch together. So requests go through the client's ``ApiClient`` (its configuration,
authentication, TLS and token refresh) with ``_preload_content=False``, and this module reads
the JSON itself.

Errors are one small hierarchy, with the API server's ``Status`` reason and message:
:class:`Forbidden`, :class:`NotFound`, :class:`Gone` (a watch's resource version is too old),
:class:`Invalid`, any other :class:`APIError`, and :class:`Unreachable` when no answer came at
all. aiohttp's and the client's exceptions never leave this module.

Get a client with :func:`in_cluster` (inside the manager's pod) or :func:`from_kubeconfig`
(development and tests); both are async context managers that close the HTTP session.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from pathlib import Path

type Object = dict[str, Any]

#: Seconds for one ordinary request (not a watch).
REQUEST_TIMEOUT = 30.0
#: Seconds the API server keeps a watch open before the client starts a new one.
WATCH_TIMEOUT = 290
#: The longest watch event line accepted (a pod with large annotations fits many times).
MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource, as its REST paths name it."""

    group: str
    version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection (or, with ``name``, the object) path; ``namespace`` None means all
        namespaces for a namespaced kind."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name is not None else base


NAMESPACES = Kind("", "v1", "namespaces", namespaced=False)
NODES = Kind("", "v1", "nodes", namespaced=False)
PODS = Kind("", "v1", "pods", namespaced=True)
SERVICES = Kind("", "v1", "services", namespaced=True)
TOKEN_REVIEWS = Kind("authentication.k8s.io", "v1", "tokenreviews", namespaced=False)
SUBJECT_ACCESS_REVIEWS = Kind(
    "authorization.k8s.io", "v1", "subjectaccessreviews", namespaced=False
)


_REQUEST_DEADLINE = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)


class KubernetesError(Exception):
    """A request to the API server failed."""


class Unreachable(KubernetesError):
    """No answer from the API server: it could not be reached, or it did not answer in time."""


class APIError(KubernetesError):
    """The API server answered with an error ``Status``.

    Attributes:
        status: The HTTP status code.
        reason: The Status ``reason`` (``Forbidden``, ``NotFound``, ``Invalid``...).
        message: The Status ``message``, as the API server wrote it.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason or status}: {message}" if message else reason or str(status))
        self.status = status
        self.reason = reason
        self.message = message


class Forbidden(APIError):
    """403: RBAC does not let the manager do this."""


class NotFound(APIError):
    """404: no such object."""


class Gone(APIError):
    """410: a watch's resource version is older than the server keeps; list again."""


class Invalid(APIError):
    """422: the object was refused by validation (or the allocation of its ClusterIP)."""


_ERRORS: dict[int, type[APIError]] = {403: Forbidden, 404: NotFound, 410: Gone, 422: Invalid}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch: ``ADDED``, ``MODIFIED``, ``DELETED`` or ``BOOKMARK``."""

    type: str
    object: Object


class Kubernetes:
    """The API server, as the manager uses it. Build one with :func:`in_cluster` or
    :func:`from_kubeconfig`."""

    def __init__(self, api: k8s_client.ApiClient) -> None:
        self._api = api

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Object:
        """One object; raises :class:`NotFound` when there is none."""
        result: Object = await self._json("GET", kind.path(namespace, name))
        return result

    async def list(
        self, kind: Kind, namespace: str | None = None, *, field_selector: str = ""
    ) -> tuple[list[Object], str]:
        """Every object of ``kind`` (in ``namespace``, or in all), and the list's resource
        version to watch from."""
        query = [("fieldSelector", field_selector)] if field_selector else []
        result = await self._json("GET", kind.path(namespace), query=query)
        metadata = result.get("metadata") or {}
        return list(result.get("items") or []), str(metadata.get("resourceVersion") or "")

    async def create(
        self,
        kind: Kind,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
    ) -> Object:
        """Create an object (or, with ``dry_run``, only validate and admit it)."""
        query = [("dryRun", "All")] if dry_run else []
        result: Object = await self._json("POST", kind.path(namespace), query=query, body=body)
        return result

    @contextlib.asynccontextmanager
    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        *,
        field_selector: str = "",
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Watch ``kind`` from ``resource_version``: yields the events' iterator, which ends
        when the server ends the watch (after about :data:`WATCH_TIMEOUT` seconds).

        Raises:
            Gone: (while iterating) the version is too old; list again.
        """
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_TIMEOUT)),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        response = await self._send(
            "GET",
            kind.path(namespace),
            query=query,
            deadline=aiohttp.ClientTimeout(
                sock_connect=REQUEST_TIMEOUT, sock_read=WATCH_TIMEOUT + REQUEST_TIMEOUT
            ),
        )
        try:
            if response.status >= 400:
                raise _api_error(response.status, await _read(response))
            yield _Events(response)
        finally:
            response.release()

    # -- requests --------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        response = await self._send(
            method, path, query=query, body=body, deadline=_REQUEST_DEADLINE
        )
        try:
            data = await _read(response)
        finally:
            response.release()
        if response.status >= 400:
            raise _api_error(response.status, data)
        try:
            return json.loads(data)
        except ValueError as error:
            raise APIError(response.status, "BadResponse", "the answer is not JSON") from error

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        deadline: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=deadline,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise Unreachable(
                f"{method} {path}: the API server did not answer: {error or type(error).__name__}"
            ) from error
        return response


async def _read(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise Unreachable(f"the API server's answer broke off: {error}") from error


class _Events:
    """The events of a watch response: one JSON object per line. (An iterator class rather
    than an async generator, so that a cancelled consumer leaves nothing to finalize.)"""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._chunks = response.content.iter_any()
        self._lines: deque[bytes] = deque()
        self._pending = b""
        self._done = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> WatchEvent:
        status = self._response.status
        while not self._lines:
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                if self._pending.strip():
                    self._lines.append(self._pending)
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                raise Unreachable(
                    f"the watch broke off: {error or type(error).__name__}"
                ) from error
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            if len(self._pending) > MAX_LINE:
                raise APIError(status, "BadResponse", "a watch event is too large")
            self._lines.extend(line for line in lines if line.strip())
        return _event(status, self._lines.popleft())


def _event(status: int, line: bytes) -> WatchEvent:
    try:
        event = json.loads(line)
        kind, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as error:
        raise APIError(status, "BadResponse", "a watch event is not JSON") from error
    if kind == "ERROR":
        # The watch ended with a Status (410 Gone for a version that is too old).
        raise _api_error(int(obj.get("code") or 500), line, parsed=obj)
    return WatchEvent(kind, obj)


def _api_error(status: int, data: bytes, *, parsed: Any = None) -> APIError:
    if parsed is None:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"message": data.decode(errors="replace")[:500]}
    if not isinstance(parsed, dict):
        parsed = {}
    reason = str(parsed.get("reason") or "")
    message = str(parsed.get("message") or "")
    return _ERRORS.get(status, APIError)(status, reason, message)


@contextlib.asynccontextmanager
async def in_cluster() -> AsyncIterator[Kubernetes]:
    """The API server of the cluster this process runs in, with the pod's service account
    (its token re-read as the kubelet rotates it).

    Raises:
        KubernetesError: Not in a pod (no ``KUBERNETES_SERVICE_HOST``, no token).
    """
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as error:
        raise KubernetesError(f"no in-cluster Kubernetes configuration: {error}") from error
    async with k8s_client.ApiClient(configuration) as api:
        yield Kubernetes(api)


@contextlib.asynccontextmanager
async def from_kubeconfig(path: Path, context: str | None = None) -> AsyncIterator[Kubernetes]:
    """The cluster of a kubeconfig file (its current context, or ``context``)."""
    configuration = k8s_client.Configuration()
    try:
        await k8s_config.load_kube_config(
            config_file=str(path),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError) as error:
        raise KubernetesError(f"cannot use the kubeconfig {path}: {error}") from error
    async with k8s_client.ApiClient(configuration) as api:
        yield Kubernetes(api)
