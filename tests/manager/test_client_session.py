"""The client library's session (``telepresence.session``) against a running manager, over
the ``direct`` transport on loopback: what ``telepresence connect`` builds on, tested without
a sandbox. (Over the port-forward transport it runs in the sandbox:
``tests/telepresence/test_session_sandbox.py``.)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import pytest

from manager import app
from manager.policy import AllowAll
from telepresence import transport
from telepresence.session import SessionError, SessionLost, SessionRefused, open_session
from telepresence.wire import tls

from .harness import MANAGER_NAMESPACE, echo_servers, start_manager

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from .harness import Cluster, ManagerClient

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@contextlib.asynccontextmanager
async def manager_trusting(
    cluster: Cluster, directory: Path, identity: tls.Identity, ca: tls.Identity
) -> AsyncIterator[ManagerClient]:
    """A manager that lets streams reach loopback, and hands clients ``ca`` to verify it by."""
    collaborators = app.Collaborators(policy=AllowAll())
    async with start_manager(
        cluster, directory, identity, ca, collaborators=collaborators
    ) as manager:
        yield manager


async def test_a_session_arrives_streams_and_departs(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    token = await cluster.service_account_token("alice", may_port_forward=True)
    async with (
        manager_trusting(cluster, tmp_path, manager_identity, ca) as manager,
        echo_servers() as echo,
    ):
        api_port = manager.running.api_port
        async with (
            transport.direct("127.0.0.1", MANAGER_NAMESPACE, api_port=api_port) as way,
            open_session(way, token=token, name="alice@test", namespace="default") as session,
        ):
            assert session.manager_pod == "127.0.0.1"
            assert session.cluster_info.data_plane.mux_port == manager.running.data_port
            assert manager.running.sessions.get(session.session_id).label
            assert len(manager.running.sessions) == 1
            with anyio.fail_after(10):
                async with await session.open_tcp("127.0.0.1", echo.tcp_port) as stream:
                    await stream.send(b"through the manager")
                    assert await stream.receive() == b"through the manager"
                async with await session.open_udp("127.0.0.1", echo.udp_port) as flow:
                    await flow.send(b"a datagram")
                    assert await flow.receive() == b"a datagram"
        # The block's end departed: the manager forgot the session at once.
        assert len(manager.running.sessions) == 0


async def test_a_token_without_the_right_is_refused(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    token = await cluster.service_account_token("mallory", may_port_forward=False)
    async with manager_trusting(cluster, tmp_path, manager_identity, ca) as manager:
        api_port = manager.running.api_port
        async with transport.direct("127.0.0.1", MANAGER_NAMESPACE, api_port=api_port) as way:
            with pytest.raises(SessionRefused, match="may not create pods/portforward"):
                async with open_session(way, token=token):
                    pass


async def test_a_data_plane_that_another_ca_vouches_for_is_not_trusted(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity
) -> None:
    # The cluster info names a CA that did not issue the manager's certificate.
    stranger = tls.create_ca("Somebody else's CA")
    token = await cluster.service_account_token("alice", may_port_forward=True)
    async with manager_trusting(cluster, tmp_path, manager_identity, stranger) as manager:
        api_port = manager.running.api_port
        async with transport.direct("127.0.0.1", MANAGER_NAMESPACE, api_port=api_port) as way:
            with pytest.raises(SessionError, match="did not prove to be the manager") as raised:
                async with open_session(way, token=token):
                    pass
    assert "(TLS: unable to get local issuer certificate)" in str(raised.value)
    # Nothing of the session is left with the manager: it departed on the way out.
    assert len(manager.running.sessions) == 0


async def test_a_session_whose_manager_goes_away_raises_session_lost(
    cluster: Cluster, tmp_path: Path, manager_identity: tls.Identity, ca: tls.Identity
) -> None:
    token = await cluster.service_account_token("alice", may_port_forward=True)
    cancelled: list[bool] = []

    async def hold(way: transport.Transport, manager: ManagerClient) -> None:
        async with open_session(way, token=token):
            try:
                # What SIGTERM does: every client is told to go away.
                manager.running.shutdown()
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

    async with manager_trusting(cluster, tmp_path, manager_identity, ca) as manager:
        api_port = manager.running.api_port
        async with transport.direct("127.0.0.1", MANAGER_NAMESPACE, api_port=api_port) as way:
            with anyio.fail_after(20), pytest.raises(SessionLost, match="ended"):
                await hold(way, manager)
    # The block's body was cancelled, and the one failure came out of it as it was.
    assert cancelled == [True]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.5", ("10.0.0.5", 8081)),
        ("traffic-manager.ambassador:9081", ("traffic-manager.ambassador", 9081)),
        ("[fd00::5]:8081", ("fd00::5", 8081)),
        ("[fd00::5]", ("fd00::5", 8081)),
        ("fd00::5", ("fd00::5", 8081)),
    ],
)
def test_direct_addresses(text: str, address: tuple[str, int]) -> None:
    assert transport.parse_address(text) == address


@pytest.mark.parametrize("text", ["", ":8081", "host:0", "host:70000", "host:http"])
def test_bad_direct_addresses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the message is the user's, tested above
        transport.parse_address(text)
