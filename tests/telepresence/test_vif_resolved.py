"""Telling systemd-resolved about the TUN link, against a fake resolved on a private bus.

Each test that needs a bus starts its own ``dbus-daemon`` (a config allowing everything, a unix
socket in a temporary directory) and stops it by its PID however the test ends. The fake
resolved owns ``org.freedesktop.resolve1`` on that bus and answers like resolved does: it
checks each method's signature, knows which links exist, and records what it was told. No
test can reach the host's system bus: ``DBUS_SYSTEM_BUS_ADDRESS`` points at nothing unless a
test sets it to its private bus.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from jeepney import (
    HeaderFields,
    Message,
    MessageType,
    message_bus,
    new_error,
    new_method_return,
)
from jeepney.io.blocking import open_dbus_connection

from telepresence.vif._resolved import (
    BUS_NAME,
    INTERFACE,
    NO_SUCH_LINK,
    OBJECT_PATH,
    UNKNOWN_METHOD,
    ResolvedError,
    available,
    configure_link,
    link_domains,
    revert_link,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(30)

INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"

#: The link the fake resolved knows: the TUN device.
TUN = 7

#: The daemon's DNS server address on the TUN device, packed as resolved wants it.
TUN_ADDRESS = bytes([10, 128, 0, 2])

#: The resolve1 methods the fake has, with their input signatures (as in resolved's API).
SIGNATURES = {
    "SetLinkDNS": "ia(iay)",
    "SetLinkDNSEx": "ia(iayqs)",
    "SetLinkDomains": "ia(sb)",
    "SetLinkDefaultRoute": "ib",
    "RevertLink": "i",
}

BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

DOMAINS = [("default.svc.cluster.local", False), ("cluster.local", True), ("svc", True)]


@pytest.fixture(autouse=True)
def no_system_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default bus address leads nowhere, so no test can reach the host's system bus."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-system-bus")


@pytest.fixture
def bus() -> Iterator[str]:
    """A private dbus-daemon's address; the daemon is stopped by its PID at the end."""
    with tempfile.TemporaryDirectory(prefix="tp-dbus-") as directory:
        config = Path(directory) / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=Path(directory) / "bus.sock"))
        process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            # The address is printed once the daemon listens.
            address = process.stdout.readline().strip()
            assert address, f"dbus-daemon did not start (exit status {process.poll()})"
            yield address
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


# --- the fake resolved -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    signature: str
    body: tuple[Any, ...]


@dataclass
class FakeResolved:
    """Answers resolve1 calls like resolved; records each call it accepted.

    ``missing`` methods are answered with UnknownMethod (an older resolved), ``refused`` ones
    with InvalidArgs and the given message, ``silent`` ones not at all.
    """

    connection: Any
    links: frozenset[int] = frozenset({TUN})
    missing: frozenset[str] = frozenset()
    refused: dict[str, str] = field(default_factory=dict)
    silent: frozenset[str] = frozenset()
    calls: list[Call] = field(default_factory=list)
    failure: BaseException | None = None

    def serve(self) -> None:
        try:
            while True:
                try:
                    message = self.connection.receive()
                except OSError:  # the test shut the connection down
                    return
                if message.header.message_type is MessageType.method_call:
                    reply = self.answer(message)
                    if reply is not None:
                        self.connection.send(reply)
        except BaseException as error:
            self.failure = error

    def answer(self, message: Message) -> Message | None:
        fields = message.header.fields
        member = fields.get(HeaderFields.member)
        signature = fields.get(HeaderFields.signature, "")
        if (
            fields.get(HeaderFields.path) != OBJECT_PATH
            or fields.get(HeaderFields.interface) != INTERFACE
            or member not in SIGNATURES
            or member in self.missing
        ):
            text = f"Unknown method {member} or interface {fields.get(HeaderFields.interface)}."
            return new_error(message, UNKNOWN_METHOD, "s", (text,))
        if signature != SIGNATURES[member]:
            return new_error(message, INVALID_ARGS, "s", (f"Invalid signature {signature}",))
        self.calls.append(Call(member, signature, message.body))
        ifindex = message.body[0]
        if member in self.silent:
            return None
        if ifindex not in self.links:
            return new_error(message, NO_SUCH_LINK, "s", (f"Link {ifindex} not known",))
        if member in self.refused:
            return new_error(message, INVALID_ARGS, "s", (self.refused[member],))
        return new_method_return(message)


@contextlib.contextmanager
def fake_resolved(address: str, **options: Any) -> Iterator[FakeResolved]:
    """A fake resolved owning ``org.freedesktop.resolve1`` on the bus until the block ends."""
    connection = open_dbus_connection(address)
    try:
        reply = connection.send_and_get_reply(message_bus.RequestName(BUS_NAME), timeout=10)
        assert reply.body == (1,), reply.body  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
        fake = FakeResolved(connection, **options)
        thread = threading.Thread(target=fake.serve, name="fake-resolved", daemon=True)
        thread.start()
        try:
            yield fake
        finally:
            connection.sock.shutdown(socket.SHUT_RDWR)
            thread.join(timeout=10)
            assert not thread.is_alive()
            if fake.failure is not None:
                raise fake.failure
    finally:
        connection.close()


@pytest.fixture
def resolved(bus: str) -> Iterator[FakeResolved]:
    with fake_resolved(bus) as fake:
        yield fake


# --- available -------------------------------------------------------------------------------


def test_available_when_resolved_owns_its_name(
    bus: str, resolved: FakeResolved, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert available(bus)

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
    assert available()


def test_not_available_without_resolved_on_the_bus(bus: str) -> None:
    assert not available(bus)


def test_not_available_without_a_bus(tmp_path: Path) -> None:
    assert not available()
    assert not available(f"unix:path={tmp_path}/no-bus")
    assert not available("tcp:host=127.0.0.1,port=1")  # a transport jeepney does not speak


# --- configure_link --------------------------------------------------------------------------


def test_configure_link_sets_server_domains_and_default_route(
    bus: str, resolved: FakeResolved
) -> None:
    configure_link(TUN, ("10.128.0.2", 1053), DOMAINS, bus_address=bus)

    assert resolved.calls == [
        Call("SetLinkDNSEx", "ia(iayqs)", (TUN, [(socket.AF_INET, TUN_ADDRESS, 1053, "")])),
        Call("SetLinkDomains", "ia(sb)", (TUN, DOMAINS)),
        Call("SetLinkDefaultRoute", "ib", (TUN, False)),
    ]


def test_configure_link_takes_an_ipv6_server(bus: str, resolved: FakeResolved) -> None:
    configure_link(TUN, ("fd00::53", 53), DOMAINS, bus_address=bus)

    expected = (socket.AF_INET6, bytes.fromhex("fd00" + "00" * 12 + "0053"), 53, "")
    assert resolved.calls[0] == Call("SetLinkDNSEx", "ia(iayqs)", (TUN, [expected]))


def test_old_resolved_gets_set_link_dns_for_port_53(bus: str) -> None:
    # resolved < 246 has no SetLinkDNSEx, resolved < 240 no SetLinkDefaultRoute.
    old = frozenset({"SetLinkDNSEx", "SetLinkDefaultRoute"})
    with fake_resolved(bus, missing=old) as fake:
        configure_link(TUN, ("10.128.0.2", 53), DOMAINS, bus_address=bus)

    assert fake.calls == [
        Call("SetLinkDNS", "ia(iay)", (TUN, [(socket.AF_INET, TUN_ADDRESS)])),
        Call("SetLinkDomains", "ia(sb)", (TUN, DOMAINS)),
    ]


def test_old_resolved_cannot_use_another_port(bus: str) -> None:
    with (
        fake_resolved(bus, missing=frozenset({"SetLinkDNSEx"})) as fake,
        pytest.raises(ResolvedError, match="port 1053") as raised,
    ):
        configure_link(TUN, ("10.128.0.2", 1053), DOMAINS, bus_address=bus)

    assert raised.value.method == "SetLinkDNSEx"
    assert fake.calls == []


def test_a_refused_call_is_an_error_naming_the_method_and_resolveds_message(bus: str) -> None:
    refused = {"SetLinkDomains": "Invalid routing domain 'bad..name'"}
    with (
        fake_resolved(bus, refused=refused) as fake,
        pytest.raises(ResolvedError) as raised,
    ):
        configure_link(TUN, ("10.128.0.2", 53), [("bad..name", True)], bus_address=bus)

    assert "SetLinkDomains" in str(raised.value)
    assert "Invalid routing domain 'bad..name'" in str(raised.value)
    assert (raised.value.method, raised.value.error_name) == ("SetLinkDomains", INVALID_ARGS)
    assert [call.method for call in fake.calls] == ["SetLinkDNSEx", "SetLinkDomains"]


def test_an_unknown_link_is_an_error(bus: str, resolved: FakeResolved) -> None:
    with pytest.raises(ResolvedError, match="Link 99 not known") as raised:
        configure_link(99, ("10.128.0.2", 53), DOMAINS, bus_address=bus)

    assert (raised.value.method, raised.value.error_name) == ("SetLinkDNSEx", NO_SUCH_LINK)


def test_no_resolved_on_the_bus_is_an_error(bus: str) -> None:
    with pytest.raises(ResolvedError) as raised:
        configure_link(TUN, ("10.128.0.2", 53), DOMAINS, bus_address=bus)

    assert (raised.value.method, raised.value.error_name) == ("SetLinkDNSEx", SERVICE_UNKNOWN)


def test_no_reply_is_an_error(bus: str) -> None:
    with (
        fake_resolved(bus, silent=frozenset({"SetLinkDNSEx"})),
        pytest.raises(ResolvedError, match="did not answer") as raised,
    ):
        configure_link(TUN, ("10.128.0.2", 53), DOMAINS, bus_address=bus, timeout=0.2)

    assert (raised.value.method, raised.value.error_name) == ("SetLinkDNSEx", None)


def test_no_bus_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResolvedError, match="cannot connect to the system bus") as raised:
        configure_link(TUN, ("10.128.0.2", 53), DOMAINS)
    assert raised.value.method is None

    with pytest.raises(ResolvedError, match="cannot connect to the system bus"):
        revert_link(TUN, bus_address=f"unix:path={tmp_path}/no-bus")


# --- revert_link -----------------------------------------------------------------------------


def test_revert_link_reverts_and_a_missing_link_is_no_error(
    bus: str, resolved: FakeResolved
) -> None:
    revert_link(TUN, bus_address=bus)
    revert_link(99, bus_address=bus)  # the TUN device is gone: resolved has forgotten it

    assert resolved.calls == [Call("RevertLink", "i", (TUN,)), Call("RevertLink", "i", (99,))]


def test_a_refused_revert_is_an_error(bus: str) -> None:
    with (
        fake_resolved(bus, refused={"RevertLink": "Access denied"}),
        pytest.raises(ResolvedError, match="RevertLink failed: Access denied"),
    ):
        revert_link(TUN, bus_address=bus)


# --- link_domains ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "mapped", "cluster_domain", "suffixes", "expected"),
    [
        pytest.param(
            "default", [], "cluster.local", [],
            [("default.svc.cluster.local", False), ("cluster.local", True), ("svc", True),
             ("default", True)],
            id="connected-namespace-only",
        ),
        pytest.param(
            "team-a", ["team-b", "team-a", "Team-C"], "cluster.local.", [".example.com", "corp"],
            [("team-a.svc.cluster.local", False), ("cluster.local", True), ("svc", True),
             ("team-a", True), ("team-b", True), ("team-c", True), ("example.com", True),
             ("corp", True)],
            id="mapped-namespaces-and-suffixes-deduplicated",
        ),
        pytest.param(
            "", ["team-b"], "k8s.internal", [],
            [("k8s.internal", True), ("svc", True), ("team-b", True)],
            id="no-connected-namespace-no-search-domain",
        ),
    ],
)  # fmt: skip
def test_link_domains(
    namespace: str,
    mapped: list[str],
    cluster_domain: str,
    suffixes: list[str],
    expected: list[tuple[str, bool]],
) -> None:
    assert link_domains(namespace, mapped, cluster_domain, suffixes) == expected
