"""A pod's volumes: the VM disks and agent mounts they become, and live snapshots.

The volume layer says *what* to attach and where to mount it (:class:`Attachment`); this module
says *how* for a pod: one VM disk per distinct volume (read-only only if every mount of it is),
the agent's mounts per container, and a live snapshot as the composition of the agent
(freeze/thaw) and the VMM (QMP ``blockdev-snapshot-internal-sync``), which only the sandbox may
combine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import AgentClient
from hyper.proto import messages
from hyper.vmm.machine import Disk
from hyper.vmm.qemu.driver import QemuVm
from hyper.volumes import hostdir
from hyper.volumes.attachment import Attachment
from hyper.volumes.snapshot import Consistency

_log = logging.getLogger(__name__)
QMP_TIMEOUT = 30.0
"""An internal snapshot of a big, busy qcow2 may take a while; the guest stays frozen meanwhile."""


async def pack_host_dirs(attachments: Sequence[Attachment], into: Path) -> tuple[Attachment, ...]:
    """Host directories (the operator's binds) become read-only erofs images in ``into``."""
    packed = []
    for a in attachments:
        if a.format == "dir":
            image = into / f"{a.disk}.erofs"
            await hostdir.pack(Path(a.path), image)
            a = replace(a, path=str(image), format="raw", fstype="erofs", readonly=True)
        packed.append(a)
    return tuple(packed)


def disks(attachments: Sequence[Attachment]) -> tuple[Disk, ...]:
    """One disk per volume, in the order first mounted."""
    found: dict[str, Disk] = {}
    for a in attachments:
        if a.format == "dir":
            raise errors.Internal(f"host directory {a.path} was not packed")
        readonly = a.readonly and (found[a.disk].readonly if a.disk in found else True)
        found[a.disk] = Disk(id=a.disk, path=Path(a.path), readonly=readonly, format=a.format)
    return tuple(found.values())


def mounts(attachments: Sequence[Attachment], container: str) -> tuple[messages.VolumeMount, ...]:
    return tuple(
        messages.VolumeMount(a.disk, a.target, a.readonly, a.fstype)
        for a in attachments
        if a.container == container
    )


async def wait_power_off(vm_gone: asyncio.Event, timeout: float) -> None:
    """After the agent's ``shutdown``: wait for the guest to power off by itself.

    Quitting QEMU at once would lose what the guest still holds in its page cache and leave
    every volume's file system needing journal recovery (which also makes it impossible to
    mount read-only later): the guest unmounts its volumes and syncs before powering off."""
    try:
        await asyncio.wait_for(vm_gone.wait(), timeout)
    except TimeoutError:
        _log.warning("the guest did not power off within %g s: quitting QEMU", timeout)


def check_disk(attachments: Sequence[Attachment], disk: str) -> None:
    if not any(a.disk == disk for a in attachments):
        raise errors.NotFound(f"the pod has no volume disk {disk!r}")


async def snapshot(
    vm: QemuVm, agent: AgentClient, disk: str, name: str, *, freeze: bool
) -> Consistency:
    """An internal snapshot of an attached disk, with its file system frozen if possible.

    The thaw always follows (a frozen file system blocks every writer in the guest). A freeze
    the agent refuses (an old agent, a read-only mount, no file system) makes the snapshot
    crash-consistent instead of failing it: the caller learns which one it got."""
    node = await _node(vm, disk)
    frozen = False
    if freeze:
        try:
            await agent.call("freeze", messages.Freeze(disk, True).to_wire())
            frozen = True
        except (errors.FailedPrecondition, errors.NotFound, errors.InvalidArgument) as exc:
            # Frozen by an attempt that died before its thaw: quiesced all the same; thaw it.
            frozen = "frozen already" in str(exc)
            if not frozen:
                _log.info("snapshot of %s without freezing: %s", disk, exc)
    try:
        await vm.execute(
            "blockdev-snapshot-internal-sync", {"device": node, "name": name}, QMP_TIMEOUT
        )
    finally:
        if frozen:
            await agent.call("freeze", messages.Freeze(disk, False).to_wire())
    return Consistency.APPLICATION if frozen else Consistency.CRASH


async def delete_snapshot(vm: QemuVm, disk: str, name: str) -> None:
    node = await _node(vm, disk)
    with contextlib.suppress(errors.NotFound):
        await vm.execute(
            "blockdev-snapshot-delete-internal-sync", {"device": node, "name": name}, QMP_TIMEOUT
        )


async def _node(vm: QemuVm, disk: str) -> str:
    """The root block node of the disk, however it was attached (``-drive id=<disk>`` at boot,
    or ``blockdev-add`` + ``device_add`` with the disk's id in their names)."""
    blocks: list[dict[str, Any]] = await vm.execute("query-block", {})
    for block in blocks:
        inserted = block.get("inserted") or {}
        names = (block.get("device"), block.get("qdev", "").rpartition("/")[2])
        node = str(inserted.get("node-name", ""))
        if (disk in names or f"disk-{disk}" in names or node == f"node-{disk}") and node:
            return node
    raise errors.NotFound(f"the VM has no block device for disk {disk!r}")
