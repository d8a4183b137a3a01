"""Root filesystems for guests: an image's layers flattened into one read-only erofs image.

``erofs_image(store, image)`` unpacks every layer in order into a temporary tree, adds the mount
points the guest needs (``/proc /sys /dev /tmp /etc /run`` and empty ``/etc/hosts``,
``/etc/resolv.conf``, ``/etc/hostname`` to bind-mount over), and runs ``mkfs.erofs`` into
``<store>/rootfs/<manifest-hex>.erofs`` (uncompressed: under TCG the guest reads it fastest; see
docs/platform.md). The file appears by an atomic rename, so its presence means it is complete;
a second call returns it at once. An flock per image makes concurrent builders (threads or
processes) build once. The temporary tree is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from pathlib import Path

from hyper.errors import Internal, Unavailable
from hyper.images.files import file_lock, fsync_dir
from hyper.images.image import Image
from hyper.images.store import ImageStore, TenantImages
from hyper.images.tree import Tree, lstat_at, split
from hyper.images.unpack import Unpacker, UnpackLimits, UnpackStats

log = logging.getLogger(__name__)

MKFS_EROFS = "mkfs.erofs"
MOUNT_POINTS: dict[str, int] = {
    "proc": 0o555,
    "sys": 0o555,
    "dev": 0o755,
    "tmp": 0o1777,
    "etc": 0o755,
    "run": 0o755,
}
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")


def erofs_path(store: ImageStore, image: Image) -> Path:
    return store.rootfs_dir / f"{image.digest.hex}.erofs"


async def erofs_image(
    store: ImageStore, image: Image, *, limits: UnpackLimits | None = None
) -> Path:
    """The read-only root filesystem image of ``image``, built on first use."""
    path = erofs_path(store, image)
    if path.exists():
        return path
    lock = store.rootfs_dir / f"{image.digest.hex}.lock"
    async with _locked(store, lock):
        if path.exists():
            return path
        started = time.monotonic()
        workdir = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="rootfs-", dir=store.tmp_dir)
        )
        try:
            tree = workdir / "tree"
            tree.mkdir(mode=0o755)
            stats = await asyncio.to_thread(unpack_image, store, image, tree, limits)
            await asyncio.to_thread(add_mount_points, tree)
            partial = workdir / "rootfs.erofs"
            await _mkfs(partial, tree, image)
            await asyncio.to_thread(_publish, partial, path)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        log.info(
            "built %s for %s in %.2fs (%d entries, %d bytes, %d devices skipped)",
            path.name,
            image.reference.familiar,
            time.monotonic() - started,
            stats.entries,
            stats.file_bytes,
            stats.skipped_devices,
        )
    return path


def unpack_image(
    store: ImageStore | TenantImages, image: Image, target: Path, limits: UnpackLimits | None = None
) -> UnpackStats:
    """Flatten the layers of ``image`` into the existing directory ``target`` (blocking)."""
    with Unpacker(target, limits) as unpacker:
        for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
            with store.content.open(layer.digest) as blob:
                unpacker.apply(blob, layer=str(layer.digest), diff_id=diff_id)
                while blob.read(1 << 20):  # to the end, where the blob's digest is checked
                    pass
        return unpacker.finish()


def add_mount_points(target: Path) -> None:
    """Make the directories and files the guest mounts over, where the image lacks them.

    An existing entry of another kind (a symlink, say) is left alone: the guest resolves it
    inside the container's root.
    """
    with Tree(target) as tree:
        for name, mode in MOUNT_POINTS.items():
            if lstat_at(tree.fd, name) is None:
                os.mkdir(name, dir_fd=tree.fd)
                os.chmod(name, mode, dir_fd=tree.fd)
        for name in MOUNT_FILES:
            parts = split(name)
            dir_fd = tree.open_dir(parts[:-1])
            if dir_fd is None:
                continue
            try:
                if lstat_at(dir_fd, parts[-1]) is None:
                    fd = os.open(
                        parts[-1],
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                        0o644,
                        dir_fd=dir_fd,
                    )
                    os.close(fd)
            finally:
                os.close(dir_fd)


async def _mkfs(output: Path, tree: Path, image: Image) -> None:
    mkfs = shutil.which(MKFS_EROFS)
    if mkfs is None:
        raise Unavailable("mkfs.erofs is missing: install erofs-utils")
    fs_uuid = uuid.UUID(image.digest.hex[:32])
    proc = await asyncio.create_subprocess_exec(
        mkfs,
        "--quiet",
        f"-U{fs_uuid}",
        str(output),
        str(tree),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await proc.communicate()
    except BaseException:
        with suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise Internal(f"mkfs.erofs failed ({proc.returncode}): {out.decode(errors='replace')}")


def _publish(partial: Path, path: Path) -> None:
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, 0o444)
    os.replace(partial, path)
    fsync_dir(path.parent)


@asynccontextmanager
async def _locked(store: ImageStore, lock: Path) -> AsyncIterator[None]:
    """Hold a store lease and the image's build lock, waiting for each in a thread."""
    async with _in_thread(store.lease()), _in_thread(file_lock(lock)):
        yield


@asynccontextmanager
async def _in_thread(manager: AbstractContextManager[None]) -> AsyncIterator[None]:
    """Enter a blocking context manager in a thread; if cancelled while waiting, exit it as
    soon as the thread has entered it, so that a lock is never left held."""
    entering = asyncio.ensure_future(asyncio.to_thread(manager.__enter__))
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        entering.add_done_callback(lambda f: _exit_if_entered(manager, f))
        raise
    try:
        yield
    finally:
        manager.__exit__(None, None, None)


def _exit_if_entered(manager: AbstractContextManager[None], entered: asyncio.Future[None]) -> None:
    if not entered.cancelled() and entered.exception() is None:
        manager.__exit__(None, None, None)
