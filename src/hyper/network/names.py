"""Names of the host objects hyperd owns: how they are made, and how we recognise ours.

``<prefix>b<id>`` is a network's bridge, ``<prefix>t<id>`` a pod's tap, ids being the first hex
digits of the network's or pod's id. The prefix is configured (1-5 characters), so every name
fits the kernel's 15 and several hyperds (tests) never see each other's links.
"""

from __future__ import annotations

IFNAMSIZ = 15


def bridge(prefix: str, network_id: str) -> str:
    return _name(prefix, "b", network_id)


def tap(prefix: str, pod_id: str) -> str:
    return _name(prefix, "t", pod_id)


def is_bridge(prefix: str, name: str) -> bool:
    return name.startswith(prefix + "b") and len(name) == IFNAMSIZ


def is_tap(prefix: str, name: str) -> bool:
    return name.startswith(prefix + "t") and len(name) == IFNAMSIZ


def _name(prefix: str, kind: str, ident: str) -> str:
    width = IFNAMSIZ - len(prefix) - 1
    if len(ident) < width or not all(c in "0123456789abcdef" for c in ident[:width]):
        raise ValueError(f"an id of at least {width} hex digits is needed, not {ident!r}")
    return prefix + kind + ident[:width]
