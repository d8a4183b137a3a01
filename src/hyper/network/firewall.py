"""The nftables rules of every network, rendered whole from a topology and swapped atomically.

hyperd owns two tables named ``network.table``: ``bridge`` (layer 2, per tap: a pod sends only
from its own MAC and IP, ARP included, and only IPv4/ARP) and ``inet`` (layer 3: isolation of
networks from each other and from the host, NAT to the uplink, floating IPs, published ports).
One ``nft -f`` transaction deletes and re-creates both, so the kernel never holds half a rule
set, and a restart converges whatever was there (the same text from the same records).

Policies stay ``accept`` on our base chains and every decision is scoped by our links' names,
so traffic that is not a pod's is untouched (other software on the host keeps its own rules).
"""

from __future__ import annotations

import shutil
import subprocess

from hyper.errors import Unavailable
from hyper.network.topology import Topology

FAMILIES = ("inet", "bridge")


def render(table: str, prefix: str, topology: Topology) -> str:
    """The script that replaces our tables (or only deletes them for an empty topology)."""
    lines = []
    for family in FAMILIES:  # "table" first: "delete" then never fails on a missing table
        lines += [f"table {family} {table}", f"delete table {family} {table}"]
    if not topology.empty:
        lines += _bridge_table(table, prefix, topology)
        lines += _inet_table(table, prefix, topology)
    return "\n".join(lines) + "\n"


def _bridge_table(table: str, prefix: str, topology: Topology) -> list[str]:
    out = [f"table bridge {table} {{"]
    jumps = []
    for _, ep in topology.endpoints():
        chain = f"ep_{ep.tap}"
        out += [
            f"  chain {chain} {{",
            f"    ether saddr != {ep.mac} drop",
            f"    ether type arp arp saddr ether != {ep.mac} drop",
            f"    ether type arp arp saddr ip != {ep.address} drop",
            "    ether type arp accept",
            f"    ether type ip ip saddr != {ep.address} drop",
            "    ether type ip accept",
            "    drop",
            "  }",
        ]
        jumps.append(f'    iifname "{ep.tap}" jump {chain}')
    out += [
        "  chain prerouting {",
        "    type filter hook prerouting priority -200; policy accept;",
        *jumps,
        f'    iifname "{prefix}t*" drop',  # a tap of ours with no rules yet: nothing passes
        "  }",
        "}",
    ]
    return out


def _inet_table(table: str, prefix: str, topology: Topology) -> list[str]:
    bridges = f'"{prefix}b*"'
    uplink = topology.uplink
    pod_input = ["    ct state established,related accept"]
    pod_out = ["    ct state established,related accept"]
    dnat: list[str] = []
    snat: list[str] = []
    for net in topology.networks:
        br = f'"{net.bridge}"'
        pod_input += [
            f"    iifname {br} ip daddr {net.gateway} meta l4proto {{ tcp, udp }}"
            " th dport 53 accept",
            f"    iifname {br} ip daddr {net.gateway} icmp type echo-request accept",
        ]
        pod_out.append(f"    iifname {br} oifname {br} accept")
        for ep in net.endpoints:
            if ep.fip is not None:
                dnat.append(f"    ip daddr {ep.fip} dnat ip to {ep.address}")
                if uplink:
                    pod_out.append(f'    ip saddr {ep.address} oifname "{uplink}" accept')
                    snat.append(f'    ip saddr {ep.address} oifname "{uplink}" snat ip to {ep.fip}')
            for port in ep.ports:
                match = f"ip daddr {port.host_ip}" if port.host_ip else "fib daddr type local"
                dnat.append(
                    f"    {match} {port.protocol} dport {port.host_port}"
                    f" dnat ip to {ep.address}:{port.container_port}"
                )
        if net.nat and uplink:
            pod_out.append(f'    iifname {br} oifname "{uplink}" accept')
            snat.append(f'    ip saddr {net.subnet} oifname "{uplink}" masquerade')
    snat.append(f"    ip saddr 127.0.0.0/8 oifname {bridges} masquerade")
    return [
        f"table inet {table} {{",
        "  chain pod_input {", *pod_input, "    drop", "  }",
        "  chain pod_out {", *pod_out, "    drop", "  }",
        "  chain pod_in {",
        "    ct state established,related accept",
        "    ct status dnat accept",
        "    drop",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {bridges} jump pod_input",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {bridges} jump pod_out",
        f"    oifname {bridges} jump pod_in",
        "  }",
        "  chain to_pods {", *dnat, "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    jump to_pods",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    jump to_pods",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *snat,
        "  }",
        "}",
    ]  # fmt: skip


def apply(script: str, nft: str = "nft") -> None:
    """Run one ``nft -f`` transaction: all of it applies, or none of it."""
    binary = shutil.which(nft)
    if binary is None:
        raise Unavailable("nft is not installed (Debian package nftables)")
    result = subprocess.run(
        [binary, "-f", "-"], input=script.encode(), capture_output=True, timeout=30
    )
    if result.returncode != 0:
        raise Unavailable(
            f"nft refused our rules: {result.stderr.decode(errors='replace')[-2000:]}"
        )


def tables(table: str, nft: str = "nft") -> list[str]:
    """Which of our tables exist (``inet``, ``bridge``): for checks and tests."""
    binary = shutil.which(nft) or nft
    result = subprocess.run([binary, "list", "tables"], capture_output=True, timeout=30)
    found = []
    for line in result.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[2] == table:
            found.append(parts[1])
    return found
