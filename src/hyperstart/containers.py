"""Containers: where their processes run (a root filesystem and a cgroup), and their teardown.

:class:`GuestContainers` is the real thing, in the VM: the image disk (found by its virtio-blk
serial) is mounted read-only once per disk and shared; each container gets a tmpfs scratch
layer, an overlay root, and its own /proc, /sys, /dev, /etc/hostname and /etc/hosts inside it,
plus a cgroup. All containers share the guest's network namespace (they reach each other over
localhost). :class:`HostDirectoryBackend` runs processes on a host directory with no mounts and
no cgroup, so that the agent runs in unit tests on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import NamedTuple

from hyper.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from hyper.proto.messages import AddContainer
from hyperstart import cgroups, syscalls
from hyperstart.volumes import GuestVolumes

RUN = "/run/hyper"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
_DISK_WAIT = 30.0  # seconds for a hot-plugged disk to show up (a few ms, unless the host is
# overloaded: 100 TCG guests starting at once on 2 CPUs took more than 5 s)
_INJECTED = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
"""Files the agent writes into the upper layer: the VM's, not the container's changes."""


class Container(NamedTuple):
    id: str
    rootfs: str | None
    """Directory to chroot into; None: run on the agent's own root."""
    cgroup: str | None
    upper: str | None = None
    """The overlay's upper directory (the container's changes); None: nothing to export."""
    excluded: tuple[str, ...] = ()
    """Paths of ``upper`` (relative) that the agent wrote, left out of an export."""


class Containers:
    """What the agent needs of a container backend (the interface, and its bookkeeping)."""

    def __init__(self) -> None:
        self.hostname = os.uname().nodename
        self.nameservers: tuple[str, ...] = ()  # from setup_network: each container's resolv.conf
        self.extra_hosts: tuple[tuple[str, str], ...] = ()  # (address, name): links' aliases
        self._containers: dict[str, Container] = {}

    def get(self, container_id: str) -> Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"no container {container_id!r}") from None

    def ids(self) -> list[str]:
        return list(self._containers)

    def add(self, spec: AddContainer) -> Container:
        if spec.container in self._containers:
            raise AlreadyExists(f"container {spec.container!r} exists already")
        container = self._create(spec)
        self._containers[spec.container] = container
        return container

    def kill(self, container_id: str) -> None:
        """SIGKILL every process of the container (the agent also kills those it spawned)."""
        container = self.get(container_id)
        if container.cgroup:
            cgroups.kill(container.cgroup)

    def remove(self, container_id: str) -> None:
        container = self.get(container_id)
        self.kill(container_id)
        self._destroy(container)
        del self._containers[container_id]

    def process_count(self, container_id: str) -> int | None:
        """Processes in the container, or None if the backend cannot tell."""
        container = self.get(container_id)
        return cgroups.count(container.cgroup) if container.cgroup else None

    def pids(self, container_id: str) -> list[int] | None:
        """The processes in the container, or None if the backend cannot tell."""
        container = self.get(container_id)
        return cgroups.pids(container.cgroup) if container.cgroup else None

    def remove_all(self) -> None:
        for container_id in self.ids():
            try:
                self.remove(container_id)
            except OSError as exc:
                print(f"hyperstart: removing {container_id}: {exc}", flush=True)

    def freeze(self, disk: str, frozen: bool) -> None:
        """Freeze or thaw a volume's file system (for a consistent snapshot of its disk)."""
        raise FailedPrecondition("this backend has no volumes")

    def _create(self, spec: AddContainer) -> Container:
        raise NotImplementedError

    def _destroy(self, container: Container) -> None:
        raise NotImplementedError


class HostDirectoryBackend(Containers):
    """Runs every container's processes on ``root`` (``/``: no chroot) with no mounts: tests.

    ``upper``, if given, plays the overlay upper directory of every container (for export)."""

    def __init__(self, root: str = "/", upper: str | None = None) -> None:
        super().__init__()
        self.root = root
        self.upper = upper

    def _create(self, spec: AddContainer) -> Container:
        if spec.mounts:
            raise FailedPrecondition("this backend cannot mount volumes")
        root = None if self.root == "/" else self.root
        return Container(spec.container, root, None, self.upper)

    def _destroy(self, container: Container) -> None:
        pass


class GuestContainers(Containers):
    """Containers on images from disks (virtio-blk or SCSI, found by serial), with overlay roots
    and cgroups."""

    def __init__(self, run: str = RUN, cgroup_root: str = cgroups.ROOT) -> None:
        super().__init__()
        self.run = run
        self.cgroup_root = cgroup_root
        self._images: dict[str, set[str]] = {}  # disk -> containers using it
        self._disk_of: dict[str, str] = {}
        self._mounts: dict[str, list[str]] = {}  # container -> its mount points, in order
        self.volumes = GuestVolumes(run, _find_disk)

    def freeze(self, disk: str, frozen: bool) -> None:
        self.volumes.freeze(disk, frozen)

    # ------------------------------------------------------------ create

    def _create(self, spec: AddContainer) -> Container:
        mounted: list[str] = []
        self._mounts[spec.container] = mounted
        cgroup = f"{self.cgroup_root}/{spec.container}"
        try:
            image = self._image(spec.disk, spec.fstype)
            self._images[spec.disk].add(spec.container)
            self._disk_of[spec.container] = spec.disk
            base = f"{self.run}/containers/{spec.container}"
            scratch, rootfs = f"{base}/scratch", f"{base}/rootfs"
            for path in (scratch, rootfs):
                os.makedirs(path, exist_ok=True)
            _mount(
                "tmpfs", scratch, "tmpfs", syscalls.MS_NODEV, f"size={spec.scratch_mb}m", mounted
            )
            for sub in ("upper", "work"):
                os.mkdir(f"{scratch}/{sub}", 0o755)
            # No redirects nor metadata-only copy-ups: the upper directory alone must hold every
            # change, as a plain OCI layer, for export (a renamed lower directory is copied).
            options = (
                f"lowerdir={image},upperdir={scratch}/upper,workdir={scratch}/work,"
                "redirect_dir=off,metacopy=off"
            )
            _mount("overlay", rootfs, "overlay", 0, options, mounted)
            self._populate(rootfs, mounted)
            self.volumes.mount(spec.container, rootfs, spec.mounts)
            cgroups.create(cgroup)
        except BaseException:
            self._destroy(Container(spec.container, None, cgroup))
            raise
        return Container(spec.container, rootfs, cgroup, f"{scratch}/upper", _INJECTED)

    def _image(self, disk: str, fstype: str) -> str:
        target = f"{self.run}/images/{disk}"
        if disk not in self._images:
            device = _find_disk(disk)
            os.makedirs(target, exist_ok=True)
            syscalls.mount(device, target, fstype, syscalls.MS_RDONLY | syscalls.MS_NODEV)
            self._images[disk] = set()
        return target

    def _populate(self, rootfs: str, mounted: list[str]) -> None:
        """The container's kernel file systems, devices and host files, inside its root."""
        nosuid = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
        for sub in ("proc", "sys", "dev", "etc"):
            _mkdir_in(rootfs, sub)
        _mount("proc", f"{rootfs}/proc", "proc", nosuid, "", mounted)
        _mount("sysfs", f"{rootfs}/sys", "sysfs", nosuid | syscalls.MS_RDONLY, "", mounted)
        dev = f"{rootfs}/dev"
        _mount("tmpfs", dev, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "mode=755", mounted)
        for name in _DEVICES:
            os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            _mount(f"/dev/{name}", f"{dev}/{name}", None, syscalls.MS_BIND, "", mounted)
        for sub in ("pts", "shm"):
            os.mkdir(f"{dev}/{sub}", 0o755)
        _mount("/dev/pts", f"{dev}/pts", None, syscalls.MS_BIND, "", mounted)
        _mount(
            "shm",
            f"{dev}/shm",
            "tmpfs",
            syscalls.MS_NOSUID | syscalls.MS_NODEV,
            "mode=1777",
            mounted,
        )
        for name, target in _LINKS:
            os.symlink(target, f"{dev}/{name}")
        etc = f"{rootfs}/etc"
        _write_file(f"{etc}/hostname", f"{self.hostname}\n")
        _write_file(
            f"{etc}/hosts",
            f"127.0.0.1\tlocalhost {self.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            + "".join(f"{address}\t{name}\n" for address, name in self.extra_hosts),
        )
        if self.nameservers:
            _write_file(
                f"{etc}/resolv.conf", "".join(f"nameserver {s}\n" for s in self.nameservers)
            )

    # ------------------------------------------------------------ destroy

    def _destroy(self, container: Container) -> None:
        if container.cgroup:
            cgroups.kill(container.cgroup)
            if not cgroups.wait_empty(container.cgroup, 5.0):
                print(f"hyperstart: processes of {container.id} survive cgroup.kill", flush=True)
        self.volumes.release(container.id, f"{self.run}/containers/{container.id}/rootfs")
        for path in reversed(self._mounts.pop(container.id, [])):
            _unmount(path)
        base = f"{self.run}/containers/{container.id}"
        for path in (f"{base}/rootfs", f"{base}/scratch", base):
            _rmdir(path)
        if container.cgroup:
            cgroups.remove(container.cgroup)
        disk = self._disk_of.pop(container.id, None)
        if disk is not None:
            users = self._images[disk]
            users.discard(container.id)
            if not users:
                del self._images[disk]
                _unmount(f"{self.run}/images/{disk}")
                _rmdir(f"{self.run}/images/{disk}")


def _find_disk(serial: str) -> str:
    """The /dev node of the virtio-blk disk whose serial is ``serial``; waits for a hot-plug."""
    deadline = time.monotonic() + _DISK_WAIT
    while True:
        try:
            names = os.listdir("/sys/block")
        except FileNotFoundError:
            names = []
        for name in names:
            if _serial_of(name) == serial and _openable(f"/dev/{name}"):
                return f"/dev/{name}"
        if time.monotonic() > deadline:
            raise NotFound(f"no disk with serial {serial!r}")
        time.sleep(0.02)


def _openable(device: str) -> bool:
    """Whether a just hot-plugged disk is ready: its /sys entry and /dev node come a moment
    before it can be opened (ENXIO meanwhile)."""
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def _serial_of(name: str) -> str | None:
    """A block device's serial: virtio-blk's ``serial``, or a SCSI disk's unit serial number
    (VPD page 0x80: a 4-byte header, the length in bytes 2-3, then the serial)."""
    try:
        with open(f"/sys/block/{name}/serial") as file:
            return file.read().strip()
    except OSError:
        pass
    try:
        with open(f"/sys/block/{name}/device/vpd_pg80", "rb") as raw:
            page = raw.read(256)
    except OSError:
        return None
    if len(page) < 4 or page[1] != 0x80:
        return None
    length = int.from_bytes(page[2:4], "big")
    return page[4 : 4 + length].decode("ascii", "replace").strip()


def _mkdir_in(rootfs: str, sub: str) -> None:
    path = f"{rootfs}/{sub}"
    if os.path.islink(path):
        raise FailedPrecondition(f"/{sub} of the image is a symbolic link")
    os.makedirs(path, exist_ok=True)


def _mount(
    source: str, target: str, fstype: str | None, flags: int, data: str, mounted: list[str]
) -> None:
    syscalls.mount(source, target, fstype, flags, data)
    mounted.append(target)


def _unmount(path: str) -> None:
    try:
        syscalls.umount(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not mounted
            return
        try:
            syscalls.umount(path, syscalls.MNT_DETACH)
        except OSError as again:
            raise Unavailable(f"cannot unmount {path}: {again}") from again


def _rmdir(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _write_file(path: str, text: str) -> None:
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "w") as file:
        file.write(text)
