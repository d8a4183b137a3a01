"""Figures of the guest for the ``stats`` request: memory, CPU time, processes."""

from __future__ import annotations

import os

from hyper.proto.messages import Stats

_USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def memory(meminfo: str = "/proc/meminfo") -> tuple[int, int]:
    """(total, available) in bytes."""
    values: dict[str, int] = {}
    with open(meminfo) as file:
        for line in file:
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                values[name] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def cpu(proc_stat: str = "/proc/stat") -> tuple[int, int]:
    """(user, system) CPU time of the whole guest in microseconds."""
    with open(proc_stat) as file:
        fields = file.readline().split()
    user, nice, system = (int(value) for value in fields[1:4])
    tick_us = 1_000_000 // _USER_HZ
    return (user + nice) * tick_us, system * tick_us


def process_count(proc: str = "/proc") -> int:
    return sum(1 for name in os.listdir(proc) if name.isdigit())


def collect(containers: dict[str, int]) -> Stats:
    total, available = memory()
    user, system = cpu()
    return Stats(total, available, user, system, process_count(), containers)
