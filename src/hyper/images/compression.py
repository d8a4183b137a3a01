"""Layer compression: detected by magic bytes, never by what a manifest claims.

gzip uses the stdlib. zstd uses the ``zstandard`` module when it is importable and otherwise the
``zstd`` command through pipes (Debian's ``zstd`` package).
"""

from __future__ import annotations

import enum
import gzip
import importlib
import io
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any

from hyper.errors import InvalidArgument, Unavailable
from hyper.images.digest import Readable

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_COMMAND = "zstd"


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


@contextmanager
def decompressed(source: Readable) -> Iterator[Readable]:
    """The uncompressed stream of ``source``, whatever its compression."""
    head = _read_up_to(source, 4)
    stream = io.BufferedReader(_Prefixed(head, source))
    kind = detect(head)
    if kind is Compression.NONE:
        yield stream
    elif kind is Compression.GZIP:
        with gzip.GzipFile(fileobj=stream, mode="rb") as plain:
            yield plain
    else:
        module = _zstandard()
        if module is not None:
            with module.ZstdDecompressor().stream_reader(stream, read_across_frames=True) as reader:
                yield _ZstdErrors(reader, module.ZstdError)
        else:
            pipe = _ZstdPipe(stream)
            try:
                yield pipe
            finally:
                pipe.close()


def compress(data: bytes, kind: Compression) -> bytes:
    """Compress deterministically (gzip with mtime 0), for building layers."""
    if kind is Compression.NONE:
        return data
    if kind is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    module = _zstandard()
    if module is not None:
        return bytes(module.ZstdCompressor().compress(data))
    result = subprocess.run(
        [_zstd_command(), "-q", "-c", "-"], input=data, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise Unavailable(f"zstd failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _zstandard() -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


def _zstd_command() -> str:
    path = shutil.which(ZSTD_COMMAND)
    if path is None:
        raise Unavailable("a zstd layer needs the zstandard module or the zstd command")
    return path


def _read_up_to(source: Readable, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = source.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Prefixed(io.RawIOBase):
    """``head`` (already read from ``source``) followed by the rest of ``source``."""

    def __init__(self, head: bytes, source: Readable) -> None:
        super().__init__()
        self._head = head
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._source.read(len(view))
        view[: len(data)] = data
        return len(data)


class _ZstdPipe:
    """Decompress through ``zstd -d``: a thread feeds the source in, the caller reads out."""

    def __init__(self, source: Readable) -> None:
        self._proc = subprocess.Popen(
            [_zstd_command(), "-d", "-c", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._source = source
        self._error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, name="zstd-feed", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while chunk := self._source.read(1 << 20):
                stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # handed to the reader, raised there
            self._error = exc
        finally:
            with suppress(BrokenPipeError):
                stdin.close()

    def read(self, size: int = -1, /) -> bytes:
        stdout: IO[bytes] | None = self._proc.stdout
        assert stdout is not None
        data = stdout.read(size)
        if not data and size != 0:
            self._finish()
        return data

    def _finish(self) -> None:
        self._feeder.join()
        code = self._proc.wait()
        if self._error is not None:
            raise self._error
        if code != 0:
            stderr = self._proc.stderr.read() if self._proc.stderr else b""
            raise InvalidArgument(
                f"not a valid zstd stream: {stderr.decode(errors='replace').strip()}"
            )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._feeder.join()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


class _ZstdErrors:
    """The zstandard module's reader, its errors (a hostile stream) raised as InvalidArgument."""

    def __init__(self, reader: Any, error: type[Exception]) -> None:
        self._reader = reader
        self._error = error

    def read(self, size: int = -1, /) -> bytes:
        try:
            return bytes(self._reader.read(size))
        except self._error as exc:
            raise InvalidArgument(f"not a valid zstd stream: {exc}") from None
