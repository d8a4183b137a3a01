"""The local driver on real files: qemu-img, mkfs.ext4 and e2fsck, no VM."""

from __future__ import annotations

import asyncio
import secrets
import subprocess

import pytest

from hyper import errors
from hyper.volumes import LocalDriver, parse_size
from hyper.volumes.driver import MiB


def new_id() -> str:
    return secrets.token_hex(32)


def run(coro):
    return asyncio.run(coro)


def to_raw(driver, volume_id, tmp_path, snapshot: str | None = None):
    raw = tmp_path / f"{volume_id[:8]}.raw"
    argv = ["qemu-img", "convert", "-U", "-O", "raw"]
    if snapshot:
        argv += ["-l", f"snapshot.name={snapshot}"]
    subprocess.run([*argv, str(driver.path(volume_id)), str(raw)], check=True)
    return raw


def test_a_new_volume_is_a_small_qcow2_holding_a_clean_ext4_of_its_size(tmp_path):
    driver = LocalDriver(tmp_path / "volumes")
    volume = new_id()
    run(driver.create(volume, 64 * MiB))
    assert driver.volume_ids() == [volume]
    assert driver.device(volume).format == "qcow2"
    info = subprocess.run(
        ["qemu-img", "info", str(driver.path(volume))], capture_output=True, check=True
    ).stdout.decode()
    assert "virtual size: 64 MiB" in info
    assert run(driver.allocated(volume)) < 8 * MiB  # zeros were not stored
    raw = to_raw(driver, volume, tmp_path)
    check = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True)
    assert check.returncode == 0, check.stdout.decode()
    assert sorted(p.name for p in (tmp_path / "volumes").iterdir()) == [f"{volume}.qcow2"]


def test_snapshot_then_a_new_volume_from_it_holds_the_old_data(tmp_path):
    driver = LocalDriver(tmp_path / "volumes")
    volume, snap, copy = new_id(), new_id(), new_id()
    run(driver.create(volume, 32 * MiB))
    run(driver.snapshot(volume, snap))
    assert run(driver.snapshots(volume)) == [snap]
    assert run(driver.create_from_snapshot(copy, volume, snap)) == 32 * MiB
    assert run(driver.snapshots(copy)) == []  # an independent volume
    with pytest.raises(errors.HyperError):
        run(driver.snapshot(volume, "not-hex"))
    run(driver.remove_snapshot(volume, snap))
    assert run(driver.snapshots(volume)) == []
    with pytest.raises(errors.NotFound):
        run(driver.create_from_snapshot(new_id(), volume, snap))
    run(driver.remove(volume))
    run(driver.remove(volume))  # idempotent
    assert driver.volume_ids() == [copy]
    assert not [p for p in (tmp_path / "volumes").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("text", "size"), [("16M", 16 * MiB), ("1G", 1 << 30), ("2GiB", 2 << 30), (1 << 30, 1 << 30)]
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1M", "17T", "1.5G", "10000001", "-1G", "lots"])
def test_bad_sizes(text):
    with pytest.raises(errors.InvalidArgument):
        parse_size(text)
