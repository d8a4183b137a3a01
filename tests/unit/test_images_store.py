import json
import os
import threading

import pytest

from hyper.errors import Internal, InvalidArgument, NotFound
from hyper.images import oci
from hyper.images.builder import File, build_image
from hyper.images.digest import Digest
from hyper.images.layout import import_layout
from hyper.images.oci import ImageConfig
from hyper.images.store import ImageStore


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def test_blob_round_trip_and_stored_once(store):
    digest = store.content.put(b"hello")
    assert digest == Digest.of(b"hello")
    assert store.content.path(digest).read_bytes() == b"hello"
    assert store.content.put(b"hello") == digest
    assert list(store.content) == [digest]
    with store.content.open(digest) as blob:
        assert blob.read() == b"hello"
    assert store.content.read(digest, 100) == b"hello"
    assert os.listdir(store.tmp_dir) == []


def test_digest_mismatch_on_arrival_leaves_nothing(store):
    wrong = Digest.of(b"other")
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        store.content.put(b"hello", wrong)
    import io

    with pytest.raises(InvalidArgument, match="does not match its digest"):
        store.content.ingest(io.BytesIO(b"hello"), wrong)
    with pytest.raises(InvalidArgument, match="exceeds its size"):
        store.content.ingest(io.BytesIO(b"hello"), size=3)
    assert list(store.content) == []
    assert os.listdir(store.tmp_dir) == []


def test_corruption_detected_on_read_back(store):
    digest = store.content.put(b"x" * 100_000)
    path = store.content.path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(50_000)
        f.write(b"y")
    with pytest.raises(Internal, match="corrupt"):
        store.content.verify(digest)
    with pytest.raises(Internal, match="corrupt"), store.content.open(digest) as blob:
        while blob.read(4096):
            pass
    with pytest.raises(Internal, match="corrupt"):
        store.content.read(digest, 1 << 20)


def test_image_round_trip(store):
    config = ImageConfig(
        entrypoint=("/bin/app",),
        cmd=("--help",),
        env=("A=1",),
        working_dir="/srv",
        user="1000:1000",
        labels={"k": "v"},
    )
    image = build_image(store, "me/app:1", [{"a": b"1"}, {"b": File(b"2")}], config)
    again = store.resolve("docker.io/me/app:1")
    assert again == image
    assert again.config == config
    assert again.reference.familiar == "me/app:1"
    assert len(again.layers) == 2 and again.layers[0].media_type == oci.OCI_LAYER
    assert again.diff_ids[0] == again.layers[0].digest  # uncompressed
    by_digest = store.resolve(f"me/app@{image.digest}")
    assert by_digest.digest == image.digest
    with pytest.raises(NotFound):
        store.resolve(f"other@{image.digest}")
    with pytest.raises(NotFound):
        store.resolve("me/app:2")
    assert [i.reference.familiar for i in store.list()] == ["me/app:1"]


def test_tag_remove_and_gc(store):
    one = build_image(store, "one", [{"shared": b"s", "one": b"1"}])
    two = build_image(store, "two", [{"shared": b"s", "two": b"2"}])
    store.tag("alias:x", one.digest)
    assert store.resolve("alias:x").digest == one.digest
    before = set(store.content)
    assert store.gc().blobs_removed == 0
    assert store.remove("one") == one.digest
    assert store.gc().blobs_removed == 0  # alias:x still holds it
    store.remove("alias:x")
    result = store.gc()
    assert result.blobs_removed == 3  # manifest, config, layer
    assert set(store.content) == before - {one.digest, one.config_digest, one.layers[0].digest}
    assert store.resolve("two") == two
    with pytest.raises(NotFound):
        store.remove("one")


def test_remove_by_digest_drops_the_repositorys_references(store):
    image = build_image(store, "app:1", [{"a": b"a"}])
    store.tag("app:2", image.digest)
    store.tag("other:1", image.digest)
    store.remove(f"app@{image.digest}")
    assert [i.reference.familiar for i in store.list()] == ["other:1"]


def test_tag_refuses_missing_manifest_and_mismatched_digest(store):
    image = build_image(store, "app", [{"a": b"a"}])
    with pytest.raises(NotFound):
        store.tag("x", Digest.of(b"nothing"))
    with pytest.raises(InvalidArgument):
        store.tag(f"x@{Digest.of(b'nothing')}", image.digest)


def test_oversized_manifest_is_refused(store):
    huge = json.dumps({"schemaVersion": 2, "pad": "x" * (4 << 20)}).encode()
    digest = store.content.put(huge)
    with pytest.raises(InvalidArgument, match="limit"):
        store.tag("big", digest)


def test_docker_media_types_accepted(store):
    layer = store.content.put(b"\0" * 1024)
    config = oci.canonical_json(
        {"rootfs": {"type": "layers", "diff_ids": [str(Digest.of(b"\0" * 1024))]}, "config": None}
    )
    config_digest = store.content.put(config)
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.DOCKER_MANIFEST,
            "config": {"mediaType": oci.DOCKER_CONFIG, "digest": str(config_digest), "size": 1},
            "layers": [{"mediaType": oci.DOCKER_LAYER, "digest": str(layer), "size": 1024}],
        }
    )
    image = store.tag("d", store.content.put(manifest))
    assert image.media_type == oci.DOCKER_MANIFEST
    assert image.config == ImageConfig()


def test_concurrent_tagging_keeps_every_tag(store):
    image = build_image(store, "base", [{"a": b"a"}])
    threads = [threading.Thread(target=store.tag, args=(f"t{i}", image.digest)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list()) == 17


def _write_layout(src: ImageStore, image, layout, ref_name):
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for digest in (image.digest, image.config_digest, *(x.digest for x in image.layers)):
        (blobs / digest.hex).write_bytes(src.content.path(digest).read_bytes())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    size = src.content.size(image.digest)
    entry = {"mediaType": oci.OCI_MANIFEST, "digest": str(image.digest), "size": size}
    if ref_name:
        entry["annotations"] = {oci.ANNOTATION_REF_NAME: ref_name}
    index = {"schemaVersion": 2, "manifests": [entry]}
    (layout / "index.json").write_text(json.dumps(index))


def test_import_oci_layout(tmp_path, store):
    src = ImageStore(tmp_path / "src")
    image = build_image(src, "app:1", [{"a": b"a"}, {"b": b"b"}], ImageConfig(cmd=("x",)))
    layout = tmp_path / "layout"
    _write_layout(src, image, layout, "localhost:5000/app:1")
    (imported,) = import_layout(store, layout)
    assert imported.reference.familiar == "localhost:5000/app:1"
    assert imported.digest == image.digest and imported.config.cmd == ("x",)
    (renamed,) = import_layout(store, layout, "mine:2")
    assert store.resolve("mine:2").digest == renamed.digest


def test_import_verifies_blobs(tmp_path, store):
    src = ImageStore(tmp_path / "src")
    image = build_image(src, "app:1", [{"a": b"a"}])
    layout = tmp_path / "layout"
    _write_layout(src, image, layout, "1")
    (layout / "blobs" / "sha256" / image.layers[0].digest.hex).write_bytes(b"tampered")
    with pytest.raises(InvalidArgument, match=r"does not match|bytes"):
        import_layout(store, layout, "app:1")
    with pytest.raises(NotFound):
        store.resolve("app:1")
    with pytest.raises(InvalidArgument, match="full name"):
        import_layout(store, layout)
