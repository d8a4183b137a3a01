"""Volumes and snapshots end to end (issue 7's acceptance): real qcow2 files, real pods in QEMU.

Each test removes the named volumes and snapshots it made; the ``hyperd`` fixture then checks
that nothing is left (pods, anonymous volumes, volume files).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.vm


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode()


def cleanup(hyper, *, snapshots=(), volumes=()) -> None:
    """Pods first (they hold volumes), then snapshots, then volumes; fails if one stays."""
    for pod in hyper("pod", "ls", "-a", "-q").stdout.decode().split():
        hyper("pod", "rm", "-f", pod)
    for name in snapshots:
        hyper("snapshot", "rm", name)
    for name in volumes:
        hyper("volume", "rm", name)
    left = json.loads(ok(hyper("volume", "ls", "--format", "json")))
    assert left == [], left


def tenant(hyper, name: str, tmp_path: Path) -> tuple[str, str]:
    """``--tenant name``, made first if it is new (the state outlives one test), with the
    default tenant's busybox (images belong to a tenant: save, then load as that tenant)."""
    made = hyper("tenant", "create", name)
    assert made.returncode == 0 or b"exists already" in made.stderr, made.stderr.decode()
    archive = tmp_path / "busybox.tar"
    if not archive.exists():
        ok(hyper("save", "-o", str(archive), "busybox"))
    ok(hyper("--tenant", name, "load", "-i", str(archive)))
    return ("--tenant", name)


def inspect(hyper, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok(hyper(kind, "inspect", name)))[0]
    return found


def volume_file(hyper, name: str) -> Path:
    state = Path(
        next(
            line.split('"')[1]
            for line in hyper.config.read_text().splitlines()
            if line.startswith("state_dir")
        )
    )
    return state / "volumes" / f"{inspect(hyper, 'volume', name)['id']}.qcow2"


def fsck(qcow2: Path, tmp_path: Path, *, repair: bool) -> subprocess.CompletedProcess[bytes]:
    """e2fsck from the host on a raw copy of a detached volume."""
    raw = tmp_path / f"{qcow2.stem}.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)], check=True
    )
    try:
        return subprocess.run(
            ["e2fsck", "-f", "-y" if repair else "-n", str(raw)], capture_output=True, timeout=120
        )
    finally:
        raw.unlink()


def test_a_file_outlives_its_pod_and_read_only_means_read_only(hyper):
    ok(hyper("volume", "create", "--name", "data", "--size", "64M"))
    try:
        ok(hyper("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo hello > /data/f"))
        listed = json.loads(ok(hyper("volume", "ls", "--format", "json")))
        assert [v["name"] for v in listed] == ["data"]
        out = ok(hyper("run", "--rm", "-v", "data:/srv/d:ro", "busybox", "cat", "/srv/d/f"))
        assert out == "hello\n"
        denied = hyper("run", "--rm", "-v", "data:/data:ro", "busybox", "touch", "/data/g")
        assert denied.returncode != 0 and b"Read-only file system" in denied.stderr
        size = ok(
            hyper("run", "--rm", "-v", "data:/data", "busybox", "df", "-k", "/data")
        ).splitlines()[-1]
        assert 50_000 < int(size.split()[1]) <= 65_536  # the size is the file system's
    finally:
        cleanup(hyper, volumes=["data"])


def test_snapshot_keeps_the_old_data_and_the_volume_the_new(hyper):
    ok(hyper("volume", "create", "--name", "vol", "--size", "32M"))
    try:
        ok(hyper("run", "--rm", "-v", "vol:/v", "busybox", "sh", "-c", "echo old > /v/f"))
        ok(hyper("snapshot", "create", "--name", "s1", "vol"))
        assert inspect(hyper, "snapshot", "s1")["consistency"] == "clean"
        ok(hyper("run", "--rm", "-v", "vol:/v", "busybox", "sh", "-c", "echo new > /v/f"))
        ok(hyper("volume", "create", "--name", "restored", "--from-snapshot", "s1"))
        assert inspect(hyper, "volume", "restored")["size"] == 32 << 20
        both = "cat /a/f /b/f"
        out = ok(
            hyper("run", "--rm", "-v", "restored:/a", "-v", "vol:/b", "busybox", "sh", "-c", both)
        )
        assert out == "old\nnew\n"
        wait_for(lambda: not hyper("pod", "ls", "-a", "-q").stdout, 60, "the --rm pods to go")
        refused = hyper("volume", "rm", "vol")
        assert refused.returncode != 0 and b"snapshot" in refused.stderr
    finally:
        cleanup(hyper, snapshots=["s1"], volumes=["restored", "vol"])


def test_live_snapshot_is_application_consistent_and_rw_is_exclusive(hyper):
    ok(hyper("volume", "create", "--name", "live", "--size", "32M"))
    try:
        script = "echo before > /v/f; sync; echo up; exec sleep 600"
        ok(hyper("run", "-d", "--name", "holder", "-v", "live:/v", "busybox", "sh", "-c", script))
        wait_for(lambda: b"up" in hyper("logs", "holder").stdout, 120, "the holder to write")
        in_use = hyper("volume", "rm", "live")
        assert in_use.returncode != 0 and b"in use by pod holder" in in_use.stderr
        second = hyper("run", "--rm", "-v", "live:/v", "busybox", "true")
        assert second.returncode != 0 and b"exclusive" in second.stderr, second.stderr
        ok(hyper("snapshot", "create", "--name", "hot", "live"))
        assert inspect(hyper, "snapshot", "hot")["consistency"] == "application"
        # the pod still writes after the thaw
        ok(hyper("exec", "holder", "sh", "-c", "echo after > /v/f; sync"))
        ok(hyper("volume", "create", "--name", "copy", "--from-snapshot", "hot"))
        assert ok(hyper("run", "--rm", "-v", "copy:/c", "busybox", "cat", "/c/f")) == "before\n"
        ok(hyper("snapshot", "rm", "hot"))  # live, through the pod's supervisor
    finally:
        cleanup(hyper, snapshots=["hot"], volumes=["copy", "live"])


def test_kill_9_of_qemu_during_writes_leaves_a_volume_that_mounts_and_checks(hyper, tmp_path):
    ok(hyper("volume", "create", "--name", "crash", "--size", "64M"))
    try:
        loop = (
            "i=0; while true; do i=$((i+1));"
            " dd if=/dev/urandom of=/v/f$((i % 20)) bs=64k count=8 2>/dev/null;"
            " echo $i > /v/count; sync; [ $i = 5 ] && echo writing; done"
        )
        ok(hyper("run", "-d", "--name", "writer", "-v", "crash:/v", "busybox", "sh", "-c", loop))
        wait_for(lambda: b"writing" in hyper("logs", "writer").stdout, 120, "the write loop")
        vm_pid = json.loads(ok(hyper("pod", "inspect", "writer")))[0]["vm_pid"]
        os.kill(vm_pid, signal.SIGKILL)
        wait_for(
            lambda: json.loads(ok(hyper("inspect", "writer")))[0]["state"] != "running",
            60,
            "the pod to notice its VM died",
        )
        ok(hyper("rm", "-f", "writer"))
        recovered = fsck(volume_file(hyper, "crash"), tmp_path, repair=True)
        assert recovered.returncode in (0, 1), recovered.stdout.decode()  # 1: journal replayed
        out = ok(hyper("run", "--rm", "-v", "crash:/v", "busybox", "sh", "-c", "cat /v/count"))
        assert int(out) >= 5  # what was synced before the kill survived it
        clean = fsck(volume_file(hyper, "crash"), tmp_path, repair=False)
        assert clean.returncode == 0, clean.stdout.decode()
    finally:
        cleanup(hyper, volumes=["crash"])


def test_anonymous_volumes_go_with_their_pod(hyper):
    ok(hyper("run", "-d", "--name", "anon", "-v", "/cache", "busybox", "sleep", "600"))
    listed = json.loads(ok(hyper("volume", "ls", "--format", "json")))
    assert len(listed) == 1 and listed[0]["anonymous"] and listed[0]["users"][0]["pod"] == "anon"
    ok(hyper("rm", "-f", "anon"))
    assert json.loads(ok(hyper("volume", "ls", "--format", "json"))) == []


def test_a_hostile_mount_path_is_refused(hyper):
    for bad in ("data:/proc/x", "data:/a/../../etc", "data:relative", "/"):
        result = hyper("create", "-v", bad, "busybox", "true")
        assert result.returncode == 125, result.stderr
        assert b"path" in result.stderr or b"mounted" in result.stderr, result.stderr


def test_the_operator_binds_a_host_directory_as_a_read_only_copy(hyper, tmp_path):
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "hello.sh").write_text("echo tool says hi\n")
    refused = hyper("create", "-v", f"{tools}:/tools", "busybox", "true")
    assert refused.returncode == 125 and b"read-only copy" in refused.stderr
    out = ok(
        hyper("run", "--rm", "-v", f"{tools}:/tools:ro", "busybox", "sh", "/tools/bin/hello.sh")
    )
    assert out == "tool says hi\n"
    denied = hyper("run", "--rm", "-v", f"{tools}:/tools:ro", "busybox", "touch", "/tools/x")
    assert denied.returncode != 0 and not (tools / "x").exists()
    assert json.loads(ok(hyper("volume", "ls", "--format", "json"))) == []  # not a volume


def test_another_tenants_volume_is_invisible_and_never_mounted(hyper, tmp_path):
    alice, bob = tenant(hyper, "alice", tmp_path), tenant(hyper, "bob", tmp_path)
    ok(hyper(*alice, "volume", "create", "--name", "data", "--size", "16M"))
    try:
        ok(hyper(*alice, "run", "--rm", "-v", "data:/d", "busybox", "sh", "-c", "echo a > /d/f"))
        assert ok(hyper(*bob, "volume", "ls", "-q")) == ""
        missing = hyper(*bob, "volume", "inspect", "data")
        assert missing.returncode == 125 and b"no such volume" in missing.stderr.lower()
        # bob's "data" is bob's own new volume, not alice's
        out = ok(hyper(*bob, "run", "--rm", "-v", "data:/d", "busybox", "ls", "/d"))
        assert "f" not in out.split()
        assert ok(hyper(*bob, "volume", "ls", "-q")) == "data\n"
        # the operator's listing of every tenant says whose each one is
        rows = [line.split()[:2] for line in ok(hyper("--tenant", "*", "volume", "ls")).split("\n")]
        assert rows[0] == ["TENANT", "NAME"]
        assert ["alice", "data"] in rows and ["bob", "data"] in rows
    finally:
        for pod in hyper("pod", "ls", "-a", "-q").stdout.decode().split():
            hyper("pod", "rm", "-f", pod)
        hyper(*bob, "volume", "rm", "data")
        ok(hyper(*alice, "volume", "rm", "data"))
