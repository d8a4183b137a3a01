import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from hyper.errors import InvalidArgument
from hyper.images.builder import (
    Device,
    Dir,
    File,
    HardLink,
    Layer,
    Opaque,
    Symlink,
    Whiteout,
    layer_tar,
)
from hyper.images.compression import Compression, compress
from hyper.images.digest import Digest
from hyper.images.unpack import Unpacker, UnpackLimits, UnpackStats, unpack_layers


@pytest.fixture
def root(tmp_path):
    target = tmp_path / "root"
    target.mkdir()
    return target


def unpack(
    root: Path,
    *layers: Layer | bytes,
    limits: UnpackLimits | None = None,
    sort: bool = True,
    compression: Compression = Compression.NONE,
) -> UnpackStats:
    tars = [layer if isinstance(layer, bytes) else layer_tar(layer, sort=sort) for layer in layers]
    return unpack_layers(
        root,
        [
            (f"L{i}", io.BytesIO(compress(tar, compression)), Digest.of(tar))
            for i, tar in enumerate(tars)
        ],
        limits,
    )


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes().decode()
    return out


def snapshot(tmp_path: Path, root: Path) -> set[str]:
    """Every path under tmp_path outside the target."""
    return {
        str(Path(d) / n)
        for d, dirs, files in os.walk(tmp_path)
        for n in dirs + files
        if not str(Path(d) / n).startswith(str(root))
    }


@pytest.mark.parametrize("compression", list(Compression))
def test_layers_files_modes_owners_and_mtimes(root, compression):
    stats = unpack(
        root,
        {
            "bin": Dir(0o755),
            "bin/busybox": File(b"BB", mode=0o4755, uid=7, gid=8, mtime=1000),
            "bin/sh": Symlink("/bin/busybox"),
            "tmp": Dir(0o1777, mtime=2000),
            "etc/passwd": b"root",
        },
        compression=compression,
    )
    assert tree(root) == {
        "bin": "dir",
        "bin/busybox": "BB",
        "bin/sh": "-> /bin/busybox",
        "tmp": "dir",
        "etc": "dir",
        "etc/passwd": "root",
    }
    st = os.lstat(root / "bin/busybox")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (7, 8)
    assert st.st_mtime == 1000
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert os.lstat(root / "tmp").st_mtime == 2000
    assert stats.entries == 5 and stats.file_bytes == 6


def test_whiteouts_and_opaque_directories(root):
    unpack(
        root,
        {"a/x": b"1", "a/y": b"2", "b/keep": b"k", "b/sub/z": b"z", "c": b"c", "d/e": b"e"},
        {"a/x": Whiteout(), "b": Opaque(), "b/new": b"n", "c": Whiteout(), "d": Whiteout()},
    )
    assert tree(root) == {"a": "dir", "a/y": "2", "b": "dir", "b/new": "n"}


def test_same_layer_entries_survive_their_own_whiteouts_in_any_order(root):
    unpack(root, {"dir/old": b"o", "dir/sub/old": b"o"})
    layer: Layer = {"dir/new": b"n", "dir/sub/new": b"n", "dir": Opaque()}  # marker after the files
    unpack(root, layer, sort=False)
    assert tree(root) == {"dir": "dir", "dir/new": "n", "dir/sub": "dir", "dir/sub/new": "n"}


def test_whiteout_of_a_whole_directory_then_recreated(root):
    unpack(root, {"d/a": b"a"}, {"d": Whiteout()}, {"d/b": b"b"})
    assert tree(root) == {"d": "dir", "d/b": "b"}


def test_hard_links_within_the_tree(root):
    unpack(root, {"bin/busybox": b"B"}, {"bin/ls": HardLink("bin/busybox"), "x": b"x"})
    assert os.stat(root / "bin/ls").st_ino == os.stat(root / "bin/busybox").st_ino


def test_entry_replaces_a_lower_entry_of_another_kind(root):
    unpack(root, {"lib": Symlink("usr/lib"), "f": Dir()}, {"lib": Dir(), "lib/x": b"x", "f": b"f"})
    assert tree(root) == {"lib": "dir", "lib/x": "x", "f": "f"}


def test_symlinks_are_never_followed(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    before = snapshot(tmp_path, root)
    with pytest.raises(InvalidArgument, match="symlink"):
        unpack(root, {"a": Symlink(str(outside)), "a/evil": b"x"})
    with pytest.raises(InvalidArgument, match="symlink"):
        unpack(root, {"b": Symlink("/")}, {"b/etc/evil": b"x"})
    with pytest.raises(InvalidArgument, match="symlink"):
        unpack(root, {"c": Symlink("/tmp")}, {"c": Opaque()})
    with pytest.raises(InvalidArgument, match="symlink"):
        unpack(root, {"d": Symlink("/etc")}, {"d/passwd": Whiteout()})
    assert snapshot(tmp_path, root) == before
    assert not Path("/etc/evil").exists()
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"../evil": b"x"}, "'\\.\\.'"),
        ({"a/../../evil": b"x"}, "'\\.\\.'"),
        ({"/etc/evil": b"x"}, "absolute"),
        ({"../evil": Dir()}, "'\\.\\.'"),
        ({"../evil": Symlink("/")}, "'\\.\\.'"),
        ({"link": HardLink("/etc/passwd")}, "absolute"),
        ({"link": HardLink("../../../../etc/passwd")}, "'\\.\\.'"),
        ({"link": HardLink("missing")}, "does not exist"),
        ({"d": Dir(), "link": HardLink("d")}, "directory"),
        ({"a": Symlink("/etc"), "link": HardLink("a/passwd")}, "symlink"),
        ({".wh..": b""}, "invalid whiteout"),
        ({"n" * 300: b"x"}, "255"),
    ],
)
def test_hostile_layers_touch_nothing_outside(tmp_path, root, layer, message):
    before = snapshot(tmp_path, root)
    with pytest.raises(InvalidArgument, match=message):
        unpack(root, layer)
    assert snapshot(tmp_path, root) == before
    assert not Path("/etc/evil").exists()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert os.stat(path).st_ino != os.stat("/etc/passwd").st_ino


def test_devices_and_fifos_are_skipped_and_counted(root):
    stats = unpack(
        root, {"dev/null": Device("char", 1, 3), "dev/sda": Device("block"), "p": Device("fifo")}
    )
    assert stats.skipped_devices == 3
    assert tree(root) == {}


def test_entry_limit(root):
    with pytest.raises(InvalidArgument, match="layer L0 exceeds the limit max_entries=3"):
        unpack(root, {f"f{i}": b"" for i in range(4)}, limits=UnpackLimits(max_entries=3))


def test_byte_limit_counts_across_layers(root):
    limits = UnpackLimits(max_bytes=10_000)
    with pytest.raises(InvalidArgument, match="layer L1 exceeds the limit max_bytes=10000"):
        unpack(root, {"a": b"x" * 6000}, {"b": b"x" * 6000}, limits=limits)


def test_byte_limit_bounds_a_decompression_bomb(root):
    bomb = compress(layer_tar({"a": b"\0" * (1 << 20)}) + b"\0" * (8 << 20), Compression.GZIP)
    assert len(bomb) < 20_000
    with pytest.raises(InvalidArgument, match="max_bytes"):
        unpack_layers(root, [("bomb", io.BytesIO(bomb), None)], UnpackLimits(max_bytes=2 << 20))


def test_name_limit(root):
    with pytest.raises(InvalidArgument, match="max_name_bytes=50"):
        unpack(root, {"a/" * 30 + "f": b""}, limits=UnpackLimits(max_name_bytes=50))


def test_huge_extended_header_is_refused(root):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="extended tar header"):
        unpack(root, out.getvalue())


def test_diff_id_mismatch_is_refused(root):
    tar = layer_tar({"a": b"a"})
    with pytest.raises(InvalidArgument, match="diff-id"):
        unpack_layers(root, [("L", io.BytesIO(tar), Digest.of(b"other"))])


def test_garbage_is_not_a_tar(root):
    with pytest.raises(InvalidArgument, match="not a valid"):
        unpack(root, b"this is not a tar archive at all" * 40)
    with pytest.raises(InvalidArgument, match="not a valid"):
        unpack_layers(root, [("L", io.BytesIO(b"\x1f\x8bgarbage"), None)])
    with pytest.raises(InvalidArgument, match="zstd"):
        unpack_layers(root, [("L", io.BytesIO(b"\x28\xb5\x2f\xfdgarbage"), None)])


def test_empty_layers(root):
    assert unpack(root, b"", {}).entries == 0


def test_xattrs_applied_where_allowed(root):
    stats = unpack(
        root,
        {
            "f": File(
                b"x",
                xattrs={"user.note": b"hi", "trusted.overlay.opaque": b"y", "system.x": b"z"},
            )
        },
    )
    try:
        assert os.getxattr(root / "f", "user.note") == b"hi"
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    assert stats.skipped_xattrs == 2


def test_unpacker_reports_the_layer_it_failed_in(root):
    with Unpacker(root) as unpacker:
        unpacker.apply(io.BytesIO(layer_tar({"ok": b"1"})), layer="first")
        with pytest.raises(InvalidArgument, match="layer second"):
            unpacker.apply(io.BytesIO(layer_tar({"/abs": b"1"})), layer="second")
