"""The guest cache directory: its layout, its lock and its atomic writes.

Layout under ``settings.paths.guest``::

    lock                          flock()ed by the one process building at a time
    guest.json                    manifest of the current build (replaced atomically, last)
    kernels/<package>_<version>/  a kernel package reduced to the kernel and its modules
    initrd-<inputs>.img           the initramfs of the current inputs

Readers never lock: a file is only ever replaced by ``rename``, so a reader sees the old or
the new version, whole. Builders hold the lock, re-check the manifest once they have it (the
other builder may have just built the same thing), and delete what the new manifest no longer
references.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "guest.json"
LOCK = "lock"
KERNELS = "kernels"
KEEP_PREVIOUS = 4
"""Old initrds and kernels kept besides the current ones (see `prune`)."""
_CHUNK = 1 << 20


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the cache's build lock (blocking until the other builder is done)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see either the old file or all of the new one."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    write_atomic(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def prune(root: Path, keep: set[Path]) -> None:
    """Remove the kernels and initrds (and leftovers of crashed builds) not in ``keep``, except
    the ``KEEP_PREVIOUS`` newest of each kind: a supervisor that restarts its pod (restart policy)
    or a template built before an upgrade still boots from the files it was started with.

    Call with the lock held, after the manifest that references ``keep`` is written.
    """
    initrds = _newest_first(root.glob("initrd-*.img"))[KEEP_PREVIOUS:]
    kernels = (
        _newest_first((root / KERNELS).iterdir())[KEEP_PREVIOUS:]
        if (root / KERNELS).is_dir()
        else []
    )
    candidates = [*initrds, *kernels, *root.glob(".*.tmp-*")]
    for path in candidates:
        if path in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    def modified(path: Path) -> float:
        try:
            return path.lstat().st_mtime
        except FileNotFoundError:
            return 0.0

    return sorted(paths, key=modified, reverse=True)
