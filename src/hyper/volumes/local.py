"""The local driver: each volume a qcow2 file on the host, snapshots inside it.

Why qcow2 and not a raw sparse file: qcow2 keeps *internal snapshots* (copy-on-write clusters
with reference counts) in the same file, which ``qemu-img snapshot`` takes offline and QEMU
takes live over QMP in milliseconds, with no chain of files to manage; a raw file would need a
full copy or an external overlay per snapshot. The price is a format layer in every I/O, which
the benchmark measures (bench/volumes_fio.py).

Why format on the host at creation: the guest's initramfs has no ``mke2fs`` (it carries Python,
busybox and the agent), and formatting on the host needs no VM. ``mkfs.ext4`` cannot write into
a qcow2 file directly, so the volume is made as a sparse raw file, formatted (inode tables and
journal zeroed now, so the guest's kernel has no lazy initialisation to do), then converted to
qcow2, which skips the zeros: a 1 GiB volume takes ~30 ms and ~1.4 MB.

Every tool runs as a child process with its arguments as a list (ids are hex, made by the
service), so nothing is parsed by a shell. A file QEMU holds open is locked by QEMU, so the
offline snapshot calls fail on an attached volume instead of corrupting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.volumes.driver import Device, check_id

_TOOL_TIMEOUT = 600.0


class LocalDriver:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, volume_id: str) -> Path:
        return self.root / f"{check_id(volume_id, 'volume')}.qcow2"

    def device(self, volume_id: str) -> Device:
        return Device(str(self.path(volume_id)), "qcow2")

    def volume_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("*.qcow2"))

    async def create(self, volume_id: str, size: int) -> None:
        final = self.path(volume_id)
        raw, tmp = final.with_name(f".{final.stem}.raw"), final.with_name(f".{final.name}.tmp")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with open(raw, "wb") as handle:
                handle.truncate(size)
            await _run(
                "mkfs.ext4", "-F", "-q", "-m", "0",
                "-E", "lazy_itable_init=0,lazy_journal_init=0", str(raw),
            )  # fmt: skip
            await _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp))
            os.rename(tmp, final)
        finally:
            for path in (raw, tmp):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def create_from_snapshot(self, volume_id: str, source_id: str, snapshot_id: str) -> int:
        source, final = self.path(source_id), self.path(volume_id)
        tmp = final.with_name(f".{final.name}.tmp")
        check_id(snapshot_id, "snapshot")
        try:
            # -U: the source may be attached to a running VM; the snapshot's clusters are
            # shared and copy-on-write, so nothing it reads can change under it.
            await _run(
                "qemu-img", "convert", "-q", "-U", "-f", "qcow2",
                "-l", f"snapshot.name={snapshot_id}", "-O", "qcow2", str(source), str(tmp),
            )  # fmt: skip
            os.rename(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        size = (await self._info(volume_id))["virtual-size"]
        return int(size)

    async def remove(self, volume_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(volume_id).unlink()

    async def snapshot(self, volume_id: str, snapshot_id: str) -> None:
        check_id(snapshot_id, "snapshot")
        await _run("qemu-img", "snapshot", "-q", "-c", snapshot_id, str(self.path(volume_id)))

    async def remove_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        check_id(snapshot_id, "snapshot")
        await _run("qemu-img", "snapshot", "-q", "-d", snapshot_id, str(self.path(volume_id)))

    async def snapshots(self, volume_id: str) -> list[str]:
        """The names of the snapshots inside the volume's file (for tests and repairs)."""
        info = await self._info(volume_id)
        return [str(s["name"]) for s in info.get("snapshots", [])]

    async def allocated(self, volume_id: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            return self.path(volume_id).stat().st_blocks * 512
        return 0

    async def _info(self, volume_id: str) -> dict[str, Any]:
        out = await _run("qemu-img", "info", "-U", "--output=json", str(self.path(volume_id)))
        data = json.loads(out)
        assert isinstance(data, dict)
        return data


async def _run(*argv: str) -> str:
    """Run a tool; its stdout. A failure is an error naming the tool and quoting its stderr."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise errors.Unavailable(f"{argv[0]} is not installed (scripts/setup.sh)") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), _TOOL_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        message = err.decode(errors="replace").strip()[-2000:]
        kind: type[errors.HyperError] = errors.Unavailable
        if "lock" in message:
            kind = errors.FailedPrecondition  # a running VM has the file open
        elif any(m in message.lower() for m in ("not found", "no such", "can't find")):
            kind = errors.NotFound
        raise kind(f"{argv[0]} {argv[1]} failed: {message}")
    return out.decode()
