"""Who is asking: the cluster's credentials and the three ways a client proves who it is.

kube-apiserver accepts, in this order, a client certificate signed by the cluster CA (the
user is its CN, the groups its O attributes), a static bearer token (``--token-auth-file``),
and a service-account token (a JWT signed with the service-account key, whose account must
still exist with the same uid). Every authenticated user is also in ``system:authenticated``;
a request with no credentials is ``system:anonymous`` in ``system:unauthenticated``.

The credentials live in ``DIR/pki`` and are made once, so a restarted server keeps its CA and
the kubeconfig stays valid.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.apiserver import errors
from sandbox.apiserver.rbac import UserInfo
from telepresence.wire import tls

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "kubernetes-admin"
DEVELOPER_USER = "developer"
AUTHENTICATED = "system:authenticated"
ANONYMOUS = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
#: The names the serving certificate answers to, as kubeadm issues them.
SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The cluster's CA, serving identity, admin identity, token signing key and tokens."""

    ca: tls.Identity
    server: tls.Identity
    admin: tls.Identity
    service_account_key: ec.EllipticCurvePrivateKey
    #: token -> user, as kube-apiserver's --token-auth-file maps them.
    tokens: Mapping[str, UserInfo]

    @property
    def developer_token(self) -> str:
        return next(t for t, u in self.tokens.items() if u.name == DEVELOPER_USER)

    @classmethod
    def load_or_create(cls, directory: Path, ip_addresses: tuple[str, ...] = ()) -> Credentials:
        """The credentials in ``directory``, made on first use; the serving certificate is
        reissued when it lacks one of ``ip_addresses``."""
        directory.mkdir(parents=True, exist_ok=True)
        ips = ("127.0.0.1", *ip_addresses)
        ca = _load_or_issue(directory / "ca", lambda: tls.create_ca("sandbox-ca"))
        server = _load_or_issue(
            directory / "apiserver",
            lambda: tls.issue_certificate(
                ca, "kube-apiserver", dns_names=SERVER_NAMES, ip_addresses=ips, server=True
            ),
            required_ips=ips,
        )
        admin = _load_or_issue(
            directory / "admin",
            lambda: tls.issue_certificate(
                ca, ADMIN_USER, organizations=("system:masters",), client=True
            ),
        )
        key_path = directory / "sa.key"
        if key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            key = loaded
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_path.chmod(0o600)
        tokens_path = directory / "tokens.json"
        if tokens_path.exists():
            raw = json.loads(tokens_path.read_text())
        else:
            raw = {secrets.token_urlsafe(32): {"name": DEVELOPER_USER, "uid": str(uuid.uuid4())}}
            tokens_path.write_text(json.dumps(raw, indent=2))
            tokens_path.chmod(0o600)
        tokens = {
            token: UserInfo(name=u["name"], uid=u.get("uid", ""), groups=tuple(u.get("groups", ())))
            for token, u in raw.items()
        }
        return cls(ca, server, admin, key, tokens)


def _load_or_issue(
    base: Path, issue: Callable[[], tls.Identity], required_ips: tuple[str, ...] = ()
) -> tls.Identity:
    cert, key = base.with_suffix(".crt"), base.with_suffix(".key")
    if cert.exists():
        identity = tls.Identity.load(cert, key)
        if _has_ips(identity, required_ips):
            return identity
    identity = issue()
    identity.save(cert, key)
    return identity


def _has_ips(identity: tls.Identity, ips: tuple[str, ...]) -> bool:
    try:
        names = identity.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return not ips
    present = {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    return all(str(ipaddress.ip_address(ip)) in present for ip in ips)


class Authenticator:
    """Maps a request's credentials to a user (see the module docstring for the order)."""

    def __init__(
        self,
        credentials: Credentials,
        service_account_uid: Callable[[str, str], str | None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._credentials = credentials
        self._service_account_uid = service_account_uid
        self._now = now

    def authenticate(
        self, peer_certificate: Mapping[str, Any] | None, authorization: str | None
    ) -> UserInfo:
        """The user, or ``401 Unauthorized`` for a token that is not valid."""
        if peer_certificate:
            user = _user_from_certificate(peer_certificate)
            if user is not None:
                return user
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.unauthorized()
            user = self.user_for_token(token.strip())
            if user is None:
                raise errors.unauthorized()
            return user
        return ANONYMOUS

    def user_for_token(self, token: str, audiences: tuple[str, ...] = ()) -> UserInfo | None:
        """The user a bearer token stands for, or None (as TokenReview reports it)."""
        static = self._credentials.tokens.get(token)
        if static is not None:
            return _authenticated(static)
        return self._service_account_user(token, audiences or (ISSUER,))

    def _service_account_user(self, token: str, audiences: tuple[str, ...]) -> UserInfo | None:
        key = self._credentials.service_account_key.public_key()
        try:
            claims = jwt.decode(
                token, key, algorithms=["ES256"], audience=list(audiences), issuer=ISSUER
            )
        except jwt.PyJWTError:
            return None
        info = claims.get("kubernetes.io") or {}
        namespace = info.get("namespace", "")
        account = info.get("serviceaccount") or {}
        name, uid = account.get("name", ""), account.get("uid", "")
        # A token outlives nothing it is bound to: the account must still be the same one.
        if not name or self._service_account_uid(namespace, name) != uid:
            return None
        extra: dict[str, tuple[str, ...]] = {}
        if pod := info.get("pod"):
            extra["authentication.kubernetes.io/pod-name"] = (pod["name"],)
            extra["authentication.kubernetes.io/pod-uid"] = (pod["uid"],)
        return UserInfo(
            name=f"system:serviceaccount:{namespace}:{name}",
            uid=uid,
            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
            extra=extra,
        )

    def issue_service_account_token(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        audiences: tuple[str, ...] = (),
        expiration_seconds: int = 3600,
        bound_pod: Mapping[str, str] | None = None,
    ) -> tuple[str, dt.datetime]:
        """A TokenRequest's answer: the JWT and when it expires."""
        now = self._now()
        expires = now + dt.timedelta(seconds=expiration_seconds)
        info: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        }
        if bound_pod:
            info["pod"] = dict(bound_pod)
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": list(audiences or (ISSUER,)),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": str(uuid.uuid4()),
            "kubernetes.io": info,
        }
        token = jwt.encode(claims, self._credentials.service_account_key, algorithm="ES256")
        return token, expires


def _authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(
        name=user.name, uid=user.uid, groups=(*user.groups, AUTHENTICATED), extra=user.extra
    )


def _user_from_certificate(certificate: Mapping[str, Any]) -> UserInfo | None:
    """``ssl.getpeercert()``'s subject: a sequence of RDNs of (name, value) pairs."""
    common_name, organizations = "", []
    for rdn in certificate.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                common_name = value
            elif attribute == "organizationName":
                organizations.append(value)
    if not common_name:
        return None
    return _authenticated(UserInfo(name=common_name, groups=tuple(organizations)))


def write_kubeconfig(path: Path, server_url: str, credentials: Credentials) -> None:
    """A kubeconfig with the admin (client certificate) and the developer (bearer token)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": b64(credentials.ca.certificate_pem),
                },
            }
        ],
        "users": [
            {
                "name": "sandbox-admin",
                "user": {
                    "client-certificate-data": b64(credentials.admin.certificate_pem),
                    "client-key-data": b64(credentials.admin.private_key_pem),
                },
            },
            {"name": DEVELOPER_USER, "user": {"token": credentials.developer_token}},
        ],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin"}},
            {
                "name": "sandbox-developer",
                "context": {"cluster": "sandbox", "user": DEVELOPER_USER, "namespace": "default"},
            },
        ],
        "current-context": "sandbox",
        "preferences": {},
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    temporary.chmod(0o600)
    temporary.replace(path)
