"""What a pod makes of its volume attachments: one VM disk per volume, mounts per container."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyper import errors
from hyper.proto.messages import VolumeMount
from hyper.sandbox import volumes
from hyper.volumes import Attachment


def attach(container, target, disk, readonly, path="/v/a.qcow2", fmt="qcow2"):
    return Attachment(container, target, disk, path, fmt, readonly)


def test_a_disk_is_read_only_only_if_every_mount_of_it_is():
    found = volumes.disks(
        [
            attach("a", "/data", "vol-1", True),
            attach("b", "/data", "vol-1", False),
            attach("b", "/ro", "vol-2", True, "/v/b.qcow2"),
        ]
    )
    assert [(d.id, d.readonly, d.path, d.format) for d in found] == [
        ("vol-1", False, Path("/v/a.qcow2"), "qcow2"),
        ("vol-2", True, Path("/v/b.qcow2"), "qcow2"),
    ]


def test_each_container_gets_its_own_mounts():
    both = [attach("a", "/data", "vol-1", True), attach("b", "/x", "vol-1", False)]
    assert volumes.mounts(both, "a") == (VolumeMount("vol-1", "/data", True, "ext4"),)
    assert volumes.mounts(both, "c") == ()
    with pytest.raises(errors.NotFound):
        volumes.check_disk(both, "vol-9")


def test_host_directories_are_packed_read_only_before_they_become_disks(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "run.sh").write_text("echo hi\n")
    bind = attach("a", "/tools", "dir-0", True, str(tools), "dir")
    with pytest.raises(errors.Internal):
        volumes.disks([bind])
    [packed] = asyncio.run(volumes.pack_host_dirs([bind], tmp_path))
    assert packed.format == "raw" and packed.fstype == "erofs" and packed.readonly
    assert Path(packed.path).read_bytes()[1024:1028] == b"\xe2\xe1\xf5\xe0"  # erofs magic
    with pytest.raises(errors.NotFound):
        asyncio.run(
            volumes.pack_host_dirs([attach("a", "/t", "dir-1", True, "/nope", "dir")], tmp_path)
        )
