"""status.json: replaced atomically, versioned, and served to long polls."""

import asyncio
import json
import os

import pytest

from hyper.shim.status import ContainerStatus, Status, StatusFile, write_atomically


def test_write_is_tmp_fsync_rename(tmp_path, monkeypatch):
    calls: list[object] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        calls.append("fsync")
        real_fsync(fd)

    def rename(src, dst):
        calls.append(("rename", os.path.basename(src), os.path.basename(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    write_atomically(tmp_path / "status.json", b'{"a": 1}')
    assert calls[:2] == ["fsync", ("rename", ".status.json.tmp", "status.json")]
    assert calls[2:] == ["fsync"]  # the directory, so that the rename is durable
    assert (tmp_path / "status.json").read_bytes() == b'{"a": 1}'
    assert os.listdir(tmp_path) == ["status.json"]


def test_a_failed_write_leaves_the_previous_version_whole(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_atomically(path, b'{"version": 1}')

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomically(path, b'{"version": 2, "much": "more"}')
    assert path.read_bytes() == b'{"version": 1}'
    assert os.listdir(tmp_path) == ["status.json"]  # no temporary file left


def test_versions_and_document(tmp_path):
    async def main():
        status = Status(shim_pid=42, containers={"web": ContainerStatus()})
        file = StatusFile(tmp_path / "status.json", status)
        first = file.publish()
        status.containers["web"].state = "running"
        status.containers["web"].pid = 7
        second = file.publish()
        on_disk = json.loads((tmp_path / "status.json").read_text())
        assert (first["version"], second["version"], on_disk["version"]) == (1, 2, 2)
        assert on_disk == second
        assert on_disk == {
            "version": 2,
            "shim_pid": 42,
            "vm_pid": None,
            "pod": {"state": "starting", "error": "", "started_at": None, "finished_at": None},
            "containers": {
                "web": {
                    "state": "running",
                    "pid": 7,
                    "exit_code": None,
                    "signal": 0,
                    "started_at": None,
                    "finished_at": None,
                    "restart_count": 0,
                    "error": "",
                }
            },
        }

    asyncio.run(main())


def test_long_poll_answers_once_the_version_is_past(tmp_path):
    async def main():
        status = Status(shim_pid=1)
        file = StatusFile(tmp_path / "status.json", status)
        file.publish()
        assert (await asyncio.wait_for(file.wait_newer(0), 1))["version"] == 1  # at once
        waiter = asyncio.ensure_future(file.wait_newer(1))
        await asyncio.sleep(0)
        assert not waiter.done()
        status.pod.state = "running"
        file.publish()
        document = await asyncio.wait_for(waiter, 5)
        assert (document["version"], document["pod"]["state"]) == (2, "running")

    asyncio.run(main())
