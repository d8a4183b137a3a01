"""Volumes in the guest: a disk's file system mounted once, bound into containers' roots.

Each volume disk (found by its virtio-blk serial, like an image disk) is mounted once at
``/run/hyper/volumes/<disk>`` (read-only if the host attached the disk read-only) and shared by
the containers of the pod that use it; each container gets a bind mount of it at its path,
remounted read-only when the container asked for ``:ro``.

The path is resolved inside the container's root one component at a time with ``O_NOFOLLOW``,
from a descriptor of the root, creating missing directories: a symbolic link planted by the
image (``/data -> /``) or by the container cannot send the mount outside the root. The mount
then targets the final directory through ``/proc/self/fd/N``, never by a path that could be
swapped meanwhile. Teardown detaches each bind the same way.

A file system is frozen with ``FIFREEZE`` (writes block, the journal is committed and the
disk is consistent) while the host snapshots the disk, then thawed with ``FITHAW``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable

from hyper.errors import FailedPrecondition, InvalidArgument, NotFound
from hyper.proto.messages import VolumeMount
from hyperstart import syscalls

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)
_DIRECTORY = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


class GuestVolumes:
    def __init__(self, run: str, find_disk: Callable[[str], str]) -> None:
        self.run = run
        self._find_disk = find_disk  # serial -> /dev node; waits for a hot-plug
        self._users: dict[str, set[str]] = {}  # disk -> containers using it
        self._binds: dict[str, list[tuple[str, str]]] = {}  # container -> (disk, target)

    def mount(self, container: str, rootfs: str, mounts: tuple[VolumeMount, ...]) -> None:
        """Bind every volume into the container's root; on failure, undo what was done."""
        self._binds.setdefault(container, [])
        try:
            for mount in mounts:
                source = self._attach(mount)
                self._users[mount.disk].add(container)
                _bind(source, rootfs, mount.target, mount.readonly)
                self._binds[container].append((mount.disk, mount.target))
        except BaseException:
            self.release(container, rootfs)
            raise

    def release(self, container: str, rootfs: str) -> None:
        """Detach the container's binds; unmount a volume no container uses any more."""
        for disk, target in reversed(self._binds.pop(container, [])):
            _unbind(rootfs, target)
            users = self._users.get(disk, set())
            users.discard(container)
        for disk in [d for d, users in self._users.items() if not users]:
            del self._users[disk]
            path = f"{self.run}/volumes/{disk}"
            try:
                syscalls.umount(path)
            except OSError:
                syscalls.umount(path, syscalls.MNT_DETACH)
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def freeze(self, disk: str, frozen: bool) -> None:
        if disk not in self._users:
            raise NotFound(f"no volume with disk {disk!r} is mounted")
        fd = os.open(f"{self.run}/volumes/{disk}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, FIFREEZE if frozen else FITHAW, 0)
        except OSError as exc:
            state = "frozen" if frozen else "thawed"
            if exc.errno in (errno.EBUSY, errno.EINVAL):
                raise FailedPrecondition(f"volume {disk} is {state} already") from None
            if exc.errno == errno.EOPNOTSUPP:
                raise FailedPrecondition(f"the file system of {disk} cannot freeze") from None
            raise
        finally:
            os.close(fd)

    def _attach(self, mount: VolumeMount) -> str:
        target = f"{self.run}/volumes/{mount.disk}"
        if mount.disk in self._users:
            return target
        device = self._find_disk(mount.disk)
        os.makedirs(target, exist_ok=True)
        flags = syscalls.MS_NODEV | syscalls.MS_NOSUID
        if _read_only(device) or mount.fstype == "erofs":
            flags |= syscalls.MS_RDONLY
        try:
            syscalls.mount(device, target, mount.fstype, flags)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # A read-only disk (the device may not say so) whose journal needs replaying after
            # a crash cannot be replayed here: mount what the last checkpoint holds.
            flags |= syscalls.MS_RDONLY
            try:
                syscalls.mount(device, target, mount.fstype, flags)
            except OSError:
                print(f"hyperstart: {mount.disk} needs journal recovery: mounted noload")
                syscalls.mount(device, target, mount.fstype, flags, "noload")
        self._users[mount.disk] = set()
        return target


def _bind(source: str, rootfs: str, target: str, readonly: bool) -> None:
    fd = open_within(rootfs, target, create=True)
    try:
        syscalls.mount(source, f"/proc/self/fd/{fd}", None, syscalls.MS_BIND)
    finally:
        os.close(fd)
    if readonly:  # a bind's flags change only by a remount of the bind itself
        fd = open_within(rootfs, target, create=False)  # now the mount's root
        try:
            flags = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
            flags |= syscalls.MS_NOSUID | syscalls.MS_NODEV
            syscalls.mount("none", f"/proc/self/fd/{fd}", None, flags)
        finally:
            os.close(fd)


def _unbind(rootfs: str, target: str) -> None:
    try:
        fd = open_within(rootfs, target, create=False)
    except (OSError, FailedPrecondition, InvalidArgument):
        return  # the container moved it: the root's own lazy unmount detaches it
    try:
        syscalls.umount(f"/proc/self/fd/{fd}", syscalls.MNT_DETACH)
    except OSError as exc:
        print(f"hyperstart: unmounting volume at {target}: {exc}", flush=True)
    finally:
        os.close(fd)


def open_within(rootfs: str, target: str, *, create: bool) -> int:
    """An ``O_PATH`` descriptor of directory ``target`` inside ``rootfs``, never leaving it.

    Every component is opened relative to the previous one with ``O_NOFOLLOW``: a symbolic
    link anywhere on the way is refused, ``..`` is refused, missing directories are created
    (mode 0755) when ``create``."""
    parts = [p for p in target.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise InvalidArgument(f"mount target {target!r} must be absolute, without . or ..")
    fd = os.open(rootfs, _DIRECTORY)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise FailedPrecondition(
                        f"cannot mount a volume at {target}: {part} is not a directory "
                        "(symbolic links are not followed)"
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_only(device: str) -> bool:
    try:
        with open(f"/sys/block/{os.path.basename(device)}/ro") as file:
            return file.read().strip() == "1"
    except OSError:
        return False
