"""Address management, as pure functions: subnets from a pool, addresses in a subnet, MACs, FIPs.

Nothing is stored here: the caller passes what is taken (from its records) and persists the
answer, so an allocation and its record are one transaction of the caller's store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network

from hyper.errors import FailedPrecondition, InvalidArgument

MIN_PREFIX, MAX_PREFIX = 8, 29


def parse_subnet(value: str) -> IPv4Network:
    """A user's subnet: IPv4, a network address (no host bits), /8../29, and private or shared
    space (a pod network must not shadow public addresses of the Internet)."""
    try:
        subnet = IPv4Network(value, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"subnet {value!r} is invalid: {exc}") from None
    if not MIN_PREFIX <= subnet.prefixlen <= MAX_PREFIX:
        raise InvalidArgument(f"subnet {subnet} must have a prefix length of /8 to /29")
    if not (subnet.is_private or subnet.subnet_of(IPv4Network("100.64.0.0/10"))) or (
        subnet.is_loopback or subnet.is_link_local or subnet.is_multicast
    ):
        raise InvalidArgument(f"subnet {subnet} is not private address space")
    return subnet


def gateway(subnet: IPv4Network) -> IPv4Address:
    """The host's address on the network: the first one."""
    return subnet.network_address + 1


def allocate_subnet(pool: IPv4Network, prefix: int, taken: Iterable[IPv4Network]) -> IPv4Network:
    """The first subnet of ``pool`` with ``prefix`` that overlaps nothing in ``taken``."""
    used = list(taken)
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    raise FailedPrecondition(f"no free /{prefix} left in the subnet pool {pool}")


def allocate_address(subnet: IPv4Network, taken: Iterable[IPv4Address]) -> IPv4Address:
    """The lowest free host address after the gateway."""
    used = {*taken, gateway(subnet)}
    for address in subnet.hosts():
        if address not in used:
            return address
    raise FailedPrecondition(f"network {subnet} has no free address left")


def mac_for(address: IPv4Address) -> str:
    """A locally administered unicast MAC derived from the address (``0a:68:`` + the 4 bytes):
    unique per address on a host, and the anti-spoofing rules need no other lookup."""
    return "0a:68:" + ":".join(f"{b:02x}" for b in address.packed)


def fip_pool(entries: Iterable[str]) -> Iterator[IPv4Address]:
    """Every address of the configured pool (CIDRs give their host addresses; ranges inclusive)."""
    seen: set[IPv4Address] = set()
    for entry in entries:
        if "-" in entry:
            first, last = (IPv4Address(a.strip()) for a in entry.split("-", 1))
            addresses: Iterable[IPv4Address] = (
                IPv4Address(n) for n in range(int(first), int(last) + 1)
            )
        else:
            network = IPv4Network(entry, strict=False)
            addresses = network.hosts() if network.prefixlen < 31 else iter(network)
        for address in addresses:
            if address not in seen:
                seen.add(address)
                yield address


def allocate_fip(pool: Iterable[str], taken: Iterable[IPv4Address]) -> IPv4Address:
    used = set(taken)
    for address in fip_pool(pool):
        if address not in used:
            return address
    raise FailedPrecondition("the floating IP pool is exhausted (or none is configured)")


def parse_address(value: str, what: str = "address") -> IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidArgument(f"{what} {value!r} is not an IPv4 address") from None
