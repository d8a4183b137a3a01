"""The stdio of one process, moved between its pipes (or pty master) and DATA streams.

An :class:`OutputPump` reads a process's stdout or stderr only while the host granted credit on
the stream, in chunks of at most ``frames.MAX_DATA``: a host that stops reading stalls the
process on a full pipe, which is the backpressure. An :class:`InputSink` holds the host's stdin
bytes (never more than one window, the host's credit) and hands credit back with WINDOW frames
as the process drains them. A pump or sink whose stream is 0 (not connected, or detached after
the host went away) discards output and ignores input.

The process owns the file descriptors; pumps and sinks never close them, so a pty master shared
by the output and the input side is closed once, by the process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import termios

from hyper.proto import flow, frames
from hyperstart.connection import Connection

_EOT = b"\x04"  # what a terminal reads as end of input, at the start of a line
_DRAIN_SLACK = 64 * 1024
"""After the process exited, what a pty may still hold in flight beyond what FIONREAD saw."""


def bytes_readable(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


class OutputPump:
    """Moves one output of a process to a DATA stream, within the stream's send credit."""

    def __init__(self, fd: int, stream: int, window: int) -> None:
        self.fd = fd
        self.stream = stream
        self.credit = flow.SendCredit(window)
        self.ended = False
        self._budget = -1  # bytes still to drain after the process exited; -1: still running

    def detach(self) -> None:
        """The host went away: from now on, output is read and dropped."""
        self.stream = 0

    def wants_read(self, conn: Connection | None) -> bool:
        if self.ended:
            return False
        return self.stream == 0 or conn is None or self.credit.available > 0

    def process_exited(self) -> None:
        """Drain what the pipe holds now, then end: a grandchild may keep it open forever."""
        if self.ended:
            return
        try:
            self._budget = bytes_readable(self.fd) + _DRAIN_SLACK
        except OSError:
            self._budget = _DRAIN_SLACK

    def drain(self, conn: Connection | None) -> None:
        """After the exit, read what is left as far as credit allows, without waiting for poll
        (a pipe that a grandchild holds open never polls readable once empty)."""
        while not self.ended and self._budget >= 0 and self.wants_read(conn):
            self.pump(conn)

    def pump(self, conn: Connection | None) -> None:
        """Read once and forward; ends the stream at EOF (or when drained after an exit)."""
        size = frames.MAX_DATA
        if self.stream and conn is not None:
            size = min(size, self.credit.available)
        if self._budget >= 0:
            size = min(size, self._budget)
            if size == 0 and self._budget == 0:
                self.end(conn)
                return
        if size <= 0:
            return
        try:
            data = os.read(self.fd, size)
        except (BlockingIOError, InterruptedError):
            if self._budget >= 0:
                self.end(conn)
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: a pty whose slave side is closed
                raise
            data = b""
        if not data:
            self.end(conn)
            return
        if self._budget >= 0:
            self._budget -= len(data)
        if self.stream and conn is not None:
            self.credit.available -= len(data)
            conn.send_data(self.stream, data)

    def end(self, conn: Connection | None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.stream and conn is not None:
            conn.send_data(self.stream, b"")


class InputSink:
    """Writes the host's stdin bytes to a process, returning credit as they are written."""

    def __init__(self, fd: int, stream: int, window: int, *, tty: bool) -> None:
        self.fd = fd
        self.stream = stream
        self.tty = tty
        self.window = flow.ReceiveWindow(window)
        self.closed = False
        """The process's stdin was closed (or broke); further input is dropped."""
        self._buffer = bytearray()
        self._eof = False

    def wants_write(self) -> bool:
        return not self.closed and (bool(self._buffer) or self._eof)

    def receive(self, payload: bytes, conn: Connection) -> None:
        """A DATA frame from the host; raises ProtocolError if it exceeds the credit."""
        self.window.received(len(payload))
        if not payload:
            self._eof = True
        elif self.closed:
            self._consumed(len(payload), conn)
        else:
            self._buffer += payload

    def write(self, conn: Connection | None) -> None:
        """Write what the process takes now; close its stdin after the host's end of stream."""
        if self.closed:
            return
        if self._buffer:
            try:
                written = os.write(self.fd, self._buffer[: frames.MAX_DATA])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    raise
                self.close(conn)
                return
            del self._buffer[:written]
            self._consumed(written, conn)
        if self._eof and not self._buffer:
            if self.tty:
                with contextlib.suppress(OSError):
                    os.write(self.fd, _EOT)
            self.close(conn)

    def close(self, conn: Connection | None) -> None:
        """Stop writing; the bytes still held are dropped, their credit returned."""
        if self.closed:
            return
        self.closed = True
        dropped = len(self._buffer)
        self._buffer.clear()
        if not self.tty:
            os.close(self.fd)
            self.fd = -1
        if dropped:
            self._consumed(dropped, conn)

    def _consumed(self, size: int, conn: Connection | None) -> None:
        grant = self.window.consumed(size)
        if grant and conn is not None and self.stream:
            conn.send_window(self.stream, grant)
