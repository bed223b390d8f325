"""Certificates and TLS contexts for every link: one private certificate authority per install.

How trust works
---------------
Each installation of the traffic-manager has its own certificate authority (CA): a self-signed
EC P-256 certificate whose key lives in one Kubernetes Secret in the manager's namespace. The
contexts made here trust that CA and nothing else, never the system store. The names a client
checks (``traffic-manager.ambassador.svc``) exist only inside the cluster, so no public CA could
vouch for them; trusting the public CAs would only add hundreds of parties able to impersonate
the manager. Whoever can read the Secret can issue certificates, and those are the same people
who can already read the manager's own key: the CA adds no new party to trust.

The CA signs leaves directly (``pathlen:0``), each for one role:

- the manager's serving certificate names its Service (``traffic-manager``,
  ``traffic-manager.<namespace>``, ``….svc``, ``….svc.cluster.local``) and may only serve
  (extended key usage ``serverAuth``);
- agents, and clients when they use mutual TLS, get certificates that may only authenticate as
  clients (``clientAuth``), their identity in the common name and SANs. Clients also prove who
  they are with their Kubernetes credentials, which the manager checks; a certificate does not
  replace that.

Two checks keep the roles apart, and both stay on. The client verifies the host name it means to
reach, so a leaf issued for another name cannot pose as the manager although it chains to the
same CA; OpenSSL verifies the extended key usage, so an agent's certificate cannot serve at all.
The name is checked whatever the transport: through a Kubernetes port-forward the TCP peer is a
pod, and the client still verifies ``traffic-manager.<namespace>``.

TLS 1.2 is the floor and 1.3 is negotiated wherever both ends have it. There is deliberately no
switch that turns verification off: a test that needs TLS makes a CA, which takes milliseconds.

:mod:`ssl` reads a certificate and key only from a file. To hand it an in-memory key, the key is
written to a private temporary file encrypted under a one-time random password that stays in
memory, and the file is removed as soon as OpenSSL has read it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "DEFAULT_CA_VALIDITY",
    "DEFAULT_LEAF_VALIDITY",
    "DEFAULT_MANAGER_NAMESPACE",
    "MANAGER_NAME",
    "Identity",
    "PeerIdentity",
    "TLSMaterialError",
    "certificates_from_pem",
    "client_context",
    "create_ca",
    "issue_certificate",
    "issue_manager_certificate",
    "manager_dns_names",
    "peer_identity",
    "server_context",
]

type PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# The keys OpenSSL can present in TLS and sign certificates with (DSA is gone from TLS 1.3).
_PRIVATE_KEY_CLASSES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)

DEFAULT_CA_VALIDITY = dt.timedelta(days=3650)
DEFAULT_LEAF_VALIDITY = dt.timedelta(days=365)
DEFAULT_MANAGER_NAMESPACE = "ambassador"
MANAGER_NAME = "traffic-manager"
#: The application protocol (ALPN) of the data plane's TLS: the mux, version 1.
MUX_ALPN = "tpmux/1"

# Certificates start a little in the past: a laptop's clock and the cluster's rarely agree, and a
# certificate that is "not valid yet" for a few seconds would break the first connect after install.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_PEM = serialization.Encoding.PEM


class TLSMaterialError(ValueError):
    """A certificate or key that cannot be used: malformed, mismatched, or outside its validity."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate with its private key: what one end of a link presents.

    Attributes:
        certificate: The end's own certificate (a leaf, or the CA's when this is the CA).
        private_key: The key matching ``certificate``; never shown in ``repr``.
        chain: Intermediate certificates sent after ``certificate``. Empty for certificates of
            this module's CA, which signs leaves directly.
    """

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def certificate_pem(self) -> bytes:
        """The certificate, then the chain, in PEM (a Kubernetes TLS Secret's ``tls.crt``)."""
        return b"".join(cert.public_bytes(_PEM) for cert in (self.certificate, *self.chain))

    @property
    def private_key_pem(self) -> bytes:
        """The private key in unencrypted PKCS #8 PEM (a Kubernetes TLS Secret's ``tls.key``)."""
        return self.private_key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_pem(
        cls, certificate_pem: bytes, private_key_pem: bytes, *, now: dt.datetime | None = None
    ) -> Self:
        """Parse and check a certificate (then its chain) and its private key.

        Args:
            certificate_pem: One or more PEM certificates, the end's own first.
            private_key_pem: The matching unencrypted private key in PEM.
            now: The time to check validity at (aware); the current time if omitted.

        Raises:
            TLSMaterialError: If either is malformed, the key does not match the certificate,
                or a certificate is expired or not valid yet at ``now``.
        """
        return cls._parse(certificate_pem, "certificate", private_key_pem, "private key", now)

    @classmethod
    def load(
        cls,
        certificate_path: str | os.PathLike[str],
        private_key_path: str | os.PathLike[str],
        *,
        now: dt.datetime | None = None,
    ) -> Self:
        """Read and check an identity saved with :meth:`save`.

        Raises:
            TLSMaterialError: As :meth:`from_pem`, naming the file at fault.
            OSError: If a file cannot be read.
        """
        return cls._parse(
            Path(certificate_path).read_bytes(),
            os.fspath(certificate_path),
            Path(private_key_path).read_bytes(),
            os.fspath(private_key_path),
            now,
        )

    def save(
        self, certificate_path: str | os.PathLike[str], private_key_path: str | os.PathLike[str]
    ) -> None:
        """Write the certificate (mode 0644) and the private key (mode 0600).

        Each file is replaced atomically (written beside its target, then renamed), so a reader
        never sees half a file; the pair is not replaced as one, and :meth:`load` reports a
        certificate read together with another generation's key as a mismatch.
        """
        _write_atomically(Path(private_key_path), self.private_key_pem, 0o600)
        _write_atomically(Path(certificate_path), self.certificate_pem, 0o644)

    @classmethod
    def _parse(
        cls,
        certificate_pem: bytes,
        certificate_source: str,
        private_key_pem: bytes,
        private_key_source: str,
        now: dt.datetime | None,
    ) -> Self:
        certificate, *chain = certificates_from_pem(
            certificate_pem, now=now, source=certificate_source
        )
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise TLSMaterialError(f"{private_key_source}: not a usable PEM private key") from error
        if not isinstance(key, _PRIVATE_KEY_CLASSES):
            raise TLSMaterialError(f"{private_key_source}: unsupported key type {type(key)!r}")
        if _public_key_der(key) != _public_key_der(certificate):
            raise TLSMaterialError(
                f"{private_key_source} does not match the certificate in {certificate_source}"
                f" ({_describe(certificate)})"
            )
        return cls(certificate, key, tuple(chain))


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who a certificate names: what the manager learns about the agent or client talking to it.

    Attributes:
        common_name: The subject's common name, if it has one.
        dns_names: DNS names from the subject alternative names.
        ip_addresses: IP addresses from the subject alternative names.
    """

    common_name: str | None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPAddress, ...] = ()

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> Self:
        """The names in ``certificate``."""
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = None
        if common_names:
            value = common_names[0].value
            common_name = value if isinstance(value, str) else value.decode("utf-8", "replace")
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return cls(common_name)
        addresses = names.value.get_values_for_type(x509.IPAddress)
        return cls(
            common_name,
            tuple(names.value.get_values_for_type(x509.DNSName)),
            # Networks appear only in name constraints, never in a certificate's own names.
            tuple(
                a
                for a in addresses
                if not isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network)
            ),
        )


def peer_identity(connection: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity | None:
    """Who the peer of a TLS connection is, from the certificate it presented and we verified.

    With anyio, pass ``stream.extra(anyio.streams.tls.TLSAttribute.ssl_object)``.

    Returns:
        The names in the peer's certificate, or None if it presented none (a client of a server
        that does not ask for client certificates).

    Raises:
        ValueError: If the handshake has not completed.
    """
    der = connection.getpeercert(binary_form=True)
    if der is None:
        return None
    return PeerIdentity.from_certificate(x509.load_der_x509_certificate(der))


def certificates_from_pem(
    pem: bytes, *, now: dt.datetime | None = None, source: str = "certificate"
) -> tuple[x509.Certificate, ...]:
    """Parse PEM certificates (such as a CA bundle) and check that each is valid at ``now``.

    Args:
        pem: One or more PEM certificates.
        now: The time to check validity at (aware); the current time if omitted.
        source: What the PEM is, for error messages (a file name, a Secret key).

    Raises:
        TLSMaterialError: If there is no certificate, one is malformed, or one is expired or not
            valid yet.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise TLSMaterialError(f"{source}: not a PEM certificate") from error
    moment = _now(now)
    for certificate in certificates:
        if moment < certificate.not_valid_before_utc:
            raise TLSMaterialError(
                f"{source}: {_describe(certificate)} is not valid before"
                f" {certificate.not_valid_before_utc.isoformat()}; check this machine's clock"
            )
        if moment > certificate.not_valid_after_utc:
            raise TLSMaterialError(
                f"{source}: {_describe(certificate)} expired on"
                f" {certificate.not_valid_after_utc.isoformat()}; issue a new one"
            )
    return tuple(certificates)


def create_ca(
    common_name: str,
    *,
    validity: dt.timedelta = DEFAULT_CA_VALIDITY,
    now: dt.datetime | None = None,
) -> Identity:
    """Create a self-signed certificate authority that signs leaves directly (``pathlen:0``).

    Args:
        common_name: The CA's name, e.g. ``"Telepresence CA (ambassador)"``.
        validity: How long the CA is valid from ``now``.
        now: The start of validity (aware); the current time if omitted.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    start = _now(now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key, start, start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(key_id, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(certificate, key)


def issue_certificate(
    ca: Identity,
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddress | str] = (),
    server: bool = False,
    client: bool = False,
    organizations: Iterable[str] = (),
    validity: dt.timedelta = DEFAULT_LEAF_VALIDITY,
    now: dt.datetime | None = None,
) -> Identity:
    """Issue a leaf certificate with a new EC P-256 key, signed by ``ca``.

    The leaf never outlives the CA: its validity ends at the CA's if that comes first.

    Args:
        ca: The certificate authority, with its key.
        common_name: The subject's common name; for an agent or client, who it is.
        dns_names: DNS subject alternative names; a client checks the server's against the
            host name it dials (the common name is not checked).
        ip_addresses: IP subject alternative names.
        server: Allow the certificate to authenticate a TLS server.
        client: Allow the certificate to authenticate a TLS client.
        organizations: Organization (O) attributes of the subject; Kubernetes reads a client
            certificate's as the user's groups.
        validity: How long the leaf is valid from ``now``.
        now: The start of validity (aware); the current time if omitted.

    Raises:
        ValueError: If neither ``server`` nor ``client`` is set.
        TLSMaterialError: If ``ca`` is not a certificate authority or is not valid at ``now``.
    """
    if not (server or client):
        raise ValueError("a certificate must be for a server, a client, or both")
    start = _now(now)
    authority_key_id = _authority_key_identifier(ca, start)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = (
        _builder(
            x509.Name(subject),
            ca.certificate.subject,
            key,
            start,
            min(start + validity, ca.certificate.not_valid_after_utc),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id, critical=False)
    )
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    certificate = builder.sign(ca.private_key, _signature_hash(ca.private_key))
    return Identity(certificate, key, ca.chain)


def manager_dns_names(
    namespace: str = DEFAULT_MANAGER_NAMESPACE, cluster_domain: str = "cluster.local"
) -> tuple[str, ...]:
    """The names the traffic-manager's Service answers to in ``namespace``, shortest first."""
    service = f"{MANAGER_NAME}.{namespace}"
    return (MANAGER_NAME, service, f"{service}.svc", f"{service}.svc.{cluster_domain}")


def issue_manager_certificate(
    ca: Identity,
    *,
    namespace: str = DEFAULT_MANAGER_NAMESPACE,
    cluster_domain: str = "cluster.local",
    validity: dt.timedelta = DEFAULT_LEAF_VALIDITY,
    now: dt.datetime | None = None,
) -> Identity:
    """Issue the traffic-manager's serving certificate for its Service names in ``namespace``.

    See :func:`issue_certificate` for the arguments and errors.
    """
    return issue_certificate(
        ca,
        MANAGER_NAME,
        dns_names=manager_dns_names(namespace, cluster_domain),
        server=True,
        validity=validity,
        now=now,
    )


def server_context(
    identity: Identity,
    *,
    client_ca: x509.Certificate | Sequence[x509.Certificate] | None = None,
    alpn: str | Sequence[str] = (),
) -> ssl.SSLContext:
    """A context for the serving end of a link.

    Args:
        identity: The certificate and key the server presents.
        client_ca: If given, mutual TLS: every client must present a certificate for client
            authentication issued by this CA (or one of these), or the handshake fails.
        alpn: Application protocols the server accepts, most preferred first (e.g.
            ``"tpmux/1"``). A client offering none of them still connects, without a selected
            protocol; check ``selected_alpn_protocol()`` if that matters.
    """
    context = _context(server_side=True, alpn=alpn)
    _load_identity(context, identity)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _trust(context, client_ca)
    return context


def client_context(
    ca: x509.Certificate | Sequence[x509.Certificate],
    *,
    identity: Identity | None = None,
    alpn: str | Sequence[str] = (),
) -> ssl.SSLContext:
    """A context for the dialling end of a link: verifies the server's certificate and name.

    Pass the host name to check when connecting (``anyio.connect_tcp(..., tls_hostname=...)``),
    e.g. ``traffic-manager.ambassador`` even when the bytes go through a port-forward.

    Args:
        ca: The only certificate authority (or authorities) trusted to vouch for the server.
        identity: If given, the certificate and key presented to a server that asks for one.
        alpn: Application protocols offered, most preferred first (e.g. ``"tpmux/1"``).
    """
    context = _context(server_side=False, alpn=alpn)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _trust(context, ca)
    if identity is not None:
        _load_identity(context, identity)
    return context


def _context(*, server_side: bool, alpn: str | Sequence[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # RFC 5280 conformance as Python 3.13's default contexts demand it; our certificates pass.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    # A peer that vanishes without close_notify is reported as broken, not as a clean end of the
    # stream, so a truncated stream is never mistaken for a complete one.
    context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    # No TLS 1.2 renegotiation (TLS 1.3 has none): a write never has to wait for a read, which
    # the mux relies on when it writes from a task that may be cancelled.
    context.options |= ssl.OP_NO_RENEGOTIATION
    protocols = [alpn] if isinstance(alpn, str) else list(alpn)
    if protocols:
        context.set_alpn_protocols(protocols)
    return context


def _trust(context: ssl.SSLContext, ca: x509.Certificate | Sequence[x509.Certificate]) -> None:
    authorities = [ca] if isinstance(ca, x509.Certificate) else list(ca)
    if not authorities:
        raise ValueError("at least one certificate authority must be trusted")
    context.load_verify_locations(
        cadata="".join(cert.public_bytes(_PEM).decode("ascii") for cert in authorities)
    )


def _load_identity(context: ssl.SSLContext, identity: Identity) -> None:
    password = secrets.token_urlsafe(32).encode("ascii")
    encrypted_key = identity.private_key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(password)
    )
    descriptor, path = tempfile.mkstemp(prefix="telepresence-tls-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(identity.certificate_pem + encrypted_key)
        context.load_cert_chain(path, password=password)
    except ssl.SSLError as error:
        raise TLSMaterialError(f"OpenSSL rejected {_describe(identity.certificate)}") from error
    finally:
        os.unlink(path)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(temporary, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    if end <= start:
        raise ValueError("validity must be positive")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(end)
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(ca: Identity, now: dt.datetime) -> x509.AuthorityKeyIdentifier:
    """Check that ``ca`` can issue, and name it as the issuer of a new certificate."""
    certificate = ca.certificate
    extensions = certificate.extensions
    try:
        is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key_id = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound as error:
        raise TLSMaterialError(
            f"{_describe(certificate)} is not a certificate authority: {error}"
        ) from error
    if not is_ca:
        raise TLSMaterialError(f"{_describe(certificate)} is not a certificate authority")
    certificates_from_pem(certificate.public_bytes(_PEM), now=now, source="CA")
    # OpenSSL finds the issuer by matching this to the CA's own subject key identifier, which
    # strict verification requires a CA to have (RFC 5280, section 4.2.1.2).
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id)


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 hash internally (RFC 8410) and take no separate digest.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _public_key_der(owner: PrivateKey | x509.Certificate) -> bytes:
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _describe(certificate: x509.Certificate) -> str:
    return f"certificate {certificate.subject.rfc4514_string()!r}"


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now
