"""Make the host match a topology: links, addresses, rules and DNS servers, nothing else.

:meth:`HostNetwork.converge` is the one way anything changes, whether a pod starts, ends, gets a
floating IP, or hyperd starts after a crash: it lists what exists under our names, creates what
is missing, fixes what differs and deletes what is not wanted. With an empty topology it removes
everything of ours (bridges, taps, both nftables tables, dnsmasq processes, floating IPs on the
uplink). Blocking: call it from a thread, one call at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from hyper.config.settings import NetworkSettings
from hyper.network import firewall, ipam, names
from hyper.network.dns import Dns
from hyper.network.links import Links, enable_forwarding
from hyper.network.topology import Topology

_log = logging.getLogger(__name__)


class HostNetwork:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self.dns = Dns(settings.table, settings.dnsmasq, settings.upstream_dns)
        self._fips = set(ipam.fip_pool(settings.fip_pool))

    def routed(self) -> list[IPv4Network]:
        with Links() as links:
            return links.routed()

    def converge(self, topology: Topology) -> None:
        prefix = self.settings.prefix
        with Links() as links:
            if not topology.empty:
                enable_forwarding()
                uplink = self.settings.uplink or links.default_uplink()
                topology = dataclasses.replace(topology, uplink=uplink)
            wanted_bridges = {net.bridge for net in topology.networks}
            wanted_taps = {ep.tap for _, ep in topology.endpoints()}
            # Old taps first (a tap of a removed pod must not stay on a bridge we keep).
            existing = links.links()
            for name in existing:
                if names.is_tap(prefix, name) and name not in wanted_taps and _persistent(name):
                    links.delete(name)
            for net in topology.networks:
                links.ensure_bridge(
                    net.bridge, IPv4Interface(f"{net.gateway}/{net.subnet.prefixlen}")
                )
                for ep in net.endpoints:
                    links.ensure_tap(ep.tap, net.bridge)
            # Rules before DNS and floating IPs: a new tap is dropped until its rules exist.
            firewall.apply(firewall.render(self.settings.table, prefix, topology))
            for name in links.links():
                if names.is_bridge(prefix, name) and name not in wanted_bridges:
                    links.delete(name)
            self._converge_fips(links, topology)
        self._converge_dns(topology)

    def _converge_fips(self, links: Links, topology: Topology) -> None:
        """Floating IPs live on the uplink as /32s, so the uplink answers ARP for them (as a
        Neutron router's gateway port does); only addresses of the pool are ever touched."""
        if not topology.uplink or not self._fips:
            return
        index = links.index(topology.uplink)
        if index is None:
            _log.warning("uplink %s does not exist: floating IPs not configured", topology.uplink)
            return
        wanted = {IPv4Interface(f"{ep.fip}/32") for _, ep in topology.endpoints() if ep.fip}
        present = links.addresses(index)
        for address in present - wanted:
            if address.network.prefixlen == 32 and address.ip in self._fips:
                links.set_addresses(index, present - {address}, within=address.network)
        for address in wanted - present:
            links.set_addresses(index, {address}, within=address.network)

    def _converge_dns(self, topology: Topology) -> None:
        wanted = set()
        if self.settings.dns:
            for net in topology.networks:
                wanted.add(net.bridge)
                hosts = {name: ep.address for ep in net.endpoints for name in ep.names}
                self.dns.ensure(net.bridge, net.gateway, hosts)
        for bridge in set(self.dns.running()) - wanted:
            self.dns.stop(bridge)
        if not wanted:
            for leftover in self.dns.dir.glob("*") if self.dns.dir.exists() else ():
                leftover.unlink()
            self.dns.remove_dir()

    def leftovers(self) -> list[str]:
        """Everything of ours that exists (empty after converging to an empty topology)."""
        prefix = self.settings.prefix
        with Links() as links:
            found = [
                n for n in links.links() if names.is_bridge(prefix, n) or names.is_tap(prefix, n)
            ]
        found += [
            f"nft table {f} {self.settings.table}" for f in firewall.tables(self.settings.table)
        ]
        found += [f"dnsmasq {pid} ({bridge})" for bridge, pid in self.dns.running().items()]
        return found


def _persistent(tap: str) -> bool:
    """Whether a tap outlives its users (IFF_PERSIST): ours are; a tap QEMU made for itself (a
    VM template's) is not, belongs to a live process and vanishes with it: never ours to delete."""
    try:
        flags = int(Path(f"/sys/class/net/{tap}/tun_flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x0800)
