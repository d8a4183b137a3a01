"""Commit: a base image plus the layer hyperstart's export makes of an overlay upper directory
gives a new image whose layers, unpacked, are the container's filesystem with deletions applied.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hyper.errors import InvalidArgument, NotFound
from hyper.images import oci
from hyper.images.builder import Dir, File, Layer, Symlink, build_image, layer_tar
from hyper.images.commit import ConfigChanges, commit
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.store import ImageStore, TenantImages
from hyper.images.unpack import UnpackLimits, unpack_layers
from hyperstart.export import write_changes

BASE_LAYER: Layer = {
    "bin": Dir(),
    "bin/sh": File(b"shell", mode=0o755),
    "bin/vi": Symlink("sh"),
    "etc": Dir(),
    "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\n"),
    "cache": Dir(),
    "cache/old": File(b"stale"),
    "gone": Dir(),
    "gone/file": File(b"x"),
}


@pytest.fixture
def store(tmp_path: Path) -> TenantImages:
    return ImageStore(tmp_path / "store").tenant("default")


@pytest.fixture
def base(store: TenantImages) -> Image:
    config = oci.ImageConfig(
        cmd=("sh",), env=("PATH=/bin", "A=1"), working_dir="/srv", labels={"old": "1"}
    )
    return build_image(store, "base:1", [BASE_LAYER], config)


def export(upper: Path, out: Path) -> bytes:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_changes(str(upper), fd)
    finally:
        os.close(fd)
    return out.read_bytes()


@pytest.fixture
def changes_tar(tmp_path: Path) -> Path:
    """The upper directory of a container that wrote /new, deleted /bin/vi and /gone, made
    /d/f, emptied /cache and refilled it, and hard-linked a file (needs root: mknod)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: whiteouts are character devices")
    upper = tmp_path / "upper"
    (upper / "bin").mkdir(parents=True)
    (upper / "new").write_bytes(b"hi\n")
    os.link(upper / "new", upper / "new2")
    os.mknod(upper / "bin" / "vi", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.mknod(upper / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (upper / "d").mkdir()
    (upper / "d" / "f").write_bytes(b"")
    (upper / "cache").mkdir()
    os.setxattr(upper / "cache", "trusted.overlay.opaque", b"y")
    (upper / "cache" / "fresh").write_bytes(b"fresh")
    path = tmp_path / "changes.tar"
    export(upper, path)
    return path


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes().decode()
    return out


def unpack(store: TenantImages, image: Image, target: Path) -> dict[str, str]:
    target.mkdir()
    layers = []
    for index, (layer, diff_id) in enumerate(zip(image.layers, image.diff_ids, strict=True)):
        layers.append((f"L{index}", store.content.open(layer.digest), diff_id))
    try:
        unpack_layers(target, layers)  # type: ignore[arg-type]
    finally:
        for _, source, _ in layers:
            source.close()
    return tree(target)


def config_document(store: TenantImages, image: Image) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        store.content.read(image.config_digest, oci.MAX_DOCUMENT_BYTES)
    )
    return doc


def test_commit_adds_one_layer_with_the_changes(
    store: TenantImages, base: Image, changes_tar: Path, tmp_path: Path
) -> None:
    changes = ConfigChanges.parse(
        [
            'CMD ["/bin/sh", "-c", "echo hi"]',
            "ENV A=2 B='two words'",
            "WORKDIR app",
            "USER nobody",
            "LABEL new=yes old=2",
            "EXPOSE 80 53/udp",
        ]
    )
    image = commit(
        store,
        base,
        changes_tar,
        reference="committed:1",
        comment="a comment",
        author="someone <s@example.com>",
        changes=changes,
        created_by="hyper commit c1",
    )
    assert store.resolve("committed:1").digest == image.digest
    assert image.layers[:-1] == base.layers
    assert len(image.layers) == len(base.layers) + 1
    tar = changes_tar.read_bytes()
    assert image.diff_ids == (*base.diff_ids, Digest.of(tar))
    new = image.layers[-1]
    blob = store.content.path(new.digest).read_bytes()
    assert (new.media_type, new.size, new.digest) == (
        oci.OCI_LAYER_GZIP,
        len(blob),
        Digest.of(blob),
    )
    assert gzip.decompress(blob) == tar

    config = image.config
    assert config.cmd == ("/bin/sh", "-c", "echo hi")
    assert config.env == ("PATH=/bin", "A=2", "B=two words")
    assert config.working_dir == "/srv/app"
    assert config.user == "nobody"
    assert config.labels == {"old": "2", "new": "yes"}
    assert config.exposed_ports == ("53/udp", "80/tcp")

    doc = config_document(store, image)
    history = doc["history"]
    assert len(history) == 2  # the base had none: one entry per base layer is made first
    assert history[-1]["created_by"] == "hyper commit c1"
    assert history[-1]["comment"] == "a comment"
    assert history[-1]["author"] == doc["author"] == "someone <s@example.com>"
    assert history[-1]["created"] == doc["created"]
    assert "empty_layer" not in history[-1]

    assert unpack(store, image, tmp_path / "root") == {
        "bin": "dir",
        "bin/sh": "shell",
        "cache": "dir",
        "cache/fresh": "fresh",
        "d": "dir",
        "d/f": "",
        "etc": "dir",
        "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
        "new": "hi\n",
        "new2": "hi\n",
    }
    root = tmp_path / "root"
    assert os.stat(root / "new").st_ino == os.stat(root / "new2").st_ino


def test_commit_twice_gives_the_same_layer(
    store: TenantImages, base: Image, changes_tar: Path
) -> None:
    first = commit(store, base, changes_tar, reference="a:1")
    second = commit(store, first, changes_tar, reference="b:1")
    assert second.layers[-1] == first.layers[-1]  # deterministic gzip
    history = config_document(store, second)["history"]
    assert len(history) == 3
    assert all("created" in entry for entry in history)


def test_an_empty_change_set_is_an_empty_layer(
    store: TenantImages, base: Image, tmp_path: Path
) -> None:
    (tmp_path / "upper").mkdir()
    empty = tmp_path / "empty.tar"
    assert export(tmp_path / "upper", empty) == b"\0" * 1024
    image = commit(
        store, base, empty, reference="same:1", changes=ConfigChanges.parse(["ENTRYPOINT top"])
    )
    assert image.layers == base.layers
    assert image.diff_ids == base.diff_ids
    assert image.digest != base.digest
    assert image.config.entrypoint == ("/bin/sh", "-c", "top")
    assert image.config.cmd == ()  # ENTRYPOINT without CMD clears the command, as docker does
    history = config_document(store, image)["history"]
    assert history[-1]["empty_layer"] is True
    assert sum(not entry.get("empty_layer") for entry in history) == len(image.diff_ids)
    assert unpack(store, image, tmp_path / "root") == unpack(store, base, tmp_path / "base")

    zero = tmp_path / "zero.tar"
    zero.write_bytes(b"")
    assert commit(store, base, zero, reference="zero:1").layers == base.layers


def test_without_a_reference_nothing_is_tagged(
    store: TenantImages, base: Image, changes_tar: Path
) -> None:
    image = commit(store, base, changes_tar, reference=None)
    assert image.reference.digest == image.digest
    assert image.reference.tag is None
    assert store.content.exists(image.digest)
    with pytest.raises(NotFound):
        store.resolve(f"base@{image.digest}")
    tagged = store.tag("later:1", image.digest)
    assert (tagged.layers, tagged.diff_ids, tagged.config) == (
        image.layers,
        image.diff_ids,
        image.config,
    )


def _raw_tar(*entries: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            archive.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.size else None)
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.mark.parametrize(
    ("tar", "message"),
    [
        (layer_tar({"../evil": File(b"x")}), "climbs out"),
        (layer_tar({"/etc/passwd": File(b"x")}), "absolute path"),
        (_raw_tar(_info("a", tarfile.LNKTYPE, "missing")), "not an earlier file"),
        (_raw_tar(_info("d", tarfile.DIRTYPE), _info("l", tarfile.LNKTYPE, "d")), "not an earlier"),
        (_raw_tar(_info("x/.wh.y", tarfile.SYMTYPE, "z")), "not a regular file"),
        (_raw_tar(_info("x/.wh..")), "invalid whiteout"),
        (_raw_tar(_info("s", tarfile.SYMTYPE, "")), "empty target"),
        (_raw_tar(_info("c", tarfile.CONTTYPE, size=1)), None),
        (b"not a tar at all" * 64, "not a"),
        (layer_tar({"a": File(b"x" * 2000)})[:1100], "not a valid tar"),
    ],
)
def test_hostile_layers_are_refused_and_leave_nothing(
    store: TenantImages, base: Image, tmp_path: Path, tar: bytes, message: str | None
) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(tar)
    blobs = set(store.content)
    if message is None:  # a contiguous file is a regular file: accepted
        commit(store, base, path, reference="ok:1")
        return
    with pytest.raises(InvalidArgument, match=message):
        commit(store, base, path, reference="bad:1")
    assert set(store.content) == blobs
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(NotFound):
        store.resolve("bad:1")


def test_limits_bound_the_layer(store: TenantImages, base: Image, tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(layer_tar({f"f{i}": File(b"x") for i in range(10)}))
    with pytest.raises(InvalidArgument, match="over 5 entries"):
        commit(store, base, path, reference="x:1", limits=UnpackLimits(max_entries=5))
    with pytest.raises(InvalidArgument, match="over 4 bytes"):
        commit(store, base, path, reference="x:1", limits=UnpackLimits(max_bytes=4))
    link = tmp_path / "link.tar"
    link.symlink_to(path)
    with pytest.raises(OSError):
        commit(store, base, link, reference="x:1")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['CMD ["a", "b"]'], ConfigChanges(cmd=("a", "b"))),
        (["cmd echo $HOME"], ConfigChanges(cmd=("/bin/sh", "-c", "echo $HOME"))),
        (["CMD [not json"], ConfigChanges(cmd=("/bin/sh", "-c", "[not json"))),
        (["CMD []"], ConfigChanges(cmd=())),
        (['ENTRYPOINT ["/app"]'], ConfigChanges(entrypoint=("/app",))),
        (["ENV GREETING hello world"], ConfigChanges(env=("GREETING=hello world",))),
        (['ENV A=1 B="x y" C=x\\ z'], ConfigChanges(env=("A=1", "B=x y", "C=x z"))),
        (["WORKDIR /a", "WORKDIR b"], ConfigChanges(workdir="/a/b")),
        (["USER 1000:1000"], ConfigChanges(user="1000:1000")),
        (["LABEL a=1 'b c'=2"], ConfigChanges(labels={"a": "1", "b c": "2"})),
        (
            ["EXPOSE 8000-8002/UDP 9"],
            ConfigChanges(expose=("8000/udp", "8001/udp", "8002/udp", "9/tcp")),
        ),
        ([], ConfigChanges()),
    ],
)
def test_change_syntax(lines: list[str], expected: ConfigChanges) -> None:
    assert ConfigChanges.parse(lines) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("RUN rm -rf /", "not a change commit supports"),
        ("", "not a change"),
        ("CMD", "needs a command"),
        ("ENV", "KEY=VALUE"),
        ("ENV ONLYKEY", "needs a value"),
        ("LABEL novalue", "not KEY=VALUE"),
        ("USER a b", "one user"),
        ("EXPOSE 70000", "not a valid port"),
        ("EXPOSE http", "PORT"),
        ("ENV A='unclosed", "quotation"),
    ],
)
def test_bad_changes(line: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ConfigChanges.parse([line])


def test_relative_workdir_joins_the_base_one() -> None:
    run = ConfigChanges.parse(["WORKDIR sub/../x"]).apply({"WorkingDir": "/srv"})
    assert run == {"WorkingDir": "/srv/x"}
    assert ConfigChanges.parse(["WORKDIR x"]).apply({}) == {"WorkingDir": "/x"}
    keep = {"Cmd": ["a"], "Entrypoint": ["e"]}
    assert ConfigChanges.parse(['CMD ["b"]', "ENTRYPOINT ['x']"]).apply(keep) == {
        "Cmd": ["b"],
        "Entrypoint": ["/bin/sh", "-c", "['x']"],
    }
