"""Safe extraction of image layers, treating every layer as hostile.

An ``Unpacker`` applies layers, lowest first, to one directory tree, with OCI layer semantics:

- ``.wh.NAME`` removes NAME as the lower layers left it; ``.wh..wh..opq`` empties its directory of
  everything the lower layers put there. Entries of the same layer are never hidden by its own
  whiteouts, whatever their order in the archive.
- Regular files, directories, symlinks and hard links are created with the numeric owner, the mode
  (set-id bits kept: it is the container's filesystem), the mtime and the xattrs of the archive
  (xattrs the host filesystem refuses are skipped). Device nodes and FIFOs are never created on
  the host: they are skipped and counted.
- Symlink targets are stored as they are (``/bin/sh -> /bin/busybox`` is fine) and never followed:
  every path is walked from the root one component at a time with O_NOFOLLOW (see tree.py). An
  entry whose path is absolute, uses ``..``, or goes through a symlink is refused, and so is a hard
  link whose target is not an existing non-directory inside the tree.
- Limits bound the bytes written, the bytes read from the (decompressed) stream, the number of
  entries, the length of names and the size of extended headers; exceeding one raises
  InvalidArgument naming the layer and the limit.

A layer's uncompressed stream is hashed while it is read and compared with its diff-id.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hyper.errors import InvalidArgument
from hyper.images.compression import decompressed
from hyper.images.digest import Digest, DigestingReader, Readable
from hyper.images.tree import Parts, Tree, lstat_at, remove_at, show, split

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20
_XATTR_PREFIXES = ("user.", "trusted.", "security.capability")
_XATTR_REFUSED = ("trusted.overlay.", "user.overlay.")
_EXTENDED_HEADERS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_MAX_EXTENDED_HEADER = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int = 16 << 30
    """File bytes written for the whole image. The uncompressed tar streams read are bounded by
    ``stream_bytes`` (room for headers and padding)."""
    max_entries: int = 1_000_000
    """Archive entries (whiteouts included) for the whole image."""
    max_name_bytes: int = 4096
    """Length of an entry's path and of a link's target."""

    @property
    def stream_bytes(self) -> int:
        return 2 * self.max_bytes + (1 << 20)


@dataclass
class UnpackStats:
    layers: int = 0
    entries: int = 0
    file_bytes: int = 0
    stream_bytes: int = 0
    skipped_devices: int = 0
    skipped_xattrs: int = 0


class BoundedTarInfo(tarfile.TarInfo):
    """Refuses an extended (pax or GNU long-name) header too large to read into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> BoundedTarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED_HEADERS and info.size > _MAX_EXTENDED_HEADER:
            raise InvalidArgument(
                f"an extended tar header of {info.size} bytes (limit {_MAX_EXTENDED_HEADER})"
            )
        return info


class Unpacker:
    """Applies layers in order to the directory ``target`` (which must exist)."""

    def __init__(self, target: Path, limits: UnpackLimits | None = None) -> None:
        self.limits = limits or UnpackLimits()
        self.stats = UnpackStats()
        self._tree = Tree(target)
        self._dir_mtimes: dict[Parts, float] = {}
        self._chown = os.geteuid() == 0
        self._layer = ""

    def close(self) -> None:
        self._tree.close()

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, source: Readable, *, layer: str, diff_id: Digest | None = None) -> None:
        """Apply one layer (tar, tar+gzip or tar+zstd) read from ``source``."""
        self._layer = layer
        self.stats.layers += 1
        try:
            with decompressed(source) as plain:
                budget = self.limits.stream_bytes - self.stats.stream_bytes
                counted = DigestingReader(plain, limit=budget, limit_error=self._too_big)
                try:
                    self._apply_tar(counted)
                    counted.drain()
                finally:
                    self.stats.stream_bytes += counted.count
        except InvalidArgument as exc:
            if str(exc).startswith(f"layer {layer}"):
                raise
            raise InvalidArgument(f"layer {layer}: {exc}") from exc
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise InvalidArgument(f"layer {layer} is not a valid tar archive: {exc}") from exc
        if diff_id is not None and counted.digest != diff_id:
            raise InvalidArgument(
                f"layer {layer}: its content hashes to {counted.digest}, not its diff-id {diff_id}"
            )

    def finish(self) -> UnpackStats:
        """Set directory mtimes (last, since filling a directory changes its mtime)."""
        for parts in sorted(self._dir_mtimes, key=len, reverse=True):
            mtime_ns = int(self._dir_mtimes[parts] * 1e9)
            if not parts:
                os.utime(self._tree.fd, ns=(mtime_ns, mtime_ns))
                continue
            try:
                with self._tree.parent(parts) as parent:
                    if parent is None:
                        continue
                    st = lstat_at(parent, parts[-1])
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        os.utime(
                            parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False
                        )
            except InvalidArgument:
                continue  # the directory was replaced by a symlink in a later layer
        self._dir_mtimes.clear()
        return self.stats

    # -- one archive -----------------------------------------------------------------------

    def _apply_tar(self, stream: DigestingReader) -> None:
        buffered: IO[bytes] = io.BufferedReader(stream, _CHUNK)
        try:
            archive = tarfile.open(  # noqa: SIM115 (closed by the with below)
                fileobj=buffered, mode="r|", tarinfo=BoundedTarInfo
            )
        except tarfile.ReadError:
            if stream.count == 0:
                return  # an empty stream: an empty layer
            raise
        created: set[Parts] = set()
        with archive:
            for member in _members(archive):
                self._entry(archive, member, created)

    def _entry(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, created: set[Parts]
    ) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_entries:
            self._limit("max_entries", self.limits.max_entries)
        if len(member.name.encode("utf-8", "surrogateescape")) > self.limits.max_name_bytes:
            self._limit("max_name_bytes", self.limits.max_name_bytes)
        parts = split(member.name)
        if not parts:
            if member.isdir():  # the archive's root: "./"
                self._set_owner_mode(self._tree.fd, member)
                self._dir_mtimes[()] = member.mtime
            return
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, created)
            return
        if member.ischr() or member.isblk() or member.isfifo():
            self.stats.skipped_devices += 1
            log.warning("layer %s: skipping device or FIFO %s", self._layer, show(parts))
            return
        if member.issym() or member.islnk():
            if not member.linkname:
                raise InvalidArgument(f"{show(parts)}: a link with an empty target")
            if len(member.linkname.encode("utf-8", "surrogateescape")) > self.limits.max_name_bytes:
                self._limit("max_name_bytes", self.limits.max_name_bytes)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidArgument(f"{show(parts)}: unsupported tar entry type {member.type!r}")
        with self._tree.parent(parts, created=created) as parent:
            assert parent is not None
            name = parts[-1]
            if member.isdir():
                self._directory(parent, name, member)
                self._dir_mtimes[parts] = member.mtime
            elif member.islnk():
                self._hardlink(parent, name, parts, member)
            else:
                remove_at(parent, name)
                if member.issym():
                    self._symlink(parent, name, member)
                else:
                    self._file(archive, parent, name, member)
        # The entry and every directory above it are this layer's: its own whiteouts spare them.
        created.update(parts[:i] for i in range(1, len(parts) + 1))

    def _directory(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        st = lstat_at(parent, name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            remove_at(parent, name)
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            self._set_owner_mode(fd, member)
            self._set_xattrs(fd, member)
        finally:
            os.close(fd)

    def _file(
        self, archive: tarfile.TarFile, parent: int, name: str, member: tarfile.TarInfo
    ) -> None:
        if self.stats.file_bytes + member.size > self.limits.max_bytes:
            self._limit("max_bytes", self.limits.max_bytes)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=parent,
        )
        try:
            data = archive.extractfile(member)
            if data is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    while chunk := data.read(_CHUNK):
                        out.write(chunk)
            self.stats.file_bytes += member.size
            self._set_owner_mode(fd, member)
            self._set_xattrs(fd, member)
            mtime_ns = int(member.mtime * 1e9)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def _symlink(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        os.symlink(member.linkname, name, dir_fd=parent)
        if self._chown:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        mtime_ns = int(member.mtime * 1e9)
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, name: str, parts: Parts, member: tarfile.TarInfo) -> None:
        target = split(member.linkname)
        if not target:
            raise InvalidArgument(f"{show(parts)}: a hard link to the root")
        if target == parts:
            return
        with self._tree.parent(target) as source_dir:
            st = lstat_at(source_dir, target[-1]) if source_dir is not None else None
            if source_dir is None or st is None:
                raise InvalidArgument(
                    f"{show(parts)}: hard link target {show(target)} does not exist"
                )
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"{show(parts)}: hard link to directory {show(target)}")
            remove_at(parent, name)
            os.link(
                target[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False
            )

    # -- whiteouts -------------------------------------------------------------------------

    def _whiteout(self, parts: Parts, created: set[Parts]) -> None:
        directory = parts[:-1]
        dir_fd = self._tree.open_dir(directory, created=created)
        assert dir_fd is not None
        try:
            if parts[-1] == OPAQUE_MARKER:
                self._prune(dir_fd, directory, created)
                return
            name = parts[-1][len(WHITEOUT_PREFIX) :]
            if name.startswith(WHITEOUT_PREFIX):
                return  # aufs metadata (.wh..wh.plnk and the like): nothing to apply
            if name in ("", ".", ".."):
                raise InvalidArgument(f"invalid whiteout {show(parts)}")
            victim = (*directory, name)
            if victim not in created:
                remove_at(dir_fd, name)
                return
            st = lstat_at(dir_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                child = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
                try:
                    self._prune(child, victim, created)
                finally:
                    os.close(child)
        finally:
            os.close(dir_fd)

    def _prune(self, dir_fd: int, prefix: Parts, created: set[Parts]) -> None:
        """Remove what lower layers put under ``prefix``; keep what this layer made."""
        for entry in os.scandir(dir_fd):
            path = (*prefix, entry.name)
            if path not in created:
                remove_at(dir_fd, entry.name)
            elif entry.is_dir(follow_symlinks=False):
                child = os.open(
                    entry.name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=dir_fd,
                )
                try:
                    self._prune(child, path, created)
                finally:
                    os.close(child)

    # -- metadata --------------------------------------------------------------------------

    def _set_owner_mode(self, fd: int, member: tarfile.TarInfo) -> None:
        if self._chown:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)

    def _set_xattrs(self, fd: int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            if not name.startswith(_XATTR_PREFIXES) or name.startswith(_XATTR_REFUSED):
                self.stats.skipped_xattrs += 1
                continue
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError:
                self.stats.skipped_xattrs += 1

    def _limit(self, name: str, value: int) -> None:
        raise InvalidArgument(f"layer {self._layer} exceeds the limit {name}={value}")

    def _too_big(self) -> InvalidArgument:
        return InvalidArgument(
            f"layer {self._layer} exceeds the limit max_bytes={self.limits.max_bytes}"
            f" (its uncompressed stream passed {self.limits.stream_bytes} bytes)"
        )


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = archive.next()
        if member is None:
            return
        # A streaming TarFile remembers every member; forget them to keep memory flat.
        archive.members.clear()  # type: ignore[attr-defined]
        yield member


def unpack_layers(
    target: Path,
    layers: list[tuple[str, Readable, Digest | None]],
    limits: UnpackLimits | None = None,
) -> UnpackStats:
    """Apply ``(name, stream, diff_id)`` layers in order into ``target``; convenience for tests."""
    with Unpacker(target, limits) as unpacker:
        for name, source, diff_id in layers:
            unpacker.apply(source, layer=name, diff_id=diff_id)
        return unpacker.finish()
