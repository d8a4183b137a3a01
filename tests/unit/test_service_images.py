"""ImageService's local use cases: tag, images, inspect, history, rmi (with "in use"), save/load."""

import json

import pytest

from hyper.config.settings import Paths, RegistrySettings, Settings
from hyper.errors import FailedPrecondition, InvalidArgument, NotFound
from hyper.images.builder import build_image
from hyper.images.oci import ImageConfig
from hyper.service.images import ImageService


@pytest.fixture
def svc(tmp_path):
    settings = Settings(
        paths=Paths(
            state_dir=tmp_path / "state", run_dir=tmp_path / "run", cache_dir=tmp_path / "c"
        ),
        registry=RegistrySettings(insecure=("127.0.0.1:5000",)),
    )
    return ImageService(settings)


def test_tag_list_inspect_history(svc):
    image = build_image(svc.store, "app:1", [{"a": b"1"}, {"b": b"22"}], ImageConfig(cmd=("sh",)))
    tagged = svc.tag("app:1", "localhost:5000/team/app:v2")
    assert tagged.digest == image.digest
    rows = svc.list()
    assert sorted((r["Repository"], r["Tag"]) for r in rows) == [
        ("app", "1"),
        ("localhost:5000/team/app", "v2"),
    ]
    assert {r["Id"] for r in rows} == {image.id}
    doc = svc.inspect("app:1")
    assert doc["Id"] == image.id
    assert sorted(doc["RepoTags"]) == ["app:1", "localhost:5000/team/app:v2"]
    assert doc["RepoDigests"][0] == f"app@{image.digest}"
    assert doc["Config"]["Cmd"] == ["sh"]
    assert doc["RootFS"]["Layers"] == [str(d) for d in image.diff_ids]
    assert doc["Os"] == "linux" and doc["Size"] == image.size
    json.dumps(doc)
    assert svc.inspect(image.id)["Id"] == image.id  # by id
    assert svc.inspect(image.config_digest.hex[:12])["Id"] == image.id  # by short id
    history = svc.history("app:1")
    assert [h["Size"] for h in history] == [image.layers[1].size, image.layers[0].size]
    assert history[0]["Id"] == image.id and history[1]["Id"] == "<missing>"
    with pytest.raises(InvalidArgument):
        svc.tag("app:1", f"app@sha256:{'a' * 64}")
    with pytest.raises(NotFound):
        svc.inspect("nope:1")


def test_remove_respects_in_use_and_frees_blobs(tmp_path, svc):
    image = build_image(svc.store, "app:1", [{"a": b"1"}])
    svc.tag("app:1", "app:2")
    used = {image.digest}
    guarded = ImageService(svc.settings, in_use=lambda digest: digest in used)
    assert guarded.remove("app:1") == [{"Untagged": "app:1"}]  # another tag is left
    with pytest.raises(FailedPrecondition, match="pod is using"):
        guarded.remove("app:2")
    assert guarded.remove("app:2", force=True) == [{"Untagged": "app:2"}, {"Deleted": image.id}]
    assert list(svc.store.content) == []
    with pytest.raises(NotFound):
        svc.remove("app:2")


def test_save_load_through_the_service(tmp_path, svc):
    build_image(svc.store, "app:1", [{"a": b"1"}])
    out = tmp_path / "app.tar"
    svc.save(["app:1"], out, format="docker")
    other = ImageService(
        Settings(
            paths=Paths(
                state_dir=tmp_path / "o", run_dir=tmp_path / "or", cache_dir=tmp_path / "oc"
            )
        )
    )
    assert other.load(out) == ["app:1"]
    assert other.inspect("app:1")["Id"] == svc.inspect("app:1")["Id"]
    with pytest.raises(InvalidArgument, match="format"):
        svc.save(["app:1"], out, format="zip")


def test_logout_without_login_and_settings(svc):
    assert svc.logout("127.0.0.1:5000") is False
    assert svc.settings.auth_file == svc.settings.paths.state_dir / "auth.json"
    with svc.client("127.0.0.1:5000") as client:
        assert client.base_url == "http://127.0.0.1:5000"
    with svc.client("docker.io") as client:
        assert client.base_url == "https://registry-1.docker.io"
