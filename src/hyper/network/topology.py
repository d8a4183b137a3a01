"""What should exist on the host, as pure values: the service layer builds one from its records
and :class:`~hyper.network.host.HostNetwork` converges the kernel to it.

Declarative on purpose: after a crash, a restart or a change, the same function makes the host
right whatever it holds (nothing stale stays, nothing missing stays missing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from hyper.errors import InvalidArgument
from hyper.model.ports import PortMap

_DNS_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})")


@dataclass(frozen=True)
class Endpoint:
    """One pod's NIC: its tap on the network's bridge, its address and the names it answers to."""

    tap: str
    address: IPv4Address
    mac: str
    names: tuple[str, ...] = ()
    ports: tuple[PortMap, ...] = ()
    fip: IPv4Address | None = None

    def __post_init__(self) -> None:
        for name in self.names:
            if not _DNS_NAME.fullmatch(name):
                raise InvalidArgument(f"{name!r} is not a valid DNS name")


@dataclass(frozen=True)
class Network:
    """One tenant network with at least one running pod: a bridge, a subnet, its endpoints."""

    id: str
    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    nat: bool = True
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class Topology:
    networks: tuple[Network, ...] = ()
    uplink: str = ""
    """Where NAT and floating IPs go out (set by the host: configured, else the default route's)."""

    @property
    def empty(self) -> bool:
        return not self.networks

    def endpoints(self) -> list[tuple[Network, Endpoint]]:
        return [(net, ep) for net in self.networks for ep in net.endpoints]
