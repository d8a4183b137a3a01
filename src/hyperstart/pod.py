"""The pod's VM as a whole: identity, clock, entropy and kernel settings, and power.

A VM cloned from a template wakes up with the template's hostname, clock and RNG state:
``setup_pod`` personalises it. :class:`GuestPod` acts on the real machine; tests give the agent
an object with the same two methods instead.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

from hyper.proto.messages import SetupPod
from hyperstart import syscalls

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


class GuestPod:
    """Applies ``setup_pod`` to the guest, and powers it off."""

    def setup(self, spec: SetupPod) -> None:
        syscalls.sethostname(spec.hostname)
        time.clock_settime_ns(time.CLOCK_REALTIME, spec.time_ns)
        if spec.entropy:
            add_entropy(bytes.fromhex(spec.entropy))
        for key, value in spec.sysctls.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as file:
                file.write(value)
        if spec.machine_id:
            with open("/etc/machine-id", "w") as file:
                file.write(spec.machine_id + "\n")

    def power_off(self) -> None:
        os.sync()
        syscalls.reboot(syscalls.RB_POWER_OFF)


def add_entropy(data: bytes) -> None:
    """Mix ``data`` into the kernel's RNG, credited as entropy, and reseed the CRNG now."""
    padded = data + b"\0" * (-len(data) % 4)
    info = bytearray(struct.pack("ii", len(data) * 8, len(data)) + padded)
    fd = os.open("/dev/random", os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG, 0)
    finally:
        os.close(fd)
