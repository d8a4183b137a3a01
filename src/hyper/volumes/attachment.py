"""What a pod is told about one volume mount: which disk to attach, where to mount it.

The service makes these when a pod starts (``spec.json`` carries them to the pod's supervisor);
the sandbox turns each distinct ``disk`` into a VM disk (however disks reach the VM: at boot
today, hot-plugged into a template's clone later) and asks the agent to mount it at ``target``
in ``container``. The values say nothing of transport, so both stay free to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hyper.errors import InvalidArgument
from hyper.model.mount import check_host_path, check_target
from hyper.model.pod import check_name

_DISK = re.compile(r"[a-z0-9-]{1,20}")
FORMATS = ("qcow2", "raw", "dir")
"""``dir``: a host directory, packed read-only by the sandbox (:mod:`.hostdir`) at start."""
FSTYPES = ("ext4", "erofs")


def disk_id(volume_id: str) -> str:
    """The disk's id in the VM, also its virtio-blk serial (at most 20 characters)."""
    return f"vol-{volume_id[:12]}"


@dataclass(frozen=True)
class Attachment:
    container: str
    target: str
    disk: str
    path: str
    """What QEMU opens (see :class:`hyper.volumes.driver.Device`)."""
    format: str
    readonly: bool
    fstype: str = "ext4"

    def __post_init__(self) -> None:
        check_name(self.container, "container name")
        check_target(self.target)
        check_host_path(self.path)
        if not _DISK.fullmatch(self.disk):
            raise InvalidArgument(f"disk id {self.disk!r} must be 1-20 characters of [a-z0-9-]")
        if self.format not in FORMATS or self.fstype not in FSTYPES:
            raise InvalidArgument(f"volume format {self.format}/{self.fstype} is not supported")

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "target": self.target,
            "disk": self.disk,
            "path": self.path,
            "format": self.format,
            "readonly": self.readonly,
            "fstype": self.fstype,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Attachment:
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
            raise InvalidArgument("a volume attachment must be an object of known fields")
        strings = ("container", "target", "disk", "path", "format", "fstype")
        if not all(isinstance(data.get(k, "ext4"), str) for k in strings):
            raise InvalidArgument("a volume attachment's fields must be strings")
        if not isinstance(data.get("readonly"), bool):
            raise InvalidArgument("a volume attachment's readonly must be true or false")
        return cls(**data)
