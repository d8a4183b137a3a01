"""The agent's end of the host channel: the virtio-serial port named ``hyper.agent``.

With no host connected, the port reads EOF at once and polls as hung up, so it cannot be waited
on: :meth:`GuestPort.open` answers ``None`` until the host is there (the agent asks again on a
short tick, and the kernel's SIGIO on a host connecting wakes it earlier).
"""

from __future__ import annotations

import fcntl
import os
import select
from typing import Protocol

NAME = "hyper.agent"
_PORTS = "/sys/class/virtio-ports"


class Port(Protocol):
    """Where connections to the host come from."""

    def open(self) -> int | None:
        """A connected, non-blocking fd; None: not now, ask again; EOFError: never again."""

    def close(self, fd: int) -> None:
        """The agent is done with this connection."""


def find_device(name: str = NAME) -> str | None:
    try:
        entries = os.listdir(_PORTS)
    except FileNotFoundError:
        return None
    for entry in entries:
        try:
            with open(f"{_PORTS}/{entry}/name") as file:
                if file.read().strip() == name:
                    return f"/dev/{entry}"
        except OSError:
            continue
    return None


class GuestPort:
    """The virtio-serial port, re-opened for every new connection."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._fd = -1

    def open(self) -> int | None:
        if self._fd < 0:
            self._fd = os.open(self.device, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fcntl.fcntl(self._fd, fcntl.F_SETOWN, os.getpid())
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        hung_up = any(event & select.POLLHUP for _, event in poller.poll(0))
        if hung_up:  # no host yet: ask the kernel for SIGIO when it connects
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_ASYNC)
            return None
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_ASYNC)
        return self._fd

    def close(self, fd: int) -> None:
        os.close(fd)
        if fd == self._fd:
            self._fd = -1
