"""Disks hot-plugged over QMP onto the VM's virtio-scsi controller.

Every pod disk (image root filesystems, volumes) reaches the guest this way, on a cold boot and on
a clone alike: virtio-mmio devices cannot be hot-plugged, and a clone's devices must be those of
its template, so the only device that exists from the start is the empty controller. The guest
finds a disk by its SCSI unit serial number (VPD page 0x80), which is the disk's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from hyper.errors import FailedPrecondition
from hyper.vmm.machine import Disk
from hyper.vmm.qemu.cmdline import SCSI_BUS

Execute = Callable[[str, dict[str, object]], Awaitable[Any]]


def node_name(disk_id: str) -> str:
    """QEMU's block node for a disk (node names must start with a letter; disk ids need not)."""
    return f"node-{disk_id}"


def device_id(disk_id: str) -> str:
    return f"disk-{disk_id}"


def blockdev(disk: Disk) -> dict[str, object]:
    """``blockdev-add`` arguments: the format node over a file node (the host page cache, threads:
    tmpfs has no O_DIRECT; see docs/vmm.md)."""
    return {
        "node-name": node_name(disk.id),
        "driver": disk.format,
        "read-only": disk.readonly,
        "file": {
            "driver": "file",
            "filename": str(disk.path),
            "aio": "threads",
            "cache": {"direct": False},
        },
    }


def device(disk: Disk) -> dict[str, object]:
    """``device_add`` arguments: a SCSI disk whose unit serial number is the disk's id."""
    return {
        "driver": "scsi-hd",
        "id": device_id(disk.id),
        "bus": SCSI_BUS,
        "drive": node_name(disk.id),
        "serial": disk.id,
    }


async def attach(execute: Execute, disk: Disk) -> None:
    """Add the disk's block node, then the device; a half-done attach is undone."""
    await execute("blockdev-add", blockdev(disk))
    try:
        await execute("device_add", device(disk))
    except BaseException:
        with contextlib.suppress(FailedPrecondition):
            await execute("blockdev-del", {"node-name": node_name(disk.id)})
        raise
