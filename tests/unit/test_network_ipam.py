"""IPAM, names and port specs: pure functions, checked with examples and properties."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyper import errors
from hyper.config.settings import from_dict, network_settings
from hyper.model.pod import pod_from_dict
from hyper.model.ports import PortMap
from hyper.network import ipam, names


def test_subnets_skip_what_is_taken_and_routed():
    pool = IPv4Network("10.88.0.0/16")
    taken = [IPv4Network("10.88.0.0/24"), IPv4Network("10.88.1.128/25")]
    assert ipam.allocate_subnet(pool, 24, taken) == IPv4Network("10.88.2.0/24")
    with pytest.raises(errors.FailedPrecondition):
        ipam.allocate_subnet(IPv4Network("10.88.0.0/24"), 24, taken)


@given(st.sets(st.integers(2, 253), max_size=40))
def test_addresses_are_free_and_never_the_gateway(used):
    subnet = IPv4Network("10.0.0.0/24")
    taken = [subnet.network_address + n for n in used]
    address = ipam.allocate_address(subnet, taken)
    assert address not in taken and address != ipam.gateway(subnet) and address in subnet


def test_a_full_subnet_says_so():
    subnet = IPv4Network("10.0.0.0/30")
    with pytest.raises(errors.FailedPrecondition):
        ipam.allocate_address(subnet, [IPv4Address("10.0.0.2")])


@pytest.mark.parametrize(
    "bad", ["10.0.0.1/24", "8.8.8.0/24", "10.0.0.0/30/1", "10.0.0.0/31", "127.0.0.0/8", "fe80::/64"]
)
def test_user_subnets_are_private_network_addresses(bad):
    with pytest.raises(errors.InvalidArgument):
        ipam.parse_subnet(bad)
    assert ipam.parse_subnet("192.168.7.0/24") == IPv4Network("192.168.7.0/24")


def test_mac_is_unicast_local_and_follows_the_address():
    mac = ipam.mac_for(IPv4Address("10.88.0.5"))
    assert mac == "0a:68:0a:58:00:05"
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_fip_pool_ranges_and_cidrs():
    pool = ["198.51.100.8/30", "198.51.100.20-198.51.100.21"]
    assert [str(a) for a in ipam.fip_pool(pool)] == [
        "198.51.100.9", "198.51.100.10", "198.51.100.20", "198.51.100.21",
    ]  # fmt: skip
    taken = [IPv4Address("198.51.100.9")]
    assert ipam.allocate_fip(pool, taken) == IPv4Address("198.51.100.10")
    with pytest.raises(errors.FailedPrecondition):
        ipam.allocate_fip([], [])


def test_link_names_fit_the_kernel_and_are_recognised():
    bridge = names.bridge("hy", "ab" * 32)
    tap = names.tap("e1f2a", "0123456789abcdef")
    assert len(bridge) == len(tap) == 15
    assert names.is_bridge("hy", bridge) and not names.is_tap("hy", bridge)
    assert names.is_tap("e1f2a", tap) and not names.is_tap("e1f2", tap + "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", PortMap(8080, 80)),
        ("127.0.0.1:53:5353/udp", PortMap(53, 5353, "udp", IPv4Address("127.0.0.1"))),
    ],
)
def test_port_specs(text, expected):
    assert PortMap.parse(text) == expected
    assert PortMap.parse(str(expected)) == expected


@pytest.mark.parametrize("bad", ["80", "0:80", "8080:70000", "8080:80/sctp", "x:1:2", "a:b"])
def test_bad_port_specs(bad):
    with pytest.raises(errors.InvalidArgument):
        PortMap.parse(bad)


def test_pod_files_carry_network_ports_and_links():
    spec = pod_from_dict(
        {"containers": [{"image": "busybox"}], "network": "back", "ports": ["8080:80"],
         "links": ["db:database", "cache"]},
        "p",
    )  # fmt: skip
    assert spec.links == (("db", "database"), ("cache", "cache"))
    assert pod_from_dict(spec.to_dict(), "p") == spec
    with pytest.raises(errors.InvalidArgument):
        pod_from_dict({"containers": [{"image": "b"}], "ports": ["80:80", "80:81"]}, "p")


def test_network_settings_are_checked():
    settings = from_dict({"network": {"prefix": "ab1", "fip_pool": ["203.0.113.0/29"]}})
    assert settings.network.prefix == "ab1"
    derived = network_settings(from_dict({"paths": {"state_dir": "/var/lib/a"}}))
    other = network_settings(from_dict({"paths": {"state_dir": "/var/lib/b"}}))
    assert len(derived.prefix) == 5 and derived.prefix != other.prefix
    assert derived.table.startswith("hyper_") and derived.table != other.table
    for bad in (
        {"prefix": "toolong"},
        {"prefix": "1ab"},
        {"table": "a b"},
        {"subnet_pool": "10.0.0.0/33"},
        {"fip_pool": ["nonsense"]},
        {"bogus": 1},
    ):
        with pytest.raises(errors.InvalidArgument):
            from_dict({"network": bad})
