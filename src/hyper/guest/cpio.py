"""The ``newc`` cpio format that Linux unpacks as an initramfs, written in memory.

The archive is described, not copied from a staging tree: every entry carries its own mode,
owner and device numbers, so device nodes and root ownership never need root or a temporary
tree on the host. Entries are written sorted by path with every parent directory first (the
kernel's unpacker creates nothing implicitly), inode numbers are assigned in order and every
mtime is 0, so the same content always gives the same bytes.

A newc entry is a 110-byte ASCII header (``070701`` then thirteen 8-digit hex fields), the
NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes; ``TRAILER!!!`` ends the
archive. :func:`read` parses it back (for tests and ``hyper guest info``).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass

from hyper.errors import InvalidArgument

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13
_HEADER_LEN = len(MAGIC) + 8 * _FIELDS


@dataclass(frozen=True)
class Entry:
    """One member of the archive; ``path`` is relative to the root, without a leading slash."""

    path: str
    mode: int
    """File type and permission bits, as in ``st_mode``."""
    data: bytes = b""
    """File contents, or the target of a symbolic link."""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)
    """(major, minor) of a device node."""


def _normalize(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidArgument(f"bad archive path {path!r}")
    return "/".join(parts)


class Archive:
    """A set of entries keyed by path, with parent directories added as needed."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return _normalize(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, entry: Entry) -> None:
        parts = entry.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = self._entries.get(parent)
            if existing is None:
                self._entries[parent] = Entry(parent, stat.S_IFDIR | 0o755)
            elif not stat.S_ISDIR(existing.mode):
                raise InvalidArgument(f"{parent} is not a directory in the archive")
        old = self._entries.get(entry.path)
        if old is not None and stat.S_ISDIR(old.mode) and stat.S_ISDIR(entry.mode):
            pass  # an explicit directory replaces an implied one
        elif old is not None and old != entry:
            raise InvalidArgument(f"{entry.path} added twice with different content")
        self._entries[entry.path] = entry

    def add_dir(self, path: str, perm: int = 0o755) -> None:
        self._add(Entry(_normalize(path), stat.S_IFDIR | perm))

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._add(Entry(_normalize(path), stat.S_IFREG | perm, data))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(Entry(_normalize(path), stat.S_IFLNK | 0o777, target.encode()))

    def add_char_device(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._add(Entry(_normalize(path), stat.S_IFCHR | perm, rdev=(major, minor)))

    def entries(self) -> list[Entry]:
        return [self._entries[p] for p in sorted(self._entries)]

    def payload_size(self) -> int:
        """Bytes of file contents (what the unpacked initramfs occupies, roughly)."""
        return sum(len(e.data) for e in self._entries.values())

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        for ino, entry in enumerate(self.entries(), start=1):
            yield _member(entry, ino)
        yield _member(Entry(TRAILER, 0), 0)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(entry: Entry, ino: int) -> bytes:
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        nlink,
        0,  # mtime
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    )
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    return b"".join(
        (header, name, _pad(_HEADER_LEN + len(name)), entry.data, _pad(len(entry.data)))
    )


def read(blob: bytes) -> list[Entry]:
    """Parse an uncompressed newc archive (up to its trailer) back into entries."""
    entries: list[Entry] = []
    offset = 0
    while True:
        header = blob[offset : offset + _HEADER_LEN]
        if len(header) < _HEADER_LEN or header[:6] != MAGIC:
            raise InvalidArgument(f"no newc header at offset {offset}")
        values = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(_FIELDS)]
        mode, uid, gid, size = values[1], values[2], values[3], values[6]
        namesize = values[11]
        name_start = offset + _HEADER_LEN
        name = blob[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        if name == TRAILER:
            return entries
        data = blob[data_start : data_start + size]
        if len(data) != size:
            raise InvalidArgument(f"truncated archive member {name}")
        entries.append(Entry(name, mode, data, uid, gid, (values[9], values[10])))
        offset = data_start + size
        offset += -offset % 4
