"""ImageService's local use cases: tag, images, inspect, history, rmi (with "in use"), save/load,
prune; and that images and registry credentials belong to the caller's tenant."""

import json
import tarfile
from typing import Any

import httpx
import pytest

from hyper.config.settings import Paths, RegistrySettings, Settings
from hyper.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from hyper.images import oci
from hyper.images.builder import build_image
from hyper.images.digest import Digest
from hyper.images.oci import ImageConfig
from hyper.registry.auth import Credentials
from hyper.service.caller import Caller
from hyper.service.images import ImageService
from hyper.tenancy.principal import Principal, Role

OPERATOR = Caller.operator()
ALICE = Caller(Principal("alice", Role.ADMIN, "test"))
BOB = Caller(Principal("bob", Role.ADMIN, "test"))
ALICE_MEMBER = Caller(Principal("alice", Role.MEMBER, "test"))
REGISTRY = "127.0.0.1:5000"


def _settings(tmp_path, name="state"):
    return Settings(
        paths=Paths(
            state_dir=tmp_path / name, run_dir=tmp_path / f"{name}-run", cache_dir=tmp_path / "c"
        ),
        registry=RegistrySettings(insecure=(REGISTRY,)),
    )


@pytest.fixture
def svc(tmp_path):
    return ImageService(_settings(tmp_path))


def test_tag_list_inspect_history(svc):
    image = build_image(svc.store, "app:1", [{"a": b"1"}, {"b": b"22"}], ImageConfig(cmd=("sh",)))
    tagged = svc.tag(OPERATOR, "app:1", "localhost:5000/team/app:v2")
    assert tagged.digest == image.digest
    rows = svc.list(OPERATOR)
    assert sorted((r["Repository"], r["Tag"], r["Tenant"]) for r in rows) == [
        ("app", "1", "default"),
        ("localhost:5000/team/app", "v2", "default"),
    ]
    assert {r["Id"] for r in rows} == {image.id}
    doc = svc.inspect(OPERATOR, "app:1")
    assert doc["Id"] == image.id
    assert sorted(doc["RepoTags"]) == ["app:1", "localhost:5000/team/app:v2"]
    assert doc["RepoDigests"][0] == f"app@{image.digest}"
    assert doc["Config"]["Cmd"] == ["sh"]
    assert doc["RootFS"]["Layers"] == [str(d) for d in image.diff_ids]
    assert doc["Os"] == "linux" and doc["Size"] == image.size
    json.dumps(doc)
    assert svc.inspect(OPERATOR, image.id)["Id"] == image.id  # by id
    assert svc.inspect(OPERATOR, image.config_digest.hex[:12])["Id"] == image.id  # by short id
    history = svc.history(OPERATOR, "app:1")
    assert [h["Size"] for h in history] == [image.layers[1].size, image.layers[0].size]
    assert history[0]["Id"] == image.id and history[1]["Id"] == "<missing>"
    with pytest.raises(InvalidArgument):
        svc.tag(OPERATOR, "app:1", f"app@sha256:{'a' * 64}")
    with pytest.raises(NotFound):
        svc.inspect(OPERATOR, "nope:1")


def test_remove_respects_in_use_and_frees_blobs(tmp_path, svc):
    image = build_image(svc.store, "app:1", [{"a": b"1"}])
    svc.tag(OPERATOR, "app:1", "app:2")
    used = {(image.digest, "default")}
    guarded = ImageService(svc.settings, in_use=lambda digest, tenant: (digest, tenant) in used)
    assert guarded.remove(OPERATOR, "app:1") == [{"Untagged": "app:1"}]  # another tag is left
    with pytest.raises(FailedPrecondition, match="pod is using"):
        guarded.remove(OPERATOR, "app:2")
    assert guarded.remove(OPERATOR, "app:2", force=True) == [
        {"Untagged": "app:2"},
        {"Deleted": image.id},
    ]
    assert list(svc.store.content) == []
    with pytest.raises(NotFound):
        svc.remove(OPERATOR, "app:2")


def test_save_load_through_the_service(tmp_path, svc):
    build_image(svc.store, "app:1", [{"a": b"1"}])
    out = tmp_path / "app.tar"
    svc.save(OPERATOR, ["app:1"], out, format="docker")
    other = ImageService(_settings(tmp_path, "o"))
    assert other.load(OPERATOR, out) == ["app:1"]
    assert other.inspect(OPERATOR, "app:1")["Id"] == svc.inspect(OPERATOR, "app:1")["Id"]
    with pytest.raises(InvalidArgument, match="format"):
        svc.save(OPERATOR, ["app:1"], out, format="zip")


def test_logout_without_login_and_settings(svc):
    assert svc.logout(OPERATOR, REGISTRY) is False
    assert svc.settings.auth_file == svc.settings.paths.state_dir / "auth.json"
    assert svc.auth("default").path == svc.settings.auth_file
    with svc.client(REGISTRY, "default") as client:
        assert client.base_url == "http://127.0.0.1:5000"
    with svc.client("docker.io", "default") as client:
        assert client.base_url == "https://registry-1.docker.io"


# -- tenants ----------------------------------------------------------------------------------


def _missing(call, *args):
    """The message of the NotFound that ``call(*args)`` raises."""
    with pytest.raises(NotFound) as raised:
        call(*args)
    return str(raised.value)


def test_another_tenants_image_answers_like_a_missing_one(tmp_path, svc):
    image = build_image(svc.store.tenant("alice"), "app:1", [{"a": b"1"}])
    assert [r["Reference"] for r in svc.list(ALICE)] == ["docker.io/library/app:1"]
    assert svc.list(BOB) == [] and svc.list(OPERATOR) == []
    assert svc.resolve(ALICE, "app:1").digest == image.digest
    for name in ("app:1", f"app@{image.digest}", image.id, image.config_digest.hex[:12]):
        for call, *args in (
            (svc.resolve, name),
            (svc.inspect, name),
            (svc.history, name),
            (svc.save, [name], tmp_path / "out.tar"),
            (svc.tag, name, "mine:1"),
            (svc.remove, name),
            (svc.remove, name, True),
        ):
            message = _missing(call, BOB, *args)
            assert message.startswith("no such image: ")
            assert message == _missing(call, OPERATOR, *args)  # as for a tenant without it
    assert not (tmp_path / "out.tar").exists()
    # B cannot commit on top of it either: the base has no name in B's tenant
    with pytest.raises(NotFound, match="no longer stored"):
        svc.commit(BOB, image.digest, tmp_path / "layer.tar", reference="x:1")
    assert svc.resolve(ALICE, "app:1").digest == image.digest  # nothing of A's changed
    # the operator lists every tenant's names, each with its tenant
    every = Caller(Principal.local_operator("default"), every=True)
    assert [(r["Tenant"], r["Tag"]) for r in svc.list(every)] == [("alice", "1")]
    assert svc.count(every.reads()) == 1 and svc.count(BOB.reads()) == 0


def test_the_same_name_means_something_else_in_each_tenant(svc):
    a = build_image(svc.store.tenant("alice"), "busybox:latest", [{"a": b"alice"}])
    b = build_image(svc.store.tenant("bob"), "busybox:latest", [{"b": b"bob"}])
    assert a.digest != b.digest
    assert svc.resolve(ALICE, "busybox").digest == a.digest
    assert svc.resolve(BOB, "busybox").digest == b.digest
    svc.tag(ALICE, "busybox", "copy:1")
    assert svc.remove(ALICE, "busybox") == [{"Untagged": "busybox:latest"}]
    assert svc.resolve(BOB, "busybox").digest == b.digest
    with pytest.raises(NotFound):
        svc.resolve(ALICE, "busybox")
    assert svc.remove(BOB, "busybox") == [{"Untagged": "busybox:latest"}, {"Deleted": b.id}]
    assert not svc.store.content.exists(b.layers[0].digest)  # freed: no tenant names it
    assert svc.store.content.exists(a.layers[0].digest)  # alice's copy:1 still does


def test_shared_blobs_survive_until_no_tenant_names_them(svc):
    a = build_image(svc.store.tenant("alice"), "app:1", [{"a": b"same"}])
    b = build_image(svc.store.tenant("bob"), "app:1", [{"a": b"same"}])
    assert a.digest == b.digest  # stored once
    assert svc.remove(ALICE, "app:1") == [{"Untagged": "app:1"}, {"Deleted": a.id}]
    assert svc.store.content.exists(a.digest)  # bob's name still reaches it
    assert svc.resolve(BOB, "app:1").digest == a.digest
    svc.remove(BOB, "app:1")
    assert list(svc.store.content) == []


def test_in_use_is_asked_for_the_callers_tenant(svc):
    image = build_image(svc.store.tenant("alice"), "app:1", [{"a": b"1"}])
    build_image(svc.store.tenant("bob"), "app:1", [{"a": b"1"}])
    asked = []

    def in_use(digest, tenant):
        asked.append(tenant)
        return tenant == "alice"

    guarded = ImageService(svc.settings, in_use=in_use)
    with pytest.raises(FailedPrecondition, match="pod is using"):
        guarded.remove(ALICE, "app:1")
    assert guarded.remove(BOB, "app:1") == [{"Untagged": "app:1"}, {"Deleted": image.id}]
    assert asked == ["alice", "bob"]
    assert guarded.resolve(ALICE, "app:1").digest == image.digest


def test_a_member_looks_but_does_not_change(tmp_path, svc):
    build_image(svc.store.tenant("alice"), "app:1", [{"a": b"1"}])
    assert len(svc.list(ALICE_MEMBER)) == 1
    assert svc.inspect(ALICE_MEMBER, "app:1")["RepoTags"] == ["app:1"]
    svc.save(ALICE_MEMBER, ["app:1"], tmp_path / "a.tar")
    for call, *args in (
        (svc.pull, f"{REGISTRY}/app:1"),
        (svc.push, "app:1"),
        (svc.tag, "app:1", "b:1"),
        (svc.remove, "app:1"),
        (svc.load, tmp_path / "a.tar"),
        (svc.prune,),
        (svc.login, REGISTRY, "u", "p"),
        (svc.logout, REGISTRY),
    ):
        with pytest.raises(PermissionDenied):
            call(ALICE_MEMBER, *args)
    with pytest.raises(PermissionDenied):  # nor read another tenant's
        svc.list(Caller(Principal("alice", Role.MEMBER, "test"), tenant="bob"))
    assert [r["Tag"] for r in svc.list(ALICE)] == ["1"]


def test_prune_drops_only_the_callers_dangling_names(svc):
    alice, bob = svc.store.tenant("alice"), svc.store.tenant("bob")
    old = build_image(alice, "app:1", [{"v": b"1"}])
    alice.tag(f"app@{old.digest}", old.digest)
    build_image(alice, "app:1", [{"v": b"2"}])  # app:1 moves on: the digest name dangles
    kept = build_image(alice, "kept:1", [{"k": b"k"}])
    alice.tag(f"kept@{kept.digest}", kept.digest)  # tagged too: not dangling
    bob.tag(f"app@{old.digest}", old.digest)  # bob's own dangling name of the same image
    result = svc.prune(ALICE)
    assert result["NamesRemoved"] == 1
    assert sorted(alice.refs.read()) == [
        "docker.io/library/app:1",
        "docker.io/library/kept:1",
        f"docker.io/library/kept@{kept.digest}",
    ]
    assert svc.resolve(BOB, f"app@{old.digest}").digest == old.digest  # bob's is untouched
    assert result["BlobsRemoved"] == 0  # bob's name still reaches the old image
    assert svc.prune(BOB)["BlobsRemoved"] == 3


def test_load_does_not_reach_another_tenants_blobs_by_digest(tmp_path, svc):
    image = build_image(svc.store.tenant("alice"), "secret:1", [{"key": b"alice's secret"}])
    full = tmp_path / "full.tar"
    svc.save(ALICE, ["secret:1"], full, format="oci")
    # the same archive without the layer: names it, but does not bring its bytes
    stripped = tmp_path / "stripped.tar"
    with tarfile.open(full) as source, tarfile.open(stripped, "w") as out:
        for member in source.getmembers():
            if member.name != f"blobs/sha256/{image.layers[0].digest.hex}":
                out.addfile(member, source.extractfile(member) if member.isfile() else None)
    with pytest.raises(InvalidArgument, match="lacks blob"):
        svc.load(BOB, stripped)
    with pytest.raises(NotFound):
        svc.resolve(BOB, "secret:1")
    assert svc.load(ALICE, stripped) == ["secret:1"]  # alice has it already: fine
    assert svc.load(BOB, full) == ["secret:1"]  # with the bytes: fine


# -- registries -------------------------------------------------------------------------------


class FakeRegistry:
    """A registry on an httpx transport: serves ``app:1`` and records each request's
    Authorization header; a private one answers only ``user:pass``."""

    def __init__(self, blobs: dict[Digest, bytes], manifest: bytes, private: bool) -> None:
        self.blobs = blobs
        self.manifest = manifest
        self.private = private
        self.seen: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        self.seen.append(auth)
        path = request.url.path
        if (self.private or path == "/v2/") and auth != Credentials("user", "pass").basic_header():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if path == "/v2/":
            return httpx.Response(200)
        if path == "/v2/app/manifests/1":
            digest = str(Digest.of(self.manifest))
            headers = {"Content-Type": oci.OCI_MANIFEST, "Docker-Content-Digest": digest}
            return httpx.Response(200, content=self.manifest, headers=headers)
        if path.startswith("/v2/app/blobs/"):
            data = self.blobs.get(Digest.parse(path.rsplit("/", 1)[1]))
            return httpx.Response(200, content=data) if data is not None else httpx.Response(404)
        return httpx.Response(404)


def _registry_of(image, store, *, tamper=None, private=False) -> FakeRegistry:
    blobs = {
        d: store.content.read(d, 1 << 20) for d in (image.config_digest, image.layers[0].digest)
    }
    if tamper is not None:
        blobs[tamper] = b"x" * len(blobs[tamper])  # the right size, not the right bytes
    return FakeRegistry(blobs, store.content.read(image.digest, 1 << 20), private)


def test_credentials_belong_to_a_tenant(tmp_path):
    source = ImageService(_settings(tmp_path, "src"))
    image = build_image(source.store, "app:1", [{"a": b"1"}])
    registry = _registry_of(image, source.store, private=True)
    svc = ImageService(_settings(tmp_path), transport=httpx.MockTransport(registry))
    assert svc.login(ALICE, REGISTRY, "user", "pass") == "Login Succeeded"
    alice_file = svc.settings.paths.state_dir / "auth" / "alice.json"
    assert alice_file.stat().st_mode & 0o777 == 0o600
    assert alice_file.parent.stat().st_mode & 0o777 == 0o700
    assert not svc.settings.auth_file.exists()  # the default tenant's file is not touched
    assert svc.auth("alice").get(REGISTRY) == Credentials("user", "pass")
    assert svc.auth("bob").get(REGISTRY) is None
    registry.seen.clear()
    with pytest.raises(Unauthenticated):  # bob's pull goes without alice's credentials
        svc.pull(BOB, f"{REGISTRY}/app:1")
    assert registry.seen and set(registry.seen) == {None}
    assert svc.pull(ALICE, f"{REGISTRY}/app:1").digest == image.digest
    assert Credentials("user", "pass").basic_header() in registry.seen
    assert svc.logout(BOB, REGISTRY) is False  # bob cannot see, nor remove, alice's
    assert svc.auth("alice").get(REGISTRY) is not None
    assert svc.logout(ALICE, REGISTRY) is True
    assert svc.auth("alice").get(REGISTRY) is None
    with pytest.raises(InvalidArgument):
        svc.auth("../etc")


def test_a_pull_does_not_reuse_another_tenants_blob_without_its_bytes(tmp_path):
    source = ImageService(_settings(tmp_path, "src"))
    image = build_image(source.store, "app:1", [{"secret": b"alice's layer"}])
    layer = image.layers[0].digest
    honest = _registry_of(image, source.store)
    svc = ImageService(_settings(tmp_path), transport=httpx.MockTransport(honest))
    svc.pull(ALICE, f"{REGISTRY}/app:1")  # now the store has alice's layer
    # bob's registry names the same layer but cannot serve its bytes
    liar = _registry_of(image, source.store, tamper=layer)
    svc._transport = httpx.MockTransport(liar)
    with pytest.raises(InvalidArgument, match="hashes to"):
        svc.pull(BOB, f"{REGISTRY}/app:1")
    with pytest.raises(NotFound):
        svc.resolve(BOB, f"{REGISTRY}/app:1")
    assert svc.store.content.exists(layer)  # alice's copy is untouched
    # alice, whose names reach it, reuses it without asking the registry for it
    liar.seen.clear()
    svc.pull(ALICE, f"{REGISTRY}/app:1")
    svc._transport = httpx.MockTransport(honest)
    events: list[Any] = []
    assert svc.pull(BOB, f"{REGISTRY}/app:1", progress=events.append).digest == image.digest
    assert "exists" not in {e.status for e in events if e.id == layer}
    assert [p for p in svc.store.tmp_dir.iterdir()] == []
