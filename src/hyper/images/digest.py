"""Content digests (``sha256:<hex>``) and a reader that computes one while it streams.

Only sha256 is supported: it is what every registry and every image in use produces, and one
algorithm keeps the blob store's paths simple (``blobs/sha256/<hex>``). A digest string is
validated before it is ever used to build a path, so a hostile manifest cannot name a file outside
the store.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hyper.errors import InvalidArgument

ALGORITHM = "sha256"
_HEX = re.compile(r"[0-9a-f]{64}")
_ANY_ALGORITHM = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class Readable(Protocol):
    """Anything with a ``read`` that returns bytes (files, pipes, decompressors)."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True, order=True)
class Digest:
    """A validated ``sha256:<64 lowercase hex>`` content digest."""

    hex: str

    def __post_init__(self) -> None:
        if not _HEX.fullmatch(self.hex):
            raise InvalidArgument(
                f"a sha256 digest needs 64 lowercase hex digits, not {self.hex!r}"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, value = text.partition(":")
        if not sep or not _ANY_ALGORITHM.fullmatch(text):
            raise InvalidArgument(f"invalid digest {text!r}: expected algorithm:hex")
        if algorithm != ALGORITHM:
            raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {text!r}")
        if not _HEX.fullmatch(value):
            raise InvalidArgument(f"invalid digest {text!r}: sha256 needs 64 lowercase hex digits")
        return cls(value)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    @property
    def algorithm(self) -> str:
        return ALGORITHM

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.hex}"


class DigestingReader(io.RawIOBase):
    """Pass bytes through from ``source`` while hashing and counting them.

    ``limit`` bounds how many bytes may pass: one more raises ``limit_error()``. ``on_eof`` is
    called once, with the digest and the count, when the source reports its end: the place to
    check the content against what it should be (it may raise).
    """

    def __init__(
        self,
        source: Readable,
        *,
        limit: int | None = None,
        limit_error: Callable[[], Exception] | None = None,
        on_eof: Callable[[Digest, int], None] | None = None,
        close_source: bool = False,
    ) -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()
        self._limit = limit
        self._limit_error = limit_error
        self._on_eof = on_eof
        self._eof = False
        self._close_source = close_source
        self.count = 0

    def close(self) -> None:
        if not self.closed and self._close_source:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        if not data:
            if not self._eof:
                self._eof = True
                if self._on_eof is not None:
                    self._on_eof(self.digest, self.count)
            return 0
        self._hash.update(data)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            if self._limit_error is not None:
                raise self._limit_error()
            raise InvalidArgument(f"stream exceeds its limit of {self._limit} bytes")
        view[: len(data)] = data
        return len(data)

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read the rest of the source (hashing and counting it, within the limit)."""
        buffer = bytearray(chunk)
        while self.readinto(buffer):
            pass

    @property
    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest())

    @property
    def at_eof(self) -> bool:
        return self._eof
