"""Published ports: ``[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]``, as a pure value."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from hyper.errors import InvalidArgument

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortMap:
    """``[host_ip:]host_port:container_port[/proto]``: host traffic DNATed to a pod."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: IPv4Address | None = None

    def __post_init__(self) -> None:
        if not (1 <= self.host_port <= 65535 and 1 <= self.container_port <= 65535):
            raise InvalidArgument("ports must be between 1 and 65535")
        if self.protocol not in PROTOCOLS:
            raise InvalidArgument(f"protocol must be tcp or udp, not {self.protocol!r}")

    @classmethod
    def parse(cls, text: str) -> PortMap:
        spec, _, protocol = text.partition("/")
        parts = spec.rsplit(":", 2)
        try:
            if len(parts) == 3:
                host_ip = IPv4Address(parts[0]) if parts[0] else None
                return cls(int(parts[1]), int(parts[2]), protocol or "tcp", host_ip)
            if len(parts) == 2:
                return cls(int(parts[0]), int(parts[1]), protocol or "tcp")
        except ValueError:
            pass
        raise InvalidArgument(
            f"published port {text!r} is not [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"
        )

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}:{self.container_port}/{self.protocol}"
