"""Certificates, their files, and real TLS handshakes over loopback on asyncio, uvloop and trio."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSListener, TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from telepresence.wire import tls

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from anyio.abc import AnyByteStream
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

MANAGER_HOST = "traffic-manager.ambassador"
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> tls.Identity:
    return tls.create_ca("Telepresence CA (ambassador)")


@pytest.fixture(scope="module")
def other_ca() -> tls.Identity:
    return tls.create_ca("Someone else's CA")


@pytest.fixture(scope="module")
def manager(ca: tls.Identity) -> tls.Identity:
    return tls.issue_manager_certificate(ca)


@pytest.fixture(scope="module")
def agent(ca: tls.Identity) -> tls.Identity:
    return tls.issue_certificate(ca, "agent-echo.default", client=True)


def extension[T: x509.ExtensionType](
    certificate: x509.Certificate, kind: type[T]
) -> x509.Extension[T]:
    return certificate.extensions.get_extension_for_class(kind)


# Issuing


def test_ca_signs_leaves_directly_and_nothing_else() -> None:
    ca = tls.create_ca("Test CA", validity=dt.timedelta(days=30), now=NOW)
    certificate = ca.certificate
    assert certificate.issuer == certificate.subject
    assert tls.PeerIdentity.from_certificate(certificate).common_name == "Test CA"
    constraints = extension(certificate, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = extension(certificate, x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert extension(certificate, x509.SubjectKeyIdentifier).value.digest
    assert certificate.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert certificate.not_valid_before_utc <= NOW
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)


def test_manager_certificate_names_its_service_and_may_only_serve(ca: tls.Identity) -> None:
    manager = tls.issue_manager_certificate(ca, namespace="tele")
    certificate = manager.certificate
    assert tls.PeerIdentity.from_certificate(certificate) == tls.PeerIdentity(
        common_name="traffic-manager",
        dns_names=(
            "traffic-manager",
            "traffic-manager.tele",
            "traffic-manager.tele.svc",
            "traffic-manager.tele.svc.cluster.local",
        ),
    )
    assert list(extension(certificate, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    usage = extension(certificate, x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not extension(certificate, x509.BasicConstraints).value.ca
    assert certificate.issuer == ca.certificate.subject
    certificate.verify_directly_issued_by(ca.certificate)
    authority = extension(certificate, x509.AuthorityKeyIdentifier).value
    assert (
        authority.key_identifier
        == extension(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    )


def test_leaf_carries_ip_names_and_both_roles(ca: tls.Identity) -> None:
    leaf = tls.issue_certificate(
        ca,
        "node",
        dns_names=["node.local"],
        ip_addresses=["10.0.0.1", "::1"],
        server=True,
        client=True,
    )
    assert tls.PeerIdentity.from_certificate(leaf.certificate) == tls.PeerIdentity(
        "node",
        ("node.local",),
        (ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv6Address("::1")),
    )
    assert set(extension(leaf.certificate, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }


def test_serial_numbers_are_random(ca: tls.Identity) -> None:
    serials = {
        tls.issue_certificate(ca, "agent", client=True).certificate.serial_number for _ in range(5)
    }
    assert len(serials) == 5


def test_leaf_never_outlives_its_ca() -> None:
    ca = tls.create_ca("Short-lived CA", validity=dt.timedelta(days=10), now=NOW)
    leaf = tls.issue_manager_certificate(ca, validity=dt.timedelta(days=365), now=NOW)
    assert leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_a_certificate_needs_a_role(ca: tls.Identity) -> None:
    with pytest.raises(ValueError, match="server, a client, or both"):
        tls.issue_certificate(ca, "nobody")


def test_only_a_ca_issues(manager: tls.Identity) -> None:
    with pytest.raises(tls.TLSMaterialError, match="not a certificate authority"):
        tls.issue_certificate(manager, "agent", client=True)


def test_an_expired_ca_does_not_issue(ca: tls.Identity) -> None:
    later = ca.certificate.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(tls.TLSMaterialError, match="expired"):
        tls.issue_certificate(ca, "agent", client=True, now=later)


# PEM and files


def test_pem_round_trip(manager: tls.Identity) -> None:
    assert manager.certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert manager.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = tls.Identity.from_pem(manager.certificate_pem, manager.private_key_pem)
    assert loaded.certificate == manager.certificate
    assert loaded.private_key_pem == manager.private_key_pem
    assert loaded.chain == ()


def test_pem_round_trip_keeps_the_chain(manager: tls.Identity, ca: tls.Identity) -> None:
    with_chain = tls.Identity(manager.certificate, manager.private_key, (ca.certificate,))
    loaded = tls.Identity.from_pem(with_chain.certificate_pem, with_chain.private_key_pem)
    assert loaded.chain == (ca.certificate,)
    assert loaded.certificate == manager.certificate


def test_repr_never_shows_the_key(manager: tls.Identity) -> None:
    assert "private_key" not in repr(manager)
    assert "PRIVATE KEY" not in repr(manager)


def test_save_and_load(tmp_path: Path, agent: tls.Identity) -> None:
    certificate_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    key_path.write_bytes(b"an older key, readable by all")
    key_path.chmod(0o644)

    agent.save(certificate_path, key_path)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(certificate_path.stat().st_mode) == 0o644
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tls.crt", "tls.key"]
    loaded = tls.Identity.load(certificate_path, key_path)
    assert loaded.certificate == agent.certificate
    assert loaded.private_key_pem == agent.private_key_pem


def test_wrong_key_is_rejected(manager: tls.Identity, agent: tls.Identity) -> None:
    with pytest.raises(tls.TLSMaterialError, match="does not match"):
        tls.Identity.from_pem(manager.certificate_pem, agent.private_key_pem)


def test_load_names_the_file_at_fault(
    tmp_path: Path, manager: tls.Identity, agent: tls.Identity
) -> None:
    tls.Identity(manager.certificate, agent.private_key).save(
        tmp_path / "tls.crt", tmp_path / "tls.key"
    )
    with pytest.raises(
        tls.TLSMaterialError, match=r"tls\.key does not match the certificate in .*tls\.crt"
    ):
        tls.Identity.load(tmp_path / "tls.crt", tmp_path / "tls.key")


@pytest.mark.parametrize(
    ("moment", "message"),
    [
        pytest.param(NOW + dt.timedelta(days=31), "expired on 2030-07-01", id="expired"),
        pytest.param(
            NOW - dt.timedelta(hours=1), "not valid before 2030-06-01", id="not-yet-valid"
        ),
    ],
)
def test_certificate_outside_its_validity_is_rejected(
    ca: tls.Identity, moment: dt.datetime, message: str
) -> None:
    leaf = tls.issue_manager_certificate(ca, validity=dt.timedelta(days=30), now=NOW)
    assert tls.Identity.from_pem(leaf.certificate_pem, leaf.private_key_pem, now=NOW).certificate
    with pytest.raises(tls.TLSMaterialError, match=message):
        tls.Identity.from_pem(leaf.certificate_pem, leaf.private_key_pem, now=moment)


def test_expired_ca_bundle_is_rejected() -> None:
    ca = tls.create_ca("Old CA", validity=dt.timedelta(days=1), now=NOW)
    pem = ca.certificate_pem
    assert tls.certificates_from_pem(pem, now=NOW) == (ca.certificate,)
    with pytest.raises(tls.TLSMaterialError, match=r"ca\.crt: .*expired"):
        tls.certificates_from_pem(pem, now=NOW + dt.timedelta(days=2), source="ca.crt")


def _encrypted_key(identity: tls.Identity) -> bytes:
    return identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


_BAD_DER = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("make_pem", "message"),
    [
        pytest.param(lambda m: (b"", m.private_key_pem), "certificate: not a PEM", id="no-cert"),
        pytest.param(lambda m: (b"hi", m.private_key_pem), "certificate: not a PEM", id="garbage"),
        pytest.param(
            lambda m: (_BAD_DER, m.private_key_pem), "certificate: not a PEM", id="bad-der"
        ),
        pytest.param(lambda m: (m.certificate_pem, b"hi"), "private key: not a usable", id="key"),
        pytest.param(
            lambda m: (m.certificate_pem, _encrypted_key(m)),
            "private key: not a usable",
            id="locked",
        ),
        pytest.param(
            lambda m: (m.certificate_pem, m.certificate_pem), "private key: not a usable", id="cert"
        ),
    ],
)
def test_malformed_pem_is_rejected_with_our_error(
    manager: tls.Identity,
    make_pem: Callable[[tls.Identity], tuple[bytes, bytes]],
    message: str,
) -> None:
    certificate_pem, private_key_pem = make_pem(manager)
    with pytest.raises(tls.TLSMaterialError, match=message) as caught:
        tls.Identity.from_pem(certificate_pem, private_key_pem)
    assert isinstance(caught.value, ValueError)
    assert caught.value.__cause__ is not None


def test_time_must_be_aware(ca: tls.Identity) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        tls.issue_certificate(ca, "agent", client=True, now=dt.datetime(2030, 1, 1))


# Contexts


def test_contexts_trust_only_the_given_ca(
    ca: tls.Identity, manager: tls.Identity, agent: tls.Identity
) -> None:
    server = tls.server_context(manager, client_ca=ca.certificate)
    client = tls.client_context(ca.certificate, identity=agent, alpn="tpmux/1")
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_RENEGOTIATION
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.cert_store_stats()["x509_ca"] == 1
        assert context.get_ca_certs()[0]["subject"] == (
            (("commonName", "Telepresence CA (ambassador)"),),
        )
    assert client.check_hostname
    assert (
        tls.server_context(manager).verify_mode == ssl.CERT_NONE
    )  # asks for no client certificate


# Handshakes over loopback


@dataclass
class Accepted:
    """What the server learnt from a connection whose handshake succeeded."""

    peer: tls.PeerIdentity | None
    alpn: str | None


type Outcome = Accepted | Exception


@dataclass(eq=False)
class RecordingTLSListener(TLSListener):
    """A TLS listener that reports failed handshakes to the test instead of logging them."""

    outcomes: MemoryObjectSendStream[Outcome] = field(kw_only=True)

    async def handle_handshake_error(self, exc: BaseException, stream: AnyByteStream) -> None:  # type: ignore[override]
        await anyio.aclose_forcefully(stream)
        if not isinstance(exc, Exception):
            raise exc  # cancellation
        self.outcomes.send_nowait(exc)


@dataclass
class Server:
    port: int
    outcomes: MemoryObjectReceiveStream[Outcome]

    async def next_outcome(self) -> Outcome:
        with anyio.fail_after(5):
            return await self.outcomes.receive()


@asynccontextmanager
async def serving(context: ssl.SSLContext) -> AsyncIterator[Server]:
    """Serve on 127.0.0.1: echo each connection's bytes upper-cased, report each handshake."""
    send, receive = anyio.create_memory_object_stream[Outcome](16)

    async def echo(stream: TLSStream) -> None:
        ssl_object = stream.extra(TLSAttribute.ssl_object)
        send.send_nowait(
            Accepted(tls.peer_identity(ssl_object), ssl_object.selected_alpn_protocol())
        )
        try:
            async for chunk in stream:
                await stream.send(chunk.upper())
        except anyio.BrokenResourceError:
            await anyio.aclose_forcefully(stream)
        else:
            await stream.aclose()

    with send, receive:
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp,
            anyio.create_task_group() as tasks,
        ):
            listener = RecordingTLSListener(tcp, context, outcomes=send)
            tasks.start_soon(listener.serve, echo)
            yield Server(tcp.extra(SocketAttribute.local_port), receive)
            tasks.cancel_scope.cancel()


async def round_trip(port: int, context: ssl.SSLContext, hostname: str = MANAGER_HOST) -> bytes:
    """Connect, send one message, and return the reply, closing gracefully."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp(
            "127.0.0.1", port, ssl_context=context, tls_hostname=hostname
        ) as stream:
            return await ping(stream)


async def ping(stream: TLSStream) -> bytes:
    await stream.send(b"ping")
    return await stream.receive()


@pytest.mark.anyio
async def test_client_trusting_the_ca_reaches_the_manager(
    ca: tls.Identity, manager: tls.Identity
) -> None:
    async with serving(tls.server_context(manager, alpn="tpmux/1")) as server:
        with anyio.fail_after(5):
            async with await anyio.connect_tcp(
                "127.0.0.1",
                server.port,
                ssl_context=tls.client_context(ca.certificate, alpn=["tpmux/1"]),
                tls_hostname=MANAGER_HOST,
            ) as stream:
                assert stream.extra(TLSAttribute.tls_version) == "TLSv1.3"
                assert stream.extra(TLSAttribute.alpn_protocol) == "tpmux/1"
                server_identity = tls.peer_identity(stream.extra(TLSAttribute.ssl_object))
                await stream.send(b"hello")
                assert await stream.receive() == b"HELLO"
        assert server_identity is not None
        assert server_identity.common_name == "traffic-manager"
        assert await server.next_outcome() == Accepted(peer=None, alpn="tpmux/1")


@pytest.mark.anyio
async def test_tls_1_2_is_still_accepted(ca: tls.Identity, manager: tls.Identity) -> None:
    client = tls.client_context(ca.certificate)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(tls.server_context(manager)) as server:
        assert (
            await round_trip(server.port, client, "traffic-manager.ambassador.svc.cluster.local")
            == b"PING"
        )


@pytest.mark.anyio
async def test_mutual_tls_tells_the_manager_which_agent_is_talking(
    ca: tls.Identity, manager: tls.Identity, agent: tls.Identity
) -> None:
    server_context = tls.server_context(manager, client_ca=ca.certificate)
    async with serving(server_context) as server:
        assert (
            await round_trip(server.port, tls.client_context(ca.certificate, identity=agent))
            == b"PING"
        )
        outcome = await server.next_outcome()
    assert outcome == Accepted(tls.PeerIdentity("agent-echo.default"), alpn=None)


@pytest.mark.parametrize(
    ("client_identity", "server_sees"),
    [
        pytest.param(None, "PEER_DID_NOT_RETURN_A_CERTIFICATE", id="no-certificate"),
        pytest.param("other-ca", "unable to get local issuer certificate", id="other-ca"),
        pytest.param("manager", "unsuitable certificate purpose", id="serving-certificate"),
    ],
)
@pytest.mark.anyio
async def test_mutual_tls_turns_away_clients_without_a_certificate_from_the_ca(
    *,
    ca: tls.Identity,
    other_ca: tls.Identity,
    manager: tls.Identity,
    client_identity: str | None,
    server_sees: str,
) -> None:
    identity = {
        None: None,
        "other-ca": tls.issue_certificate(other_ca, "intruder", client=True),
        "manager": manager,
    }[client_identity]
    client = tls.client_context(ca.certificate, identity=identity)
    async with serving(tls.server_context(manager, client_ca=ca.certificate)) as server:
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp(
                "127.0.0.1", server.port, ssl_context=client, tls_hostname=MANAGER_HOST
            )
        try:
            # A TLS 1.3 client finishes its handshake before the server has checked its
            # certificate: the refusal shows as a broken stream on first use.
            with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
                await ping(stream)
        finally:
            # anyio does not mark a stream broken when a read fails, so a graceful close
            # would attempt a TLS shutdown and raise SSLError (SHUTDOWN_WHILE_IN_INIT).
            await anyio.aclose_forcefully(stream)
        outcome = await server.next_outcome()
    assert isinstance(outcome, ssl.SSLError)
    assert server_sees in str(outcome)


@pytest.mark.parametrize(
    ("server_identity", "hostname", "client_sees"),
    [
        pytest.param(
            "other-ca", MANAGER_HOST, "unable to get local issuer certificate", id="other-ca"
        ),
        pytest.param(
            "manager",
            "traffic-manager.elsewhere",
            "certificate is not valid for 'traffic-manager.elsewhere'",
            id="wrong-hostname",
        ),
        pytest.param(
            "agent", MANAGER_HOST, "unsuitable certificate purpose", id="client-only-certificate"
        ),
    ],
)
@pytest.mark.anyio
async def test_client_rejects_a_server_it_cannot_trust(
    *,
    ca: tls.Identity,
    other_ca: tls.Identity,
    manager: tls.Identity,
    server_identity: str,
    hostname: str,
    client_sees: str,
) -> None:
    identity = {
        "other-ca": tls.issue_manager_certificate(other_ca),
        "manager": manager,
        # Right CA and right name, but issued for an agent: it may not serve.
        "agent": tls.issue_certificate(ca, "agent", dns_names=[MANAGER_HOST], client=True),
    }[server_identity]
    async with serving(tls.server_context(identity)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=client_sees):
            await round_trip(server.port, tls.client_context(ca.certificate), hostname)
