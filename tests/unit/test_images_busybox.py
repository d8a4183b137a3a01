import shutil
import tarfile
from pathlib import Path

import pytest

from hyper.images.busybox import PATH, ensure_busybox
from hyper.images.image import Image
from hyper.images.store import ImageStore

pytestmark = pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static")


def test_ensure_busybox_is_idempotent_and_deterministic(tmp_path):
    store = ImageStore(tmp_path / "a")
    image = ensure_busybox(store)
    assert ensure_busybox(store) == image
    assert ensure_busybox(ImageStore(tmp_path / "b")).digest == image.digest
    assert store.resolve("busybox").digest == image.digest
    assert image.reference.familiar == "busybox:latest"
    assert image.config.cmd == ("sh",) and image.config.env == (PATH,)
    assert len(set(store.content)) == 3


def test_busybox_layer_contents(tmp_path):
    store = ImageStore(tmp_path)
    image = ensure_busybox(store)
    with tarfile.open(store.content.path(image.layers[0].digest)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/busybox"].size == Path("/bin/busybox").stat().st_size
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777
    assert {"etc/passwd", "etc/group", "root", "home", "usr/bin/env"} <= set(members)
    names = [m for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members.values()} == {1_704_067_200}
    passwd = archive_file(store, image, "etc/passwd")
    assert passwd.startswith(b"root:x:0:0:root:/root:/bin/sh\n")
    assert shutil.which("busybox")


def archive_file(store: ImageStore, image: Image, name: str) -> bytes:
    with tarfile.open(store.content.path(image.layers[0].digest)) as archive:
        member = archive.extractfile(name)
        assert member is not None
        return member.read()
