import pytest

from hyper.errors import InvalidArgument
from hyper.images.digest import Digest
from hyper.images.reference import parse

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "familiar", "canonical"),
    [
        (
            "busybox",
            "docker.io",
            "library/busybox",
            "latest",
            None,
            "busybox:latest",
            "docker.io/library/busybox:latest",
        ),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36", None),
        ("me/app", "docker.io", "me/app", "latest", None, "me/app:latest", None),
        ("docker.io/library/busybox", "docker.io", "library/busybox", "latest", None, None, None),
        ("index.docker.io/me/app:v2", "docker.io", "me/app", "v2", None, "me/app:v2", None),
        (
            "localhost:5000/a/b:v1",
            "localhost:5000",
            "a/b",
            "v1",
            None,
            "localhost:5000/a/b:v1",
            "localhost:5000/a/b:v1",
        ),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest", None),
        ("quay.io/x/y-z__w.v", "quay.io", "x/y-z__w.v", "latest", None, None, None),
        ("[::1]:5000/app:t", "[::1]:5000", "app", "t", None, None, None),
        (
            f"x@sha256:{HEX}",
            "docker.io",
            "library/x",
            None,
            HEX,
            f"x@sha256:{HEX}",
            f"docker.io/library/x@sha256:{HEX}",
        ),
        (f"x:1@sha256:{HEX}", "docker.io", "library/x", "1", HEX, f"x:1@sha256:{HEX}", None),
        ("a/b/c/d:T_a.g-1", "docker.io", "a/b/c/d", "T_a.g-1", None, "a/b/c/d:T_a.g-1", None),
    ],
)
def test_parse(text, registry, repository, tag, digest, familiar, canonical):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest(digest) if digest else None)
    if familiar:
        assert ref.familiar == familiar
    if canonical:
        assert ref.canonical == canonical
    assert parse(ref.canonical) == ref
    assert parse(ref.familiar) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("me/App:1", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:" + "t" * 129, "invalid tag"),
        ("a b", "whitespace"),
        ("busybox@sha256:abc", "64 lowercase hex"),
        (f"busybox@sha256:{'A' * 64}", "64 lowercase hex"),
        (f"busybox@md5:{HEX}", "unsupported digest algorithm"),
        ("busybox@", "invalid digest"),
        ("a//b", "invalid repository"),
        ("a/b_/c", "invalid repository"),
        ("-a", "invalid repository"),
        (":tag", "repository name is missing"),
        (HEX, "image id"),
        ("bad_host.io:x/app", "invalid"),
        ("x/" + "a" * 260, "over 255"),
    ],
)
def test_invalid(text, message):
    with pytest.raises(InvalidArgument, match=message):
        parse(text)
