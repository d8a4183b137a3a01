"""The erofs root filesystem, built by the real mkfs.erofs and read back by fsck.erofs."""

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hyper.errors import InvalidArgument
from hyper.images.builder import Dir, File, HardLink, Opaque, Symlink, Whiteout, build_image
from hyper.images.busybox import ensure_busybox
from hyper.images.compression import Compression
from hyper.images.rootfs import MOUNT_FILES, MOUNT_POINTS, erofs_image, erofs_path
from hyper.images.store import ImageStore

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.erofs") is None or shutil.which("fsck.erofs") is None,
    reason="needs erofs-utils",
)


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def extract(image: Path, into: Path) -> Path:
    subprocess.run(["fsck.erofs", f"--extract={into}", str(image)], check=True)
    return into


def listing(root: Path) -> dict[str, tuple[int, int, int, object]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = path.read_bytes()
            else:
                what = "dir"
            rel = str(path.relative_to(root))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, what)
    return out


def test_layers_flattened_into_erofs(tmp_path, store):
    image = build_image(
        store,
        "app:1",
        [
            {"etc/motd": b"hi", "var/cache/old": b"o", "bin/tool": File(b"T", mode=0o4755)},
            {"etc/motd": Whiteout(), "var/cache": Opaque(), "var/cache/new": b"n"},
            {"bin/alias": HardLink("bin/tool"), "bin/sh": Symlink("/bin/tool"), "srv": Dir(0o700)},
        ],
        compression=Compression.GZIP,
    )
    path = asyncio.run(erofs_image(store, image))
    assert path == erofs_path(store, image)
    assert os.listdir(store.tmp_dir) == []
    tree = listing(extract(path, tmp_path / "out"))
    assert "etc/motd" not in tree and "var/cache/old" not in tree
    assert tree["var/cache/new"][3] == b"n"
    assert tree["bin/tool"][1] & 0o777 == 0o755  # fsck.erofs 1.5 drops set-id bits on extract
    assert tree["bin/sh"][3] == "/bin/tool"
    assert tree["srv"][1] == 0o700
    for name in MOUNT_POINTS:
        assert tree[name][0] == stat.S_IFDIR
    assert tree["tmp"][1] == 0o1777
    for name in MOUNT_FILES:
        assert tree[name][3] == b""
    assert nid(path, "/bin/alias") == nid(path, "/bin/tool")  # one inode: a hard link


def nid(image: Path, path: str) -> str:
    """The inode number dump.erofs reports (fsck.erofs does not keep hard links on extract)."""
    out = subprocess.run(
        ["dump.erofs", f"--path={path}", str(image)], capture_output=True, text=True, check=True
    ).stdout
    return out.split("NID:")[1].split()[0]


def test_busybox_rootfs_is_cached_and_built_once(tmp_path, store, capsys):
    image = ensure_busybox(store)

    async def main() -> tuple[list[Path], float, Path, float, int]:
        started = time.monotonic()
        paths = await asyncio.gather(*(erofs_image(store, image) for _ in range(4)))
        built = time.monotonic() - started
        mtime = paths[0].stat().st_mtime_ns
        started = time.monotonic()
        again = await erofs_image(store, image)
        return paths, built, again, time.monotonic() - started, mtime

    paths, built, again, cached, mtime = asyncio.run(main())
    assert len(set(paths)) == 1 and again == paths[0]
    assert again.stat().st_mtime_ns == mtime
    assert cached < 0.05
    with capsys.disabled():
        print(
            f"\nbusybox erofs: built in {built * 1000:.0f} ms, cached call {cached * 1e6:.0f} us,"
            f" {again.stat().st_size} bytes"
        )
    bb = extract(again, tmp_path / "bb")
    tree = listing(bb)
    assert tree["bin/sh"][3] == "/bin/busybox"
    assert tree["bin/busybox"][3] == Path("/bin/busybox").read_bytes()
    assert (bb / "etc/passwd").read_bytes().startswith(b"root:x:0:0:")
    assert [e.name for e in os.scandir(store.rootfs_dir) if e.name.endswith(".erofs")] == [
        again.name
    ]


@contextlib.contextmanager
def mounted(image: Path, mnt: Path):
    """Loop-mount the image read-only, or skip if this host cannot."""
    if "erofs" not in Path("/proc/filesystems").read_text():
        pytest.skip("the host kernel has no erofs")
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "erofs", "-o", "loop,ro", str(image), str(mnt)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_busybox_rootfs_mounts_and_runs(tmp_path, store):
    """Mount the image and run busybox from it: the tree matches fsck.erofs's extraction."""
    image = ensure_busybox(store)
    path = asyncio.run(erofs_image(store, image))
    with mounted(path, tmp_path / "mnt") as mnt:
        # fsck.erofs drops set-id bits on extract; busybox has none, so the trees must agree.
        assert listing(mnt) == listing(extract(path, tmp_path / "out"))
        assert (mnt / "bin/sh").is_symlink()
        result = subprocess.run(
            ["chroot", str(mnt), "/bin/sh", "-c", "echo hello; cat /etc/hostname; ls /usr/bin/env"],
            capture_output=True,
            text=True,
        )
        assert result.stdout.split() == ["hello", "/usr/bin/env"]


def test_set_id_bits_survive_in_the_mounted_image(tmp_path, store):
    image = build_image(store, "suid", [{"bin/tool": File(b"T", mode=0o4755, uid=5, gid=6)}])
    path = asyncio.run(erofs_image(store, image))
    with mounted(path, tmp_path / "mnt") as mnt:
        st = os.lstat(mnt / "bin/tool")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 5, 6)


def test_hostile_image_builds_nothing(tmp_path, store):
    image = build_image(store, "evil", [{"a": Symlink("/")}, {"a/etc/evil": b"x"}])
    with pytest.raises(InvalidArgument, match="symlink"):
        asyncio.run(erofs_image(store, image))
    assert not erofs_path(store, image).exists()
    assert os.listdir(store.tmp_dir) == []
    assert not Path("/etc/evil").exists()


def test_gc_removes_rootfs_of_untagged_images(store):
    image = ensure_busybox(store)
    path = asyncio.run(erofs_image(store, image))
    store.tenant("default").remove("busybox")
    result = store.gc()
    assert result.rootfs_removed == 1 and not path.exists()
    assert list(store.content) == []
