"""Who may use the manager: the caller's Kubernetes credentials, checked by the cluster.

A client sends its kubeconfig user's bearer token in ``ClientInfo.bearer_token`` (the proto's
``credentials`` oneof; gRPC metadata is not used, so that the credentials are part of the
message the manager validates). The manager then asks the API server:

1. a **TokenReview** of the token: is it valid, and whose is it? Rejected: UNAUTHENTICATED.
2. a **SubjectAccessReview** for that user, their groups and extra attributes: may they
   ``create pods/portforward`` in the manager's namespace? That is the right a client needs
   anyway to reach the manager through a port-forward, so a client that could connect the
   usual way may connect directly too, and an in-cluster pod without it cannot use the
   manager as a proxy. Refused: PERMISSION_DENIED, naming the user and the missing right.

The token is never logged, stored or echoed in an error; the reviews' answers are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio

from manager import kube

log = logging.getLogger(__name__)

#: Seconds both reviews together may take.
REVIEW_TIMEOUT = 10.0
#: What a caller must be allowed, in the manager's namespace.
REQUIRED_VERB = "create"
REQUIRED_RESOURCE = "pods"
REQUIRED_SUBRESOURCE = "portforward"


@dataclass(frozen=True, slots=True)
class User:
    """A user as the cluster authenticated them (a TokenReview's ``status.user``)."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


class AuthError(Exception):
    """The caller cannot be let in; the message says why, for the caller."""


class Unauthenticated(AuthError):
    """The cluster rejected the credentials (or there were none)."""


class PermissionDenied(AuthError):
    """The cluster knows the user, but RBAC does not give them the right."""


class ReviewFailed(AuthError):
    """The cluster could not be asked: the API server is unreachable, or the manager itself
    may not create reviews (its RBAC is incomplete)."""


class Authenticator:
    """Checks callers' tokens with the cluster.

    Args:
        kubernetes: The API server.
        namespace: The manager's namespace, where the right is checked.
    """

    def __init__(self, kubernetes: kube.Kubernetes, namespace: str) -> None:
        self._kubernetes = kubernetes
        self._namespace = namespace

    @property
    def requirement(self) -> str:
        return (
            f"{REQUIRED_VERB} {REQUIRED_RESOURCE}/{REQUIRED_SUBRESOURCE}"
            f' in namespace "{self._namespace}"'
        )

    async def authenticate(self, token: str) -> User:
        """The user ``token`` belongs to, if they may use the manager.

        Raises:
            Unauthenticated: No token, or the cluster rejected it.
            PermissionDenied: The user lacks the right.
            ReviewFailed: The cluster could not be asked.
        """
        if not token:
            raise Unauthenticated(
                "no credentials: send the bearer token of your kubeconfig's user in"
                " ClientInfo.bearer_token"
            )
        try:
            with anyio.fail_after(REVIEW_TIMEOUT):
                user = await self._review_token(token)
                allowed, reason = await self._review_access(user)
        except TimeoutError as error:
            raise ReviewFailed(
                f"the Kubernetes API server did not answer within {REVIEW_TIMEOUT:g} s"
            ) from error
        except kube.Forbidden as error:
            raise ReviewFailed(
                "the traffic-manager may not create TokenReviews and SubjectAccessReviews"
                f" (its RBAC is incomplete): {error.message}"
            ) from error
        except kube.KubernetesError as error:
            raise ReviewFailed(f"cannot check the credentials with the cluster: {error}") from error
        if not allowed:
            because = f" ({reason})" if reason else ""
            log.info("refused user %s: may not %s%s", user.name, self.requirement, because)
            raise PermissionDenied(
                f'user "{user.name}" may not {self.requirement}{because}: ask your cluster'
                " administrator for the Telepresence client role (the Helm chart's clientRbac)"
            )
        return user

    async def _review_token(self, token: str) -> User:
        review = await self._kubernetes.create(
            kube.TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        status = review.get("status") or {}
        if not status.get("authenticated"):
            error = status.get("error") or "the token is not valid"
            log.info("refused a client: the cluster rejected its token (%s)", error)
            raise Unauthenticated(
                f"the cluster rejected the credentials ({error}): check your kubeconfig's user"
                " and log in again"
            )
        user = status.get("user") or {}
        return User(
            name=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra={
                str(k): tuple(str(v) for v in vs) for k, vs in (user.get("extra") or {}).items()
            },
        )

    async def _review_access(self, user: User) -> tuple[bool, str]:
        spec: dict[str, object] = {
            "user": user.name,
            "groups": list(user.groups),
            "resourceAttributes": {
                "namespace": self._namespace,
                "verb": REQUIRED_VERB,
                "resource": REQUIRED_RESOURCE,
                "subresource": REQUIRED_SUBRESOURCE,
            },
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        review = await self._kubernetes.create(
            kube.SUBJECT_ACCESS_REVIEWS,
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")
