"""hyperstart's resolution of a mount path inside a container's root: never outside it."""

from __future__ import annotations

import os

import pytest

from hyper.errors import FailedPrecondition, InvalidArgument, ProtocolError
from hyper.proto.messages import AddContainer, Freeze, VolumeMount
from hyperstart.volumes import open_within


def resolved(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_missing_directories_are_made_inside_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert resolved(open_within(str(root), "/var/lib/data", create=True)) == str(
        root / "var/lib/data"
    )
    assert resolved(open_within(str(root), "/var/lib/data", create=False)) == str(
        root / "var/lib/data"
    )


@pytest.mark.parametrize("link", ["/", "..", "../../etc", "/etc"])
def test_a_symbolic_link_on_the_way_is_refused(tmp_path, link):
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    (root / "srv" / "data").symlink_to(link)
    (root / "lnk").symlink_to("srv")
    for target in ("/srv/data", "/srv/data/x", "/lnk/data", "/lnk"):
        with pytest.raises(FailedPrecondition, match="symbolic links"):
            open_within(str(root), target, create=True)
    assert not (tmp_path / "x").exists() and not os.path.exists("/x")


def test_a_file_on_the_way_is_refused_and_dots_never_pass(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FailedPrecondition):
        open_within(str(tmp_path), "/file/x", create=True)
    for target in ("/a/../..", "/./a", "/"):
        with pytest.raises(InvalidArgument):
            open_within(str(tmp_path), target, create=True)


def test_the_wire_checks_mounts_and_freeze():
    mount = VolumeMount("vol-0123", "/data", True)
    spec = AddContainer("c", "img0", "erofs", 64, (mount,))
    assert AddContainer.from_wire(spec.to_wire()) == spec
    assert "mounts" not in AddContainer("c", "img0", "erofs", 64).to_wire()
    for target in ("relative", "/a/../b", "/", "/a\0b"):
        wire = {**spec.to_wire(), "mounts": [{**mount.to_wire(), "target": target}]}
        with pytest.raises(ProtocolError):
            AddContainer.from_wire(wire)
    with pytest.raises(ProtocolError):
        AddContainer.from_wire({**spec.to_wire(), "mounts": [mount.to_wire()] * 65})
    assert Freeze.from_wire(Freeze("vol-1", True).to_wire()) == Freeze("vol-1", True)
    with pytest.raises(ProtocolError):
        Freeze.from_wire({"disk": "../x", "frozen": True})
