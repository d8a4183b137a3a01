"""``setup_network``: the message both ends validate, and the guest's ioctl structures."""

from __future__ import annotations

import struct

import pytest

from hyper.errors import InvalidArgument, ProtocolError
from hyper.proto.messages import SetupNetwork
from hyper.sandbox.nic import NetworkAttachment
from hyperstart import network

GOOD = SetupNetwork(
    "0a:68:0a:58:00:05", "10.88.0.5/24", "10.88.0.1", ("10.88.0.1",), (("10.88.0.7", "db"),)
)


def test_round_trip():
    assert SetupNetwork.from_wire(GOOD.to_wire()) == GOOD
    attachment = NetworkAttachment.from_dict({"tap": "hyt0123456789ab", **GOOD.to_wire()})
    assert attachment.setup == GOOD and attachment.nic.tap == "hyt0123456789ab"
    assert NetworkAttachment.from_dict(attachment.to_dict()) == attachment


@pytest.mark.parametrize(
    "change",
    [
        {"mac": "01:00:5e:00:00:01"},  # multicast
        {"mac": "0a:68:0a:58:00"},
        {"address": "10.88.0.5"},
        {"address": "10.88.0.300/24"},
        {"address": "10.88.0.5/40"},
        {"gateway": "gw"},
        {"nameservers": ["1.1.1.1"] * 4},
        {"hosts": [["10.0.0.1", "bad name"]]},
        {"hosts": [["10.0.0.1"]]},
        {"mtu": 100},
    ],
)
def test_hostile_values_are_refused(change):
    with pytest.raises(ProtocolError):
        SetupNetwork.from_wire({**GOOD.to_wire(), **change})


def test_a_bad_tap_in_spec_json_is_refused():
    with pytest.raises(InvalidArgument):
        NetworkAttachment.from_dict({"tap": "Bad/Tap", **GOOD.to_wire()})


def test_guest_structures_match_the_kernel_abi():
    route = network._default_route(bytes([10, 88, 0, 1]))
    assert len(route) == 120  # struct rtentry on x86_64
    assert struct.unpack_from("@H", route, 56)[0] == network.RTF_UP | network.RTF_GATEWAY
    assert route[24:32] == struct.pack("HH4s", 2, 0, bytes([10, 88, 0, 1]))  # rt_gateway
    ifreq = network._sockaddr_ifreq(b"eth0", bytes([10, 88, 0, 5]))
    assert len(ifreq) == 40 and ifreq[16:24] == struct.pack("HH4s", 2, 0, bytes([10, 88, 0, 5]))
