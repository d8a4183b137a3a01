"""Container logs: docker's json-file format, written by the shim, read and followed by hyperd.

Each container's output goes to ``<pod state dir>/containers/<name>/log.jsonl``, one JSON object
per line, as docker's json-file driver writes it::

    {"log": "text\\n", "stream": "stdout", "time": "2024-05-01T10:00:00.123456789Z"}

Why files, and this format: the logs must survive the daemon (the shim writes them while hyperd
is down) and the shim (``hyper logs`` of an exited container), tools that read docker's format
work on them, and the reader needs nothing from the writer but the files. Output is split on
newlines; a line longer than 16 KiB, or the rest at the end of a stream, is written as a partial
entry without the newline (as docker does). Bytes that are not UTF-8 are replaced.

Rotation renames ``log.jsonl`` to ``log.jsonl.1`` (shifting older ones up, dropping the oldest),
so a file keeps its inode for its whole life: a :class:`LogPosition` (inode, offset, and the time
of the file's first entry, since a deleted file's inode can be reused) names a place in the
stream of entries across rotations, which is what following needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

LOG_NAME = "log.jsonl"
MAX_LINE = 16 * 1024
STREAMS = ("stdout", "stderr")
FOLLOW_POLL = 0.1  # seconds between looks at the files while following


class LogPosition(NamedTuple):
    """Just after an entry: the file (inode, and the time of its first entry: "" if it had
    none yet) and the offset of the next entry in it."""

    inode: int
    offset: int
    tag: str = ""


@dataclass(frozen=True)
class LogEntry:
    log: str
    stream: str
    time: str  # RFC 3339, UTC, nanoseconds, as stored
    time_ns: int  # the same, as nanoseconds since the epoch
    position: LogPosition

    @property
    def timestamp(self) -> float:
        return self.time_ns / 1e9


def format_time(time_ns: int) -> str:
    """``2024-05-01T10:00:00.123456789Z``: docker's RFC 3339 with nanoseconds."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (any fraction, ``Z`` or an offset)."""
    main, _, rest = text.partition(".")
    fraction = ""
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    else:
        main, zone = text[:19], text[19:]
    if zone in ("Z", "z"):
        zone = "+00:00"
    moment = datetime.fromisoformat(main + zone)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return int(moment.timestamp()) * 1_000_000_000 + nanos


# ---------------------------------------------------------------- writing


class LogWriter:
    """Appends one container's output to its log, rotating at ``max_bytes``.

    Synchronous on purpose: each entry is one ``write`` of a whole line, at once on disk for a
    reader (no user-space buffer), and a line is small."""

    def __init__(self, directory: Path, *, max_bytes: int, max_files: int) -> None:
        if max_bytes < 1 or max_files < 1:
            raise ValueError("max_bytes and max_files must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._pending: dict[str, bytes] = {name: b"" for name in STREAMS}
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    @property
    def path(self) -> Path:
        return self.directory / LOG_NAME

    def write(self, stream: str, data: bytes) -> None:
        """Log what a process wrote on ``stream``: complete lines now, the rest when it grows
        to 16 KiB or the stream ends (:meth:`end`)."""
        pending = self._pending[stream] + data
        start = 0
        while True:
            newline = pending.find(b"\n", start, start + MAX_LINE)
            if newline >= 0:
                self._entry(stream, pending[start : newline + 1])
                start = newline + 1
            elif len(pending) - start >= MAX_LINE:
                cut = _char_boundary(pending, start, start + MAX_LINE)
                self._entry(stream, pending[start:cut])
                start = cut
            else:
                break
        self._pending[stream] = pending[start:]

    def end(self, stream: str) -> None:
        """The stream ended (the process exited): flush its partial line."""
        if self._pending[stream]:
            self._entry(stream, self._pending[stream])
            self._pending[stream] = b""

    def close(self) -> None:
        for stream in STREAMS:
            self.end(stream)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _entry(self, stream: str, raw: bytes) -> None:
        line = (
            json.dumps(
                {
                    "log": raw.decode("utf-8", errors="replace"),
                    "stream": stream,
                    "time": format_time(time.time_ns()),
                },
                ensure_ascii=False,
            ).encode()
            + b"\n"
        )
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(line)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        base = self.path
        if self.max_files == 1:
            base.unlink(missing_ok=True)
        else:
            Path(f"{base}.{self.max_files - 1}").unlink(missing_ok=True)
            for index in range(self.max_files - 2, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{base}.{index}", f"{base}.{index + 1}")
            os.rename(base, f"{base}.1")
        self._fd = self._open()
        self._size = 0

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)


def _char_boundary(data: bytes, start: int, cut: int) -> int:
    """``cut``, or the start of a UTF-8 character that ``cut`` would split (if after start)."""
    for lead in range(cut - 1, max(start, cut - 4) - 1, -1):
        byte = data[lead]
        if byte & 0xC0 != 0x80:  # not a continuation byte
            size = 1 if byte < 0xC0 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return lead if lead + size > cut and lead > start else cut
    return cut


# ---------------------------------------------------------------- reading


def log_files(directory: Path) -> list[Path]:
    """The log files of a container, oldest first."""
    rotated = []
    for path in directory.glob(LOG_NAME + ".*"):
        suffix = path.name[len(LOG_NAME) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), path))
    files = [path for _, path in sorted(rotated, reverse=True)]
    current = directory / LOG_NAME
    if current.exists():
        files.append(current)
    return files


def end_position(directory: Path) -> LogPosition | None:
    """Where the log ends now (None: no log yet); follow from here to see only new entries."""
    try:
        handle = os.open(directory / LOG_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(handle)
        return LogPosition(info.st_ino, info.st_size, _tag(handle))
    finally:
        os.close(handle)


def _tag(handle: int) -> str:
    """The time of a file's first entry: with the inode, what identifies the file."""
    head = os.pread(handle, 4 * MAX_LINE + 256, 0)
    newline = head.find(b"\n")
    if newline < 0:
        return ""
    entry = _parse(head[:newline], LogPosition(0, 0))
    return entry.time if entry is not None else ""


def _parse(line: bytes, position: LogPosition) -> LogEntry | None:
    try:
        obj = json.loads(line)
        log, stream, stamp = obj["log"], obj["stream"], obj["time"]
        if not (isinstance(log, str) and isinstance(stream, str) and isinstance(stamp, str)):
            return None
        return LogEntry(log, stream, stamp, parse_time(stamp), position)
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a crash, or not ours: skip it


def _entries(handle: int, inode: int, offset: int, tag: str = "") -> Iterator[LogEntry]:
    """The complete entries of an open file from ``offset`` on."""
    buffer = b""
    at = offset
    while chunk := os.pread(handle, 256 * 1024, at + len(buffer)):
        buffer += chunk
        start = 0
        while (newline := buffer.find(b"\n", start)) >= 0:
            if not tag:
                tag = _tag(handle)
            entry = _parse(buffer[start:newline], LogPosition(inode, at + newline + 1, tag))
            if entry is not None:
                yield entry
            start = newline + 1
        at += start
        buffer = buffer[start:]


class LogReader(Iterator[LogEntry]):
    """The entries of a container's log across its rotated files, oldest first.

    After the iteration, :attr:`position` is where reading stopped (whatever the filters let
    through): give it to :func:`follow_logs` to continue without a gap or a repeat."""

    def __init__(
        self,
        directory: Path,
        *,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> None:
        self.position: LogPosition | None = end_position(directory)
        self._tail = tail
        self._since = None if since is None else int(since * 1e9)
        self._until = None if until is None else int(until * 1e9)
        self._it = self._read(directory)

    def __next__(self) -> LogEntry:
        return next(self._it)

    def _read(self, directory: Path) -> Iterator[LogEntry]:
        if self._tail is not None and self._tail <= 0:
            return
        kept: deque[LogEntry] | None = deque(maxlen=self._tail) if self._tail else None
        for entry in self._scan(directory):
            if self._since is not None and entry.time_ns < self._since:
                continue
            if self._until is not None and entry.time_ns > self._until:
                continue
            if kept is None:
                yield entry
            else:
                kept.append(entry)
        if kept is not None:
            yield from kept

    def _scan(self, directory: Path) -> Iterator[LogEntry]:
        for path in log_files(directory):
            try:
                handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # rotated away meanwhile
            try:
                inode = os.fstat(handle).st_ino
                self.position = LogPosition(inode, 0, _tag(handle))
                for entry in _entries(handle, inode, 0, self.position.tag):
                    self.position = entry.position
                    yield entry
            finally:
                os.close(handle)


def read_logs(
    container_dir: Path,
    *,
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> LogReader:
    """A container's log entries, oldest first: the last ``tail`` ones (None: all) of those
    written between ``since`` and ``until`` (epoch seconds, None: unbounded)."""
    return LogReader(container_dir, tail=tail, since=since, until=until)


async def follow_logs(
    container_dir: Path,
    *,
    start_after: LogPosition | None,
    stop: asyncio.Event,
    poll: float = FOLLOW_POLL,
) -> AsyncGenerator[LogEntry, None]:
    """The entries written after ``start_after`` (None: after the end of the log now), as they
    are written, until ``stop`` is set; rotations are followed by inode. If the reader falls so
    far behind that its file was rotated away and deleted, it continues with the oldest file."""
    position = start_after if start_after is not None else end_position(container_dir)
    handle = -1
    inode = 0
    offset = 0
    try:
        while not stop.is_set():
            if handle < 0:
                handle, inode, offset = _open_at(container_dir, position)
            if handle >= 0:
                for entry in _entries(handle, inode, offset):
                    offset = entry.position.offset
                    yield entry
                    if stop.is_set():
                        return
                following = _next_file(container_dir, inode)
                if following is not None:
                    # Our file was rotated: what remains in it was written before the rename.
                    for entry in _entries(handle, inode, offset):
                        offset = entry.position.offset
                        yield entry
                    os.close(handle)
                    handle = -1
                    position = LogPosition(following, 0)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
    finally:
        if handle >= 0:
            os.close(handle)


def _open_at(directory: Path, position: LogPosition | None) -> tuple[int, int, int]:
    """Open the file holding ``position`` (or, if it is gone, the oldest one, at its start).

    A file is recognised by its inode and its first entry's time: once a file is deleted its
    inode may name a new one. (A file we hold open cannot be deleted for good, so from then on
    the inode alone is enough.)"""
    candidates: list[tuple[int, int, str]] = []  # (handle, inode, tag), oldest first
    for path in log_files(directory):
        with contextlib.suppress(FileNotFoundError):
            handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            candidates.append((handle, os.fstat(handle).st_ino, _tag(handle)))
    if not candidates:
        return -1, 0, 0
    chosen, offset = candidates[0], 0
    if position is None:
        chosen = candidates[-1]
    else:
        for candidate in candidates:
            _, inode, tag = candidate
            if inode == position.inode and (not position.tag or tag == position.tag):
                chosen, offset = candidate, position.offset
                break
    for handle, _, _ in candidates:
        if handle != chosen[0]:
            os.close(handle)
    return chosen[0], chosen[1], offset


def _next_file(directory: Path, inode: int) -> int | None:
    """The inode of the file after the one with ``inode``, if that one is not the current log
    any more (None: it still is, or the current log is being replaced this instant)."""
    current = end_position(directory)
    if current is None or current.inode == inode:
        return None
    chain: list[int] = []
    for path in log_files(directory):
        with contextlib.suppress(FileNotFoundError):
            chain.append(path.stat().st_ino)
    if inode in chain:
        index = chain.index(inode)
        return chain[index + 1] if index + 1 < len(chain) else None
    return chain[0] if chain else None
