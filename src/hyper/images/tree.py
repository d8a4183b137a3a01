"""A directory tree written into without ever following a symlink.

Every operation starts at the root's file descriptor and walks one component at a time with
``O_NOFOLLOW | O_DIRECTORY``, so a symlink anywhere in a path (planted by an earlier layer, or by
an earlier entry of the same layer) can neither redirect a write nor let it escape the root. Paths
are tuples of components, produced only by ``split``, which refuses absolute paths and ``..``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hyper.errors import InvalidArgument

Parts = tuple[str, ...]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_COMPONENT = 255


def split(name: str) -> Parts:
    """The components of an archive path; ``.`` and empty components are dropped.

    Absolute paths and ``..`` are refused: nothing in a layer has a reason to use them.
    """
    if name.startswith("/"):
        raise InvalidArgument(f"absolute path {name!r}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidArgument(f"path {name!r} climbs out with '..'")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
            raise InvalidArgument(f"path {name!r} has a component over {MAX_COMPONENT} bytes")
    return parts


def show(parts: Parts) -> str:
    return "/" + "/".join(parts)


class Tree:
    """The root directory of a tree, held open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd = os.open(root, DIR_FLAGS)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def parent(self, parts: Parts, *, created: set[Parts] | None = None) -> Iterator[int | None]:
        """The directory holding ``parts[-1]``, as an fd (closed on exit).

        With ``created``, missing directories are made (0755, root) and recorded there; without
        it, a missing directory yields None. A symlink or a non-directory on the way is refused.
        """
        fd = self.open_dir(parts[:-1], created=created)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def open_dir(self, parts: Parts, *, created: set[Parts] | None = None) -> int | None:
        fd = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if created is None:
                        os.close(fd)
                        return None
                    os.mkdir(name, 0o755, dir_fd=fd)
                    created.add(parts[: i + 1])
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.lstat(name, dir_fd=fd)
                    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                    raise InvalidArgument(f"{show(parts[: i + 1])} is {what}") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a whole directory tree, or anything else) without following links."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
