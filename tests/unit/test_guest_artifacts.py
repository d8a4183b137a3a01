"""The public API's paths that need no download: configured guests, missing builds, the lock."""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from hyper.config.settings import GuestSettings, Paths, Settings
from hyper.errors import Unavailable
from hyper.guest import GuestArtifacts, artifacts, cache, describe, resolve


def settings_for(tmp_path: Path, **guest: str) -> Settings:
    return Settings(paths=Paths(cache_dir=tmp_path / "cache"), guest=GuestSettings(**guest))


def test_a_configured_guest_is_used_as_is(tmp_path: Path) -> None:
    kernel_file, initrd_file = tmp_path / "k", tmp_path / "i"
    kernel_file.write_bytes(b"kernel bytes")
    initrd_file.write_bytes(b"initrd bytes")
    settings = settings_for(tmp_path, kernel=str(kernel_file), initrd=str(initrd_file))

    found = resolve(settings, build=False)

    assert found == GuestArtifacts(
        kernel=kernel_file,
        initrd=initrd_file,
        release="unknown",
        source=f"configured {kernel_file}",
        agent_version="unknown",
        fingerprint=artifacts.content_fingerprint(
            hashlib.sha256(b"kernel bytes").hexdigest(),
            hashlib.sha256(b"initrd bytes").hexdigest(),
        ),
    )
    info = describe(settings)
    assert info["status"] == "configured" and info["kernel_size"] == 12

    initrd_file.write_bytes(b"changed")
    assert resolve(settings).fingerprint != found.fingerprint


def test_a_missing_configured_file_is_unavailable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, kernel=str(tmp_path / "k"), initrd=str(tmp_path / "i"))
    with pytest.raises(Unavailable, match=r"guest\.kernel"):
        resolve(settings)


def test_an_unbuilt_guest_says_to_run_setup(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)

    with pytest.raises(Unavailable, match="hyper setup"):
        resolve(settings, build=False)
    assert describe(settings)["status"] == "not built"


def test_a_manifest_whose_files_are_gone_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "guest"
    root.mkdir(parents=True)
    cache.write_manifest(root, {"kernel": {"path": "gone"}, "initrd": {"path": "gone"}})
    assert artifacts._from_manifest(root, cache.read_manifest(root) or {}) is None
    assert describe(settings_for(tmp_path))["status"] == "not built"


def hold_lock(root: Path, held: Any, release: Any) -> None:
    with cache.locked(root):
        held.set()
        release.wait(30)


def test_the_build_lock_excludes_a_second_builder(tmp_path: Path) -> None:
    held, release = multiprocessing.Event(), multiprocessing.Event()
    other = multiprocessing.Process(target=hold_lock, args=(tmp_path, held, release))
    other.start()
    try:
        assert held.wait(10)
        fd = os.open(tmp_path / cache.LOCK, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release.set()
            other.join(10)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder is done
        finally:
            os.close(fd)
    finally:
        release.set()
        other.join(10)


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    cache.write_atomic(tmp_path / "f", b"one")
    cache.write_atomic(tmp_path / "f", b"two")
    assert (tmp_path / "f").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_prune_keeps_the_current_files_and_the_newest_previous_ones(tmp_path):
    import os

    from hyper.guest import cache

    initrds = []
    for age in range(7):
        path = tmp_path / f"initrd-{age:016x}.img"
        path.write_bytes(b"x")
        os.utime(path, (1000 - age, 1000 - age))  # initrd-0 is the newest
        initrds.append(path)
    current = initrds[-1]  # the oldest file may still be the current one
    cache.prune(tmp_path, {current})
    kept = sorted(p.name for p in tmp_path.glob("initrd-*.img"))
    expected = {p.name for p in initrds[: cache.KEEP_PREVIOUS]} | {current.name}
    assert kept == sorted(expected)
