"""hyper save / hyper load: docker-archive and OCI archive, and hostile archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from hyper.errors import InvalidArgument
from hyper.images import archive
from hyper.images.builder import (
    Dir,
    File,
    Layer,
    Opaque,
    Symlink,
    Whiteout,
    build_image,
    layer_tar,
)
from hyper.images.compression import Compression
from hyper.images.digest import Digest
from hyper.images.rootfs import unpack_image
from hyper.images.store import ImageStore

LAYERS: list[Layer] = [
    {
        "etc/motd": b"hi",
        "var/cache/a": b"a",
        "bin/sh": File(b"sh", mode=0o755),
        "lib": Symlink("usr/lib"),
    },
    {"etc/motd": Whiteout(), "var/cache": Opaque(), "var/cache/b": b"b", "opt": Dir(mode=0o700)},
]
EXPECTED = {
    "etc": "dir", "var": "dir", "var/cache": "dir", "var/cache/b": b"b", "bin": "dir",
    "bin/sh": b"sh", "lib": "-> usr/lib", "opt": "dir",
}  # fmt: skip


def tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def unpacked(store: ImageStore, reference: str, into: Path) -> dict[str, object]:
    into.mkdir()
    unpack_image(store, store.resolve(reference), into)
    return tree(into)


def members(path: Path) -> dict[str, bytes | None]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isreg() else None) for m in tar}  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["docker", "oci"])
@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_save_and_load_round_trip(tmp_path, fmt, compression):
    source = ImageStore(tmp_path / "a")
    image = build_image(source, "app:1", LAYERS, compression=compression)
    build_image(source, "other/img:2", LAYERS[:1], compression=compression)
    out = tmp_path / "images.tar"
    archive.save(source.tenant("default"), ["app:1", "other/img:2", "app:1"], out, fmt)
    names = members(out)
    if fmt == "docker":
        manifest = json.loads(names["manifest.json"])  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["app:1"] and manifest[1]["RepoTags"] == ["other/img:2"]
        assert manifest[0]["Config"] == f"{image.config_digest.hex}.json"
        assert manifest[0]["Layers"] == [f"{d.hex}/layer.tar" for d in image.diff_ids]
        for diff_id in image.diff_ids:  # uncompressed, once each
            assert Digest.of(names[f"{diff_id.hex}/layer.tar"]) == diff_id  # type: ignore[arg-type]
        assert json.loads(names["repositories"])["app"]["1"] == image.diff_ids[-1].hex  # type: ignore[arg-type]
    else:
        index = json.loads(names["index.json"])  # type: ignore[arg-type]
        assert index["manifests"][0]["digest"] == str(image.digest)
        assert (
            index["manifests"][0]["annotations"]["io.containerd.image.name"]
            == "docker.io/library/app:1"
        )
        assert f"blobs/sha256/{image.layers[0].digest.hex}" in names
    target = ImageStore(tmp_path / "b")
    loaded = archive.load(target.tenant("default"), out)
    assert sorted(i.reference.familiar for i in loaded) == ["app:1", "other/img:2"]
    again = target.resolve("app:1")
    assert again.diff_ids == image.diff_ids
    if fmt == "oci":
        assert again.digest == image.digest
    assert unpacked(target, "app:1", tmp_path / "tree") == EXPECTED
    assert os.listdir(target.tmp_dir) == []


def docker_archive(
    entries: dict[str, bytes], links: dict[str, str] | None = None, gz: bool = False
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    data = out.getvalue()
    return gzip.compress(data) if gz else data


def classic(layers: list[bytes], tags=("legacy:1",), diff_ids=None) -> dict[str, bytes]:
    """A docker-archive as docker (before 25) writes it."""
    ids = diff_ids or [str(Digest.of(t)) for t in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ids},
                         "history": [{"created_by": "test"} for _ in layers]}).encode()  # fmt: skip
    entries = {f"{Digest.of(config).hex}.json": config}
    names = []
    for i, tar in enumerate(layers):
        entries[f"layer{i}/layer.tar"] = tar
        entries[f"layer{i}/VERSION"] = b"1.0"
        names.append(f"layer{i}/layer.tar")
    entries["manifest.json"] = json.dumps(
        [{"Config": f"{Digest.of(config).hex}.json", "RepoTags": list(tags), "Layers": names}]
    ).encode()
    return entries


def test_loads_a_classic_docker_save_archive_gzipped_with_linked_layers(tmp_path):
    lower, upper = layer_tar(LAYERS[0]), layer_tar(LAYERS[1])
    entries = classic([lower, upper, lower])
    del entries["layer2/layer.tar"]  # old docker links a repeated layer to the first copy
    path = tmp_path / "legacy.tar.gz"
    path.write_bytes(docker_archive(entries, {"layer2/layer.tar": "../layer0/layer.tar"}, gz=True))
    store = ImageStore(tmp_path / "s")
    (image,) = archive.load(store.tenant("default"), path)
    assert image.reference.familiar == "legacy:1" and len(image.layers) == 3
    assert image.config.cmd == ("sh",)
    expected = {**EXPECTED, "etc/motd": b"hi", "var/cache/a": b"a"}  # the lower layer again
    assert unpacked(store, "legacy:1", tmp_path / "tree") == expected


def hostile(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "hostile.tar"
    path.write_bytes(data)
    return path


def raw_tar(*infos: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in infos:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def info(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    i = tarfile.TarInfo(name)
    i.type = kind
    i.size = len(data) if kind == tarfile.REGTYPE else 0
    i.linkname = link
    return i, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (lambda: raw_tar(info("../manifest.json", b"[]")), "'\\.\\.'"),
        (lambda: raw_tar(info("/etc/passwd", b"x")), "absolute"),
        (lambda: raw_tar(info("dev", kind=tarfile.CHRTYPE)), "not allowed"),
        (lambda: raw_tar(info("fifo", kind=tarfile.FIFOTYPE)), "not allowed"),
        (lambda: raw_tar(info(f"blobs/sha256/{'a' * 64}", b"not that")), "does not match"),
        (
            lambda: docker_archive(
                classic([layer_tar({"a": b"1"})], diff_ids=[str(Digest.of(b"x"))])
            ),
            "diff-id",
        ),
        (lambda: docker_archive(classic([layer_tar({"a": b"1"})], tags=())), "no tag"),
        (lambda: docker_archive({"manifest.json": b"{}"}), "must be a list"),
        (
            lambda: docker_archive(
                {
                    "manifest.json": json.dumps(
                        [{"Config": "missing.json", "Layers": [], "RepoTags": ["a:1"]}]
                    ).encode()
                }
            ),
            "lacks",
        ),
        (lambda: docker_archive({"x": b"y"}, {"manifest.json": "/etc/passwd"}), "absolute"),
        (lambda: raw_tar(info("a", b"x"))[:700], "not a valid image archive|neither"),
        (lambda: b"garbage" * 100, "not a valid image archive"),
    ],
)
def test_hostile_archives_are_refused(tmp_path, data, message):
    store = ImageStore(tmp_path / "s")
    with pytest.raises(InvalidArgument, match=message):
        archive.load(store.tenant("default"), hostile(tmp_path, data()))
    assert store.tenant("default").refs.read() == {}
    assert not Path("/etc/evil").exists()


def test_archive_limits(tmp_path):
    store = ImageStore(tmp_path / "s")
    path = hostile(tmp_path, docker_archive({f"f{i}": b"x" * 100 for i in range(50)}))
    with pytest.raises(InvalidArgument, match="entries"):
        archive.load(store.tenant("default"), path, archive.ArchiveLimits(max_entries=10))
    with pytest.raises(InvalidArgument, match="bytes"):
        archive.load(store.tenant("default"), path, archive.ArchiveLimits(max_bytes=1000))
