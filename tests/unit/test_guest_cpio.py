"""The newc writer: what it writes parses back, with our reader and with GNU cpio."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from hyper.errors import InvalidArgument
from hyper.guest import cpio


def sample() -> cpio.Archive:
    archive = cpio.Archive()
    archive.add_file("/usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    archive.add_file("etc/odd", b"x" * 5)  # data that needs padding
    archive.add_dir("tmp", 0o1777)
    archive.add_char_device("dev/console", 5, 1, 0o600)
    archive.add_symlink("bin/sh", "/usr/bin/tool")
    return archive


def test_round_trip_keeps_modes_devices_and_data() -> None:
    entries = {e.path: e for e in cpio.read(sample().to_bytes())}

    assert entries["usr/bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert entries["usr/bin/tool"].mode == stat.S_IFREG | 0o755
    assert entries["etc/odd"].data == b"xxxxx"
    assert entries["tmp"].mode == stat.S_IFDIR | 0o1777
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert entries["bin/sh"].data == b"/usr/bin/tool"
    assert all(e.uid == 0 and e.gid == 0 for e in entries.values())


def test_parents_come_first_and_are_implied() -> None:
    paths = [e.path for e in cpio.read(sample().to_bytes())]

    assert {"usr", "usr/bin", "etc", "dev", "bin"} <= set(paths)
    for path in paths:
        if "/" in path:
            assert paths.index(path.rsplit("/", 1)[0]) < paths.index(path)


def test_same_content_gives_same_bytes() -> None:
    assert sample().to_bytes() == sample().to_bytes()


def test_members_are_aligned() -> None:
    blob = sample().to_bytes()
    assert len(blob) % 4 == 0
    assert blob.count(b"070701") >= len(sample()) + 1  # + trailer


def test_conflicts_and_bad_paths_are_refused() -> None:
    archive = cpio.Archive()
    archive.add_file("a", b"1")
    with pytest.raises(InvalidArgument):
        archive.add_file("a", b"2")
    with pytest.raises(InvalidArgument):
        archive.add_file("a/b", b"under a file")
    with pytest.raises(InvalidArgument):
        archive.add_file("../escape", b"")
    archive.add_file("a", b"1")  # the same again is fine


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed")
def test_gnu_cpio_lists_it() -> None:
    done = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"],
        input=sample().to_bytes(),
        capture_output=True,
        check=True,
    )
    listing = done.stdout.decode().splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    assert "usr/bin/tool" in names and "dev/console" in names
    console = next(line for line in listing if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5," in console
