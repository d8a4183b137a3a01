"""What a micro-VM is made of, as pure values: its shape, its disks, its lifecycle states.

Nothing here touches the host. A driver (``hyper.vmm.qemu``) turns a `MachineConfig` into a
running hypervisor process and reports how it ended as a `VmExit`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from hyper.errors import InvalidArgument

_DISK_ID = re.compile(r"[a-z0-9-]{1,20}")
_IFNAME = re.compile(r"[a-z0-9]{1,15}")
DISK_FORMATS = ("raw", "qcow2")
ACCELERATORS = ("kvm", "tcg")


@dataclass(frozen=True)
class Disk:
    """A block device of the guest (virtio-blk)."""

    id: str
    """Also the virtio-blk serial the guest sees (``/dev/disk/by-id/virtio-<id>``)."""
    path: Path
    readonly: bool = True
    format: str = "raw"

    def __post_init__(self) -> None:
        if not _DISK_ID.fullmatch(self.id):
            raise InvalidArgument(f"disk id {self.id!r} must be 1-20 characters of [a-z0-9-]")
        if self.format not in DISK_FORMATS:
            raise InvalidArgument(
                f"disk {self.id}: format must be raw or qcow2, not {self.format!r}"
            )


@dataclass(frozen=True)
class MemoryFile:
    """Guest RAM in a file, for VM templates (docs/vmm.md, "Templates").

    ``shared``: the template's own RAM (writes reach the file). Not shared: a clone's, mapped
    privately, so that pages stay shared with the file until the clone writes them."""

    path: Path
    shared: bool


@dataclass(frozen=True)
class Nic:
    """The VM's network card: virtio-net on a tap that exists already (made by the host's
    network layer). Whether a VM has one is part of its shape; the guest sets its own MAC and
    address (a clone of a template resumes the template's device state)."""

    tap: str

    def __post_init__(self) -> None:
        if not _IFNAME.fullmatch(self.tap):
            raise InvalidArgument(f"tap name {self.tap!r} must be 1-15 characters of [a-z0-9]")


@dataclass(frozen=True)
class MachineConfig:
    """Everything a driver needs to start one VM."""

    name: str
    """The pod id: QEMU's ``-name`` and the name of the VM's logger."""
    accelerator: str
    """``kvm`` or ``tcg``, already decided (see `hyper.vmm.accel.choose`)."""
    cpus: int
    memory_mb: int
    kernel: Path
    initrd: Path
    append: str
    """Extra kernel arguments; they come after the driver's own, so they can override them."""
    disks: tuple[Disk, ...]
    agent_socket: Path
    """A unix socket the caller already listens on; QEMU connects to it and exposes it to the guest
    as the virtio-serial port ``hyper.agent``."""
    run_dir: Path
    """This VM's own directory: the driver creates its control files there and removes them."""
    nic: Nic | None = None
    memory_file: MemoryFile | None = None
    """None: anonymous RAM (a cold boot)."""
    incoming: bool = False
    """Start paused, waiting for a saved state (``QemuVm.restore``): a clone of a template."""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ",=\n\0"):
            raise InvalidArgument(f"VM name {self.name!r} must be non-empty, without , = or NUL")
        if self.accelerator not in ACCELERATORS:
            raise InvalidArgument(f"accelerator must be kvm or tcg, not {self.accelerator!r}")
        if not 1 <= self.cpus <= 255:
            raise InvalidArgument(f"cpus must be between 1 and 255, not {self.cpus}")
        if not 64 <= self.memory_mb <= 1 << 20:
            raise InvalidArgument(f"memory_mb must be between 64 and 1048576, not {self.memory_mb}")
        ids = [disk.id for disk in self.disks]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"disk ids must be unique: {ids}")


class VmState(enum.Enum):
    """The life of one VM object; it never goes back (a VM is started once)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    """QEMU has exited, for whatever reason (see `VmExit`), and its files are gone."""
    FAILED = "failed"
    """Start failed; QEMU was killed and its files are gone."""


@dataclass(frozen=True)
class VmExit:
    """How the hypervisor process ended."""

    code: int | None
    """QEMU's exit status, or None when a signal ended it."""
    signal: int | None
    reason: str
    """For people: "guest powered off", "killed", "qemu exited with 1: <stderr tail>"."""
