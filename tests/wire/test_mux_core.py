"""The sans-I/O core, client and server paired in memory: every exchange, no sockets."""

from __future__ import annotations

import pytest

from telepresence.wire import mux
from telepresence.wire.mux import _frames as wire
from tests.wire.mux_pair import Clock, Pair, received_bytes

ECHO = mux.Address("10.96.0.12", 80)
KIB = 1024
MIB = 1024 * KIB


def open_tcp(pair: Pair, destination: mux.Address = ECHO) -> int:
    stream_id = pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, destination))
    pair.exchange()
    (opened,) = pair.take("server", mux.StreamOpened)
    assert isinstance(opened, mux.StreamOpened)
    assert opened.stream_id == stream_id
    return stream_id


def test_handshake_carries_credentials_and_settings() -> None:
    clock = Clock()
    client = mux.Connection(
        mux.Role.CLIENT,
        now=clock.now,
        credentials=b"bearer abc",
        settings=mux.Settings(max_concurrent_streams=7),
    )
    server = mux.Connection(mux.Role.SERVER, now=clock.now)
    assert not client.can_open_stream()
    server.receive_data(client.data_to_send(), clock.now)
    event = server.next_event()
    assert isinstance(event, mux.HelloReceived)
    assert event.hello.credentials == b"bearer abc"
    assert event.hello.max_concurrent_streams == 7
    assert event.hello.initial_stream_window == 256 * KIB
    server.accept_hello(clock.now)
    client.receive_data(server.data_to_send(), clock.now)
    complete = client.next_event()
    assert isinstance(complete, mux.HandshakeComplete)
    assert complete.peer.credentials == b""
    assert client.can_open_stream()
    assert server.is_open
    assert client.is_open


def test_server_refuses_credentials_with_a_reason() -> None:
    clock = Clock()
    client = mux.Connection(mux.Role.CLIENT, now=clock.now, credentials=b"stolen")
    server = mux.Connection(mux.Role.SERVER, now=clock.now)
    server.receive_data(client.data_to_send(), clock.now)
    assert isinstance(server.next_event(), mux.HelloReceived)
    server.go_away(mux.ResetReason.POLICY, "token not accepted")
    client.receive_data(server.data_to_send(), clock.now)
    event = client.next_event()
    assert event == mux.ConnectionTerminated(mux.ResetReason.POLICY, "token not accepted", True)
    assert client.closed


def test_open_accept_and_data_both_ways() -> None:
    pair = Pair.handshake()
    origin = mux.Address("192.168.1.10", 50123)
    stream_id = pair.client.open_stream(
        mux.OpenRequest(mux.Protocol.TCP, mux.Address("echo.default", 8080), origin)
    )
    assert stream_id == 1
    pair.client.send_data(stream_id, b"GET / HTTP/1.1\r\n\r\n")  # data may follow OPEN at once
    pair.exchange()
    (opened,) = pair.take("server", mux.StreamOpened)
    assert isinstance(opened, mux.StreamOpened)
    assert opened.request == mux.OpenRequest(
        mux.Protocol.TCP, mux.Address("echo.default", 8080), origin
    )
    assert received_bytes(pair.server_events, stream_id) == b"GET / HTTP/1.1\r\n\r\n"

    pair.server.accept_stream(stream_id)
    pair.server.send_data(stream_id, b"HTTP/1.1 200 OK\r\n\r\n")
    pair.exchange()
    assert pair.take("client", mux.StreamAccepted) == [mux.StreamAccepted(stream_id)]
    assert received_bytes(pair.client_events, stream_id) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_stream_ids_never_collide() -> None:
    pair = Pair.handshake()
    client_ids = [
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO)) for _ in range(3)
    ]
    server_ids = [
        pair.server.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO)) for _ in range(3)
    ]
    assert client_ids == [1, 3, 5]
    assert server_ids == [2, 4, 6]
    pair.exchange()
    assert len(pair.take("server", mux.StreamOpened)) == 3
    assert len(pair.take("client", mux.StreamOpened)) == 3


def test_client_half_closes_first() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    pair.client.send_data(sid, b"request")
    pair.client.half_close(sid)
    pair.exchange()
    assert pair.take("server", mux.StreamEnded) == [mux.StreamEnded(sid)]
    assert received_bytes(pair.server_events, sid) == b"request"
    with pytest.raises(mux.LocalProtocolError):
        pair.client.send_data(sid, b"more")
    pair.server.send_data(sid, b"response after the client's FIN")
    pair.server.half_close(sid)
    pair.exchange()
    assert received_bytes(pair.client_events, sid) == b"response after the client's FIN"
    assert pair.take("client", mux.StreamEnded) == [mux.StreamEnded(sid)]
    assert pair.take("client", mux.StreamClosed) == [mux.StreamClosed(sid)]
    assert pair.take("server", mux.StreamClosed) == [mux.StreamClosed(sid)]
    assert pair.client.stream_ids() == []
    assert pair.server.stream_ids() == []


def test_server_half_closes_first() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    pair.server.send_data(sid, b"banner")
    pair.server.half_close(sid)
    pair.exchange()
    assert received_bytes(pair.client_events, sid) == b"banner"
    assert pair.take("client", mux.StreamEnded) == [mux.StreamEnded(sid)]
    pair.client.send_data(sid, b"still talking")
    pair.exchange()
    assert received_bytes(pair.server_events, sid) == b"still talking"
    pair.client.half_close(sid)
    pair.exchange()
    assert pair.take("server", mux.StreamClosed) == [mux.StreamClosed(sid)]
    assert pair.take("client", mux.StreamClosed) == [mux.StreamClosed(sid)]


def test_reset_with_reason_reaches_the_opener() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair, mux.Address("10.96.0.12", 81))
    pair.server.reset_stream(sid, mux.ResetReason.REFUSED, "connect: connection refused")
    pair.exchange()
    assert pair.take("client", mux.StreamReset) == [
        mux.StreamReset(sid, mux.ResetReason.REFUSED, "connect: connection refused", remote=True)
    ]
    assert pair.client.stream_ids() == []
    # Frames that crossed the RESET on the wire are dropped, not fatal.
    pair.client.reset_stream(sid, mux.ResetReason.CANCELLED)
    assert pair.client.data_to_send() == b""


def test_data_racing_a_reset_is_dropped_quietly() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    pair.client.send_data(sid, b"x" * 1000)  # in flight while the server resets
    pair.server.reset_stream(sid, mux.ResetReason.CANCELLED, "bye")
    pair.exchange()
    assert pair.server.is_open
    assert pair.client.is_open
    assert [e for e in pair.server_events if isinstance(e, mux.ConnectionTerminated)] == []


def test_window_exhaustion_and_resumption() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    payload = bytes(range(256)) * (4 * 1024)  # 1 MiB
    sent = pair.client.send_data(sid, payload)
    assert sent == 256 * KIB  # the initial stream window
    assert pair.client.send_credit(sid) == 0
    assert pair.client.send_data(sid, payload[sent:]) == 0
    pair.exchange()
    got = received_bytes(pair.server_events, sid)
    assert len(got) == sent
    pair.server_events.clear()

    # The reader consumes; credit returns in WINDOW_UPDATEs and the sender resumes.
    delivered = bytearray(got)
    while len(delivered) < len(payload):
        pair.server.consumed(sid, len(got), pair.clock.now)
        pair.exchange()
        assert pair.take("client", mux.SendWindowOpened)
        more = pair.client.send_data(sid, payload[sent:])
        assert more > 0
        sent += more
        pair.exchange()
        got = received_bytes(pair.server_events, sid)
        pair.server_events.clear()
        delivered += got
    assert bytes(delivered) == payload


def test_many_concurrent_streams_keep_their_bytes_apart() -> None:
    pair = Pair.handshake()
    ids = [pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO)) for _ in range(500)]
    pending = {sid: f"stream {sid};".encode() * 50 for sid in ids}
    while pending:  # 500 x 600 bytes is more than the connection window: it refills
        for sid, data in list(pending.items()):
            sent = pair.client.send_data(sid, data)
            pending[sid] = data[sent:]
            if not pending[sid]:
                del pending[sid]
        pair.exchange()
    assert len(pair.take("server", mux.StreamOpened)) == 500
    for sid in ids:
        assert received_bytes(pair.server_events, sid) == f"stream {sid};".encode() * 50


def test_concurrent_stream_limit_is_enforced_on_both_sides() -> None:
    pair = Pair.handshake(server_settings=mux.Settings(max_concurrent_streams=3))
    for _ in range(3):
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO))
    assert not pair.client.can_open_stream()
    with pytest.raises(mux.LocalProtocolError, match="limit"):
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO))
    pair.exchange()

    # A peer that ignores the limit loses the extra stream, not the connection.
    rogue = wire.frame(
        mux.FrameType.OPEN, 7, wire.encode_open(mux.OpenRequest(mux.Protocol.TCP, ECHO))
    )
    pair.server.receive_data(rogue, pair.clock.now)
    answer = pair.server.data_to_send()
    _, kind, _, _, stream_id, _ = wire.HEADER.unpack_from(answer)
    assert (kind, stream_id) == (mux.FrameType.RESET, 7)
    reason, _ = wire.decode_reason(answer[wire.HEADER_SIZE :])
    assert reason is mux.ResetReason.STREAM_LIMIT
    assert pair.server.is_open
    assert pair.server.next_event() is None
    assert len(pair.server.stream_ids()) == 3


def test_udp_datagrams_keep_their_boundaries() -> None:
    pair = Pair.handshake()
    sid = pair.client.open_stream(mux.OpenRequest(mux.Protocol.UDP, mux.Address("10.96.0.10", 53)))
    assert pair.client.send_datagram(sid, b"query-1")
    assert pair.client.send_datagram(sid, b"")
    assert pair.client.send_datagram(sid, b"q" * 65507)
    pair.exchange()
    got = [
        e.data
        for e in pair.take("server", mux.DatagramReceived)
        if isinstance(e, mux.DatagramReceived)
    ]
    assert got == [b"query-1", b"", b"q" * 65507]
    pair.server.send_datagram(sid, b"answer")
    pair.exchange()
    assert pair.take("client", mux.DatagramReceived) == [mux.DatagramReceived(sid, b"answer")]
    with pytest.raises(mux.LocalProtocolError):
        pair.client.send_datagram(sid, b"x" * (mux.MAX_PAYLOAD + 1))
    with pytest.raises(mux.LocalProtocolError):
        pair.client.send_data(sid, b"bytes on a UDP stream")


def test_datagram_without_credit_is_dropped_not_split() -> None:
    pair = Pair.handshake()
    sid = pair.client.open_stream(mux.OpenRequest(mux.Protocol.UDP, mux.Address("10.96.0.10", 53)))
    sent = 0
    while pair.client.send_datagram(sid, b"d" * 60000):
        sent += 1
    assert sent == (256 * KIB) // 60000
    pair.exchange()
    assert len(pair.take("server", mux.DatagramReceived)) == sent


def test_ping_measures_round_trip_time() -> None:
    pair = Pair.handshake()
    ping_id = pair.client.ping(pair.clock.now)
    pair.server.receive_data(pair.client.data_to_send(), pair.clock.now)
    pair.clock.advance(0.025)
    pair.client.receive_data(pair.server.data_to_send(), pair.clock.now)
    event = pair.client.next_event()
    assert isinstance(event, mux.PongReceived)
    assert event.ping_id == ping_id
    assert event.rtt == pytest.approx(0.025)
    assert pair.client.rtt is not None
    assert pair.client.rtt > 0


def test_keepalive_pings_and_idle_timeout() -> None:
    settings = mux.Settings(keepalive_interval=5.0, idle_timeout=12.0)
    pair = Pair.handshake(client_settings=settings, server_settings=settings)
    deadline = pair.client.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(pair.clock.now + 5.0)
    pair.clock.advance(5.0)
    pair.client.handle_timer(pair.clock.now)
    pair.exchange()
    assert pair.take("client", mux.PongReceived)

    # The server goes silent: nothing reaches the client any more.
    pair.clock.advance(12.5)
    pair.client.handle_timer(pair.clock.now)
    event = pair.client.next_event()
    while isinstance(event, mux.PongReceived):
        event = pair.client.next_event()
    assert isinstance(event, mux.ConnectionTerminated)
    assert event.reason is mux.ResetReason.TIMEOUT
    assert not event.remote


def test_go_away_drains_open_streams_then_terminates() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    pair.server.go_away(mux.ResetReason.NO_ERROR, "manager shutting down")
    pair.exchange()
    assert pair.take("client", mux.GoAwayReceived) == [
        mux.GoAwayReceived(sid, mux.ResetReason.NO_ERROR, "manager shutting down")
    ]
    assert not pair.client.can_open_stream()
    with pytest.raises(mux.LocalProtocolError, match="going away"):
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO))
    # The stream that was open keeps working until it ends.
    pair.client.send_data(sid, b"last request")
    pair.server.send_data(sid, b"last answer")
    pair.exchange()
    assert received_bytes(pair.server_events, sid) == b"last request"
    assert received_bytes(pair.client_events, sid) == b"last answer"
    pair.client.half_close(sid)
    pair.server.half_close(sid)
    pair.exchange()
    assert pair.take("server", mux.ConnectionTerminated) == [
        mux.ConnectionTerminated(mux.ResetReason.NO_ERROR, "all streams done", False)
    ]
    assert pair.take("client", mux.ConnectionTerminated) == [
        mux.ConnectionTerminated(mux.ResetReason.NO_ERROR, "all streams done", False)
    ]


def test_go_away_refuses_streams_the_peer_never_saw() -> None:
    pair = Pair.handshake()
    seen = open_tcp(pair)
    unseen = pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO))
    in_flight = pair.client.data_to_send()  # OPEN for `unseen`, not delivered yet
    pair.server.go_away()
    pair.client.receive_data(pair.server.data_to_send(), pair.clock.now)
    pair.exchange()
    resets = pair.take("client", mux.StreamReset)
    assert len(resets) == 1
    reset = resets[0]
    assert isinstance(reset, mux.StreamReset)
    assert reset.stream_id == unseen
    assert reset.reason is mux.ResetReason.REFUSED
    assert pair.client.stream_ids() == [seen]
    # When the late OPEN arrives the server refuses it too.
    pair.server.receive_data(in_flight, pair.clock.now)
    assert pair.server.stream_ids() == [seen]


def test_stalled_reader_does_not_stop_other_streams() -> None:
    pair = Pair.handshake()
    stalled = open_tcp(pair)
    busy = open_tcp(pair)
    chunk = b"z" * (64 * KIB)
    busy_delivered = 0
    stalled_delivered = 0
    for _ in range(400):  # 25 MiB offered on each stream
        pair.client.send_data(stalled, chunk)
        pair.client.send_data(busy, chunk)
        pair.exchange()
        for event in pair.server_events:
            if isinstance(event, mux.DataReceived):
                if event.stream_id == busy:
                    busy_delivered += len(event.data)
                    pair.server.consumed(busy, len(event.data), pair.clock.now)
                else:
                    stalled_delivered += len(event.data)  # never consumed
        pair.server_events.clear()
        pair.clock.advance(0.001)
    assert stalled_delivered == 256 * KIB
    assert busy_delivered == 400 * 64 * KIB


def test_windows_grow_when_the_reader_keeps_up() -> None:
    pair = Pair.handshake()
    # A measured RTT of 10 ms: the reader empties windows much faster than that.
    pair.client.ping(pair.clock.now)
    pair.server.ping(pair.clock.now)
    pair.server.receive_data(pair.client.data_to_send(), pair.clock.now)
    pair.client.receive_data(pair.server.data_to_send(), pair.clock.now)
    pair.clock.advance(0.010)
    pair.exchange()
    assert pair.server.rtt is not None
    assert pair.server.rtt > 0.001  # smoothed with the handshake's near-zero sample
    sid = open_tcp(pair)
    payload = b"w" * (32 * MIB)
    credits: list[int] = []
    rounds_at_max = 0
    while rounds_at_max < 3 and len(credits) < 100:
        sent = pair.client.send_data(sid, payload)
        pair.exchange()
        pair.server.consumed(sid, sent, pair.clock.now)
        pair.exchange()
        pair.clock.advance(0.001)
        credits.append(pair.client.send_credit(sid))
        rounds_at_max += credits[-1] == 16 * MIB
    assert credits[0] <= 512 * KIB
    assert max(credits) == 16 * MIB  # auto-tuned up to the maximum, no further
    assert rounds_at_max == 3


def test_windows_stay_small_for_a_slow_reader() -> None:
    pair = Pair.handshake()
    pair.client.ping(pair.clock.now)
    pair.server.ping(pair.clock.now)
    pair.exchange()  # RTT ~ 0
    sid = open_tcp(pair)
    for _ in range(50):
        sent = pair.client.send_data(sid, b"s" * MIB)
        pair.exchange()
        pair.clock.advance(1.0)  # the reader takes a second per window
        pair.server.consumed(sid, sent, pair.clock.now)
        pair.exchange()
        assert pair.client.send_credit(sid) <= 256 * KIB


def test_bad_preface_is_refused_with_a_reason() -> None:
    server = mux.Connection(mux.Role.SERVER, now=0.0)
    server.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    event = server.next_event()
    assert isinstance(event, mux.ConnectionTerminated)
    assert event.reason is mux.ResetReason.PROTOCOL
    assert "tpmux" in event.message
    assert server.data_to_send().startswith(wire.header(mux.FrameType.GO_AWAY, 0, 0)[:2])


def test_future_frame_version_is_refused_with_a_reason() -> None:
    pair = Pair.handshake()
    future = bytes([2]) + wire.frame(mux.FrameType.PING, 0, b"\0" * 8)[1:]
    pair.server.receive_data(future, pair.clock.now)
    event = pair.server.next_event()
    assert isinstance(event, mux.ConnectionTerminated)
    assert "version 2" in event.message


def test_protocol_error_on_one_stream_resets_only_that_stream() -> None:
    pair = Pair.handshake()
    good = open_tcp(pair)
    bad = open_tcp(pair)
    # A DATAGRAM on a TCP stream breaks the rules of that stream only.
    pair.server.receive_data(wire.frame(mux.FrameType.DATAGRAM, bad, b"x"), pair.clock.now)
    pair.client.receive_data(pair.server.data_to_send(), pair.clock.now)
    pair.exchange()
    resets = pair.take("client", mux.StreamReset)
    assert len(resets) == 1
    assert isinstance(resets[0], mux.StreamReset)
    assert resets[0].stream_id == bad
    assert resets[0].reason is mux.ResetReason.PROTOCOL
    assert pair.server.stream_ids() == [good]
    assert pair.server.is_open


def test_data_beyond_the_stream_window_resets_only_that_stream() -> None:
    pair = Pair.handshake()
    good = open_tcp(pair)
    greedy = open_tcp(pair)
    pair.client.send_data(greedy, b"x" * wire.MAX_PAYLOAD)
    pair.client.send_data(greedy, b"x" * wire.MAX_PAYLOAD)
    pair.client.send_data(greedy, b"x" * wire.MAX_PAYLOAD)
    pair.client.send_data(greedy, b"x" * wire.MAX_PAYLOAD)
    pair.exchange()  # the whole 256 KiB window, which the server's reader never consumes
    # One more frame, read on its own as an interactive message would be.
    pair.server.receive_data(wire.frame(mux.FrameType.DATA, greedy, b"y"), pair.clock.now)
    pair.client.receive_data(pair.server.data_to_send(), pair.clock.now)
    pair.exchange()
    resets = pair.take("client", mux.StreamReset)
    assert [(r.stream_id, r.reason) for r in resets if isinstance(r, mux.StreamReset)] == [
        (greedy, mux.ResetReason.PROTOCOL)
    ]
    assert pair.server.stream_ids() == [good]
    assert pair.server.is_open


def test_data_beyond_the_connection_window_ends_the_connection() -> None:
    window = wire.MAX_PAYLOAD  # the smallest window a side may grant
    small = mux.Settings(flow=mux.FlowSettings(initial_window=window))
    pair = Pair.handshake(server_settings=small)
    first, second = open_tcp(pair), open_tcp(pair)
    # Under half the window: the server returns no credit yet.
    frame = wire.frame(mux.FrameType.DATA, first, b"x" * (window // 2 - 1))
    pair.server.receive_data(frame, pair.clock.now)
    # Then a frame, read on its own as an interactive message would be, that fits its
    # stream's window but not what is left of the connection's.
    frame = wire.frame(mux.FrameType.DATA, second, b"y" * (window // 2 + 2))
    pair.server.receive_data(frame, pair.clock.now)
    events = list(iter(pair.server.next_event, None))
    assert isinstance(events[-1], mux.ConnectionTerminated)
    assert events[-1].reason is mux.ResetReason.PROTOCOL
    assert "connection flow-control window exceeded" in events[-1].message


def test_data_for_a_closed_stream_on_its_own_is_dropped() -> None:
    pair = Pair.handshake()
    sid = open_tcp(pair)
    pair.server.reset_stream(sid, mux.ResetReason.CANCELLED)
    pair.server.receive_data(wire.frame(mux.FrameType.DATA, sid, b"late"), pair.clock.now)
    assert pair.server.next_event() is None
    assert pair.server.is_open


def test_transport_loss_terminates() -> None:
    pair = Pair.handshake()
    open_tcp(pair)
    pair.client.connection_lost("connection reset by peer")
    event = pair.client.next_event()
    assert isinstance(event, mux.ConnectionTerminated)
    assert event.remote
    assert pair.client.stream_ids() == []
    with pytest.raises(mux.LocalProtocolError):
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, ECHO))


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        (mux.Address("10.0.0.1", 0), "port"),
        (mux.Address("10.0.0.1", 70000), "port"),
        (mux.Address("a" * 254, 80), "not a valid name"),
        (mux.Address("", 80), "not a valid name"),
    ],
)
def test_open_rejects_bad_destinations(destination: mux.Address, message: str) -> None:
    pair = Pair.handshake()
    with pytest.raises(mux.LocalProtocolError, match=message):
        pair.client.open_stream(mux.OpenRequest(mux.Protocol.TCP, destination))
