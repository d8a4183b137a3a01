"""The pod's NIC, configured from inside the guest with interface ioctls (no ``ip`` needed).

The host sends ``setup_network`` once the agent answers. The guest sets everything itself,
the MAC included: a VM cloned from a template resumes the template's NIC state, so nothing
about the network may come from the boot or the device model. Containers share the guest's
network; the name servers and extra host names go into each container's /etc (see
``containers.py``).
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

from hyper.errors import NotFound
from hyper.proto.messages import SetupNetwork
from hyperstart import syscalls

SIOCADDRT = 0x890B
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
SIOCSIFHWADDR = 0x8924
IFF_UP = 0x1
AF_INET = 2
ARPHRD_ETHER = 1
RTF_UP, RTF_GATEWAY = 0x1, 0x2
_NIC_WAIT = 5.0  # seconds for the virtio-net device to show up after its module loads


def find_nic(sys_class_net: str = "/sys/class/net", wait: float = _NIC_WAIT) -> str:
    """The name of the guest's one Ethernet interface (not ``lo``)."""
    deadline = time.monotonic() + wait
    while True:
        names = sorted(n for n in os.listdir(sys_class_net) if n != "lo")
        if names:
            return names[0]
        if time.monotonic() > deadline:
            raise NotFound("the VM has no network interface")
        time.sleep(0.02)


def configure(spec: SetupNetwork) -> str:
    """Apply ``spec`` to the NIC; returns the interface's name."""
    name = find_nic()
    ifname = name.encode()
    ip, prefix = spec.address.split("/")
    mask = struct.pack("!I", (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF)
    fd = syscalls.inet_socket()
    try:
        _set_up(fd, ifname, False)  # the MAC changes only while the link is down
        mac = bytes(int(part, 16) for part in spec.mac.split(":"))
        fcntl.ioctl(fd, SIOCSIFHWADDR, struct.pack("16sH6s8x", ifname, ARPHRD_ETHER, mac))
        fcntl.ioctl(fd, SIOCSIFMTU, struct.pack("16si20x", ifname, spec.mtu))
        fcntl.ioctl(fd, SIOCSIFADDR, _sockaddr_ifreq(ifname, _aton(ip)))
        fcntl.ioctl(fd, SIOCSIFNETMASK, _sockaddr_ifreq(ifname, mask))
        _set_up(fd, ifname, True)
        if spec.gateway:
            fcntl.ioctl(fd, SIOCADDRT, _default_route(_aton(spec.gateway)))
    finally:
        os.close(fd)
    return name


def _aton(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def _set_up(fd: int, ifname: bytes, up: bool) -> None:
    request = struct.pack("16sH14x", ifname, 0)
    flags = struct.unpack("16sH14x", fcntl.ioctl(fd, SIOCGIFFLAGS, request))[1]
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH14x", ifname, flags))


def _sockaddr_in(address: bytes) -> bytes:
    return struct.pack("HH4s8x", AF_INET, 0, address)


def _sockaddr_ifreq(ifname: bytes, address: bytes) -> bytes:
    return struct.pack("16s16s8x", ifname, _sockaddr_in(address))


def _default_route(gateway: bytes) -> bytes:
    """A ``struct rtentry`` (x86_64) for 0.0.0.0/0 via ``gateway``; the kernel finds the device."""
    zero = _sockaddr_in(b"\0\0\0\0")
    return struct.pack(
        "@L16s16s16sHhLPhPLLH6x",
        0, zero, _sockaddr_in(gateway), zero, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
