import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyper.errors import ProtocolError
from hyper.proto import flow, frames


def test_round_trip_split_anywhere():
    wire = (
        frames.encode(frames.MSG, 0, b'{"event":"ready"}')
        + frames.encode(frames.DATA, 5, b"hello")
        + frames.encode(frames.DATA, 5)
        + frames.encode_window(7, 1024)
    )
    for cut in range(len(wire) + 1):
        decoder = frames.Decoder()
        got = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert [(f.kind, f.stream) for f in got] == [(1, 0), (2, 5), (2, 5), (3, 7)]
        assert got[1].payload == b"hello" and got[2].payload == b""
        assert frames.decode_window(got[3]) == 1024
        assert decoder.pending == 0


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (frames.HEADER.pack(9, 0, 0, 1), "unknown frame type"),
        (frames.HEADER.pack(frames.MSG, 1, 0, 1), "reserved flags"),
        (frames.HEADER.pack(frames.MSG, 0, 3, 1), "on stream 3"),
        (frames.HEADER.pack(frames.MSG, 0, 0, frames.MAX_MSG + 1), "exceeds the limit"),
        (frames.HEADER.pack(frames.MSG, 0, 0, 0), "empty message"),
        (frames.HEADER.pack(frames.DATA, 0, 0, 1), "stream 0"),
        (frames.HEADER.pack(frames.DATA, 0, 1, frames.MAX_DATA + 1), "exceeds the limit"),
        (frames.HEADER.pack(frames.WINDOW, 0, 1, 8), "expected 4"),
        (frames.HEADER.pack(frames.DATA, 0, 2**32 - 1, 1), "out of range"),
    ],
)
def test_bad_headers_are_rejected_before_their_payload(header, message):
    decoder = frames.Decoder()
    with pytest.raises(ProtocolError, match=message):
        decoder.feed(header)  # the payload never arrives: no buffering of a huge frame
    with pytest.raises(ProtocolError):
        decoder.feed(b"")  # stays failed: the stream is out of sync for good


def test_zero_window_increment_rejected():
    frame = frames.Frame(frames.WINDOW, 1, struct.pack(">I", 0))
    with pytest.raises(ProtocolError):
        frames.decode_window(frame)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_decoder_never_crashes_and_stays_bounded(chunks):
    decoder = frames.Decoder()
    for chunk in chunks:
        try:
            for frame in decoder.feed(chunk):
                assert frame.kind in frames.KINDS
        except ProtocolError:
            return
        assert decoder.pending < frames.MAX_FRAME


def test_flow_control_accounting():
    window = flow.ReceiveWindow(100)
    window.received(60)
    assert window.consumed(40) == 0  # less than half a window: no frame yet
    assert window.consumed(20) == 60
    window.received(100)
    with pytest.raises(ProtocolError, match="credit"):
        window.received(1)
    credit = flow.SendCredit(10)
    assert credit.take(25) == 10
    assert credit.take(5) == 0
    credit.grant(7)
    assert credit.take(5) == 5
    with pytest.raises(ProtocolError):
        credit.grant(2**31)
