"""Volumes: block devices that outlive pods, and their snapshots (docs/volumes.md).

A part of the middle layer: it knows disk images and the tools that make them (``qemu-img``,
``mkfs.ext4``), not VMs, agents or pods. :mod:`~hyper.volumes.driver` is the interface a
storage back end implements, :mod:`~hyper.volumes.local` the one for files on the host,
:mod:`~hyper.volumes.attachment` what a pod is told to attach and mount, and
:mod:`~hyper.volumes.snapshot` the consistency a snapshot reached.
"""

from hyper.volumes.attachment import Attachment, disk_id
from hyper.volumes.driver import Device, VolumeDriver, parse_size
from hyper.volumes.local import LocalDriver
from hyper.volumes.snapshot import Consistency

__all__ = [
    "Attachment",
    "Consistency",
    "Device",
    "LocalDriver",
    "VolumeDriver",
    "disk_id",
    "parse_size",
]
