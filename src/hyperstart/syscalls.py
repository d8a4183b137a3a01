"""Thin ctypes wrappers for the system calls Python 3.11's ``os`` module lacks.

Each wrapper raises :class:`OSError` with the C errno, like the ``os`` functions do.
"""

from __future__ import annotations

import ctypes
import os

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# umount2(2) flags
MNT_DETACH = 0x2

# reboot(2) commands
RB_POWER_OFF = 0x4321FEDC

_SYS_FINIT_MODULE = 313  # x86_64
_PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.reboot.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.socket.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str, path: str | None = None) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data) if data else None)
    _check(result, f"mount {fstype or 'bind'} {source} on", target)


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def finit_module(fd: int) -> None:
    """Load the kernel module open at ``fd`` (no parameters)."""
    _check(_libc.syscall(_SYS_FINIT_MODULE, fd, b"", 0), "finit_module")


def reboot(command: int) -> None:
    _check(_libc.reboot(command), "reboot")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def inet_socket() -> int:
    """A close-on-exec UDP socket fd, for interface ioctls (the socket module is heavier)."""
    af_inet, sock_dgram, sock_cloexec = 2, 2, 0o2000000
    fd = int(_libc.socket(af_inet, sock_dgram | sock_cloexec, 0))
    _check(fd, "socket")
    return fd


def set_child_subreaper() -> None:
    """Become the parent of orphaned descendants (what PID 1 is anyway)."""
    _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
