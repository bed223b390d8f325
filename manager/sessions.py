"""The session registry: who has arrived, until when, and what ends with them.

A session starts with ``ArriveAsClient`` and lives until ``Depart``, or until it goes one TTL
without a ``Remain``. The TTLs are the original's: a client's is ``client.connectionTTL``
(24 hours by default, so that a laptop's sleep does not end its session) and an agent's is
:data:`AGENT_TTL`. Clients are expected to call ``Remain`` every few seconds regardless.

Ending a session sets its :attr:`Session.ended` event. Everything the session holds follows
it: its ``WatchClusterInfo`` streams end and its data-plane connections close, and so later
will its intercepts.

A session id is a bearer credential (SECRET in the proto): 32 random bytes, never logged.
Logs name a session by its :attr:`Session.label`, the client's name and a short hash of
the id that cannot be turned back into it.

The registry itself does no I/O and takes the time from an injected clock, so its rules are
tested without waiting; :meth:`SessionRegistry.run` is the loop that expires sessions on time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from manager.auth import User

log = logging.getLogger(__name__)

#: Seconds an agent's session lives without a Remain (the original's agentSessionTTL).
AGENT_TTL = 15.0


class SessionKind(Enum):
    CLIENT = "client"
    AGENT = "agent"


class UnknownSession(LookupError):
    """No such session: never created, expired or departed."""


@dataclass(eq=False, slots=True)
class Session:
    """One arrived client (or, later, agent).

    Attributes:
        id: The session id (SECRET).
        kind: Client or agent.
        name: The caller's name for people (``alice@laptop``).
        user: Who the cluster says the caller is.
        namespace: The client's default namespace.
        install_id: The client installation's id.
        expires: When the session ends without a Remain, on the registry's clock.
        ended: Set when the session ends, for whatever reason.
    """

    id: str = field(repr=False)
    kind: SessionKind
    name: str
    user: User
    namespace: str
    install_id: str
    expires: float
    ended: anyio.Event = field(default_factory=anyio.Event, repr=False)

    @property
    def label(self) -> str:
        """How logs name the session: safe to show, unique enough to follow."""
        digest = hashlib.sha256(self.id.encode()).hexdigest()[:8]
        return f"{self.kind.value} {self.name or self.user.name} #{digest}"


class SessionRegistry:
    """The sessions of one manager.

    Args:
        client_ttl: Seconds a client session lives without a Remain.
        agent_ttl: The same for agents.
        clock: Monotonic seconds (``time.monotonic`` unless a test gives another).
    """

    def __init__(
        self,
        *,
        client_ttl: float,
        agent_ttl: float = AGENT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = {SessionKind.CLIENT: client_ttl, SessionKind.AGENT: agent_ttl}
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._changed: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def arrive(
        self, kind: SessionKind, *, name: str, user: User, namespace: str = "", install_id: str = ""
    ) -> Session:
        """Create a session for a caller the cluster authenticated and authorized."""
        session = Session(
            id=secrets.token_urlsafe(32),
            kind=kind,
            name=name,
            user=user,
            namespace=namespace,
            install_id=install_id,
            expires=self._clock() + self._ttl[kind],
        )
        self._sessions[session.id] = session
        self._wake()
        log.info("%s arrived (user %s)", session.label, user.name)
        return session

    def get(self, session_id: str) -> Session:
        """The live session with this id.

        Raises:
            UnknownSession: None such, or it expired.
        """
        session = self._sessions.get(session_id)
        if session is None or session.expires <= self._clock():
            raise UnknownSession
        return session

    def remain(self, session_id: str) -> Session:
        """Renew a session for another TTL.

        Raises:
            UnknownSession: None such, or it expired.
        """
        session = self.get(session_id)
        session.expires = self._clock() + self._ttl[session.kind]
        return session

    def depart(self, session_id: str) -> Session:
        """End a session now.

        Raises:
            UnknownSession: None such, or it expired.
        """
        session = self.get(session_id)
        self._end(session, "departed")
        return session

    def expire(self) -> float:
        """End every session past its time; returns when the next one is due (``inf`` with
        none)."""
        now = self._clock()
        for session in [s for s in self._sessions.values() if s.expires <= now]:
            self._end(session, "expired")
        return min((s.expires for s in self._sessions.values()), default=math.inf)

    def end_all(self) -> None:
        """End every session (the manager is stopping)."""
        for session in list(self._sessions.values()):
            self._end(session, "ended: the traffic-manager is stopping")

    async def run(self) -> None:
        """Expire sessions on time, until cancelled. Needs the real monotonic clock."""
        while True:
            due = self.expire()
            self._changed = anyio.Event()
            with anyio.move_on_after(max(0.0, due - self._clock())):
                await self._changed.wait()

    def _end(self, session: Session, why: str) -> None:
        if self._sessions.pop(session.id, None) is not None:
            session.ended.set()
            log.info("%s %s", session.label, why)

    def _wake(self) -> None:
        # A new session may be due before the one the expiry loop sleeps for.
        if self._changed is not None:
            self._changed.set()
