"""Property tests of the sans-I/O core: splits, garbage, mutations, bounded memory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telepresence.wire import mux
from telepresence.wire.mux import _frames as wire

NOW = 1000.0
MAX_STREAMS = 8


@dataclass(frozen=True)
class Op:
    kind: str
    pick: int
    size: int


ops = st.lists(
    st.builds(
        Op,
        st.sampled_from(
            ["open_tcp", "open_udp", "open_name", "send", "half_close", "reset", "ping"]
        ),
        st.integers(0, 1000),
        st.integers(0, 70000),
    ),
    max_size=25,
)


def client_bytes(operations: list[Op]) -> bytes:
    """Run ``operations`` on a client paired with a server; return every byte it sent."""
    core = mux.Connection(mux.Role.CLIENT, now=NOW, credentials=b"token")
    server = mux.Connection(
        mux.Role.SERVER, now=NOW, settings=mux.Settings(max_concurrent_streams=MAX_STREAMS)
    )
    sent = bytearray(core.data_to_send())
    server.receive_data(bytes(sent), NOW)
    server.accept_hello(NOW)
    core.receive_data(server.data_to_send(), NOW)
    sent += core.data_to_send()
    streams: list[int] = []
    for op in operations:
        live = [s for s in streams if s in core.stream_ids()]
        target = live[op.pick % len(live)] if live else None
        if op.kind.startswith("open") and core.can_open_stream():
            protocol = mux.Protocol.UDP if op.kind == "open_udp" else mux.Protocol.TCP
            host = "echo.default" if op.kind == "open_name" else f"10.0.{op.pick % 256}.1"
            origin = mux.Address("192.168.0.2", op.size % 65536) if op.pick % 2 else None
            streams.append(
                core.open_stream(mux.OpenRequest(protocol, mux.Address(host, 80), origin))
            )
        elif op.kind == "send" and target is not None:
            payload = bytes([op.pick % 256]) * min(op.size, wire.MAX_PAYLOAD)
            credit = core.send_credit(target)  # 0 when the stream cannot send
            if credit > 0 and credit >= len(payload):
                try:
                    core.send_data(target, payload)
                except mux.LocalProtocolError:
                    core.send_datagram(target, payload)
        elif op.kind == "half_close" and target is not None:
            core.half_close(target)
        elif op.kind == "reset" and target is not None:
            core.reset_stream(target, mux.ResetReason(op.pick % 9), "reset " * (op.size % 300))
        elif op.kind == "ping":
            core.ping(NOW)
        sent += core.data_to_send()
    return bytes(sent)


def replay(data: bytes, cuts: list[int]) -> tuple[list[mux.Event], mux.Connection]:
    """Feed ``data`` to a fresh server in pieces cut at ``cuts``; return its events."""
    server = mux.Connection(
        mux.Role.SERVER, now=NOW, settings=mux.Settings(max_concurrent_streams=MAX_STREAMS)
    )
    events: list[mux.Event] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        server.receive_data(data[start:end], NOW)
        while (event := server.next_event()) is not None:
            events.append(event)
            if isinstance(event, mux.HelloReceived):
                server.accept_hello(NOW)
        server.data_to_send()
        check_bounded(server)
    return events, server


def check_bounded(server: mux.Connection) -> None:
    assert server._inbound.size < mux.MAX_FRAME  # at most one partial frame
    assert len(server.stream_ids()) <= MAX_STREAMS
    assert server._control_backlog <= mux.MAX_CONTROL_BACKLOG


def check_outcome(server: mux.Connection, events: list[mux.Event]) -> None:
    for event in events:
        if isinstance(event, mux.ConnectionTerminated | mux.StreamReset):
            assert isinstance(event.reason, mux.ResetReason)
    terminated = [e for e in events if isinstance(e, mux.ConnectionTerminated)]
    assert len(terminated) <= 1
    if terminated:
        assert events[-1] is terminated[0]
        assert terminated[0].message
        assert server.closed


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(operations=ops, cuts=st.lists(st.integers(0, 10**7), max_size=40))
def test_any_split_of_the_byte_stream_gives_the_same_events(
    operations: list[Op], cuts: list[int]
) -> None:
    data = client_bytes(operations)
    whole, _ = replay(data, [])
    split, server = replay(data, cuts)
    assert split == whole
    check_outcome(server, split)
    # A well-behaved client never makes the server fail the connection.
    assert not any(isinstance(e, mux.ConnectionTerminated) for e in whole)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_random_bytes_after_the_handshake_never_crash(garbage: bytes, cuts: list[int]) -> None:
    data = client_bytes([]) + garbage
    events, server = replay(data, cuts)
    check_outcome(server, events)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_random_bytes_instead_of_a_handshake_are_refused(garbage: bytes) -> None:
    events, server = replay(garbage, [])
    check_outcome(server, events)
    if garbage and not mux.MAGIC.startswith(garbage[:8]):
        assert server.closed
        assert isinstance(server.terminated, mux.ConnectionTerminated)
        assert server.terminated.reason is mux.ResetReason.PROTOCOL


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]),
    st.integers(0, 10**6),
    st.binary(min_size=1, max_size=16),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(operations=ops, mutations=st.lists(mutation, min_size=1, max_size=5))
def test_mutated_streams_fail_with_a_reason_never_an_exception(
    operations: list[Op], mutations: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(client_bytes(operations))
    for kind, where, blob in mutations:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= blob[0] or 0xFF
        elif kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at : at + len(blob)]
        elif kind == "truncate":
            del data[at:]
        else:
            data[at : at + len(blob)] = blob
    events, server = replay(bytes(data), [])
    check_outcome(server, events)


frame_types = st.sampled_from(list(mux.FrameType)) | st.integers(0, 255)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(frame_types)
    flags = draw(st.sampled_from([0, 0, 0, 1, 2, 255]))
    stream_id = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 2**32 - 1]) | st.integers(0, 64))
    payload = draw(
        st.binary(max_size=64)
        | st.builds(
            wire.encode_open,
            st.builds(
                mux.OpenRequest,
                st.sampled_from(list(mux.Protocol)),
                st.builds(
                    mux.Address, st.sampled_from(["10.0.0.1", "::1", "a.b"]), st.integers(1, 65535)
                ),
            ),
        )
        | st.builds(wire.encode_u32, st.integers(0, 2**32 - 1))
        | st.builds(
            wire.encode_reason, st.sampled_from(list(mux.ResetReason)), st.text(max_size=40)
        )
    )
    version = draw(st.sampled_from([1, 1, 1, 1, 2]))
    return bytes([version, int(kind) % 256, flags, 0]) + (
        stream_id.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload
    )


@settings(max_examples=400, deadline=None)
@given(sequence=st.lists(frames(), max_size=30), cuts=st.lists(st.integers(0, 10**5), max_size=5))
def test_random_frames_are_handled_or_refused(sequence: list[bytes], cuts: list[int]) -> None:
    events, server = replay(client_bytes([]) + b"".join(sequence), cuts)
    check_outcome(server, events)


def test_oversized_length_is_refused_before_any_buffering() -> None:
    header = wire.HEADER.pack(1, mux.FrameType.DATA, 0, 0, 1, 2**32 - 1)
    events, server = replay(client_bytes([]) + header, [])
    assert server.closed
    assert isinstance(events[-1], mux.ConnectionTerminated)
    assert "length" in events[-1].message
