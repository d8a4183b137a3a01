"""The tags: a small JSON file mapping reference keys to manifest digests.

Keys are canonical references: ``docker.io/library/busybox:latest`` for a tag, or
``docker.io/library/busybox@sha256:...`` for an image kept by digest only. Readers read the file
without a lock (it is only ever replaced by an atomic rename); writers serialize on an flock held
around read-modify-write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hyper.errors import Internal, InvalidArgument
from hyper.images.digest import Digest
from hyper.images.files import atomic_write, file_lock

T = TypeVar("T")
_VERSION = 1


class RefStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_name(path.name + ".lock")

    def read(self) -> dict[str, Digest]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(data)
            if doc.get("version") != _VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            return {key: Digest.parse(value) for key, value in doc["refs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
            raise Internal(f"the image tags file {self.path} is damaged: {exc}") from exc

    def get(self, key: str) -> Digest | None:
        return self.read().get(key)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock (no tag changes meanwhile)."""
        with file_lock(self._lock):
            yield

    def update(self, change: Callable[[dict[str, Digest]], T]) -> T:
        """Apply ``change`` to the current mapping under the lock and store it atomically."""
        with self.locked():
            refs = self.read()
            before = dict(refs)
            result = change(refs)
            if refs != before:
                doc = {"version": _VERSION, "refs": {k: str(v) for k, v in sorted(refs.items())}}
                with atomic_write(self.path) as out:
                    out.write(json.dumps(doc, indent=1).encode() + b"\n")
            return result
