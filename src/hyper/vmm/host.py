"""Facts about the host that the hypervisor drivers need; read once per process."""

from __future__ import annotations

import functools
import os
from pathlib import Path

KVM_DEVICE = Path("/dev/kvm")


@functools.cache
def tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host's TSC frequency in kHz from "cpu MHz", or 0 when unknown.

    Passed to the guest as ``tsc_early_khz``: without it a TCG guest on a busy host now and then
    hangs calibrating against the PIT (see docs/platform.md).
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return round(float(value) * 1000)
            except ValueError:
                return 0
    return 0


def kvm_unusable_reason(device: Path = KVM_DEVICE) -> str | None:
    """Why KVM cannot be used at all, or None when the device opens."""
    if not device.exists():
        return f"no {device}"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open {device}: {exc.strerror}"
    os.close(fd)
    return None


def release() -> str:
    """The host kernel's release, part of the accelerator cache key."""
    return os.uname().release
