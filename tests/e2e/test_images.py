"""Images end to end through hyperd and the `hyper` CLI, on real registries (Debian's
docker-registry on loopback: plain, and TLS with htpasswd), real QEMU pods and skopeo as an
independent writer of docker-archive files.

The acceptance scenario: pull, run, commit, push, remove locally, pull again (by `run`), run:
the committed change is there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry_fixtures import Registry, make_tls, start_registry

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory) -> Iterator[Registry]:
    registry = start_registry(tmp_path_factory.mktemp("plain-registry"))
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def secure_registry(tmp_path_factory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("secure-registry")
    registry = start_registry(root, tls=make_tls(root / "tls"), htpasswd=("alice", "correct horse"))
    yield registry
    registry.stop()


@pytest.fixture()
def hyperd_config(hyper_home, plain_registry, secure_registry, tmp_path: Path) -> Path:
    """The session's settings, plus: the plain registry is insecure (HTTP), the TLS one's CA is
    trusted, and credentials go to this test's own file."""
    config: Path = hyper_home[0]
    certs = tmp_path / "certs.d" / secure_registry.host
    certs.mkdir(parents=True)
    assert secure_registry.tls is not None
    shutil.copy(secure_registry.tls.ca, certs / "ca.crt")
    own = tmp_path / "config.toml"
    own.write_text(
        config.read_text()
        + f'[registry]\ninsecure = ["{plain_registry.host}"]\n'
        + f'ca_dir = "{tmp_path / "certs.d"}"\nauth_file = "{tmp_path / "auth.json"}"\n'
    )
    return own


def ok(result: subprocess.CompletedProcess[bytes], what: str) -> str:
    assert result.returncode == 0, (
        f"{what}: exit {result.returncode}\nstdout: {result.stdout.decode()}\n"
        f"stderr: {result.stderr.decode()}"
    )
    return result.stdout.decode()


def references(hyper) -> set[str]:
    rows = json.loads(ok(hyper("images", "--format", "json"), "images"))
    return {f"{row['Repository']}:{row['Tag']}" for row in rows}


def test_pull_run_commit_push_remove_pull_run(hyper, plain_registry):
    base = f"{plain_registry.host}/e2e/busybox:1"
    committed = f"{plain_registry.host}/e2e/committed:v1"
    # Seed the registry with the local busybox, then start from a clean pull of it.
    ok(hyper("tag", "busybox", base), "tag")
    assert "digest: sha256:" in ok(hyper("push", base), "push of the base")
    ok(hyper("rmi", base), "rmi of the base")
    assert base not in references(hyper)
    pulled = ok(hyper("pull", base), "pull")
    assert "Digest: sha256:" in pulled and base in references(hyper)

    ok(hyper("run", "-d", "--name", "src", base, "sleep", "600"), "run")
    change = "echo made-in-the-vm > /etc/committed && rm /bin/vi && mkdir -p /srv/data"
    ok(hyper("exec", "src", "sh", "-c", change), "exec")
    image_id = ok(
        hyper("commit", "-m", "the change", "-c", "ENV COMMITTED=yes", "src", committed),
        "commit",
    ).strip()
    assert image_id.startswith("sha256:")
    ok(hyper("rm", "-f", "src"), "rm")
    ok(hyper("create", "--name", "user", committed, "true"), "create")
    refused = hyper("rmi", committed)
    assert refused.returncode != 0 and "a pod is using" in refused.stderr.decode()
    ok(hyper("rm", "user"), "rm")

    history = ok(hyper("history", "--no-trunc", committed), "history")
    assert "hyper commit src" in history and "the change" in history
    (inspected,) = json.loads(ok(hyper("inspect", committed), "inspect"))
    assert inspected["Id"] == image_id

    ok(hyper("push", committed), "push of the commit")
    removed = ok(hyper("rmi", committed, base), "rmi")
    assert f"Deleted: {image_id}" in removed
    assert not {base, committed} & references(hyper)

    check = "cat /etc/committed; test -e /bin/vi || echo vi-gone; test -d /srv/data && echo dir; "
    check += 'echo "COMMITTED=$COMMITTED"'
    result = hyper("run", "--rm", committed, "sh", "-c", check)
    out = ok(result, "run of the pulled commit")
    assert out.split() == ["made-in-the-vm", "vi-gone", "dir", "COMMITTED=yes"]
    assert f"Unable to find image '{committed}' locally" in result.stderr.decode()
    ok(hyper("rmi", committed), "rmi of the pulled commit")


def test_login_tls_basic_auth_push_pull_logout(hyper, secure_registry, tmp_path):
    host = secure_registry.host
    ref = f"{host}/e2e/secure:1"
    ok(hyper("tag", "busybox", ref), "tag")
    denied = hyper("push", "-q", ref)
    assert denied.returncode != 0 and "hyper login" in denied.stderr.decode()
    wrong = hyper("login", "-u", "alice", "--password-stdin", host, input=b"wrong\n")
    assert wrong.returncode != 0
    assert "Login Succeeded" in ok(
        hyper("login", "-u", "alice", "--password-stdin", host, input=b"correct horse\n"), "login"
    )
    ok(hyper("push", ref), "push with credentials")
    ok(hyper("rmi", ref), "rmi")
    ok(hyper("pull", "-q", ref), "pull with credentials")
    assert ref in references(hyper)
    assert "Removing login credentials" in ok(hyper("logout", host), "logout")
    ok(hyper("rmi", ref), "rmi")
    refused = hyper("pull", "-q", ref)
    assert refused.returncode != 0 and "hyper login" in refused.stderr.decode()
    missing = hyper("pull", "-q", f"{host}/e2e/nothing:here")
    assert missing.returncode != 0 and missing.stderr.decode().startswith("hyper: ")


@needs_skopeo
def test_docker_archive_written_by_skopeo_loads_and_runs(hyper, tmp_path):
    oci_archive = tmp_path / "busybox-oci.tar"
    ok(hyper("save", "--format", "oci", "-o", str(oci_archive), "busybox"), "save")
    docker_archive = tmp_path / "from-docker.tar"
    converted = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", f"oci-archive:{oci_archive}",
         f"docker-archive:{docker_archive}:e2e/fromdocker:v1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    loaded = ok(hyper("load", "-i", str(docker_archive)), "load")
    assert "Loaded image: e2e/fromdocker:v1" in loaded
    out = ok(hyper("run", "--rm", "--pull", "never", "e2e/fromdocker:v1", "echo", "loaded"), "run")
    assert out == "loaded\n"
    # And back out in docker's format, through a pipe, into a fresh name.
    saved = tmp_path / "again.tar"
    ok(hyper("save", "-o", str(saved), "e2e/fromdocker:v1"), "save (docker)")
    ok(hyper("rmi", "e2e/fromdocker:v1"), "rmi")
    with saved.open("rb") as archive:
        client = hyper.popen("load", stdin=archive)
        out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err.decode()
    assert "Loaded image: e2e/fromdocker:v1" in out.decode()
    ok(hyper("rmi", "e2e/fromdocker:v1"), "rmi")
