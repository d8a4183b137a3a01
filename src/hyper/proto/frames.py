"""Frames of the host-guest agent protocol: the wire format, with no I/O.

Both ends of the virtio-serial channel (the host's agent client and hyperstart in the guest) use
this one codec, in the manner of h11: bytes go in, frames come out, and anything malformed raises
:class:`~hyper.errors.ProtocolError` at once. Nothing here blocks, reads or writes.

A frame is a 10-byte header followed by a payload::

    type:u8  flags:u8  stream:u32  length:u32  payload[length]      (big endian)

- ``MSG`` (1): a JSON object (a request, a response or an event); stream 0.
- ``DATA`` (2): bytes of one stdio stream (stream != 0); an empty payload ends the stream.
- ``WINDOW`` (3): a u32 increment of the sender's credit on a stream (see :mod:`.flow`).

The sizes are bounded so that a peer can never make the other side buffer more than one frame:
a header announcing more than the maximum is rejected before its payload arrives.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from hyper.errors import ProtocolError

HEADER = struct.Struct(">BBII")
MSG = 1
DATA = 2
WINDOW = 3
KINDS = (MSG, DATA, WINDOW)

MAX_MSG = 256 * 1024
"""Largest JSON message (an argv plus an environment fit easily)."""
MAX_DATA = 64 * 1024
"""Largest chunk of stdio in one frame; big enough to amortise the header, small enough to
interleave streams fairly."""
MAX_FRAME = HEADER.size + MAX_MSG
_WINDOW_PAYLOAD = struct.Struct(">I")
MAX_STREAM = 2**31 - 1


class Frame(NamedTuple):
    kind: int
    stream: int
    payload: bytes


def encode(kind: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame as bytes; refuses to build a frame the peer would reject."""
    _check(kind, 0, stream, len(payload))
    if kind == WINDOW and len(payload) != _WINDOW_PAYLOAD.size:
        raise ProtocolError("a WINDOW frame carries exactly 4 bytes")
    return HEADER.pack(kind, 0, stream, len(payload)) + payload


def encode_window(stream: int, increment: int) -> bytes:
    if not 0 < increment <= 2**31:
        raise ProtocolError(f"window increment {increment} out of range")
    return encode(WINDOW, stream, _WINDOW_PAYLOAD.pack(increment))


def decode_window(frame: Frame) -> int:
    (increment,) = _WINDOW_PAYLOAD.unpack(frame.payload)
    if increment == 0 or increment > 2**31:
        raise ProtocolError(f"window increment {increment} out of range")
    return int(increment)


def _check(kind: int, flags: int, stream: int, length: int) -> None:
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame type {kind}")
    if flags != 0:
        raise ProtocolError(f"reserved flags set: {flags:#x}")
    if stream > MAX_STREAM:
        raise ProtocolError(f"stream id {stream} out of range")
    if kind == MSG:
        if stream != 0:
            raise ProtocolError(f"a message frame on stream {stream}, expected 0")
        if length > MAX_MSG:
            raise ProtocolError(f"message of {length} bytes exceeds the limit of {MAX_MSG}")
        if length == 0:
            raise ProtocolError("empty message frame")
    else:
        if stream == 0:
            raise ProtocolError("a data or window frame on stream 0")
        if kind == DATA and length > MAX_DATA:
            raise ProtocolError(f"data frame of {length} bytes exceeds the limit of {MAX_DATA}")
        if kind == WINDOW and length != _WINDOW_PAYLOAD.size:
            raise ProtocolError(f"window frame of {length} bytes, expected 4")


class Decoder:
    """Turns a byte stream into frames; holds at most one incomplete frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete.

        After a protocol error the decoder stays failed: the stream cannot be trusted to be
        in sync any more, so every later call raises the same error.
        """
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        frames: list[Frame] = []
        try:
            while len(self._buffer) >= HEADER.size:
                kind, flags, stream, length = HEADER.unpack_from(self._buffer)
                _check(kind, flags, stream, length)
                end = HEADER.size + length
                if len(self._buffer) < end:
                    break
                frames.append(Frame(kind, stream, bytes(self._buffer[HEADER.size : end])))
                del self._buffer[:end]
        except ProtocolError as exc:
            self._failed = exc
            self._buffer.clear()
            raise
        return frames
