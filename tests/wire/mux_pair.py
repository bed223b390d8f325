"""Two sans-I/O cores wired back to back, with a clock the test moves by hand; and a bare
server core answering a shell's handshake over a byte stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING

from telepresence.wire import mux

if TYPE_CHECKING:
    import anyio.abc


async def serve_handshake(stream: anyio.abc.ByteStream) -> mux.Connection:
    """A server core that has read the client's hello from ``stream`` and answered it: the
    far end of a shell ``connect()`` that a test drives frame by frame."""
    core = mux.Connection(mux.Role.SERVER, now=monotonic())
    while not core.is_open:
        core.receive_data(await stream.receive(), monotonic())
        if core.state is mux.State.AWAIT_ACCEPT:
            core.accept_hello(monotonic())
    await stream.send(core.data_to_send())
    return core


@dataclass
class Clock:
    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Pair:
    """A client and a server core; ``exchange()`` moves bytes until both are quiet."""

    client: mux.Connection
    server: mux.Connection
    clock: Clock = field(default_factory=Clock)
    client_events: list[mux.Event] = field(default_factory=list)
    server_events: list[mux.Event] = field(default_factory=list)

    @classmethod
    def handshake(
        cls,
        *,
        client_settings: mux.Settings | None = None,
        server_settings: mux.Settings | None = None,
        credentials: bytes = b"token",
    ) -> Pair:
        clock = Clock()
        client = mux.Connection(
            mux.Role.CLIENT, now=clock.now, settings=client_settings, credentials=credentials
        )
        server = mux.Connection(mux.Role.SERVER, now=clock.now, settings=server_settings)
        pair = cls(client, server, clock)
        pair.exchange()
        assert isinstance(pair.server_events[0], mux.HelloReceived)
        server.accept_hello(clock.now)
        pair.exchange()
        assert any(isinstance(e, mux.HandshakeComplete) for e in pair.client_events)
        pair.client_events.clear()
        pair.server_events.clear()
        return pair

    def exchange(self, rounds: int = 1000) -> None:
        for _ in range(rounds):
            moved = False
            data = self.client.data_to_send()
            if data:
                moved = True
                self.server.receive_data(data, self.clock.now)
            data = self.server.data_to_send()
            if data:
                moved = True
                self.client.receive_data(data, self.clock.now)
            self._drain()
            if not moved:
                return
        raise AssertionError("cores kept talking")

    def _drain(self) -> None:
        for core, sink in ((self.client, self.client_events), (self.server, self.server_events)):
            while (event := core.next_event()) is not None:
                sink.append(event)

    def take(self, side: str, kind: type[mux.Event]) -> list[mux.Event]:
        """Remove and return the events of one kind seen by one side."""
        sink = self.client_events if side == "client" else self.server_events
        found = [e for e in sink if isinstance(e, kind)]
        sink[:] = [e for e in sink if not isinstance(e, kind)]
        return found


def received_bytes(events: list[mux.Event], stream_id: int) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, mux.DataReceived) and e.stream_id == stream_id
    )
