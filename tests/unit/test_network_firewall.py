"""The nftables rule set, rendered from a topology (the kernel's side is in tests/e2e)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hyper.model.ports import PortMap
from hyper.network import firewall
from hyper.network.topology import Endpoint, Network, Topology

EP = Endpoint(
    tap="hytaaaaaaaaaaaa",
    address=IPv4Address("10.88.0.2"),
    mac="0a:68:0a:58:00:02",
    names=("web",),
    ports=(PortMap(8080, 80),),
    fip=IPv4Address("203.0.113.5"),
)
NET = Network(
    "n", "hybaaaaaaaaaaaa", IPv4Network("10.88.0.0/24"), IPv4Address("10.88.0.1"), True, (EP,)
)


def test_an_empty_topology_only_deletes_our_tables():
    script = firewall.render("t", "hy", Topology())
    assert script.splitlines() == [
        "table inet t", "delete table inet t", "table bridge t", "delete table bridge t",
    ]  # fmt: skip


def test_rules_of_a_pod():
    script = firewall.render("t", "hy", Topology((NET,), uplink="eth9"))
    # layer 2: its own MAC and address only, ARP included; unknown taps of ours drop
    for rule in (
        "ether saddr != 0a:68:0a:58:00:02 drop",
        "arp saddr ip != 10.88.0.2 drop",
        "ip saddr != 10.88.0.2 drop",
        'iifname "hyt*" drop',
    ):
        assert rule in script
    # layer 3: the network talks to itself, to the uplink, and nothing else enters
    assert 'iifname "hybaaaaaaaaaaaa" oifname "hybaaaaaaaaaaaa" accept' in script
    assert 'iifname "hybaaaaaaaaaaaa" oifname "eth9" accept' in script
    assert "ct status dnat accept" in script
    assert "ip daddr 203.0.113.5 dnat ip to 10.88.0.2" in script
    assert 'ip saddr 10.88.0.2 oifname "eth9" snat ip to 203.0.113.5' in script
    assert "fib daddr type local tcp dport 8080 dnat ip to 10.88.0.2:80" in script
    # the floating IP's SNAT comes before the network's masquerade
    assert script.index("snat ip to") < script.index("masquerade")


def test_no_nat_means_no_way_out():
    closed = Network(NET.id, NET.bridge, NET.subnet, NET.gateway, False, (EP,))
    script = firewall.render("t", "hy", Topology((closed,), uplink="eth9"))
    assert 'iifname "hybaaaaaaaaaaaa" oifname "eth9" accept' not in script
    assert "10.88.0.0/24" not in script
