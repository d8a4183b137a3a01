"""One session with the host over the agent port: framing in, buffered frames out.

The port is non-blocking. Everything the agent sends goes through :class:`Connection`'s outbox
and leaves when the port can take it (a virtio-serial write moves at most 32 KiB, so writes loop).
The outbox stays bounded because output pumps read only within their stream's credit.
"""

from __future__ import annotations

import errno
import os
from collections import deque

from hyper.proto import flow, frames, messages

_READ_SIZE = 256 * 1024
_WRITE_SIZE = 32 * 1024


class Connection:
    """The framing state of one connection; created with the port's fd, never reused."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.greeted = False
        """True once ``hello`` agreed on a version and a window."""
        self.window = flow.DEFAULT_WINDOW
        self._decoder = frames.Decoder()
        self._chunks: deque[memoryview] = deque()
        self.buffered = 0
        """Bytes queued and not yet written to the port."""

    # ------------------------------------------------------------ sending

    def send_message(self, payload: bytes) -> None:
        self._queue(frames.encode(frames.MSG, 0, payload))

    def send_result(self, request_id: int, result: dict[str, object]) -> None:
        self.send_message(messages.encode_result(request_id, result))

    def send_error(self, request_id: int, kind: str, message: str) -> None:
        self.send_message(messages.encode_error(request_id, kind, message))

    def send_event(self, name: str, fields: dict[str, object]) -> None:
        self.send_message(messages.encode_event(name, fields))

    def send_data(self, stream: int, payload: bytes) -> None:
        """A chunk of output (at most ``frames.MAX_DATA``), or ``b""`` to end the stream."""
        self._queue(frames.encode(frames.DATA, stream, payload))

    def send_window(self, stream: int, increment: int) -> None:
        self._queue(frames.encode_window(stream, increment))

    def _queue(self, frame: bytes) -> None:
        self._chunks.append(memoryview(frame))
        self.buffered += len(frame)

    def flush(self) -> None:
        """Write what the port takes now; raises OSError if the port failed."""
        while self._chunks:
            chunk = self._chunks[0]
            try:
                written = os.write(self.fd, chunk[:_WRITE_SIZE])
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            self.buffered -= written
            if written == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[written:]

    # ------------------------------------------------------------ receiving

    def receive(self) -> list[frames.Frame] | None:
        """Frames completed by what the port holds now; ``None`` when the host went away.

        Raises :class:`~hyper.errors.ProtocolError` for a malformed frame.
        """
        try:
            data = os.read(self.fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.EIO):
                return None
            raise
        if not data:
            return None
        return self._decoder.feed(data)
