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
    store.tenant("default").tag("alias:x", one.digest)
    assert store.resolve("alias:x").digest == one.digest
    before = set(store.content)
    assert store.gc().blobs_removed == 0
    assert store.tenant("default").remove("one") == one.digest
    assert store.gc().blobs_removed == 0  # alias:x still holds it
    store.tenant("default").remove("alias:x")
    result = store.gc()
    assert result.blobs_removed == 3  # manifest, config, layer
    assert set(store.content) == before - {one.digest, one.config_digest, one.layers[0].digest}
    assert store.resolve("two") == two
    with pytest.raises(NotFound):
        store.tenant("default").remove("one")


def test_remove_by_digest_drops_the_repositorys_references(store):
    image = build_image(store, "app:1", [{"a": b"a"}])
    store.tenant("default").tag("app:2", image.digest)
    store.tenant("default").tag("other:1", image.digest)
    store.tenant("default").remove(f"app@{image.digest}")
    assert [i.reference.familiar for i in store.list()] == ["other:1"]


def test_tag_refuses_missing_manifest_and_mismatched_digest(store):
    image = build_image(store, "app", [{"a": b"a"}])
    with pytest.raises(NotFound):
        store.tenant("default").tag("x", Digest.of(b"nothing"))
    with pytest.raises(InvalidArgument):
        store.tenant("default").tag(f"x@{Digest.of(b'nothing')}", image.digest)


def test_oversized_manifest_is_refused(store):
    huge = json.dumps({"schemaVersion": 2, "pad": "x" * (4 << 20)}).encode()
    digest = store.content.put(huge)
    with pytest.raises(InvalidArgument, match="limit"):
        store.tenant("default").tag("big", digest)


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
    image = store.tenant("default").tag("d", store.content.put(manifest))
    assert image.media_type == oci.DOCKER_MANIFEST
    assert image.config == ImageConfig()


def test_concurrent_tagging_keeps_every_tag(store):
    image = build_image(store, "base", [{"a": b"a"}])
    threads = [
        threading.Thread(target=store.tenant("default").tag, args=(f"t{i}", image.digest))
        for i in range(16)
    ]
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


# -- tenants: blobs shared, names not ---------------------------------------------------------


def test_each_tenant_has_its_own_names(store):
    alice, bob = store.tenant("alice"), store.tenant("bob")
    a = build_image(alice, "busybox", [{"who": b"alice"}])
    b = build_image(bob, "busybox", [{"who": b"bob"}])
    assert a.digest != b.digest
    assert alice.resolve("busybox").digest == a.digest
    assert bob.resolve("busybox").digest == b.digest
    only_alice = build_image(alice, "private:1", [{"p": b"p"}])
    for name in ("private:1", f"private@{only_alice.digest}"):
        with pytest.raises(NotFound, match="no such image"):
            bob.resolve(name)
        with pytest.raises(NotFound, match="no such image"):
            bob.remove(name)
    assert [i.reference.familiar for i in bob.list()] == ["busybox:latest"]
    assert store.tenants() == ["alice", "bob", "default"]
    assert store.list() == []  # the default tenant has nothing
    alice.remove("busybox")
    assert bob.resolve("busybox").digest == b.digest  # bob's name is untouched
    with pytest.raises(NotFound):
        alice.resolve("busybox")


def test_gc_keeps_what_any_tenant_names(store):
    alice, bob = store.tenant("alice"), store.tenant("bob")
    image = build_image(alice, "app:1", [{"a": b"a"}])
    bob.tag("theirs:1", image.digest)
    alice.remove("app:1")
    assert store.gc().blobs_removed == 0  # only bob names it now
    assert bob.resolve("theirs:1").digest == image.digest
    bob.remove("theirs:1")
    assert store.gc().blobs_removed == 3
    assert list(store.content) == []


def test_the_default_tenant_keeps_refs_json(tmp_path):
    root = tmp_path / "images"
    old = ImageStore(root)  # a store from before tenancy: refs.json, no refs/
    image = build_image(old, "app:1", [{"a": b"a"}])
    assert json.loads((root / "refs.json").read_text())["refs"] == {
        "docker.io/library/app:1": str(image.digest)
    }
    store = ImageStore(root)
    assert store.tenant("default").resolve("app:1") == image
    build_image(store.tenant("t1"), "app:1", [{"b": b"b"}])
    assert (root / "refs" / "t1.json").is_file()
    assert store.tenant("default").resolve("app:1") == image


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 64, "-x"])
def test_tenant_names_are_checked_before_they_become_paths(store, name):
    with pytest.raises(InvalidArgument):
        store.tenant(name)


def test_an_image_by_digest_needs_no_name(store):
    image = build_image(store.tenant("alice"), "app:1", [{"a": b"a"}])
    assert store.image(image.digest, "app:1") == image
    with pytest.raises(NotFound, match="no such image: app:1"):
        store.image(Digest.of(b"nothing"), "app:1")


def test_gc_waits_for_every_tenants_names(store):
    alice = store.tenant("alice")
    image = build_image(alice, "app:1", [{"a": b"a"}])
    done = threading.Event()
    with alice.refs.locked():

        def collect() -> None:
            store.gc()
            done.set()

        thread = threading.Thread(target=collect)
        thread.start()
        assert not done.wait(0.2)  # gc cannot decide while alice's names may change
        alice.refs.path.unlink()  # (unlocked writers are not a thing: this is the test's own)
    thread.join(5)
    assert done.is_set()
    assert not store.content.exists(image.digest)
