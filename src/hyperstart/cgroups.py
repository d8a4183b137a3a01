"""cgroup v2 groups, one per container: to kill everything in it at once, and to count it."""

from __future__ import annotations

import contextlib
import os
import select
import time

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "memory", "pids")


def enable_controllers(root: str = ROOT) -> None:
    """Let the groups below the root account CPU, memory and tasks (best effort)."""
    for name in CONTROLLERS:
        try:
            with open(f"{root}/cgroup.subtree_control", "w") as file:
                file.write(f"+{name}")
        except OSError:
            pass


def create(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def join(path: str, pid: int = 0) -> None:
    """Move ``pid`` (0: the caller) into the group."""
    with open(f"{path}/cgroup.procs", "w") as file:
        file.write(str(pid))


def count(path: str) -> int:
    try:
        with open(f"{path}/cgroup.procs") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0


def pids(path: str, limit: int = 1 << 16) -> list[int]:
    """The processes of the group and of the groups below it (at most ``limit``), sorted."""
    found: set[int] = set()
    stack = [path]
    while stack and len(found) < limit:
        group = stack.pop()
        try:
            with open(f"{group}/cgroup.procs") as file:
                found.update(int(line) for line in file if line.strip().isdigit())
            with os.scandir(group) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sorted(found)[:limit]


def kill(path: str) -> None:
    """SIGKILL every process in the group and below it (cgroup.kill, Linux >= 5.14)."""
    try:
        with open(f"{path}/cgroup.kill", "w") as file:
            file.write("1")
    except FileNotFoundError:
        pass


def _populated(path: str) -> bool:
    try:
        with open(f"{path}/cgroup.events") as file:
            return any(line.strip() == "populated 1" for line in file)
    except FileNotFoundError:
        return False


def wait_empty(path: str, timeout: float) -> bool:
    """Wait until no process is left in the group; False if it is still populated."""
    deadline = time.monotonic() + timeout
    while _populated(path):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            fd = os.open(f"{path}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            os.read(fd, 4096)  # arm the notification, then re-check before sleeping
            if _populated(path):
                poller.poll(min(left, 0.1) * 1000)
        finally:
            os.close(fd)
    return True


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)
