"""Bridges, taps and addresses, over netlink (pyroute2), plus the two sysctls we need.

Every function is blocking (netlink round trips of microseconds); the service calls them from a
thread. Names are checked by the caller (:mod:`.names`): this module never touches a link whose
name the caller did not give it.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hyper.errors import Unavailable

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str  # "bridge", "tun", "veth", ...
    master: int | None
    up: bool


class Links:
    """One netlink socket; use as a context manager."""

    def __init__(self) -> None:
        self._ipr = IPRoute()

    def __enter__(self) -> Links:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ipr.close()

    def links(self) -> dict[str, Link]:
        found = {}
        for msg in self._ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else ""
            name = msg.get_attr("IFLA_IFNAME")
            found[name] = Link(
                name, msg["index"], kind or "", msg.get_attr("IFLA_MASTER"), bool(msg["flags"] & 1)
            )
        return found

    def index(self, name: str) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def ensure_bridge(self, name: str, address: IPv4Interface) -> None:
        """The bridge, up, holding exactly ``address`` (its network's gateway)."""
        index = self.index(name)
        if index is None:
            _log.info("creating bridge %s (%s)", name, address)
            self._ipr.link("add", ifname=name, kind="bridge")
            index = self._need(name)
        self.set_addresses(index, {address})
        self._ipr.link("set", index=index, state="up")
        # Published ports reached at 127.0.0.1 are DNATed to a pod; the kernel routes such
        # packets out of a non-loopback link only with route_localnet (then masqueraded).
        _sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")

    def ensure_tap(self, name: str, bridge: str) -> None:
        """A persistent tap (QEMU opens it by name; it outlives QEMU and hyperd alike) enslaved
        to ``bridge`` and up."""
        index = self.index(name)
        if index is None:
            _log.info("creating tap %s on %s", name, bridge)
            self._ipr.link("add", ifname=name, kind="tuntap", mode="tap")
            index = self._need(name)
        master = self._need(bridge)
        self._ipr.link("set", index=index, master=master, state="up")

    def delete(self, name: str) -> None:
        index = self.index(name)
        if index is None:
            return
        _log.info("deleting link %s", name)
        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise

    def addresses(self, index: int) -> set[IPv4Interface]:
        return {
            IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in self._ipr.get_addr(index=index, family=2)
        }

    def set_addresses(
        self, index: int, wanted: set[IPv4Interface], within: IPv4Network | None = None
    ) -> None:
        """Make the link's IPv4 addresses ``wanted``; with ``within``, touch only addresses in
        that range (the uplink keeps its own addresses; we manage only the floating IPs)."""
        present = self.addresses(index)
        for address in present - wanted:
            if within is None or address.ip in within:
                self._ipr.addr(
                    "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
        for address in wanted - present:
            self._ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )

    def default_uplink(self) -> str:
        """The interface of the default route (where "outside" is)."""
        try:
            routes = self._ipr.route("get", dst="1.1.1.1")
        except NetlinkError:
            return ""
        index = routes[0].get_attr("RTA_OIF") if routes else None
        if index is None:
            return ""
        msgs = self._ipr.get_links(index)
        return str(msgs[0].get_attr("IFLA_IFNAME")) if msgs else ""

    def routed(self) -> list[IPv4Network]:
        """Every IPv4 prefix the host routes or holds (an automatic subnet must avoid them)."""
        found = []
        for msg in self._ipr.get_routes(family=2):
            dst = msg.get_attr("RTA_DST")
            if dst and msg["dst_len"]:
                found.append(IPv4Network(f"{dst}/{msg['dst_len']}", strict=False))
        return found

    def _need(self, name: str) -> int:
        index = self.index(name)
        if index is None:
            raise Unavailable(f"link {name} vanished while being set up")
        return index


def enable_forwarding() -> None:
    """Routing between pods' bridges and the uplink needs IPv4 forwarding (host-wide; the
    firewall then decides what really passes)."""
    _sysctl("net/ipv4/ip_forward", "1")


def address_in(addresses: set[IPv4Interface], address: IPv4Address) -> bool:
    return any(a.ip == address for a in addresses)


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as exc:
        raise Unavailable(f"cannot set {key.replace('/', '.')} = {value}: {exc}") from exc
