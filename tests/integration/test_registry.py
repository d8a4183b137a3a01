"""Pull and push against real registries (Debian's docker-registry, distribution 2.8) on
loopback: plain HTTP, htpasswd basic auth over TLS with a test CA, and the bearer-token flow with
a token server of the test's own; skopeo as an independent client, both ways."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyper.config.settings import Paths, RegistrySettings, Settings
from hyper.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from hyper.images import oci
from hyper.images.builder import (
    Dir,
    File,
    HardLink,
    Layer,
    Opaque,
    Symlink,
    Whiteout,
    build_image,
)
from hyper.images.busybox import ensure_busybox
from hyper.images.compression import Compression
from hyper.images.digest import Digest
from hyper.images.layout import import_layout
from hyper.images.reference import parse
from hyper.images.rootfs import unpack_image
from hyper.registry.client import RegistryClient
from hyper.registry.pull import Progress
from hyper.registry.push import push
from hyper.service.caller import Caller
from hyper.service.images import ImageService
from tests.registry_fixtures import (
    REGISTRY,
    Registry,
    TokenServer,
    free_port,
    make_tls,
    start_registry,
)

pytestmark = pytest.mark.skipif(
    not os.path.exists(REGISTRY) or shutil.which("openssl") is None,
    reason="needs docker-registry and openssl",
)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    r = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry-tls")
    r = start_registry(root, tls=make_tls(root / "tls"), htpasswd=("alice", "s3cret"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry-token")
    server = TokenServer(root / "token", {"bob": "hunter2"}).start()
    try:
        r = start_registry(root / "registry", token_server=server)
    except BaseException:
        server.stop()
        raise
    yield r
    r.stop()


OPERATOR = Caller.operator()


def service(
    state: Path, registry: Registry | None = None, *, ca: bool = True, transport=None, **kw
) -> ImageService:
    options: dict[str, Any] = dict(kw)
    if registry is not None and registry.tls is None:
        options.setdefault("insecure", (registry.host,))
    if registry is not None and registry.tls is not None and ca:
        certs = state / "certs.d" / registry.host
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(registry.tls.ca, certs / "ca.crt")
        options["ca_dir"] = state / "certs.d"
    settings = Settings(
        paths=Paths(state_dir=state, run_dir=state / "run", cache_dir=state / "cache"),
        registry=RegistrySettings(**options),
    )
    return ImageService(settings, transport=transport)


def listing(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, path.read_bytes())
    return out


def unpacked(svc: ImageService, reference: str, into: Path) -> dict[str, tuple[Any, ...]]:
    into.mkdir()
    unpack_image(svc.store, svc.store.resolve(reference), into)
    return listing(into)


LOWER: Layer = {
    "etc": Dir(),
    "etc/passwd": b"root:x:0:0\n",
    "etc/motd": b"hello\n",
    "var/cache/a": b"a",
    "var/cache/b": b"b",
    "bin/sh": File(b"#!shell", mode=0o755),
    "bin/sh2": HardLink("bin/sh"),
    "lib": Symlink("usr/lib"),
    "usr/lib/libc.so": b"libc",
    "opt/x/y": b"y",
}
MIDDLE: Layer = {
    "etc/motd": Whiteout(),
    "var/cache": Opaque(),
    "var/cache/new": b"new",
    "opt/x": Whiteout(),
    "etc/passwd": File(b"root:x:0:0\nme:x:1000:1000\n", mode=0o600, uid=1000, gid=1000),
    "usr/bin/su": File(b"su", mode=0o4755),
}
UPPER: Layer = {"opt/x": Dir(mode=0o700), "opt/x/z": b"z", "bin/sh": Whiteout()}
EXPECTED = {
    "etc": ("dir", 0o755),
    "etc/passwd": ("file", 0o600, 1000, b"root:x:0:0\nme:x:1000:1000\n"),
    "var": ("dir", 0o755),
    "var/cache": ("dir", 0o755),
    "var/cache/new": ("file", 0o644, 0, b"new"),
    "bin": ("dir", 0o755),
    "bin/sh2": ("file", 0o755, 0, b"#!shell"),
    "lib": ("link", "usr/lib"),
    "usr": ("dir", 0o755),
    "usr/lib": ("dir", 0o755),
    "usr/lib/libc.so": ("file", 0o644, 0, b"libc"),
    "usr/bin": ("dir", 0o755),
    "usr/bin/su": ("file", 0o4755, 0, b"su"),
    "opt": ("dir", 0o755),
    "opt/x": ("dir", 0o700),
    "opt/x/z": ("file", 0o644, 0, b"z"),
}


class Recorder(httpx.BaseTransport):
    """The real network, recording every request; optionally cutting or corrupting the body of
    one blob's GETs (``cuts``/``corruptions``: how many responses to damage)."""

    def __init__(self, blob: Digest | None = None, *, cuts: int = 0, corruptions: int = 0):
        self.inner = httpx.HTTPTransport()
        self.blob = blob
        self.cuts = cuts
        self.corruptions = corruptions
        self.requests: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.headers.get("range")))
        response = self.inner.handle_request(request)
        damage = (
            self.blob is not None
            and request.method == "GET"
            and request.url.path.endswith(f"/blobs/{self.blob}")
            and response.status_code in (200, 206)
        )
        if damage and self.cuts > 0:
            self.cuts -= 1
            return self._wrap(request, response, _cut)
        if damage and self.corruptions > 0:
            self.corruptions -= 1
            return self._wrap(request, response, _corrupt)
        return response

    def _wrap(self, request, response, kind) -> httpx.Response:
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Damaged(response, kind),
            request=request,
        )

    def blob_gets(self, digest: Digest) -> list[str | None]:
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(f"/blobs/{digest}")]

    def close(self) -> None:
        self.inner.close()


def _cut(data: bytes, sent: int) -> bytes:
    return data


def _corrupt(data: bytes, sent: int) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:] if sent == 0 and data else data


class _Damaged(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, kind) -> None:
        self.response = response
        self.kind = kind

    def __iter__(self) -> Iterator[bytes]:
        total = int(self.response.headers.get("content-length", "0"))
        sent = 0
        for chunk in self.response.stream:  # type: ignore[union-attr]
            if self.kind is _cut and sent + len(chunk) > total // 2:
                yield chunk[: total // 2 - sent]
                raise httpx.ReadError("connection cut by the test")
            yield self.kind(chunk, sent)
            sent += len(chunk)

    def close(self) -> None:
        self.response.close()


def big_image(svc: ImageService, reference: str, size: int = 3 << 20):
    payload = os.urandom(size)
    image = build_image(
        svc.store, reference, [{"small": b"s"}, {"big.bin": payload}], compression=Compression.NONE
    )
    return image, image.layers[1].digest, payload


# -- plain registry -------------------------------------------------------------------------


@pytest.mark.parametrize("compression", list(Compression))
def test_multi_layer_round_trip_gives_exactly_the_expected_tree(registry, tmp_path, compression):
    ref = f"{registry.host}/tree-{compression.value}:v1"
    a = service(tmp_path / "a", registry)
    built = build_image(a.store, ref, [LOWER, MIDDLE, UPPER], compression=compression)
    result = a.push(OPERATOR, ref)
    assert result.digest == built.digest and result.uploaded == 4
    again = a.push(OPERATOR, ref)
    assert again.existing == 4 and again.uploaded == 0

    b = service(tmp_path / "b", registry)
    events: list[Progress] = []
    pulled = b.pull(OPERATOR, ref, progress=events.append)
    assert pulled.digest == built.digest
    assert pulled.diff_ids == built.diff_ids
    assert {e.status for e in events} >= {"waiting", "downloading", "done"}
    assert unpacked(b, ref, tmp_path / "tree") == EXPECTED
    assert unpacked(a, ref, tmp_path / "tree-local") == EXPECTED
    assert [os.path.basename(p) for p in os.listdir(b.store.tmp_dir)] == []


def test_shared_layers_are_stored_once_and_mounted_across_repositories(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    base = f"{registry.host}/shared/base:1"
    app = f"{registry.host}/shared/app:1"
    build_image(a.store, base, [LOWER])
    build_image(a.store, app, [LOWER, UPPER], compression=Compression.NONE)
    assert a.push(OPERATOR, base).uploaded == 2
    result = a.push(OPERATOR, app)
    assert result.mounted == 1  # LOWER, from shared/base, not uploaded again
    assert result.uploaded == 2  # UPPER and the config

    b = service(tmp_path / "b", registry)
    b.pull(OPERATOR, base)
    events: list[Progress] = []
    image = b.pull(OPERATOR, app, progress=events.append)
    lower = image.layers[0].digest
    assert [e.status for e in events if e.digest == lower] == ["waiting", "exists"]
    blobs = sorted(os.listdir(b.store.root / "blobs" / "sha256"))
    assert len(blobs) == 6  # LOWER once, UPPER, 2 configs, 2 manifests


def test_chunked_upload_and_progress(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = parse(f"{registry.host}/chunked:1")
    image, big, payload = big_image(a, ref.canonical, 700 << 10)
    transport = Recorder()
    events: list[Progress] = []
    with RegistryClient(ref.registry, insecure=True, transport=transport) as client:
        push(a.store.tenant("default"), client, ref, chunk_size=256 << 10, progress=events.append)
    patches = [r for r in transport.requests if r[0] == "PATCH"]
    assert len(patches) == 3  # 700 KiB in 256 KiB chunks
    uploads = [e.current for e in events if e.digest == big and e.status == "uploading"]
    assert uploads == [256 << 10, 512 << 10, len(payload) + 1536 + 512] or uploads[-1] > 512 << 10
    b = service(tmp_path / "b", registry)
    assert b.pull(OPERATOR, ref.canonical).digest == image.digest
    b.store.content.verify(big)


def _upload(client: RegistryClient, repository: str, data: bytes) -> Digest:
    digest = Digest.of(data)
    location = client.start_upload(repository)
    assert location is not None
    client.finish_upload(repository, location, digest, data)
    return digest


def test_index_narrowed_to_linux_amd64_with_docker_media_types(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    repo = "multi/arch"
    amd64 = build_image(a.store, f"{registry.host}/{repo}:amd64", [{"arch": b"amd64"}])
    a.push(OPERATOR, f"{registry.host}/{repo}:amd64")
    with a.client(registry.host, "default") as client:
        # An arm64 image whose layer the pull must never download.
        arm_layer = b"not a tar: never fetched"
        arm_config = json.dumps(
            {"architecture": "arm64", "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(arm_layer))]}}
        ).encode()  # fmt: skip
        layer_digest = _upload(client, repo, arm_layer)
        config_digest = _upload(client, repo, arm_config)
        arm_manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.DOCKER_MANIFEST,
                "config": {"mediaType": oci.DOCKER_CONFIG, "digest": str(config_digest),
                           "size": len(arm_config)},
                "layers": [{"mediaType": oci.DOCKER_LAYER, "digest": str(layer_digest),
                            "size": len(arm_layer)}],
            }
        ).encode()  # fmt: skip
        client.put_manifest(repo, "arm64", arm_manifest, oci.DOCKER_MANIFEST)
        amd64_data = a.store.content.read(amd64.digest, 1 << 20)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": oci.DOCKER_MANIFEST_LIST,
                "manifests": [
                    {"mediaType": oci.DOCKER_MANIFEST, "digest": str(Digest.of(arm_manifest)),
                     "size": len(arm_manifest),
                     "platform": {"os": "linux", "architecture": "arm64"}},
                    {"mediaType": oci.OCI_MANIFEST, "digest": str(amd64.digest),
                     "size": len(amd64_data),
                     "platform": {"os": "linux", "architecture": "amd64"}},
                ],
            }
        ).encode()  # fmt: skip
        client.put_manifest(repo, "multi", index, oci.DOCKER_MANIFEST_LIST)
    b = service(tmp_path / "b", registry)
    image = b.pull(OPERATOR, f"{registry.host}/{repo}:multi")
    assert image.digest == amd64.digest
    assert b.store.tenant("default").refs.get(f"{registry.host}/{repo}:multi") == Digest.of(index)
    assert not b.store.content.exists(layer_digest)
    assert b.inspect(OPERATOR, f"{registry.host}/{repo}:multi")["RepoDigests"] == [
        f"{registry.host}/{repo}@{Digest.of(index)}"
    ]
    # By digest, and the arm64 image alone (a Docker schema 2 manifest) is refused on this host
    # only when unpacked, not when pulled: it is a valid image.
    pinned = b.pull(OPERATOR, f"{registry.host}/{repo}@{Digest.of(index)}")
    assert pinned.digest == amd64.digest
    arm = b.pull(OPERATOR, f"{registry.host}/{repo}:arm64")
    assert arm.media_type == oci.DOCKER_MANIFEST and arm.architecture == "arm64"


def test_interrupted_pull_resumes_with_a_range_request(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = f"{registry.host}/resume:1"
    image, big, payload = big_image(a, ref)
    a.push(OPERATOR, ref)

    cutting = Recorder(big, cuts=99)
    b = service(tmp_path / "b", registry, transport=cutting)
    with pytest.raises(Unavailable, match="cut"):
        b.pull(OPERATOR, ref)
    partial = b.store.tmp_dir / f"{big.hex}.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(payload) + 2048
    assert not b.store.content.exists(big)
    gets = cutting.blob_gets(big)
    assert len(gets) == 3 and gets[0] is None  # each of the 3 attempts resumed the previous
    offsets = [int(str(g).removeprefix("bytes=").rstrip("-")) for g in gets[1:]]
    assert 0 < offsets[0] < offsets[1] < kept

    recording = Recorder()
    c = service(tmp_path / "b", registry, transport=recording)  # the same store
    assert c.pull(OPERATOR, ref).digest == image.digest
    assert recording.blob_gets(big) == [f"bytes={kept}-"]
    c.store.content.verify(big)
    assert not partial.exists()


def test_a_cut_download_is_resumed_within_the_same_pull(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = f"{registry.host}/resume-once:1"
    image, big, _ = big_image(a, ref)
    a.push(OPERATOR, ref)
    transport = Recorder(big, cuts=1)
    b = service(tmp_path / "b", registry, transport=transport)
    assert b.pull(OPERATOR, ref).digest == image.digest
    gets = transport.blob_gets(big)
    assert len(gets) == 2 and gets[0] is None and gets[1] is not None
    assert gets[1].startswith("bytes=") and gets[1] != "bytes=0-"


def test_corrupted_download_is_detected_and_fetched_again(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = f"{registry.host}/corrupt:1"
    image, big, _ = big_image(a, ref, 1 << 20)
    a.push(OPERATOR, ref)
    once = Recorder(big, corruptions=1)
    b = service(tmp_path / "b", registry, transport=once)
    assert b.pull(OPERATOR, ref).digest == image.digest
    assert once.blob_gets(big) == [None, None]  # the second download starts over
    b.store.content.verify(big)

    always = Recorder(big, corruptions=99)
    c = service(tmp_path / "c", registry, transport=always)
    with pytest.raises(InvalidArgument, match="hashes to"):
        c.pull(OPERATOR, ref)
    assert not c.store.content.exists(big)
    with pytest.raises(NotFound):
        c.store.resolve(ref)


def test_corrupted_local_blob_is_detected_and_fetched_again(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = f"{registry.host}/local-corrupt:1"
    _, big, _ = big_image(a, ref, 1 << 20)
    a.push(OPERATOR, ref)
    b = service(tmp_path / "b", registry)
    b.pull(OPERATOR, ref)
    blob = b.store.content.path(big)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\0garbage\0")
    events: list[Progress] = []
    b.pull(OPERATOR, ref, progress=events.append)
    assert "done" in [e.status for e in events if e.digest == big]
    b.store.content.verify(big)


def test_clear_errors(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    with pytest.raises(NotFound, match="not found"):
        a.pull(OPERATOR, f"{registry.host}/no/such/repo:1")
    build_image(a.store, f"{registry.host}/errs:1", [{"f": b"x"}])
    a.push(OPERATOR, f"{registry.host}/errs:1")
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        a.pull(OPERATOR, f"{registry.host}/errs:nope")
    with pytest.raises(NotFound):
        a.pull(OPERATOR, f"{registry.host}/errs@sha256:{'0' * 64}")
    nobody = f"127.0.0.1:{free_port()}"
    b = service(tmp_path / "b", insecure=(nobody,))
    with pytest.raises(Unavailable, match="cannot reach"):
        b.pull(OPERATOR, f"{nobody}/x:1")
    with pytest.raises(NotFound):
        a.push(OPERATOR, f"{registry.host}/not-in-the-store:1")


# -- TLS + htpasswd -------------------------------------------------------------------------


def test_tls_with_a_custom_ca_and_basic_auth(tls_registry, tmp_path):
    host = tls_registry.host
    untrusting = service(tmp_path / "u", tls_registry, ca=False)
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.login(OPERATOR, host, "alice", "s3cret")

    a = service(tmp_path / "a", tls_registry)
    with pytest.raises(Unauthenticated, match="refused the credentials"):
        a.login(OPERATOR, host, "alice", "wrong")
    assert not a.auth("default").path.exists()
    assert a.login(OPERATOR, host, "alice", "s3cret") == "Login Succeeded"
    assert stat.S_IMODE(a.auth("default").path.stat().st_mode) == 0o600
    doc = json.loads(a.auth("default").path.read_text())
    assert base64.b64decode(doc["auths"][host]["auth"]) == b"alice:s3cret"

    ref = f"{host}/secure/app:1"
    built = build_image(a.store, ref, [LOWER, MIDDLE, UPPER], compression=Compression.GZIP)
    a.push(OPERATOR, ref)

    anonymous = service(tmp_path / "anon", tls_registry)
    with pytest.raises(Unauthenticated, match="hyper login"):
        anonymous.pull(OPERATOR, ref)
    # Credentials written by the first service (docker's format) serve the second.
    shutil.copy(a.auth("default").path, anonymous.auth("default").path)
    assert anonymous.pull(OPERATOR, ref).digest == built.digest
    assert unpacked(anonymous, ref, tmp_path / "tree") == EXPECTED
    assert a.logout(OPERATOR, host) is True
    assert a.logout(OPERATOR, host) is False
    assert a.auth("default").get(host) is None


# -- bearer tokens --------------------------------------------------------------------------


def test_bearer_token_flow(token_registry, tmp_path):
    host = token_registry.host
    server = token_registry.token_server
    assert server is not None
    a = service(tmp_path / "a", token_registry)
    with pytest.raises(Unauthenticated, match="incorrect username or password"):
        a.login(OPERATOR, host, "bob", "wrong")
    assert a.login(OPERATOR, host, "bob", "hunter2") == "Login Succeeded"
    ref = f"{host}/tokens/app:1"
    built = build_image(a.store, ref, [LOWER], compression=Compression.ZSTD)
    a.push(OPERATOR, ref)
    assert ("bob", ["repository:tokens/app:pull,push"]) in server.requests

    anonymous = service(tmp_path / "anon", token_registry)
    with pytest.raises(Unauthenticated, match="hyper login"):
        anonymous.pull(OPERATOR, ref)
    assert ("", ["repository:tokens/app:pull"]) in server.requests

    b = service(tmp_path / "b", token_registry)
    b.login(OPERATOR, host, "bob", "hunter2")
    before = len(server.requests)
    assert b.pull(OPERATOR, ref).digest == built.digest
    assert len(server.requests) - before == 1  # one token for the whole pull, then cached


# -- skopeo, both ways ----------------------------------------------------------------------

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")


def skopeo(*args: str) -> str:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_skopeo
def test_skopeo_reads_what_hyper_pushed(registry, tmp_path):
    a = service(tmp_path / "a", registry)
    ref = f"{registry.host}/interop/pushed:1"
    built = build_image(a.store, ref, [LOWER, MIDDLE, UPPER], compression=Compression.GZIP)
    a.push(OPERATOR, ref)
    seen = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    assert seen["Digest"] == str(built.digest)
    assert seen["Layers"] == [str(layer.digest) for layer in built.layers]
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:pushed")
    c = service(tmp_path / "c")
    (copied,) = import_layout(c.store, layout, "copied:1")
    assert copied.diff_ids == built.diff_ids
    assert unpacked(c, "copied:1", tmp_path / "tree") == EXPECTED


@needs_skopeo
@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
def test_hyper_pulls_what_skopeo_copied_from_hyper_archives(registry, tmp_path, kind):
    a = service(tmp_path / "a", registry)
    ensure_busybox(a.store)
    archive = tmp_path / "busybox.tar"
    a.save(OPERATOR, ["busybox"], archive, format="oci" if kind == "oci-archive" else "docker")
    ref = f"{registry.host}/interop/busybox-{kind}:skopeo"
    skopeo("copy", "--dest-tls-verify=false", f"{kind}:{archive}", f"docker://{ref}")
    b = service(tmp_path / "b", registry)
    pulled = b.pull(OPERATOR, ref)
    assert pulled.diff_ids == a.store.resolve("busybox").diff_ids
    assert unpacked(b, ref, tmp_path / "tree") == unpacked(a, "busybox", tmp_path / "orig")
