"""A pod's runtime directory, its ownership lock, and the sweep of stale ones.

Every pod lives in ``<run_dir>/pods/<id>/``: the agent and control sockets, QEMU's files, and
``pod.json`` (who it is, for ``hyper exec`` and ``hyper ps``). The process that owns the pod holds
an exclusive ``flock`` on ``lock`` for the pod's whole life. The kernel drops that lock when the
owner dies, however it dies, so a directory whose lock can be taken belongs to nobody: the sweep
kills what is left of its QEMU (which normally died with its owner, by PDEATHSIG) and removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from hyper.model.pod import PodSpec

_log = logging.getLogger(__name__)


class PodDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def agent_socket(self) -> Path:
        return self.path / "agent.sock"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    @property
    def vm_dir(self) -> Path:
        return self.path / "vm"

    def create(self, spec: PodSpec, pod_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.mkdir(mode=0o700)
        self._lock_fd = os.open(self.path / "lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.vm_dir.mkdir(mode=0o700)
        info = {
            "id": pod_id,
            "name": spec.name,
            "owner": os.getpid(),
            "containers": [c.name for c in spec.containers],
            "images": {c.name: c.image for c in spec.containers},
        }
        tmp = self.path / "pod.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.rename(self.path / "pod.json")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_info(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / "pod.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_pods(pods_dir: Path) -> list[dict[str, Any]]:
    """The pods whose owner is alive (their lock is held), with their pod.json."""
    found = []
    for path in sorted(pods_dir.glob("*")):
        if path.is_dir() and _owned(path):
            info = read_info(path)
            if info is not None:
                info["dir"] = str(path)
                found.append(info)
    return found


def sweep(pods_dir: Path) -> list[Path]:
    """Remove the directories of pods whose owner died; returns what was removed."""
    removed = []
    for path in sorted(pods_dir.glob("*")):
        if not path.is_dir() or _owned(path):
            continue
        _kill_leftover_qemu(path)
        shutil.rmtree(path, ignore_errors=True)
        _log.info("removed the leftovers of a pod whose owner died: %s", path.name)
        removed.append(path)
    return removed


def _owned(path: Path) -> bool:
    held = lock_held(path / "lock")
    # Without a lock the directory is being created this instant, or is a leftover.
    return younger_than(path, 60) if held is None else held


def lock_held(lock: Path, *, shared: bool = False) -> bool | None:
    """Whether another process holds the flock ``lock``: any holder, or with ``shared`` only an
    exclusive one. None when the file does not exist."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def younger_than(path: Path, seconds: float) -> bool:
    with contextlib.suppress(OSError):
        return time.time() - path.stat().st_mtime < seconds
    return False


def _kill_leftover_qemu(path: Path) -> None:
    pidfile = path / "vm" / "qemu.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if os.fsencode(str(path)) in cmdline:  # only the QEMU of this very pod
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
