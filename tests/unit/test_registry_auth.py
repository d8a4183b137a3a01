import base64
import json
import stat

import pytest

from hyper.errors import Internal, InvalidArgument
from hyper.registry.auth import (
    AuthFile,
    Challenge,
    Credentials,
    normalize_registry,
    parse_challenges,
    parse_token_response,
    repository_scope,
)


def test_bearer_challenge_with_quoted_commas():
    (c,) = parse_challenges(
        ['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:library/busybox:pull,push"']
    )  # fmt: skip
    assert c == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/busybox:pull,push",
        },
    )


def test_several_challenges_escapes_and_tokens():
    found = parse_challenges(
        ['Basic realm="a \\"quoted\\" realm", Bearer realm=x, error=insufficient_scope']
    )
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[0].params == {"realm": 'a "quoted" realm'}
    assert found[1].params == {"realm": "x", "error": "insufficient_scope"}
    assert parse_challenges(["Negotiate abc123=="]) == [Challenge("negotiate", {})]
    assert parse_challenges([""]) == []


def test_token_response():
    assert parse_token_response(b'{"token": "t", "expires_in": 300}') == ("t", 300.0)
    assert parse_token_response(b'{"access_token": "a"}') == ("a", 60.0)
    for bad in (b"nope", b"[]", b'{"token": ""}'):
        with pytest.raises(InvalidArgument):
            parse_token_response(bad)


def test_scopes_and_registry_names():
    assert (
        repository_scope("library/busybox", "pull", "push")
        == "repository:library/busybox:pull,push"
    )
    for name in (
        "https://index.docker.io/v1/",
        "docker.io",
        "registry-1.docker.io",
        "index.docker.io",
    ):
        assert normalize_registry(name) == "docker.io"
    assert normalize_registry("http://Example.com:5000/v2/") == "example.com:5000"


def test_auth_file_is_docker_compatible(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"me:pw:x:y").decode()},
            "legacy.example": {"username": "u", "password": "p"},
        },
        "credsStore": "desktop",
    }))  # fmt: skip
    auth = AuthFile(path)
    assert auth.get("docker.io") == Credentials("me", "pw:x:y")
    assert auth.get("https://legacy.example/v1/") == Credentials("u", "p")
    assert auth.get("other.example") is None
    auth.store("127.0.0.1:5000", Credentials("alice", "s3cret"))
    auth.store("registry-1.docker.io", Credentials("new", "pw"))
    doc = json.loads(path.read_text())
    assert doc["credsStore"] == "desktop"  # kept
    assert base64.b64decode(doc["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:s3cret"
    assert list(doc["auths"]).count("https://index.docker.io/v1/") == 1
    assert auth.get("docker.io") == Credentials("new", "pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.registries() == ["127.0.0.1:5000", "docker.io", "legacy.example"]
    assert auth.remove("127.0.0.1:5000") is True
    assert auth.remove("127.0.0.1:5000") is False
    assert "hunter2" not in repr(Credentials("a", "hunter2"))


def test_auth_file_missing_or_damaged(tmp_path):
    assert AuthFile(tmp_path / "absent.json").get("x") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(Internal, match="not valid JSON"):
        AuthFile(bad).get("x")
    bad.write_text('{"auths": {"x": {"auth": "!!!"}}}')
    with pytest.raises(Internal, match="base64"):
        AuthFile(bad).get("x")
    with pytest.raises(InvalidArgument, match="':'"):
        AuthFile(tmp_path / "a.json").store("x", Credentials("a:b", "c"))
