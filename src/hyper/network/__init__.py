"""Pod networking on the host: bridges and taps (netlink), nftables, dnsmasq, IPAM, FIPs.

A part at the level of ``vmm`` and ``state``: it knows the kernel's networking and nothing of
pods or the database. The service layer describes what should exist (:mod:`.topology`) and
:class:`~hyper.network.host.HostNetwork` makes the host match it. See docs/network.md.
"""
