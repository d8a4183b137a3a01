"""The volume driver interface: what a storage back end must do, and nothing more.

Kept small on purpose (Cinder's driver API grew to dozens of calls; ours has seven) so that a
second back end can follow: a driver makes a formatted volume, copies a snapshot into a new
volume, takes and drops snapshots of a volume *no VM has open*, removes a volume, and says how
QEMU opens it (:class:`Device`). Everything about tenants, names, who uses what and when a
snapshot must be taken live lives above it, in the service. A snapshot of a volume a running
VM has open is taken by QEMU itself (QMP ``blockdev-snapshot-internal-sync``), which QEMU
implements for qcow2 files and for Ceph RBD images alike, so drivers need no live path.

Volume and snapshot ids are 64 lowercase hex digits, made by the service; drivers may use them
as file or image names as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from hyper.errors import InvalidArgument

MiB = 1 << 20
GiB = 1 << 30
MIN_SIZE = 16 * MiB
"""ext4 with its journal needs a few MiB; smaller volumes are not worth a disk."""
MAX_SIZE = 1 << 40
"""1 TiB: ext4 metadata alone is ~80 MB there; quotas (issue 8) will bound it per tenant."""
DEFAULT_SIZE = 1 * GiB
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Device:
    """How QEMU opens a volume: a file path (or, for network back ends, a URI) and a format."""

    path: str
    format: str  # "qcow2" | "raw"


class VolumeDriver(Protocol):
    name: str

    async def create(self, volume_id: str, size: int) -> None:
        """A new volume of ``size`` bytes holding an empty ext4 file system."""

    async def create_from_snapshot(self, volume_id: str, source_id: str, snapshot_id: str) -> int:
        """A new, independent volume with the content of a snapshot of ``source_id``; its size.

        Must work while a VM has ``source_id`` open (snapshot data never changes)."""

    async def remove(self, volume_id: str) -> None:
        """Remove a volume and its snapshots; removing a missing volume is not an error."""

    async def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Snapshot a volume that no VM has open."""

    async def remove_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Drop a snapshot of a volume that no VM has open."""

    def device(self, volume_id: str) -> Device: ...

    async def allocated(self, volume_id: str) -> int:
        """Bytes the volume takes on the back end (snapshots included)."""

    def volume_ids(self) -> list[str]:
        """Every volume the back end holds (to find leftovers)."""


def check_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidArgument(f"{what} id {value!r} is not 64 hex digits")
    return value


def parse_size(value: str | int) -> int:
    """A volume size in bytes from ``1073741824``, ``512M``, ``10G``, ``1GiB``; whole MiB,
    within :data:`MIN_SIZE`..:data:`MAX_SIZE`. A bare number is bytes (as in docker)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if not match:
            raise InvalidArgument(f"size {value!r} is not understood (try 512M or 10G)")
        unit = match.group(2).lower()
        size = int(match.group(1)) * {"": 1, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}[unit]
    if size % MiB:
        raise InvalidArgument(f"size {value!r} is not a whole number of MiB")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidArgument(f"size {value!r} is outside 16M..1T")
    return size
