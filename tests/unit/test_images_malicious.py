"""Hostile layers, end to end through the store: each is refused with a clear error or
neutralised, and nothing outside the store is touched (a sentinel directory beside the store,
and the host's /etc and /usr/bin, are compared before and after)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from hyper.errors import Internal, InvalidArgument
from hyper.images.builder import (
    Device,
    Dir,
    File,
    HardLink,
    Opaque,
    Symlink,
    Whiteout,
    build_image,
    layer_tar,
)
from hyper.images.digest import Digest
from hyper.images.rootfs import unpack_image
from hyper.images.store import ImageStore
from hyper.images.unpack import UnpackLimits, unpack_layers

SENTINEL = "sentinel"


@pytest.fixture
def world(tmp_path):
    sentinel = tmp_path / SENTINEL
    (sentinel / "dir").mkdir(parents=True)
    (sentinel / "file").write_bytes(b"precious")
    (sentinel / "dir" / "inner").write_bytes(b"inner")
    store = ImageStore(tmp_path / "store")
    return tmp_path, sentinel, store


def snapshot(root: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path == skip:
                continue
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(path)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, content)
    return out


def host_state() -> tuple[object, ...]:
    return (
        os.path.exists("/etc/evil"),
        os.lstat("/etc/passwd").st_nlink,
        os.stat("/usr/bin").st_mode,
        os.stat("/tmp").st_mode,
    )


def tar_bytes(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def entry(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data if info.type == tarfile.REGTYPE else None


def bomb() -> bytes:
    """A gzip layer of ~100 KB that expands to a 64 MiB file."""
    info = tarfile.TarInfo("zeros")
    info.size = 64 << 20
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(info.tobuf(tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(64):
            gz.write(chunk)
        gz.write(bytes(1024))
    return out.getvalue()


def outside(tmp: Path, *parts: str) -> str:
    return str(tmp.joinpath(SENTINEL, *parts))


# (id, layers given the test's tmp dir, expected error regex or None for "neutralised")
CASES = [
    ("dotdot-file", lambda t: [{"../evil": b"x"}], "'\\.\\.'"),
    ("dotdot-deep", lambda t: [{"a/b/../../../evil": b"x"}], "'\\.\\.'"),
    ("dotdot-after-dot", lambda t: [{"./x/./../../evil": b"x"}], "'\\.\\.'"),
    ("absolute-file", lambda t: [{"/etc/evil": b"x"}], "absolute"),
    ("absolute-into-sentinel", lambda t: [{outside(t, "evil"): b"x"}], "absolute"),
    ("dotdot-dir", lambda t: [{"../evil": Dir()}], "'\\.\\.'"),
    ("dotdot-symlink", lambda t: [{"../evil": Symlink("/")}], "'\\.\\.'"),
    ("symlink-then-write-same-layer",
     lambda t: [{"a": Symlink(outside(t)), "a/evil": b"x"}], "symlink"),
    ("symlink-root-then-write-next-layer",
     lambda t: [{"a": Symlink("/")}, {"a/etc/evil": b"x"}], "symlink"),
    ("relative-symlink-climbing-then-write",
     lambda t: [{"a": Symlink("../../../../../../../../")}, {"a/evil": b"x"}], "symlink"),
    ("hardlink-absolute", lambda t: [{"h": HardLink("/etc/passwd")}], "absolute"),
    ("hardlink-dotdot", lambda t: [{"h": HardLink(f"../{SENTINEL}/file")}], "'\\.\\.'"),
    ("hardlink-through-symlink",
     lambda t: [{"s": Symlink(outside(t))}, {"h": HardLink("s/file")}], "symlink"),
    ("hardlink-to-directory", lambda t: [{"d": Dir(), "h": HardLink("d")}], "directory"),
    ("whiteout-through-symlink",
     lambda t: [{"d": Symlink(outside(t))}, {"d/file": Whiteout()}], "symlink"),
    ("opaque-through-symlink",
     lambda t: [{"d": Symlink(outside(t, "dir"))}, {"d": Opaque()}], "symlink"),
    ("whiteout-dotdot", lambda t: [{".wh..": b""}], "invalid whiteout"),
    ("component-too-long", lambda t: [{"n" * 300: b"x"}], "255"),
    ("name-too-long", lambda t: [{"/".join(["d" * 200] * 30): b"x"}], "max_name_bytes"),
    ("huge-pax-header",
     lambda t: [tar_bytes(entry("f", b"x", pax_headers={"comment": "x" * (2 << 20)}))],
     "extended tar header"),
    ("decompression-bomb", lambda t: [bomb()], "max_bytes"),
    ("too-many-entries", lambda t: [{f"f{i}": b"" for i in range(300)}], "max_entries"),
    ("truncated-tar", lambda t: [layer_tar({"big": os.urandom(20000)})[:9000]],
     "not a valid tar|unexpected end"),
    ("unknown-entry-type", lambda t: [tar_bytes(entry("weird", type=b"Z"))], "unsupported tar"),
    # Neutralised rather than refused:
    ("char-device", lambda t: [{"dev/mem": Device("char", 1, 1)}], None),
    ("block-device", lambda t: [{"dev/sda": Device("block", 8, 0)}], None),
    ("fifo", lambda t: [{"pipe": Device("fifo")}], None),
    ("setuid-dir-over-symlink-to-host",
     lambda t: [{"bin": Symlink("/usr/bin")}, {"bin": Dir(mode=0o4777)}], None),
    ("file-over-symlink-to-outside",
     lambda t: [{"f": Symlink(outside(t, "file"))}, {"f": File(b"mine", mode=0o6755)}], None),
    ("symlink-to-outside-kept-unfollowed", lambda t: [{"etc": Symlink(outside(t))}], None),
]  # fmt: skip


@pytest.mark.parametrize(("layers", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_layer_is_refused_or_contained(world, layers, error):
    tmp, sentinel, store = world
    before, host_before = snapshot(tmp, store.root), host_state()
    image = build_image(store, "evil:1", layers(tmp))
    target = store.tmp_dir / "tree"
    target.mkdir()
    limits = UnpackLimits(max_bytes=8 << 20, max_entries=200)
    if error is None:
        stats = unpack_image(store, image, target, limits)
        for dirpath, dirnames, filenames in os.walk(target):
            for name in dirnames + filenames:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
                assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode))
        assert stats.skipped_devices == sum(
            isinstance(v, Device) for layer in layers(tmp) for v in layer.values()
        )
    else:
        with pytest.raises(InvalidArgument, match=error):
            unpack_image(store, image, target, limits)
    assert snapshot(tmp, store.root) == before
    assert host_state() == host_before
    assert (sentinel / "file").read_bytes() == b"precious"


def test_neutralised_entries_land_inside_the_tree(world):
    tmp, sentinel, store = world
    image = build_image(
        store,
        "evil:2",
        [
            {"bin": Symlink("/usr/bin"), "f": Symlink(outside(tmp, "file"))},
            {"bin": Dir(mode=0o4755), "f": File(b"mine", mode=0o4755)},
        ],
    )
    target = store.tmp_dir / "tree"
    target.mkdir()
    unpack_image(store, image, target)
    assert (target / "bin").is_dir() and not (target / "bin").is_symlink()
    assert (target / "f").read_bytes() == b"mine"
    assert stat.S_IMODE((target / "f").lstat().st_mode) == 0o4755  # the container's own file
    assert (sentinel / "file").read_bytes() == b"precious"


def test_layer_not_matching_its_diff_id_is_refused(world):
    _, _, store = world
    real, fake = layer_tar({"a": b"real"}), layer_tar({"a": b"fake"})
    target = store.tmp_dir / "tree"
    target.mkdir()
    with pytest.raises(InvalidArgument, match="diff-id"):
        unpack_layers(target, [("L0", io.BytesIO(fake), Digest.of(real))])


def test_blob_corrupted_in_the_store_is_refused_on_read_back(world):
    _, _, store = world
    image = build_image(store, "evil:3", [{"a": os.urandom(4096)}])
    blob = store.content.path(image.layers[0].digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # inside the tar's end padding: the tar still parses
    blob.write_bytes(bytes(data))
    target = store.tmp_dir / "tree"
    target.mkdir()
    with pytest.raises((Internal, InvalidArgument), match=r"corrupt|diff-id"):
        unpack_image(store, image, target)


def test_mismatched_and_truncated_blobs_never_enter_the_store(world):
    _, _, store = world
    data = os.urandom(10000)
    with pytest.raises(InvalidArgument, match="does not match"):
        store.content.ingest(io.BytesIO(data), Digest.of(b"other"), len(data))
    with pytest.raises(InvalidArgument, match=r"does not match|not 10000"):
        store.content.ingest(io.BytesIO(data[:5000]), Digest.of(data), len(data))
    with pytest.raises(InvalidArgument, match="exceeds"):
        store.content.ingest(io.BytesIO(data + b"more"), Digest.of(data), len(data))
    assert list(store.content) == []
    assert os.listdir(store.tmp_dir) == []
