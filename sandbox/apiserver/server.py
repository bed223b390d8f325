"""The HTTPS front: routing Kubernetes API paths, content negotiation, authn/authz, watches.

Every request takes the same path as in kube-apiserver's handler chain: authenticate (client
certificate, bearer token, service-account token), impersonate if asked, authorize with RBAC,
then the resource handler. Errors anywhere become ``Status`` objects; nothing a client sends
can crash the server (an unexpected fault is a 500 ``InternalError`` and is logged).
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import logging
import math
import ssl
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import anyio
import yaml
from aiohttp import web

from sandbox.apiserver import discovery, errors, patch, protobuf, tables
from sandbox.apiserver.admission import AdmissionDenied
from sandbox.apiserver.objects import (
    Objects,
    check_resource_version,
    encode,
    now_rfc3339,
    user_info_dict,
)
from sandbox.apiserver.patch import PatchError
from sandbox.apiserver.rbac import Attributes, UserInfo
from sandbox.apiserver.selectors import (
    format_label_selector,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.apiserver.store import accept_all, json_line, parse_resource_version

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.apiserver.auth import Authenticator
    from sandbox.apiserver.rbac import Authorizer
    from sandbox.apiserver.resources import ResourceType
    from sandbox.apiserver.store import Change, Obj, Watcher

log = logging.getLogger("sandbox.apiserver")

#: kube-apiserver's limit on a request body (3 MiB, etcd's own limit is 1.5 MiB per value).
MAX_BODY = 3 * 1024 * 1024
#: How often a watch that asked for bookmarks gets one.
BOOKMARK_INTERVAL = 30.0
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}
_PATCH_REASONS = {400: "BadRequest", 409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid"}
NON_RESOURCE_PREFIXES = ("/healthz", "/livez", "/readyz", "/version", "/openapi", "/api", "/apis")


class Request:
    """One parsed API request: who, what resource, which verb."""

    def __init__(self, http: web.Request, user: UserInfo) -> None:
        self.http = http
        self.user = user
        self.query = {
            k: v[-1] for k, v in parse_qs(http.query_string, keep_blank_values=True).items()
        }

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def integer(self, name: str) -> int | None:
        """An integer query parameter; ``400`` with Go's parse error when it is not one."""
        value = self.query.get(name, "")
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise errors.bad_request(
                f'strconv.ParseInt: parsing "{value}": invalid syntax'
            ) from None

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"


class APIServer:
    """The aiohttp application around :class:`Objects`."""

    def __init__(
        self,
        objects: Objects,
        authenticator: Authenticator,
        authorizer: Authorizer,
        server_address: str = "127.0.0.1:6443",
        pod_runtime: Any = None,
    ) -> None:
        self.objects = objects
        self.registry = objects.registry
        self.store = objects.store
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.server_address = server_address
        #: The kubelets' side of pods/log, exec and portforward (the next issue wires it).
        self.pod_runtime = pod_runtime
        self.bookmark_interval = BOOKMARK_INTERVAL
        self.app = web.Application(client_max_size=MAX_BODY * 4)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- the handler chain ----------------------------------------------------------------------

    async def handle(self, http: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(http)
            request = Request(http, user)
            return await self._dispatch(request)
        except errors.APIError as error:
            return self.status_response(error)
        except AdmissionDenied as denied:
            return self.json(denied.status, status=denied.code)
        except PatchError as error:
            return self.status_response(
                errors.APIError(
                    error.status,
                    _PATCH_REASONS.get(error.status, "BadRequest"),
                    str(error),
                    details={"causes": error.causes} if error.causes else None,
                )
            )
        except (ConnectionResetError, anyio.BrokenResourceError):
            raise
        except Exception as error:
            log.exception("internal error serving %s %s", http.method, http.path)
            return self.status_response(errors.internal(str(error) or type(error).__name__))

    def status_response(self, error: errors.APIError) -> web.Response:
        return web.Response(
            status=error.code,
            body=encode(error.status()),
            content_type="application/json",
            headers=error.headers,
        )

    def _authenticate(self, http: web.Request) -> UserInfo:
        peer = None
        ssl_object = http.transport.get_extra_info("ssl_object") if http.transport else None
        if isinstance(ssl_object, ssl.SSLObject):
            peer = ssl_object.getpeercert()
        user = self.authenticator.authenticate(peer, http.headers.get("Authorization"))
        impersonate = http.headers.get("Impersonate-User")
        if impersonate:
            groups = tuple(http.headers.getall("Impersonate-Group", []))
            for resource, name in [("users", impersonate), *[("groups", g) for g in groups]]:
                attributes = Attributes(
                    user=user,
                    verb="impersonate",
                    resource_request=True,
                    resource=resource,
                    name=name,
                )
                if not self.authorizer.authorize(attributes).allowed:
                    raise errors.forbidden(
                        f'{resource} "{name}" is forbidden: User "{user.name}" cannot impersonate '
                        f'resource "{resource}" in API group "" at the cluster scope'
                    )
            if impersonate.startswith("system:serviceaccount:") and not groups:
                namespace = impersonate.split(":")[2]
                groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
            user = UserInfo(name=impersonate, groups=(*groups, "system:authenticated"))
        return user

    def _authorize(self, attributes: Attributes, resource: ResourceType | None = None) -> None:
        if not self.authorizer.authorize(attributes).allowed:
            raise errors.forbidden(
                self.authorizer.forbidden_message(attributes), resource, attributes.name
            )

    async def _dispatch(self, request: Request) -> web.StreamResponse:
        http = request.http
        path = http.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            return self._non_resource(request, path)
        # /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>: discovery
        if parts[0] == "api":
            group, rest = "", parts[1:]
            if not rest:
                self._authorize_path(request, path)
                return self.json(discovery.api_versions(self.server_address))
            version, rest = rest[0], rest[1:]
        else:
            if len(parts) == 1:
                self._authorize_path(request, path)
                return self.json(discovery.api_group_list(self.registry))
            group = parts[1]
            if len(parts) == 2:
                self._authorize_path(request, path)
                document = discovery.api_group(self.registry, group)
                if document is None:
                    raise errors.not_found_path()
                return self.json(document)
            version, rest = parts[2], parts[3:]
        if not rest:
            self._authorize_path(request, path)
            document = discovery.resource_list(self.registry, group, version)
            if document is None:
                raise errors.not_found_path()
            return self.json(document)
        if rest[0] == "watch":  # the deprecated /watch/ prefix
            rest = rest[1:]
            request.query["watch"] = "true"
        namespace = ""
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and self.registry.lookup(group, version, rest[2]) is not None
            and rest[2] not in ("status", "finalize")
        ):
            namespace, rest = rest[1], rest[2:]
        resource = self.registry.lookup(group, version, rest[0])
        if resource is None or len(rest) > 3:
            raise errors.not_found_path()
        if namespace and not resource.namespaced:
            raise errors.not_found_path()
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in resource.subresources:
            raise errors.not_found_path()
        return await self._resource(request, resource, namespace, name, subresource)

    def _authorize_path(self, request: Request, path: str) -> None:
        verb = request.http.method.lower()
        self._authorize(Attributes(user=request.user, verb=verb, resource_request=False, path=path))

    def _non_resource(self, request: Request, path: str) -> web.StreamResponse:
        self._authorize_path(request, path)
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(
            ("/healthz/", "/livez/", "/readyz/")
        ):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return self.json(discovery.version_info())
        if path == "/openapi/v3":
            return self.json(discovery.openapi_index(self.registry))
        if path.startswith("/openapi/v3/"):
            rest = path.removeprefix("/openapi/v3/").split("/")
            group, version = (
                ("", rest[1])
                if rest[0] == "api" and len(rest) == 2
                else ((rest[1], rest[2]) if rest[0] == "apis" and len(rest) == 3 else ("", ""))
            )
            document = (
                discovery.openapi_document(self.registry, group, version) if version else None
            )
            if document is not None:
                return self.json(document)
        raise errors.not_found_path()

    # -- resources ------------------------------------------------------------------------------

    async def _resource(
        self, request: Request, resource: ResourceType, namespace: str, name: str, sub: str
    ) -> web.StreamResponse:
        method = request.http.method
        watch = request.flag("watch")
        verb = {
            "GET": ("watch" if watch else "get" if name else "list"),
            "HEAD": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method)
        if verb is None or (verb in ("update", "patch") and not name):
            raise errors.method_not_allowed()
        attributes = Attributes(
            user=request.user,
            verb=verb,
            resource_request=True,
            namespace=namespace,
            api_group=resource.group,
            api_version=resource.version,
            resource=resource.plural,
            subresource=sub,
            name=name,
        )
        if not (verb in resource.verbs or sub):
            raise errors.method_not_allowed()
        if not resource.stored:
            return await self._review(request, resource, namespace)
        self._authorize(attributes, resource)
        if sub in ("exec", "portforward", "attach") and method == "GET":
            # A WebSocket upgrade is a GET, authorized as get; since 1.30 upstream also asks
            # for create (AuthorizePodWebsocketUpgradeCreatePermission), as a POST would.
            self._authorize(replace(attributes, verb="create"), resource)
        if sub in (
            "log",
            "exec",
            "portforward",
            "attach",
            "proxy",
            "eviction",
            "ephemeralcontainers",
        ):
            return await self._pod_runtime(request, resource, namespace, name, sub)
        if sub == "token":
            return await self._token_request(request, namespace, name)
        if sub == "binding":
            return await self._binding(request, namespace, name)
        if sub == "scale":
            return await self._scale(request, resource, namespace, name)
        if sub == "finalize":
            sub = ""  # a Namespace's spec.finalizers, written through an update
        if verb in ("list", "watch", "deletecollection") and not name:
            # As kube-apiserver: a collection in a namespace that does not exist is empty.
            if verb == "watch":
                return await self._watch(request, resource, namespace, "")
            if verb == "list":
                return self._list(request, resource, namespace)
            return await self._delete_collection(request, resource, namespace)
        if verb == "watch":
            return await self._watch(request, resource, namespace, name)
        if verb == "get":
            obj = self.objects.get(resource, namespace, name)
            return self.object_response(request, resource, obj)
        if verb == "create":
            if name:
                raise errors.method_not_allowed()
            body = await self._body(request)
            created = await self.objects.create(
                resource,
                namespace,
                body,
                request.user,
                dry_run=request.dry_run,
                options=self._options(request, "CreateOptions"),
                field_manager=_field_manager(request),
            )
            return self.object_response(request, resource, created, status=201)
        if verb == "update":
            body = await self._body(request)
            updated = await self.objects.update(
                resource,
                namespace,
                name,
                body,
                request.user,
                subresource=sub,
                dry_run=request.dry_run,
                options=self._options(request, "UpdateOptions"),
                field_manager=_field_manager(request),
            )
            return self.object_response(request, resource, updated)
        if verb == "patch":
            content_type = _media_type(request.http, "")
            patch_type = PATCH_TYPES.get(content_type)
            if patch_type is None or patch_type == "apply-cbor":
                raise errors.unsupported_media_type(content_type)
            body = await self._body(request, yaml_ok=patch_type == "apply", any_json=True)
            code, patched = await self.objects.patch(
                resource,
                namespace,
                name,
                patch_type,
                body,
                request.user,
                subresource=sub,
                dry_run=request.dry_run,
                field_manager=(
                    request.query.get("fieldManager", "")
                    if patch_type == "apply"
                    else _field_manager(request)
                ),
                force=request.flag("force"),
                options=self._options(request, "PatchOptions"),
            )
            return self.object_response(request, resource, patched, status=code)
        if verb == "delete":
            options = await self._delete_options(request)
            gone, obj = await self.objects.delete(
                resource, namespace, name, request.user, options, dry_run=request.dry_run
            )
            if not gone:
                return self.object_response(
                    request, resource, obj, status=202 if resource.kind == "Namespace" else 200
                )
            return self.object_response(request, resource, obj)
        raise errors.method_not_allowed()

    def _options(self, request: Request, kind: str) -> dict[str, Any]:
        options: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
        if request.dry_run:
            options["dryRun"] = ["All"]
        if manager := request.query.get("fieldManager"):
            options["fieldManager"] = manager
        return options

    async def _body(
        self, request: Request, *, yaml_ok: bool = False, any_json: bool = False
    ) -> Any:
        http = request.http
        data = await _read_body(http)
        content_type = _media_type(http, "application/json")
        if content_type.lower() == protobuf.MEDIA_TYPE:
            # client-go's typed clients (kubectl create ..., auth can-i) send protobuf.
            try:
                return protobuf.decode_object(data)
            except protobuf.ProtobufError as error:
                raise errors.bad_request(str(error)) from None
        if "protobuf" in content_type or "cbor" in content_type:
            raise errors.unsupported_media_type(content_type)
        try:
            if yaml_ok or content_type in ("application/yaml", "application/x-yaml"):
                body = yaml.safe_load(data) if data.strip() else None
            else:
                body = json.loads(data) if data.strip() else None
        except (ValueError, yaml.YAMLError) as error:
            raise errors.bad_request(f"error decoding request body: {error}") from None
        if body is None:
            raise errors.bad_request("the request body is empty")
        if not any_json and not isinstance(body, dict):
            raise errors.bad_request(
                "the request body must be a JSON object, not " + type(body).__name__
            )
        return body

    async def _delete_options(self, request: Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        data = await _read_body(request.http)
        if data and _media_type(request.http, "").lower() == protobuf.MEDIA_TYPE:
            try:
                decoded = protobuf.decode_object(data)
            except protobuf.ProtobufError as error:
                raise errors.bad_request(str(error)) from None
            if decoded["kind"] != "DeleteOptions":
                raise errors.bad_request(f"a delete's body is DeleteOptions, not {decoded['kind']}")
            options.update(decoded)
        elif data.strip():
            try:
                parsed = json.loads(data)
            except ValueError as error:
                raise errors.bad_request(f"error decoding DeleteOptions: {error}") from None
            if not isinstance(parsed, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            options.update(parsed)
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in request.query:
                value: Any = request.query[key]
                if key == "gracePeriodSeconds":
                    value = request.integer(key)
                elif key == "orphanDependents":
                    value = value == "true"
                options[key] = value
        policy = options.get("propagationPolicy")
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise errors.APIError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                f'Unsupported value: "{policy}": supported values: "Foreground", '
                f'"Background", "Orphan", "nil"',
            )
        return options

    # -- responses ------------------------------------------------------------------------------

    def json(self, document: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=encode(document), content_type="application/json")

    def _wants(self, request: Request) -> str:
        accept = request.http.headers.get("Accept", "")
        for choice in accept.split(","):
            if "as=Table" in choice:
                return "Table"
            if "as=PartialObjectMetadataList" in choice or "as=PartialObjectMetadata" in choice:
                return "Metadata"
            media = choice.split(";")[0].strip()
            if media in ("application/json", "*/*", "application/*", ""):
                return "json"
            if media == "application/yaml":
                return "yaml"
        return "json"

    def object_response(
        self, request: Request, resource: ResourceType, obj: Obj, status: int = 200
    ) -> web.Response:
        obj = self.objects.present(resource, obj)
        wants = self._wants(request)
        if wants == "Table":
            return self.json(self._table(request, resource, [obj], None), status)
        if wants == "Metadata":
            return self.json(_partial(obj), status)
        if wants == "yaml":
            return web.Response(
                status=status, text=yaml.safe_dump(obj), content_type="application/yaml"
            )
        return self.json(obj, status)

    def _table(
        self,
        request: Request,
        resource: ResourceType,
        objects: list[Obj],
        meta: dict[str, Any] | None,
    ) -> dict[str, Any]:
        include = request.query.get("includeObject", "Metadata")
        return tables.to_table(
            resource.group,
            resource.kind,
            objects,
            include_object=include,
            list_meta=meta,
            printer_columns=[dict(c) for c in resource.printer_columns] or None,
        )

    # -- list and watch -------------------------------------------------------------------------

    def _filter(self, request: Request, resource: ResourceType) -> Callable[[Obj], bool]:
        """The request's selectors as one predicate; :func:`accept_all` when there are none."""
        label_selector = request.query.get("labelSelector", "")
        field_selector = request.query.get("fieldSelector", "")
        if not label_selector.strip() and not field_selector.strip():
            return accept_all
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, resource.key)

        def accept(obj: Obj) -> bool:
            return labels_match(labels, obj.get("metadata", {}).get("labels")) and fields(obj)

        return accept

    def _list(self, request: Request, resource: ResourceType, namespace: str) -> web.Response:
        accept = self._filter(request, resource)
        version = parse_resource_version(request.query.get("resourceVersion"))
        if (
            version is not None
            and version > self.store.resource_version
            and (request.query.get("resourceVersionMatch") == "Exact")
        ):
            raise errors.timeout(
                f"Too large resource version: {version}, current: {self.store.resource_version}"
            )
        items = self.store.list(resource.key, namespace or None)
        meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        start = request.query.get("continue")
        if start:
            try:
                token = json.loads(base64.urlsafe_b64decode(start.encode()))
                after, version_then = token["start"], int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            self.store.check_not_compacted(resource.key, version_then)
            # The list is in key order: the page starts right after the last key served.
            items = items[bisect.bisect_right(items, after, key=_sort_key) :]
            meta["resourceVersion"] = str(version_then)
        limit = request.integer("limit") or 0
        if accept is accept_all:
            page = items[:limit] if limit > 0 else items
            # Counted only without selectors, as upstream (it would need a full filter pass).
            remaining = len(items) - len(page)
        else:
            matching = (o for o in items if accept(o))
            page = list(itertools.islice(matching, limit + 1) if limit > 0 else matching)
            remaining = len(page) - limit if limit > 0 else 0
            page = page[:limit] if limit > 0 else page
        if remaining > 0:
            token = {"start": _sort_key(page[-1]), "rv": int(meta["resourceVersion"])}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            if accept is accept_all:
                meta["remainingItemCount"] = remaining
        items = page
        items = [self.objects.present(resource, o) for o in items]
        wants = self._wants(request)
        if wants == "Table":
            return self.json(self._table(request, resource, items, meta))
        if wants == "Metadata":
            return self.json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": [_partial(o) for o in items],
                }
            )
        return self.json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _watch(
        self, request: Request, resource: ResourceType, namespace: str, name: str
    ) -> web.StreamResponse:
        accept = self._filter(request, resource)
        if name:
            inner = accept

            def accept(obj: Obj) -> bool:
                return obj.get("metadata", {}).get("name") == name and inner(obj)

        version = parse_resource_version(request.query.get("resourceVersion"))
        initial = request.flag("sendInitialEvents")
        # "" and "0" start with the current state as ADDED events; a version resumes after it.
        since = None if version in (None, 0) or initial else version
        wants = self._wants(request)
        timeout = request.integer("timeoutSeconds") or math.inf
        bookmarks = request.flag("allowWatchBookmarks")
        # Everything that can refuse the request is done: from here the watcher is closed.
        watcher, backlog = self.store.watch(resource.key, namespace or None, accept, since)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        first_table = [True]

        def line(kind: str, obj: Obj) -> bytes:
            obj = self.objects.present(resource, obj)
            if wants == "Table":
                table = self._table(request, resource, [obj], None)
                if not first_table[0]:
                    table["columnDefinitions"] = []
                first_table[0] = False
                return json_line({"type": kind, "object": table})
            if wants == "Metadata":
                return json_line({"type": kind, "object": _partial(obj)})
            return json_line({"type": kind, "object": obj})

        def encode(kind: str, obj: Obj, change: Change | None) -> bytes:
            # A change's JSON is encoded once for all the watchers that send it unchanged.
            if change and wants == "json" and resource.api_version == obj.get("apiVersion"):
                return change.encoded()
            return line(kind, obj)

        def bookmark(annotations: dict[str, str] | None = None) -> bytes:
            metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
            if annotations:
                metadata["annotations"] = annotations
            return json_line(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": resource.kind,
                        "apiVersion": resource.api_version,
                        "metadata": metadata,
                    },
                }
            )

        try:
            await response.prepare(request.http)
            with anyio.move_on_after(timeout):
                first: list[bytes] = []
                if since is None:
                    current = self.store.list(resource.key, namespace or None)
                    first += [line("ADDED", obj) for obj in current if accept(obj)]
                    if initial:
                        first.append(bookmark({"k8s.io/initial-events-end": "true"}))
                first += [encode(*event) for event in backlog]
                if first:
                    await response.write(b"".join(first))
                ended = False
                while not ended:
                    if bookmarks:
                        event = None
                        with anyio.move_on_after(self.bookmark_interval):
                            event = await _next_event(watcher)
                        if event is None:
                            await response.write(bookmark())
                            continue
                    else:
                        event = await _next_event(watcher)
                    if event is _ENDED:
                        break
                    # Whatever else is queued goes out in the same write.
                    chunks = [encode(*event)]
                    while True:
                        try:
                            chunks.append(encode(*watcher.events.receive_nowait()))
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            ended = True
                            break
                    await response.write(b"".join(chunks))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            watcher.close()
        return response

    async def _delete_collection(
        self, request: Request, resource: ResourceType, namespace: str
    ) -> web.Response:
        accept = self._filter(request, resource)
        options = await self._delete_options(request)
        deleted = []
        for obj in list(self.store.list(resource.key, namespace or None)):
            if accept(obj):
                meta = obj["metadata"]
                try:
                    _, final = await self.objects.delete(
                        resource,
                        meta.get("namespace", ""),
                        meta["name"],
                        request.user,
                        options,
                        dry_run=request.dry_run,
                    )
                except errors.APIError as error:
                    if error.code != 404:
                        raise
                    continue
                deleted.append(final)
        return self.json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": deleted,
            }
        )

    # -- subresources ---------------------------------------------------------------------------

    async def _scale(
        self, request: Request, resource: ResourceType, namespace: str, name: str
    ) -> web.Response:
        obj = self.objects.get(resource, namespace, name)
        paths = resource.scale_paths or {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }

        def read(o: Obj, path: str) -> Any:
            value: Any = o
            for part in path.strip(".").split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value

        def scale_of(o: Obj) -> dict[str, Any]:
            # A custom resource's selector is where its CRD says, or none; a built-in
            # workload's is its spec.selector as a string.
            selector = read(o, paths.get("labelSelectorPath", ""))
            if selector is None and not resource.custom:
                selector = format_label_selector(o.get("spec", {}).get("selector"))
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    k: v
                    for k, v in o["metadata"].items()
                    if k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                },
                "spec": {"replicas": read(o, paths["specReplicasPath"]) or 0},
                "status": {
                    "replicas": read(o, paths["statusReplicasPath"]) or 0,
                    **({"selector": selector} if selector else {}),
                },
            }

        if request.http.method == "GET":
            return self.json(scale_of(obj))
        if request.http.method == "PUT":
            body = await self._body(request)
            replicas = body.get("spec", {}).get("replicas")
            check_resource_version(resource, body.get("metadata") or {}, obj)
        else:
            content_type = _media_type(request.http, "")
            patch_type = PATCH_TYPES.get(content_type)
            body = await self._body(request, yaml_ok=patch_type == "apply", any_json=True)
            current = scale_of(obj)
            if patch_type == "json":
                replicas = patch.json_patch(current, body)["spec"]["replicas"]
            elif patch_type in ("merge", "strategic", "apply"):
                replicas = patch.merge_patch(current, body)["spec"]["replicas"]
            else:
                raise errors.unsupported_media_type(content_type)
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.APIError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: '
                f"spec.replicas: Invalid value: {replicas}: must be greater than "
                "or equal to 0",
            )
        spec_path = paths["specReplicasPath"].strip(".").split(".")
        updated = json.loads(json.dumps(obj))
        target = updated
        for part in spec_path[:-1]:
            target = target.setdefault(part, {})
        target[spec_path[-1]] = replicas
        result = await self.objects.update(
            resource,
            namespace,
            name,
            updated,
            request.user,
            subresource="scale",
            dry_run=request.dry_run,
            options=self._options(request, "UpdateOptions"),
            field_manager=_field_manager(request),
        )
        return self.json(scale_of(result))

    async def _token_request(self, request: Request, namespace: str, name: str) -> web.Response:
        account = self.store.get(("", "serviceaccounts"), namespace, name)
        if account is None:
            raise errors.not_found(self._core("serviceaccounts"), name)
        body = await self._body(request)
        spec = body.get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise errors.APIError(
                422,
                "Invalid",
                'TokenRequest.authentication.k8s.io "'
                + name
                + '" is invalid: spec.expirationSeconds: Invalid value: '
                + f"{seconds}: may not specify a duration less than 10 minutes",
            )
        bound = spec.get("boundObjectRef") or {}
        pod = None
        if bound.get("kind") == "Pod":
            found = self.store.get(("", "pods"), namespace, bound.get("name", ""))
            if found is None:
                raise errors.not_found(self._core("pods"), bound.get("name", ""))
            pod = {"name": found["metadata"]["name"], "uid": found["metadata"]["uid"]}
        token, expires = self.authenticator.issue_service_account_token(
            namespace,
            name,
            account["metadata"]["uid"],
            audiences=tuple(spec.get("audiences") or ()),
            expiration_seconds=seconds,
            bound_pod=pod,
        )
        return self.json(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "creationTimestamp": now_rfc3339(self.objects.clock),
                },
                "spec": {**spec, "expirationSeconds": seconds},
                "status": {
                    "token": token,
                    "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            },
            status=201,
        )

    async def _binding(self, request: Request, namespace: str, name: str) -> web.Response:
        body = await self._body(request)
        node = (body.get("target") or {}).get("name")
        pods = self.registry.lookup("", "v1", "pods")
        assert pods is not None
        pod = self.objects.get(pods, namespace, name)
        if pod.get("spec", {}).get("nodeName"):
            raise errors.conflict(
                pods, name, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"'
            )
        updated = json.loads(json.dumps(pod))
        updated["spec"]["nodeName"] = node
        self.store.update(pods.key, updated)
        return self.json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status=201,
        )

    async def _pod_runtime(
        self, request: Request, resource: ResourceType, namespace: str, name: str, sub: str
    ) -> web.StreamResponse:
        obj = self.objects.get(resource, namespace, name)
        if self.pod_runtime is None:
            raise errors.bad_request(
                f'{resource.kind.lower()} "{name}" has no running containers: this API server '
                "runs without kubelets"
            )
        handler = getattr(self.pod_runtime, sub.replace("ephemeralcontainers", "ephemeral"))
        response: web.StreamResponse = await handler(request.http, obj)
        return response

    def _core(self, plural: str) -> ResourceType:
        resource = self.registry.lookup("", "v1", plural)
        assert resource is not None
        return resource

    # -- reviews --------------------------------------------------------------------------------

    async def _review(
        self, request: Request, resource: ResourceType, namespace: str
    ) -> web.Response:
        if request.http.method != "POST":
            raise errors.method_not_allowed()
        attributes = Attributes(
            user=request.user,
            verb="create",
            resource_request=True,
            namespace=namespace,
            api_group=resource.group,
            api_version=resource.version,
            resource=resource.plural,
        )
        self._authorize(attributes, resource)
        body = await self._body(request)
        spec = body.get("spec") or {}
        status: dict[str, Any]
        if resource.kind == "TokenReview":
            audiences = tuple(spec.get("audiences") or ())
            user = self.authenticator.user_for_token(spec.get("token", ""), audiences)
            status = {"authenticated": user is not None, "audiences": list(audiences)}
            if user is not None:
                status["user"] = user_info_dict(user)
            else:
                status["error"] = "invalid bearer token"
        elif resource.kind == "SelfSubjectReview":
            status = {"userInfo": user_info_dict(request.user)}
        elif resource.kind == "SelfSubjectRulesReview":
            rules, non_resource_rules = self.authorizer.rules_for(
                request.user, spec.get("namespace", "")
            )
            status = {
                "resourceRules": rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": False,
            }
        else:
            if resource.kind in ("SelfSubjectAccessReview",):
                subject = request.user
            else:
                subject = UserInfo(
                    name=spec.get("user", ""),
                    uid=spec.get("uid", ""),
                    groups=tuple(spec.get("groups") or ()),
                    extra={k: tuple(v) for k, v in (spec.get("extra") or {}).items()},
                )
            resource_attributes = spec.get("resourceAttributes")
            if resource_attributes is not None:
                ns = resource_attributes.get("namespace", "")
                if resource.kind == "LocalSubjectAccessReview":
                    ns = namespace
                asked = Attributes(
                    user=subject,
                    verb=resource_attributes.get("verb", ""),
                    resource_request=True,
                    namespace=ns,
                    api_group=resource_attributes.get("group", ""),
                    api_version=resource_attributes.get("version", ""),
                    resource=resource_attributes.get("resource", ""),
                    subresource=resource_attributes.get("subresource", ""),
                    name=resource_attributes.get("name", ""),
                )
            else:
                non_resource = spec.get("nonResourceAttributes") or {}
                asked = Attributes(
                    user=subject,
                    verb=non_resource.get("verb", ""),
                    resource_request=False,
                    path=non_resource.get("path", ""),
                )
            decision = self.authorizer.authorize(asked)
            status = {"allowed": decision.allowed}
            if decision.reason:
                status["reason"] = decision.reason
        reply = {
            "kind": resource.kind,
            "apiVersion": resource.api_version,
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return self.json(reply, status=201)


def _field_manager(request: Request) -> str:
    """Who a write is recorded as: ``fieldManager``, else the user agent up to its first
    ``/`` (``kubectl``, ``OpenAPI-Generator``), as the real server names updaters."""
    manager = request.query.get("fieldManager")
    if manager is None:
        return request.http.headers.get("User-Agent", "").split("/")[0][:128]
    if len(manager) > 128:
        raise errors.bad_request(
            f'fieldManager: Invalid value: "{manager}": must be at most 128 characters'
        )
    return manager


async def _read_body(http: web.Request) -> bytes:
    """The whole request body; ``413`` past :data:`MAX_BODY` (the stream gives it in pieces)."""
    if http.content_length is not None and http.content_length > MAX_BODY:
        raise errors.too_large(MAX_BODY)
    data = bytearray()
    while chunk := await http.content.read(MAX_BODY + 1 - len(data)):
        data += chunk
        if len(data) > MAX_BODY:
            raise errors.too_large(MAX_BODY)
    return bytes(data)


def _media_type(http: web.Request, default: str) -> str:
    """The request body's media type, without parameters such as ``charset``."""
    return http.headers.get("Content-Type", default).split(";")[0].strip()


#: What :func:`_next_event` returns when the watch has ended.
_ENDED: Final[tuple[str, Obj, Change | None]] = ("", {}, None)


async def _next_event(watcher: Watcher) -> tuple[str, Obj, Change | None]:
    try:
        return await watcher.events.receive()
    except anyio.EndOfStream:
        return _ENDED


def _sort_key(obj: Obj) -> str:
    metadata = obj.get("metadata", {})
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def _partial(obj: Obj) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }
