"""API errors as Kubernetes reports them: ``Status`` objects with the real reasons and codes.

Clients branch on ``reason`` and ``code`` (kubectl prints ``Error from server (NotFound): ...``,
client-go's ``IsConflict`` and kubernetes-asyncio's ``ApiException.status`` read them), and
users read ``message``, so each helper words it as kube-apiserver does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sandbox.apiserver.resources import ResourceType


class APIError(Exception):
    """A request that fails with a ``Status``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(resource: ResourceType | None, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if resource is not None:
        if resource.group:
            details["group"] = resource.group
        details["kind"] = resource.plural
    return details


def not_found(resource: ResourceType, name: str) -> APIError:
    return APIError(
        404,
        "NotFound",
        f'{resource.qualified} "{name}" not found',
        details=_details(resource, name),
    )


def already_exists(resource: ResourceType, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{resource.qualified} "{name}" already exists',
        details=_details(resource, name),
    )


def conflict(resource: ResourceType, name: str, why: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": {why}',
        details=_details(resource, name),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(
    resource: ResourceType, name: str, message: str, causes: Iterable[dict[str, str]]
) -> APIError:
    details = _details(resource, name)
    details["kind"] = resource.kind
    details["causes"] = list(causes)
    return APIError(422, "Invalid", message, details=details)


def forbidden(message: str, resource: ResourceType | None = None, name: str = "") -> APIError:
    return APIError(403, "Forbidden", message, details=_details(resource, name))


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed() -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        details={},
    )


def not_found_path() -> APIError:
    # What kube-apiserver answers for a path that names no resource.
    return APIError(404, "NotFound", "the server could not find the requested resource", details={})


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def too_large(limit: int) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - "
        f"accepted media types include: application/json, application/yaml, "
        f'application/vnd.kubernetes.protobuf; got "{content_type}"',
    )


def not_acceptable() -> APIError:
    return APIError(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, application/yaml, "
        "application/vnd.kubernetes.protobuf",
    )


def internal(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")


def timeout(message: str) -> APIError:
    return APIError(504, "Timeout", message)
