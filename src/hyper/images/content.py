"""The content store: blobs named by their sha256, stored once, verified twice.

Layout under the store's root::

    blobs/sha256/<hex>     one file per blob, read-only once in place
    tmp/                   ingests in progress (same filesystem, so that the final rename is atomic)

A blob arrives through ``ingest``/``put``: written to a temporary file, hashed while written,
fsynced, compared with the digest the caller expected, and only then renamed into place. A blob is
verified again whenever it is read back through ``open``/``read`` (the reader raises at end of file
if the bytes on disk no longer match their name), or on demand with ``verify``.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hyper.errors import Internal, InvalidArgument, NotFound
from hyper.images.digest import ALGORITHM, Digest, DigestingReader, Readable
from hyper.images.files import fsync_dir

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / ALGORITHM
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    @property
    def tmp_dir(self) -> Path:
        """A directory on the store's filesystem for work in progress."""
        return self._tmp

    def path(self, digest: Digest) -> Path:
        return self._blobs / digest.hex

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None

    def __iter__(self) -> Iterator[Digest]:
        for entry in os.scandir(self._blobs):
            try:
                yield Digest(entry.name)
            except InvalidArgument:
                log.warning("ignoring stray file %s in the blob store", entry.path)

    # -- writing ---------------------------------------------------------------------------

    def put(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Store ``data``; with ``expected``, refuse it unless it hashes to that digest."""
        digest = Digest.of(data)
        if expected is not None and digest != expected:
            raise InvalidArgument(
                f"content does not match its digest: expected {expected}, got {digest}"
            )
        if self.exists(digest):
            return digest
        return self.ingest(io.BytesIO(data), digest, len(data))

    def ingest(
        self,
        source: Readable,
        expected: Digest | None = None,
        size: int | None = None,
        *,
        max_size: int | None = None,
    ) -> Digest:
        """Copy ``source`` into the store and return its digest.

        ``expected`` and ``size`` are checked once the stream ends; ``max_size`` stops the copy
        as soon as it is exceeded. Nothing is left behind on failure. A blob that is already
        present is kept as it is (stored once).
        """
        limit = max_size if max_size is not None else size
        reader = DigestingReader(
            source,
            limit=limit,
            limit_error=lambda: InvalidArgument(f"content exceeds its size of {limit} bytes"),
        )
        fd, tmp_name = tempfile.mkstemp(prefix="ingest-", dir=self._tmp)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                buffer = bytearray(_CHUNK)
                while n := reader.readinto(buffer):
                    out.write(memoryview(buffer)[:n])
                out.flush()
                os.fchmod(out.fileno(), 0o444)
                os.fsync(out.fileno())
            digest = reader.digest
            if expected is not None and digest != expected:
                raise InvalidArgument(
                    f"content does not match its digest: expected {expected}, got {digest}"
                )
            if size is not None and reader.count != size:
                raise InvalidArgument(f"content of {digest} is {reader.count} bytes, not {size}")
            if self.exists(digest):
                tmp.unlink()
            else:
                os.replace(tmp, self.path(digest))
                fsync_dir(self._blobs)
            return digest
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def install(self, path: Path, digest: Digest) -> None:
        """Move a complete file of the caller's (in ``tmp_dir``) into place as ``digest``.

        The caller has hashed every byte it wrote to ``path`` and found ``digest`` (a download
        hashed while it streams, resumed or not): this is the rename half of ``ingest``.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Internal(f"{path} is not a regular file")
            os.fchmod(fd, 0o444)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.exists(digest):
            path.unlink()
            return
        os.replace(path, self.path(digest))
        fsync_dir(self._blobs)

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def open(self, digest: Digest) -> BinaryIO:
        """A reader of the blob that raises Internal at end of file if the content is corrupt."""
        raw = self._open_raw(digest)
        expected_size = os.fstat(raw.fileno()).st_size

        def check(actual: Digest, count: int) -> None:
            if actual != digest or count != expected_size:
                raise Internal(
                    f"blob {digest} is corrupt on disk (it hashes to {actual});"
                    " remove the image and fetch it again"
                )

        return io.BufferedReader(DigestingReader(raw, on_eof=check, close_source=True), _CHUNK)

    def read(self, digest: Digest, max_size: int) -> bytes:
        """The whole blob, verified; refused without reading it if over ``max_size`` bytes."""
        with self._open_raw(digest) as raw:
            size = os.fstat(raw.fileno()).st_size
            if size > max_size:
                raise InvalidArgument(f"blob {digest} is {size} bytes, over the {max_size} limit")
            data = raw.read(max_size + 1)
        if Digest.of(data) != digest:
            raise Internal(f"blob {digest} is corrupt on disk; remove the image and fetch it again")
        return data

    def verify(self, digest: Digest) -> None:
        """Read the whole blob and raise Internal unless it still matches its digest."""
        with self.open(digest) as reader:
            while reader.read(_CHUNK):
                pass

    def _open_raw(self, digest: Digest) -> BinaryIO:
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Internal(f"blob {digest} is not a regular file")
        return os.fdopen(fd, "rb", buffering=0)
