"""The pod's status as the shim knows it, kept in ``status.json`` and served to long polls.

The file is how hyperd learns what happened while it was down (a container exited, the pod
stopped), so it is never seen half written: each change writes a temporary file, fsyncs it and
renames it over the old one. ``version`` grows by one on every write; the control socket's
``status {"after": n}`` answers as soon as the version is past ``n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POD_STATES = ("starting", "running", "stopping", "exited", "failed")
CONTAINER_STATES = ("created", "running", "restarting", "exited")


@dataclass
class ContainerStatus:
    state: str = "created"
    pid: int = 0  # in the guest
    exit_code: int | None = None
    signal: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    error: str = ""


@dataclass
class PodStatus:
    state: str = "starting"
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Status:
    shim_pid: int
    vm_pid: int | None = None
    pod: PodStatus = field(default_factory=PodStatus)
    containers: dict[str, ContainerStatus] = field(default_factory=dict)

    def to_dict(self, version: int) -> dict[str, Any]:
        return {
            "version": version,
            "shim_pid": self.shim_pid,
            "vm_pid": self.vm_pid,
            "pod": asdict(self.pod),
            "containers": {name: asdict(c) for name, c in self.containers.items()},
        }


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old content or the new, never a mix,
    and after a crash of the machine the new content is complete or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StatusFile:
    """The current :class:`Status`, its version, and the waiters for a newer one."""

    def __init__(self, path: Path, status: Status) -> None:
        self.path = path
        self.status = status
        self.version = 0
        self._changed = asyncio.Event()

    def publish(self) -> dict[str, Any]:
        """Write the status as the next version and wake the long polls."""
        document = self.status.to_dict(self.version + 1)
        write_atomically(self.path, json.dumps(document, indent=1).encode() + b"\n")
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return document

    def current(self) -> dict[str, Any]:
        return self.status.to_dict(self.version)

    async def wait_newer(self, after: int) -> dict[str, Any]:
        """The status as soon as its version is greater than ``after``."""
        while self.version <= after:
            await self._changed.wait()
        return self.current()
