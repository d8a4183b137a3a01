"""The processes of one container, for the ``processes`` request (``hyper top``), from /proc.

Which processes: those in the container's cgroup (the backend tells), else, for a backend without
cgroups (tests), the processes the agent spawned in it and their descendants. Each is read from
``<proc>/<pid>/{stat,status,cmdline}``; one that vanishes meanwhile is left out. User names come
from the container's own /etc/passwd, read without following symlinks (the root is the
container's to tamper with), and are the uid when there is no entry.

The answer is bounded: at most ``MAX_PROCESSES`` entries, commands cut at 4096 characters, and
the whole answer within one protocol message; ``truncated`` says that some were left out.
"""

from __future__ import annotations

import os
import stat

from hyper.proto import frames
from hyper.proto.messages import MAX_PROCESSES, ProcessInfo, ProcessList, dumps

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
COMMAND_LIMIT = 4096
"""Characters of a command line kept."""
_BUDGET = frames.MAX_MSG - 4096
"""Bytes of process entries in one answer: the rest is room for the envelope."""
_PASSWD_LIMIT = 1 << 20
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def read(pid: int, proc: str = "/proc", names: dict[int, str] | None = None) -> ProcessInfo | None:
    """One process, or None if it is gone (or not a process directory)."""
    base = f"{proc}/{pid}"
    try:
        with open(f"{base}/stat", "rb") as file:
            stat_line = file.read(4096).decode(errors="replace")
        with open(f"{base}/status", "rb") as file:
            status = file.read(64 * 1024).decode(errors="replace")
        with open(f"{base}/cmdline", "rb") as file:
            cmdline = file.read(4 * COMMAND_LIMIT + 4)
    except OSError:
        return None
    head, sep, tail = stat_line.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 22:
        return None
    comm = head.partition("(")[2]
    try:
        ppid = int(fields[1])
        cpu_ticks = int(fields[11]) + int(fields[12])
        start_ticks = int(fields[19])
        rss_pages = max(int(fields[21]), 0)
    except ValueError:
        return None
    uid = _effective_uid(status)
    args = [arg.decode(errors="replace") for arg in cmdline.split(b"\0")]
    while args and not args[-1]:
        args.pop()
    command = " ".join(args) if args else f"[{comm}]"
    user = (names or {}).get(uid, str(uid))
    return ProcessInfo(
        pid=pid,
        ppid=ppid,
        uid=uid,
        user=user,
        state=fields[0][:8],
        rss=rss_pages * PAGE_SIZE,
        cpu_time=cpu_ticks / CLOCK_TICKS,
        started=start_ticks / CLOCK_TICKS,
        command=command[:COMMAND_LIMIT],
    )


def collect(
    pids: list[int], proc: str = "/proc", names: dict[int, str] | None = None
) -> ProcessList:
    """The entries of ``pids`` (sorted), within the bounds of one answer."""
    entries: list[ProcessInfo] = []
    used = 0
    truncated = False
    for pid in sorted(set(pids)):
        info = read(pid, proc, names)
        if info is None:
            continue
        size = len(dumps(info.to_wire())) + 1
        if len(entries) >= MAX_PROCESSES or used + size > _BUDGET:
            truncated = True
            break
        entries.append(info)
        used += size
    return ProcessList(entries, truncated)


def descendants(roots: set[int], proc: str = "/proc") -> list[int]:
    """``roots`` that are alive, and every process below them."""
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as file:
                tail = file.read(4096).decode(errors="replace").rpartition(")")[2].split()
            ppid = int(tail[1])
        except (OSError, ValueError, IndexError):
            continue
        alive.add(int(name))
        children.setdefault(ppid, []).append(int(name))
    found: set[int] = set()
    stack = [pid for pid in roots if pid in alive]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return sorted(found)


def passwd_names(root: str | None) -> dict[int, str]:
    """uid -> name from ``<root>/etc/passwd`` (the first entry wins); {} if unreadable."""
    try:
        data = _read_no_follow(root or "/", ("etc", "passwd"), _PASSWD_LIMIT)
    except OSError:
        return {}
    names: dict[int, str] = {}
    for line in data.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] and fields[2].isdigit() and fields[2].isascii():
            names.setdefault(int(fields[2]), fields[0][:256])
    return names


def _read_no_follow(root: str, parts: tuple[str, ...], limit: int) -> bytes:
    """A regular file below ``root``, no component of ``parts`` being a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        child = os.open(parts[-1], _NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        os.close(fd)
        fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{'/'.join(parts)} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _effective_uid(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("Uid:"):
            values = line.split()
            if len(values) >= 3 and values[2].isdigit():
                return int(values[2])
    return 0
