"""Admission webhooks: calling them the way kube-apiserver does.

kube-apiserver runs two webhook admission plugins on every write (CREATE, UPDATE, DELETE) and on
CONNECT: ``MutatingAdmissionWebhook`` after defaulting and ``ValidatingAdmissionWebhook`` just
before the object is persisted. Each reads the webhooks of every *WebhookConfiguration object,
picks those whose rules and selectors match the request, and POSTs an ``AdmissionReview`` to
each over HTTPS. This module reproduces what a webhook author can observe of that
(``k8s.io/apiserver/pkg/admission/plugin/webhook``), so that an operator, an injector or a policy
engine under test sees the same requests and the same failures as on a real cluster.

How a request is admitted
-------------------------
:meth:`Admission.mutate` calls the matching mutating webhooks one after the other, sorted by
configuration name and then in the order the configuration lists them. Each sees the object as
the previous one patched it, and may answer with a base64 JSON Patch (RFC 6902). A webhook with
``reinvocationPolicy: IfNeeded`` is called a second time, once, when a webhook after it changed
the object: the reinvocation round calls, in order, exactly those webhooks that were invoked
before some change and asked for it.

:meth:`Admission.validate` calls the matching validating webhooks concurrently, waits for all of
them, and fails with the first error to arrive, as upstream's dispatcher does.

A webhook is called when all of these hold, checked in upstream's order (``ShouldCallHook``):

- its ``namespaceSelector`` matches the labels of the request's namespace. Cluster-scoped
  objects are never exempted, except Namespace objects themselves, which are matched against
  their own labels on CREATE and UPDATE (the namespace as stored otherwise);
- its ``objectSelector`` matches the labels of the object or of the old object;
- one of its ``rules`` matches the operation, the resource's group, version, resource and
  subresource (``*``, ``pods/status``, ``*/status``, ``pods/*``, ``*/*``) and the scope.

Failures take the forms upstream gives them:

- a webhook that cannot be called (connection refused, TLS, timeout, a non-2xx status, a
  malformed response, a response for another uid) is a *call error*. Under
  ``failurePolicy: Fail`` (the v1 default) it denies with a 500 ``InternalError`` whose message
  is ``Internal error occurred: failed calling webhook "<name>": failed to call webhook: Post
  "<url>?timeout=10s": <error>``, the error text worded as Go's ``net/http`` and ``crypto/tls``
  word it; under ``Ignore`` the webhook is skipped;
- an answer with ``allowed: false`` denies with the webhook's ``status``, its code raised to at
  least 400 and its message prefixed ``admission webhook "<name>" denied the request``;
- a patch that cannot be decoded or applied is a 500 ``InternalError`` whatever the failure
  policy, because upstream does not count it as a call error.

Warnings returned by webhooks go to the list passed as ``warnings``, which the caller sends as
``Warning`` headers.

What is left out
----------------
``matchConditions`` are CEL expressions; this module does not evaluate CEL and treats a webhook
that has them as matching. ``matchPolicy: Equivalent`` is treated as ``Exact``: the emulator
serves one version of each resource, so there is no equivalent resource to convert to. Audit
annotations are not recorded. The module uses aiohttp, so it runs on asyncio only.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import json
import logging
import os
import posixpath
import socket
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp
import anyio
import jsonpatch
import jsonpointer

from sandbox.apiserver.goformat import go_quote
from sandbox.apiserver.selectors import labels_match, requirements_from_selector

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "Admission",
    "AdmissionDenied",
    "AdmissionRequest",
    "NamespaceLabels",
    "ServiceResolver",
]

_log = logging.getLogger(__name__)

type ServiceResolver = Callable[[str, str, int], Awaitable[tuple[str, int]]]
"""``(namespace, name, port)`` of a Service to the ``(host, port)`` to dial for it."""

type NamespaceLabels = Callable[[str], Mapping[str, str] | None]
"""A namespace's name to its labels, or None when there is no such namespace."""

#: The v1 default of ``timeoutSeconds``; validation allows 1 to 30.
DEFAULT_TIMEOUT_SECONDS: Final = 10
MAX_TIMEOUT_SECONDS: Final = 30
#: The port of ``clientConfig.service`` when it names none.
_DEFAULT_SERVICE_PORT = 443
_ADMISSION_GROUP = "admission.k8s.io"
#: The AdmissionReview versions the API server speaks, as named in ``admissionReviewVersions``.
_REVIEW_VERSIONS = ("v1", "v1beta1")
_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
#: Webhooks are never called for the objects that configure admission, so that a broken
#: webhook cannot lock the cluster out of fixing it (rules.IsExemptAdmissionConfigurationResource).
_EXEMPT_KINDS = frozenset(
    {
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
)
#: OpenSSL verification results and the words Go's crypto/x509 uses for the same failure.
_X509_UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
_X509_REASONS = {
    2: _X509_UNKNOWN_AUTHORITY,  # unable to get issuer certificate
    9: "x509: certificate has expired or is not yet valid",  # not yet valid
    10: "x509: certificate has expired or is not yet valid",  # expired
    18: _X509_UNKNOWN_AUTHORITY,  # self-signed certificate
    19: _X509_UNKNOWN_AUTHORITY,  # self-signed certificate in chain
    20: _X509_UNKNOWN_AUTHORITY,  # unable to get local issuer certificate
    21: _X509_UNKNOWN_AUTHORITY,  # unable to verify the first certificate
}
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_MISMATCH = 64
#: The messages client-go's NewGenericServerResponse gives a non-2xx answer that is not a Status.
_HTTP_ERRORS = {
    400: "the server rejected our request for an unknown reason",
    401: "the server has asked for the client to provide credentials",
    403: "the server does not allow access to the requested resource",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    406: "the server was unable to respond with a content type that the client supports",
    409: "the server reported a conflict",
    413: "the server has rejected the request because it is too large",
    415: "the server was unable to handle the media type requested",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
    503: "the server is currently unable to handle the request",
    504: (
        "the server was unable to return a response in the time allotted,"
        " but may still be processing the request"
    ),
}


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What the API server knows about a request being admitted.

    Attributes:
        operation: ``CREATE``, ``UPDATE``, ``DELETE`` or ``CONNECT``.
        group: The API group of the object's kind (``""`` for the core group).
        version: The version of the object's kind.
        kind: The object's kind, e.g. ``Deployment``; for a subresource, the kind the client
            sends (``Scale``, ``Eviction``, ``PodExecOptions``).
        resource: The resource's plural, e.g. ``deployments``.
        subresource: The subresource (``status``, ``scale``, ``exec``), or ``""``.
        namespace: The namespace, ``""`` for cluster-scoped objects. kube-apiserver sets it to
            the namespace's own name on requests for an existing Namespace object (UPDATE,
            DELETE); either convention works here.
        name: The object's name; ``""`` when a CREATE leaves it to ``generateName``.
        user: The requester as an AdmissionReview's ``userInfo``: ``username``, ``uid``,
            ``groups``, ``extra``.
        object: The new object (CREATE, UPDATE), the options object (CONNECT), or None (DELETE).
        old_object: The object as stored (UPDATE, DELETE), else None.
        dry_run: Whether the request is a dry run; webhooks with side effects then refuse it.
        options: The CreateOptions, UpdateOptions or DeleteOptions object, if any.
        resource_group: The resource's API group when it differs from the kind's, as for
            ``pods/eviction`` (``policy/v1 Eviction``) or ``deployments/scale``
            (``autoscaling/v1 Scale``); None means ``group``.
        resource_version: The resource's version when it differs from the kind's; None means
            ``version``.
    """

    operation: str
    group: str
    version: str
    kind: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user: Mapping[str, Any]
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool = False
    options: Mapping[str, Any] | None = None
    resource_group: str | None = None
    resource_version: str | None = None

    @property
    def resource_gvr(self) -> tuple[str, str, str]:
        """The resource's ``(group, version, plural)``, as the rules match it."""
        return (
            self.group if self.resource_group is None else self.resource_group,
            self.version if self.resource_version is None else self.resource_version,
            self.resource,
        )


class AdmissionDenied(Exception):
    """The request is refused; ``status`` is the Status object the API server returns.

    Attributes:
        status: A ``v1 Status`` (``kind``, ``apiVersion``, ``metadata``, ``status: Failure``,
            ``message``, ``reason``, ``details``, ``code``), ready to be the response body.
    """

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status: dict[str, Any] = dict(status)
        super().__init__(self.status.get("message", ""))

    @property
    def code(self) -> int:
        """The HTTP status code the API server answers with."""
        code = self.status.get("code")
        return code if isinstance(code, int) else 500


class Admission:
    """Calls admission webhooks for the API server.

    One instance serves every request; it keeps no state between calls other than a cache of
    TLS contexts by CA bundle.

    Args:
        resolve_service: Where to dial a webhook's ``clientConfig.service``: given the Service's
            namespace, name and port, the host and port of an endpoint (upstream's
            ServiceResolver). It may raise any exception to say there is none; the webhook
            call then fails with its message.
        namespace_labels: The labels of a namespace, or None if it does not exist, for
            ``namespaceSelector``.
    """

    __slots__ = ("_namespace_labels", "_resolve_service")

    def __init__(
        self, *, resolve_service: ServiceResolver, namespace_labels: NamespaceLabels
    ) -> None:
        self._resolve_service = resolve_service
        self._namespace_labels = namespace_labels

    async def mutate(
        self,
        configurations: Iterable[Mapping[str, Any]],
        request: AdmissionRequest,
        *,
        warnings: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Run the matching mutating webhooks, in order, and return the object they produce.

        Args:
            configurations: MutatingWebhookConfiguration objects (in any order).
            request: The request being admitted.
            warnings: If given, webhooks' warnings are appended to it (each message once).

        Returns:
            A copy of ``request.object`` with every webhook's patch applied, or None when the
            request has no object (DELETE).

        Raises:
            AdmissionDenied: A webhook refused the request, could not be called under
                ``failurePolicy: Fail``, or returned a patch that cannot be applied.
        """
        current = _plain(request.object)
        if _is_exempt(request):
            return current
        hooks = _webhooks(configurations)
        # Upstream's webhookReinvokeContext: webhooks that asked to be reinvoked and were called
        # since the last change, and those a change made due for reinvocation.
        invoked_reinvocable: set[str] = set()
        due: set[str] = set()
        for reinvocation in (False, True):
            # The admission chain reinvokes the mutating plugins once, and only if one of them
            # changed the object (admission.reinvoker).
            if reinvocation and not due:
                break
            for hook in hooks:
                attributes = replace(request, object=current)
                if not self._should_call(hook, attributes):
                    continue
                # A webhook skipped in the first round is not called for the first time in
                # the reinvocation round, even if it matches now.
                if reinvocation and hook.uid not in due:
                    continue
                changed = False
                failure: _CallError | None = None
                try:
                    current, changed = await self._mutate_once(hook, attributes, warnings)
                except _CallError as error:
                    failure = error
                if changed:
                    due |= invoked_reinvocable
                    invoked_reinvocable = set()
                if hook.spec.get("reinvocationPolicy") == "IfNeeded":
                    invoked_reinvocable.add(hook.uid)
                if failure is None:
                    continue
                if hook.fails_open:
                    _log.warning("Failed calling webhook, failing open %s: %s", hook.name, failure)
                    continue
                _log.warning("Failed calling webhook, failing closed %s: %s", hook.name, failure)
                raise AdmissionDenied(_internal_error(str(failure))) from failure
        return current

    async def validate(
        self,
        configurations: Iterable[Mapping[str, Any]],
        request: AdmissionRequest,
        *,
        warnings: list[str] | None = None,
    ) -> None:
        """Run the matching validating webhooks concurrently; return if all of them admit.

        Args:
            configurations: ValidatingWebhookConfiguration objects (in any order).
            request: The request being admitted, its object as the mutating webhooks left it.
            warnings: If given, webhooks' warnings are appended to it (each message once).

        Raises:
            AdmissionDenied: The first refusal or failure to arrive, once every webhook has
                answered (upstream waits for all and reports the first error).
        """
        if _is_exempt(request):
            return
        relevant = [hook for hook in _webhooks(configurations) if self._should_call(hook, request)]
        errors: list[AdmissionDenied] = []

        async def run(hook: _Webhook) -> None:
            try:
                await self._validate_once(hook, request, warnings)
            except _CallError as error:
                if hook.fails_open:
                    _log.warning("Failed calling webhook, failing open %s: %s", hook.name, error)
                    return
                _log.warning("Failed calling webhook, failing closed %s: %s", hook.name, error)
                errors.append(AdmissionDenied(_internal_error(str(error))))
            except AdmissionDenied as error:
                _log.warning("rejected by webhook %r: %s", hook.name, error)
                errors.append(error)
            except Exception as error:
                # Upstream recovers a panicking webhook goroutine the same way: ignored under
                # failurePolicy Ignore, an internal error otherwise.
                _log.exception("Panic calling webhook %s", hook.name)
                if not hook.fails_open:
                    message = f"ValidatingAdmissionWebhook/{hook.name} has panicked: {error}"
                    errors.append(AdmissionDenied(_internal_error(message)))

        async with anyio.create_task_group() as group:
            for hook in relevant:
                group.start_soon(run, hook)
        if errors:
            raise errors[0]

    # Matching (generic.Webhook.ShouldCallHook)

    def _should_call(self, hook: _Webhook, request: AdmissionRequest) -> bool:
        """Whether ``hook`` is called for ``request``.

        Raises:
            AdmissionDenied: A rule matches but a selector is invalid or the namespace does not
                exist. Upstream reports these only for webhooks whose rules match.
        """
        namespace_matches, namespace_error = self._match_namespace(hook, request)
        if not namespace_matches and namespace_error is None:
            return False
        object_matches, object_error = _match_object(hook, request)
        if not object_matches and object_error is None:
            return False
        rules = hook.spec.get("rules") or ()
        if not any(_rule_matches(rule, request) for rule in rules):
            return False
        if namespace_error is not None:
            raise namespace_error
        if object_error is not None:
            raise object_error
        # matchConditions are CEL expressions, which this emulator does not evaluate: a webhook
        # with them is called as if they all held.
        return True

    def _match_namespace(
        self, hook: _Webhook, request: AdmissionRequest
    ) -> tuple[bool, AdmissionDenied | None]:
        # namespace.Matcher.MatchNamespaceSelector
        is_namespace = request.resource == "namespaces"
        if not request.namespace and not is_namespace:
            # A cluster-scoped object other than a Namespace is never exempted.
            return True, None
        try:
            selector = requirements_from_selector(hook.spec.get("namespaceSelector"))
        except ValueError as error:
            return False, AdmissionDenied(_internal_error(str(error)))
        if not selector:
            return True, None
        if is_namespace and not request.subresource and request.operation in {"CREATE", "UPDATE"}:
            # A Namespace being created or updated is matched against its own new labels.
            return labels_match(selector, _labels(request.object)), None
        name = request.namespace or (request.name if is_namespace else "")
        labels = self._namespace_labels(name)
        if labels is None:
            return False, AdmissionDenied(_not_found("namespaces", name))
        return labels_match(selector, labels), None

    # Calling

    async def _mutate_once(
        self, hook: _Webhook, request: AdmissionRequest, warnings: list[str] | None
    ) -> tuple[dict[str, Any] | None, bool]:
        """Call a mutating webhook; return the object as patched and whether it changed."""
        current = _plain(request.object)
        answer = await self._call(hook, request, warnings, mutating=True)
        if not answer.allowed:
            raise AdmissionDenied(_rejection(hook.name, answer.status))
        if not answer.patch:
            return current, False
        try:
            operations = json.loads(answer.patch)
        except ValueError as error:
            raise AdmissionDenied(_internal_error(str(error))) from error
        if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
            raise AdmissionDenied(_internal_error("a JSON patch must be an array of operations"))
        if not operations:
            return current, False
        if current is None:
            message = (
                f"admission webhook {go_quote(hook.name)} attempted to modify the object,"
                " which is not supported for this operation"
            )
            raise AdmissionDenied(_internal_error(message))
        if answer.patch_type != "JSONPatch":
            raise _CallError(hook.name, f"unsupported patch type {go_quote(answer.patch_type)}")
        try:
            patched = jsonpatch.JsonPatch(operations).apply(current)
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            LookupError,
            TypeError,
            ValueError,
        ) as error:
            raise AdmissionDenied(_internal_error(str(error))) from error
        if not isinstance(patched, dict):
            message = f"the patched object is a JSON {type(patched).__name__}, not an object"
            raise AdmissionDenied(_internal_error(message))
        return patched, patched != current

    async def _validate_once(
        self, hook: _Webhook, request: AdmissionRequest, warnings: list[str] | None
    ) -> None:
        answer = await self._call(hook, request, warnings, mutating=False)
        if not answer.allowed:
            raise AdmissionDenied(_rejection(hook.name, answer.status))

    async def _call(
        self,
        hook: _Webhook,
        request: AdmissionRequest,
        warnings: list[str] | None,
        *,
        mutating: bool,
    ) -> _Answer:
        """POST an AdmissionReview to ``hook`` and check the answer (callHook/VerifyResponse).

        Raises:
            _CallError: The webhook could not be called or answered nonsense.
            AdmissionDenied: The request is a dry run and the webhook has side effects.
        """
        if request.dry_run:
            side_effects = hook.spec.get("sideEffects")
            if side_effects is None:
                raise _CallError(hook.name, "Webhook SideEffects is nil")
            if side_effects not in {"None", "NoneOnDryRun"}:
                message = f"admission webhook {go_quote(hook.name)} does not support dry run"
                raise AdmissionDenied(_status(400, "BadRequest", message))
        version = next(
            (v for v in hook.spec.get("admissionReviewVersions") or () if v in _REVIEW_VERSIONS),
            None,
        )
        if version is None:
            raise _CallError(
                hook.name,
                "could not create admission objects:"
                " webhook does not accept v1 or v1beta1 AdmissionReview",
            )
        try:
            endpoint = _Endpoint.of(hook.spec.get("clientConfig") or {})
        except ValueError as error:
            raise _CallError(hook.name, f"could not get REST client: {error}") from error
        uid = str(uuid.uuid4())
        api_version = f"{_ADMISSION_GROUP}/{version}"
        review = _review(api_version, uid, request)
        body = await self._post(hook, endpoint, json.dumps(review, separators=(",", ":")))
        try:
            answer = _Answer.parse(body, api_version, uid, mutating=mutating)
        except _DecodeError as error:
            raise _CallError(hook.name, f"failed to call webhook: {error}") from error
        except ValueError as error:
            raise _CallError(hook.name, f"received invalid webhook response: {error}") from error
        if warnings is not None:
            for warning in answer.warnings:
                # The API server's warning recorder drops repeated messages.
                if warning not in warnings:
                    warnings.append(warning)
        return answer

    async def _post(self, hook: _Webhook, endpoint: _Endpoint, body: str) -> bytes:
        """Send the review; return the answer's body, or raise :class:`_CallError` as Go fails.

        The webhook's timeout covers the whole exchange, resolving the Service included, and is
        passed to it as ``?timeout=<n>s`` (upstream sets the query from the context deadline).
        """
        seconds = hook.timeout_seconds
        shown_url = endpoint.url(seconds)
        try:
            context = _tls_context(endpoint.ca_bundle)
        except ssl.SSLError as error:
            reason = "could not get REST client: unable to load root certificates:"
            raise _CallError(hook.name, f"{reason} unable to parse bytes as PEM block") from error

        def failed(reason: str) -> _CallError:
            return _CallError(
                hook.name, f"failed to call webhook: Post {go_quote(shown_url)}: {reason}"
            )

        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, */*",
            "User-Agent": "kube-apiserver-admission",
        }
        status = 0
        payload = b""
        dial: tuple[str, int] = (endpoint.host, endpoint.port)
        # The session is made and closed outside the deadline's scope, so that closing it is
        # never itself cancelled and leaves no connection behind.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, force_close=True)
        ) as session:
            with anyio.move_on_after(seconds) as deadline:
                try:
                    if endpoint.service is not None:
                        dial = await self._resolve_service(*endpoint.service)
                    url = endpoint.url(seconds, dial=dial)
                    if endpoint.service is not None:
                        headers["Host"] = endpoint.authority
                    async with session.post(
                        url,
                        data=body.encode(),
                        headers=headers,
                        server_hostname=endpoint.host,
                        allow_redirects=False,
                    ) as response:
                        status = response.status
                        payload = await response.read()
                except (aiohttp.ClientError, OSError) as error:
                    raise failed(_describe(error, endpoint.host, dial)) from error
                except Exception as error:
                    # Only the resolver can raise anything else; Go reports a failed dial.
                    raise failed(str(error) or type(error).__name__) from error
        if deadline.cancelled_caught:
            raise failed("context deadline exceeded")
        # client-go's transformResponse: anything outside 200-206 is an error.
        if not 200 <= status <= 206:
            reason = _http_error(status, payload)
            raise _CallError(hook.name, f"failed to call webhook: {reason}")
        return payload


# Webhooks


@dataclass(frozen=True, slots=True)
class _Webhook:
    """One webhook of a configuration, as the configuration managers list them."""

    #: ``<configuration>/<webhook>/<n>``, n counting webhooks of the same name, as upstream.
    uid: str
    spec: Mapping[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def fails_open(self) -> bool:
        # failurePolicy defaults to Fail in admissionregistration.k8s.io/v1.
        return self.spec.get("failurePolicy") == "Ignore"

    @property
    def timeout_seconds(self) -> int:
        value = self.spec.get("timeoutSeconds")
        if not isinstance(value, int) or isinstance(value, bool):
            return DEFAULT_TIMEOUT_SECONDS
        # Validation keeps it within 1..30; clamp what slipped past it.
        return min(max(value, 1), MAX_TIMEOUT_SECONDS)


def _webhooks(configurations: Iterable[Mapping[str, Any]]) -> list[_Webhook]:
    """The webhooks of ``configurations``, sorted by configuration name, then in their order."""

    def name(configuration: Mapping[str, Any]) -> str:
        return str((configuration.get("metadata") or {}).get("name", ""))

    webhooks: list[_Webhook] = []
    for configuration in sorted(configurations, key=name):
        seen: dict[str, int] = {}
        for spec in configuration.get("webhooks") or ():
            webhook_name = str(spec.get("name", ""))
            n = seen.get(webhook_name, 0)
            seen[webhook_name] = n + 1
            webhooks.append(_Webhook(f"{name(configuration)}/{webhook_name}/{n}", spec))
    return webhooks


def _is_exempt(request: AdmissionRequest) -> bool:
    return request.group == "admissionregistration.k8s.io" and request.kind in _EXEMPT_KINDS


def _rule_matches(rule: Mapping[str, Any], request: AdmissionRequest) -> bool:
    """Upstream's rules.Matcher: scope, operation, group, version, resource/subresource."""
    group, version, resource = request.resource_gvr
    is_namespace_resource = (group, version, resource) == ("", "v1", "namespaces")
    scope = rule.get("scope") or "*"
    if scope == "Namespaced":
        # Namespace objects are cluster-scoped although their requests carry a namespace.
        in_scope = not is_namespace_resource and bool(request.namespace)
    elif scope == "Cluster":
        in_scope = is_namespace_resource or not request.namespace
    else:
        in_scope = scope == "*"
    if not in_scope:
        return False
    operations = rule.get("operations") or ()
    if "*" not in operations and request.operation not in operations:
        return False
    if not _exact_or_wildcard(rule.get("apiGroups"), group):
        return False
    if not _exact_or_wildcard(rule.get("apiVersions"), version):
        return False
    for entry in rule.get("resources") or ():
        rule_resource, _, rule_subresource = str(entry).partition("/")
        if rule_resource in {"*", resource} and rule_subresource in {"*", request.subresource}:
            return True
    return False


def _exact_or_wildcard(items: Iterable[str] | None, requested: str) -> bool:
    return any(item in {"*", requested} for item in items or ())


def _match_object(hook: _Webhook, request: AdmissionRequest) -> tuple[bool, AdmissionDenied | None]:
    # object.Matcher.MatchObjectSelector: either the new or the old object may match; a missing
    # object (the new one on DELETE) matches nothing.
    try:
        selector = requirements_from_selector(hook.spec.get("objectSelector"))
    except ValueError as error:
        return False, AdmissionDenied(_internal_error(str(error)))
    if not selector:
        return True, None
    return any(
        obj is not None and labels_match(selector, _labels(obj))
        for obj in (request.object, request.old_object)
    ), None


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    metadata = (obj or {}).get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


# Requests and answers


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where a webhook is: its URL's parts, or a Service (webhook.ClientManager.HookClient)."""

    scheme: str
    #: The host name TLS verifies, and the host dialled unless there is a Service.
    host: str
    port: int
    #: ``host[:port]`` as shown in the URL and sent as ``Host``.
    authority: str
    path: str
    service: tuple[str, str, int] | None
    ca_bundle: bytes | None = field(repr=False)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> _Endpoint:
        """Read a ``clientConfig``.

        Raises:
            ValueError: It has neither a URL nor a Service, or its caBundle is not base64.
        """
        ca_bundle = _ca_bundle(config.get("caBundle"))
        service = config.get("service")
        if service:
            namespace = str(service.get("namespace", ""))
            name = str(service.get("name", ""))
            port = service.get("port") or _DEFAULT_SERVICE_PORT
            # Upstream dials <name>.<namespace>.svc, verifying that name, and sends the dial
            # to the ServiceResolver's endpoint.
            host = f"{name}.{namespace}.svc"
            return cls(
                "https",
                host,
                port,
                f"{host}:{port}",
                _clean_path(service.get("path")),
                (namespace, name, port),
                ca_bundle,
            )
        url = config.get("url")
        if not url:
            raise ValueError("webhook clientConfig has neither url nor service")
        parts = urlsplit(str(url))
        if not parts.hostname:
            raise ValueError(f"invalid webhook URL {go_quote(str(url))}")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(
            parts.scheme,
            parts.hostname,
            parts.port or default_port,
            parts.netloc.rpartition("@")[2],
            _clean_path(parts.path),
            None,
            ca_bundle,
        )

    def url(self, seconds: int, *, dial: tuple[str, int] | None = None) -> str:
        """The URL posted to: as upstream shows it, or with the address actually dialled."""
        authority = self.authority if dial is None else _host_port(*dial)
        return f"{self.scheme}://{authority}{self.path}?timeout={seconds}s"


def _clean_path(path: object) -> str:
    # client-go joins the path with path.Join, which drops a trailing slash; "" becomes "/".
    cleaned = posixpath.normpath("/" + str(path or ""))
    return "/" + cleaned.lstrip("/")


def _ca_bundle(value: object) -> bytes | None:
    if not value:
        return None
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error as error:
        raise ValueError(f"caBundle is not base64: {error}") from error


@functools.lru_cache(maxsize=64)
def _tls_context(ca_bundle: bytes | None) -> ssl.SSLContext:
    """A client context like Go's: the bundle's CAs (else the system roots), names checked.

    Raises:
        ssl.SSLError: The bundle holds no usable PEM certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Go trusts any certificate in the pool as an anchor, ignores the common name, and is not
    # as strict about extensions as Python 3.13's VERIFY_X509_STRICT.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.hostname_checks_common_name = False
    if ca_bundle is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.load_verify_locations(cadata=ca_bundle.decode("ascii", "replace"))
    return context


def _review(api_version: str, uid: str, request: AdmissionRequest) -> dict[str, Any]:
    """The AdmissionReview for ``request`` (CreateV1AdmissionReview), fields in Go's order."""
    group, version, resource = request.resource_gvr
    kind = {"group": request.group, "version": request.version, "kind": request.kind}
    gvr = {"group": group, "version": version, "resource": resource}
    body: dict[str, Any] = {"uid": uid, "kind": kind, "resource": gvr}
    if request.subresource:
        body["subResource"] = request.subresource
    # With matchPolicy Exact the webhook sees the kind and resource that were requested.
    body["requestKind"] = dict(kind)
    body["requestResource"] = dict(gvr)
    if request.subresource:
        body["requestSubResource"] = request.subresource
    if request.name:
        body["name"] = request.name
    if request.namespace:
        body["namespace"] = request.namespace
    body["operation"] = request.operation
    body["userInfo"] = _user_info(request.user)
    # RawExtension fields are always present, null when empty.
    body["object"] = _plain(request.object)
    body["oldObject"] = _plain(request.old_object)
    body["dryRun"] = request.dry_run
    body["options"] = _plain(request.options)
    return {"kind": "AdmissionReview", "apiVersion": api_version, "request": body}


def _user_info(user: Mapping[str, Any]) -> dict[str, Any]:
    # authentication/v1 UserInfo: every field is omitempty.
    info: dict[str, Any] = {}
    for key in ("username", "uid"):
        if user.get(key):
            info[key] = str(user[key])
    if groups := [str(g) for g in user.get("groups") or ()]:
        info["groups"] = groups
    extra = {str(k): [str(v) for v in values] for k, values in (user.get("extra") or {}).items()}
    if extra:
        info["extra"] = extra
    return info


class _DecodeError(ValueError):
    """The answer is not an AdmissionReview at all (client-go fails to decode it)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """A webhook's checked AdmissionResponse (webhookrequest.VerifyAdmissionResponse)."""

    allowed: bool
    status: Mapping[str, Any] | None
    patch: bytes
    patch_type: str
    warnings: tuple[str, ...]

    @classmethod
    def parse(cls, body: bytes, api_version: str, uid: str, *, mutating: bool) -> _Answer:
        """Decode and check an answer to the review sent as ``api_version`` with ``uid``.

        Raises:
            _DecodeError: The body is not a JSON AdmissionReview.
            ValueError: The review is invalid (upstream's "received invalid webhook response").
        """
        try:
            review = json.loads(body)
        except ValueError as error:
            raise _DecodeError(f"couldn't get version/kind; json parse error: {error}") from error
        if not isinstance(review, dict):
            raise _DecodeError("couldn't get version/kind; json parse error: not an object")
        response = review.get("response")
        if response is None:
            raise ValueError("webhook response was absent")
        if not isinstance(response, dict):
            raise _DecodeError("json: cannot unmarshal response: not an object")
        patch = _typed(response, "patch", str, "")
        try:
            patch_bytes = base64.b64decode(patch, validate=True)
        except binascii.Error as error:
            raise _DecodeError(f"illegal base64 data in response.patch: {error}") from error
        answer = cls(
            allowed=_typed(response, "allowed", bool, False),
            status=_typed(response, "status", dict, None),
            patch=patch_bytes,
            patch_type=_typed(response, "patchType", str, ""),
            warnings=tuple(str(w) for w in _typed(response, "warnings", list, [])),
        )
        if api_version.endswith("/v1"):
            # v1beta1 answers were never checked for their uid or kind; v1 answers are.
            got_uid = str(response.get("uid", ""))
            if got_uid != uid:
                raise ValueError(f"expected response.uid={go_quote(uid)}, got {go_quote(got_uid)}")
            got = _gvk(str(review.get("apiVersion", "")), str(review.get("kind", "")))
            expected = _gvk(api_version, "AdmissionReview")
            if got != expected:
                raise ValueError(f"expected webhook response of {expected}, got {got}")
            if answer.patch_type and not answer.patch:
                raise ValueError("webhook returned response.patchType but not response.patch")
            if answer.patch and not answer.patch_type:
                raise ValueError("webhook returned response.patch but not response.patchType")
        if not mutating and answer.patch:
            raise ValueError("validating webhook may not return response.patch")
        if not mutating and answer.patch_type:
            raise ValueError("validating webhook may not return response.patchType")
        return answer


def _typed[T](response: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
    value = response.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        message = f"json: cannot unmarshal {type(value).__name__} into response.{key}"
        raise _DecodeError(message)
    return value


def _gvk(api_version: str, kind: str) -> str:
    # schema.GroupVersionKind.String()
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={kind}"


# Errors, worded as upstream words them


class _CallError(Exception):
    """webhookutil.ErrCallingWebhook: the webhook could not be called; failurePolicy applies."""

    def __init__(self, webhook: str, reason: str) -> None:
        super().__init__(f"failed calling webhook {go_quote(webhook)}: {reason}")
        self.webhook = webhook
        self.reason = reason


def _status(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        status["details"] = dict(details)
    status["code"] = code
    return status


def _internal_error(message: str) -> dict[str, Any]:
    # apierrors.NewInternalError
    return _status(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def _not_found(resource: str, name: str) -> dict[str, Any]:
    return _status(
        404, "NotFound", f"{resource} {go_quote(name)} not found", {"name": name, "kind": resource}
    )


def _rejection(webhook: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Status of a refusal (webhookerrors.ToStatusErr)."""
    status = dict(result or {})
    denied_by = f"admission webhook {go_quote(webhook)} denied the request"
    code = status.get("code")
    # Never a success code with a rejection.
    if not isinstance(code, int) or code < 400:
        status["code"] = 400
    if status.get("status") in {None, "", "Success"}:
        status["status"] = "Failure"
    if status.get("message"):
        status["message"] = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        status["message"] = f"{denied_by}: {status['reason']}"
    else:
        status["message"] = f"{denied_by} without explanation"
    # The API server writes the StatusError as a v1 Status.
    status["kind"] = "Status"
    status["apiVersion"] = "v1"
    if not isinstance(status.get("metadata"), dict):
        status["metadata"] = {}
    return status


def _http_error(code: int, body: bytes) -> str:
    """What client-go reports for a non-2xx answer: a returned Status's message, else generic."""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if (
        isinstance(decoded, dict)
        and decoded.get("kind") == "Status"
        and decoded.get("status") != "Success"
        and decoded.get("message")
    ):
        return str(decoded["message"])
    if code in _HTTP_ERRORS:
        return _HTTP_ERRORS[code]
    if code >= 500:
        text = body.decode("utf-8", "replace").strip() or "unknown"
        return (
            f"an error on the server ({go_quote(text)}) has prevented the request from succeeding"
        )
    return f"the server responded with the status code {code} but did not return more information"


def _describe(error: Exception, server_name: str, dial: tuple[str, int]) -> str:
    """An aiohttp or socket error in the words of Go's net/http and crypto/tls."""
    address = _host_port(*dial)
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        cause = error.certificate_error
        code = getattr(cause, "verify_code", None)
        if code in _X509_REASONS:
            reason = _X509_REASONS[code]
        elif code in {_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH}:
            reason = f"x509: certificate is not valid for {server_name}"
        else:
            reason = f"x509: {getattr(cause, 'verify_message', None) or cause}"
        return f"tls: failed to verify certificate: {reason}"
    if isinstance(error, aiohttp.ClientConnectorSSLError):
        cause = error.os_error
        reason = getattr(cause, "reason", None) or str(cause)
        return f"remote error: tls: {str(reason).lower().replace('_', ' ')}"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"dial tcp: lookup {dial[0]}: no such host"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"dial tcp {address}: connect: {_strerror(error.os_error)}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "EOF"
    if isinstance(error, socket.gaierror):
        return f"dial tcp: lookup {dial[0]}: no such host"
    if isinstance(error, OSError) and error.errno is not None:
        return f"dial tcp {address}: connect: {_strerror(error)}"
    return str(error) or type(error).__name__


def _strerror(error: OSError) -> str:
    # Go's syscall.Errno strings are the C library's, lower-cased: "connection refused".
    if error.errno is None:
        return str(error)
    if error.errno == errno.ECONNREFUSED:
        return "connection refused"
    text = os.strerror(error.errno)
    return text[:1].lower() + text[1:]


def _host_port(host: str, port: int) -> str:
    # net.JoinHostPort brackets IPv6 addresses.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _plain(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A deep copy of a JSON object as plain dicts and lists, or None."""
    if obj is None:
        return None
    copied: dict[str, Any] = json.loads(json.dumps(obj))
    return copied
