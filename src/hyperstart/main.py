"""PID 1 of the guest: mount the basics, load the modules, find the port, serve the host.

Anything fatal is printed on the console and the VM powers off: a PID 1 that exits makes the
kernel panic, which tells the host much less.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

from hyperstart import cgroups, network, syscalls
from hyperstart.agent import AGENT, Agent
from hyperstart.console import describe, log
from hyperstart.containers import GuestContainers
from hyperstart.pod import GuestPod
from hyperstart.port import GuestPort, find_device

MODULES = "/etc/hyperstart/modules"
_PORT_WAIT = 10.0  # seconds for the virtio-serial port to show up after the modules load
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_NOSUID = syscalls.MS_NOSUID | syscalls.MS_NODEV
_MOUNTS = (
    # source, target, fstype, flags, data
    ("proc", "/proc", "proc", _NOSUID | syscalls.MS_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", _NOSUID | syscalls.MS_NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", syscalls.MS_NOSUID, "mode=0755"),
    ("devpts", "/dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
     "newinstance,ptmxmode=0666,mode=0620,gid=5"),
    ("shm", "/dev/shm", "tmpfs", _NOSUID, "mode=1777"),
    ("run", "/run", "tmpfs", _NOSUID, "mode=0755"),
    ("tmp", "/tmp", "tmpfs", _NOSUID, "mode=1777"),
    ("cgroup2", cgroups.ROOT, "cgroup2", _NOSUID | syscalls.MS_NOEXEC, ""),
)  # fmt: skip


def main() -> None:
    try:
        boot()
        device = wait_for_port()
        log(f"{AGENT} serving on {device}")
        Agent(GuestPort(device), GuestContainers(), GuestPod(), network.configure).run()
    except BaseException as exc:
        log("fatal error, powering off:\n" + describe(exc))
    finally:
        power_off()


def boot() -> None:
    _stdio()
    for source, target, fstype, flags, data in _MOUNTS:
        os.makedirs(target, exist_ok=True)
        try:
            syscalls.mount(source, target, fstype, flags, data)
        except OSError as exc:
            if exc.errno != errno.EBUSY:  # EBUSY: mounted already (by the kernel)
                raise
    cgroups.enable_controllers()
    load_modules()
    loopback_up()


def _stdio() -> None:
    """Make sure fds 0-2 exist (the console, else /dev/null): spawned children rely on it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            for path in ("/dev/console", "/dev/null"):
                try:
                    opened = os.open(path, os.O_RDWR)
                except OSError:
                    continue
                if opened != fd:
                    os.dup2(opened, fd)
                    os.close(opened)
                break


def load_modules(listing: str = MODULES) -> None:
    try:
        with open(listing) as file:
            paths = [line.strip() for line in file if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.finit_module(fd)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise OSError(exc.errno, f"loading {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)


def loopback_up() -> None:
    sock = syscalls.inet_socket()
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    finally:
        os.close(sock)


def wait_for_port() -> str:
    deadline = time.monotonic() + _PORT_WAIT
    while True:
        device = find_device()
        if device is not None and os.path.exists(device):
            return device
        if time.monotonic() > deadline:
            raise RuntimeError("the virtio-serial port hyper.agent did not appear")
        time.sleep(0.005)


def power_off() -> None:
    try:
        os.sync()
        syscalls.reboot(syscalls.RB_POWER_OFF)
    except BaseException as exc:
        log("power off failed:\n" + describe(exc))
    while True:  # PID 1 must not exit
        time.sleep(3600)
