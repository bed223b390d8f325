"""The worked example of docs/reference/wire-protocol.md, byte for byte."""

from __future__ import annotations

from telepresence.wire import mux
from telepresence.wire.mux import _frames as wire


def frames_without_pings(data: bytes) -> bytes:
    kept = bytearray()
    if data.startswith(mux.MAGIC):
        kept += mux.MAGIC
        data = data[len(mux.MAGIC) :]
    while data:
        length = int.from_bytes(data[8:12], "big")
        frame, data = data[: 12 + length], data[12 + length :]
        if frame[1] != mux.FrameType.PING:
            kept += frame
    return bytes(kept)


def test_worked_example_matches_the_implementation() -> None:
    client = mux.Connection(mux.Role.CLIENT, now=0.0, credentials=b"hi")
    server = mux.Connection(mux.Role.SERVER, now=0.0)
    hello = client.data_to_send()
    assert hello == bytes.fromhex(
        "89 54 50 4d 55 58 0d 0a01 00 00 00 00000000 00000010 00000400 00040000 00040000 0002 6869"
    )
    server.receive_data(hello, 0.0)
    server.accept_hello(0.0)
    answer = server.data_to_send()
    assert frames_without_pings(answer) == bytes.fromhex(
        "01 00 00 00 00000000 0000000e 00000400 00040000 00040000 0000"
    )
    client.receive_data(answer, 0.0)
    client.data_to_send()  # the client's PING
    stream_id = client.open_stream(mux.OpenRequest(mux.Protocol.TCP, mux.Address("10.96.0.12", 80)))
    client.send_data(stream_id, b"hi")
    assert client.data_to_send() == bytes.fromhex(
        "01 01 00 00 00000001 00000009 01 01 0a60000c 0050 0001 02 00 00 00000001 00000002 6869"
    )
    server.receive_data(wire.frame(mux.FrameType.PING, 0, bytes(8)), 0.0)
    server.data_to_send()
    server.receive_data(
        bytes.fromhex(
            "01 01 00 00 00000001 00000009 01 01 0a60000c 0050 0001 02 00 00 00000001 00000002 6869"
        ),
        0.0,
    )
    server.accept_stream(stream_id)
    server.send_data(stream_id, b"ok")
    assert server.data_to_send() == bytes.fromhex(
        "01 01 01 00 00000001 00000000 01 02 00 00 00000001 00000002 6f6b"
    )
