"""Flow-controlled stdio streams over one agent connection.

An :class:`OutputStream` receives what a process writes (guest to host). It holds at most one
window of bytes: credit is handed back only as the consumer reads, so a slow consumer slows the
process in the guest instead of filling the host's memory. An :class:`InputStream` sends to a
process's stdin, never beyond the credit the peer granted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from hyper.errors import ProtocolError, Unavailable
from hyper.proto import flow, frames

SendFrame = Callable[[bytes], Awaitable[None]]


class OutputStream:
    """Bytes arriving from the peer on one stream, read by one consumer."""

    def __init__(self, stream: int, window: int, send: SendFrame) -> None:
        self.stream = stream
        self._window = flow.ReceiveWindow(window)
        self._send = send
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed(self, data: bytes) -> None:
        """Called by the connection for each DATA frame; an empty one ends the stream."""
        if self._eof:
            raise ProtocolError(f"data on stream {self.stream} after its end")
        if data:
            self._window.received(len(data))
            self._chunks.append(data)
        else:
            self._eof = True
        self._readable.set()

    def fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
            self._eof = True
        self._readable.set()

    async def read(self) -> bytes:
        """The next chunk, or b"" once the stream ended; raises if the connection broke."""
        while not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        grant = self._window.consumed(len(chunk))
        if grant and not self._eof:
            # If this fails the read still succeeds; the connection's own error surfaces later.
            with contextlib.suppress(ConnectionError, Unavailable):
                await self._send(frames.encode_window(self.stream, grant))
        return chunk

    async def read_all(self, limit: int = 1 << 30) -> bytes:
        parts = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"stream {self.stream} exceeded {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class InputStream:
    """Bytes this side sends to the peer on one stream, within the peer's credit."""

    def __init__(self, stream: int, window: int, send: SendFrame) -> None:
        self.stream = stream
        self._credit = flow.SendCredit(window)
        self._send = send
        self._credit_changed = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def grant(self, increment: int) -> None:
        self._credit.grant(increment)
        self._credit_changed.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._credit_changed.set()

    async def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting for credit as needed."""
        if self._closed:
            raise ValueError(f"stream {self.stream} is closed")
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise self._error
            size = self._credit.take(min(len(view), frames.MAX_DATA))
            if not size:
                self._credit_changed.clear()
                await self._credit_changed.wait()
                continue
            await self._send(frames.encode(frames.DATA, self.stream, bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        """End the stream: the process reads EOF."""
        if not self._closed:
            self._closed = True
            if self._error is None:
                await self._send(frames.encode(frames.DATA, self.stream))
