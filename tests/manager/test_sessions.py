"""The session registry's rules, on a clock the test moves (no waiting), and the change
primitives the manager's followers use. Both are anyio-only: they run on every backend."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from manager.auth import User
from manager.changes import Latest, Signal
from manager.sessions import AGENT_TTL, SessionKind, SessionRegistry, UnknownSession
from tests.conftest import ANYIO_BACKENDS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

ALICE = User("system:serviceaccount:ambassador:alice", groups=("system:authenticated",))


@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_remain_renews_a_session_for_one_ttl() -> None:
    clock = Clock()
    registry = SessionRegistry(client_ttl=15, clock=clock)
    session = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
    clock.now += 10
    registry.remain(session.id)
    clock.now += 10  # 20 s after arriving, 10 s after the Remain
    assert registry.expire() == clock.now + 5
    assert registry.get(session.id) is session
    assert not session.ended.is_set()
    clock.now += 5
    assert registry.expire() == math.inf
    assert session.ended.is_set()
    with pytest.raises(UnknownSession):
        registry.remain(session.id)


async def test_an_expired_session_is_unknown_even_before_the_expiry_runs() -> None:
    clock = Clock()
    registry = SessionRegistry(client_ttl=15, clock=clock)
    session = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
    clock.now += 15
    with pytest.raises(UnknownSession):
        registry.get(session.id)


async def test_depart_ends_a_session_once() -> None:
    registry = SessionRegistry(client_ttl=15, clock=Clock())
    session = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
    other = registry.arrive(SessionKind.CLIENT, name="alice@desktop", user=ALICE)
    registry.depart(session.id)
    assert session.ended.is_set()
    assert not other.ended.is_set()
    with pytest.raises(UnknownSession):
        registry.depart(session.id)
    assert len(registry) == 1
    registry.end_all()
    assert other.ended.is_set()
    assert len(registry) == 0


async def test_agents_have_their_own_ttl() -> None:
    clock = Clock()
    registry = SessionRegistry(client_ttl=3600, clock=clock)
    agent = registry.arrive(SessionKind.AGENT, name="echo", user=ALICE)
    client = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
    clock.now += AGENT_TTL
    registry.expire()
    assert agent.ended.is_set()
    assert not client.ended.is_set()


async def test_ids_are_secret_and_labels_are_not() -> None:
    registry = SessionRegistry(client_ttl=15, clock=Clock())
    session = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
    assert len(session.id) >= 40
    assert session.id not in repr(session)
    assert session.id not in session.label
    assert session.label.startswith("client alice@laptop #")


async def test_the_expiry_loop_ends_sessions_on_time() -> None:
    registry = SessionRegistry(client_ttl=0.05)  # the real clock
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(registry.run)
        session = registry.arrive(SessionKind.CLIENT, name="alice@laptop", user=ALICE)
        with anyio.fail_after(5):
            await session.ended.wait()
        tasks.cancel_scope.cancel()


async def test_latest_followers_see_the_newest_value() -> None:
    latest: Latest[int] = Latest()
    seen: list[int] = []

    async def follow(done: anyio.Event) -> None:
        async for value in latest.follow():
            seen.append(value)
            if value == 3:
                done.set()
                return

    done = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, done)
        assert latest.set(1)
        assert not latest.set(1)  # no change, no news
        await anyio.wait_all_tasks_blocked()
        latest.set(2)
        latest.set(3)  # before the follower ran again: it skips 2
        with anyio.fail_after(5):
            await done.wait()
    assert seen == [1, 3]
    assert await latest.get() == 3


async def test_signals_coalesce() -> None:
    signal = Signal()
    signal.notify()
    signal.notify()
    with anyio.fail_after(5):
        await signal.wait()
    with anyio.move_on_after(0.05) as waited:
        await signal.wait()
    assert waited.cancelled_caught
