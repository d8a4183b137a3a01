"""How many refused credentials one network address may present before it is turned away.

Guessing a key is hopeless (192 random bits), so this is not about brute force: every refused
credential costs hyperd a PBKDF2 hash, or a Keystone round trip for a token it has not seen,
and a client could send them as fast as TLS lets it. Each address has a token bucket of
``limit`` refusals that refills over ``window`` seconds; once it is empty, the address's requests
are answered 429 at once, with no hash and no Keystone call, until a token is back. Valid
credentials cost nothing, so a busy client with a good key is never slowed down, and one with a
mistyped key learns what is wrong ``limit`` times before it is told to wait.

IPv6 addresses count per /64, what one host usually gets. The table is bounded: the least
recently refused addresses are forgotten first.
"""

from __future__ import annotations

import collections
import ipaddress
import math
import time
from collections.abc import Callable

from hyper import errors

MAX_ADDRESSES = 65536


class RefusalThrottle:
    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        """``limit`` refusals per ``window`` seconds and address; ``limit`` 0: no throttle."""
        self._limit = limit
        self._rate = limit / window if limit > 0 else 0.0
        self._clock = clock
        self._max = max_addresses
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = (
            collections.OrderedDict()
        )  # address -> (tokens, when counted)

    def check(self, address: str) -> None:
        """ResourceExhausted if ``address`` has used up its refusals, with when to retry."""
        tokens = self._tokens(_key(address))
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self._rate)
            raise errors.ResourceExhausted(
                f"too many refused credentials from this address: retry in {wait} s",
                retry_after=wait,
            )

    def refused(self, address: str) -> None:
        """Count one refused credential of ``address``."""
        if self._limit <= 0:
            return
        key = _key(address)
        self._buckets[key] = (self._tokens(key) - 1, self._clock())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def _tokens(self, key: str) -> float:
        if self._limit <= 0:
            return math.inf
        found = self._buckets.get(key)
        if found is None:
            return float(self._limit)
        tokens, since = found
        now = self._clock()
        refilled = min(float(self._limit), tokens + (now - since) * self._rate)
        if refilled >= self._limit:
            del self._buckets[key]  # full again: nothing to remember
        return refilled


def _key(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a unix socket's peer, a test client): counted as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
