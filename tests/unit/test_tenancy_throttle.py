"""The throttle of refused credentials: a token bucket per address, on a fake clock."""

from __future__ import annotations

import pytest

from hyper import errors
from hyper.tenancy.throttle import RefusalThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_turned_away_after_its_refusals_until_one_is_refilled():
    clock = Clock()
    throttle = RefusalThrottle(3, 60, clock=clock)
    for _ in range(3):
        throttle.check("192.0.2.7")
        throttle.refused("192.0.2.7")
    with pytest.raises(errors.ResourceExhausted, match="retry in 20 s") as refused:
        throttle.check("192.0.2.7")
    assert refused.value.retry_after == 20
    throttle.check("192.0.2.8")  # another address is not affected
    clock.now += 19
    with pytest.raises(errors.ResourceExhausted, match="retry in 1 s"):
        throttle.check("192.0.2.7")
    clock.now += 1
    throttle.check("192.0.2.7")  # one refusal is back, and only one
    throttle.refused("192.0.2.7")
    with pytest.raises(errors.ResourceExhausted):
        throttle.check("192.0.2.7")


def test_a_refilled_address_is_forgotten_and_the_table_is_bounded():
    clock = Clock()
    throttle = RefusalThrottle(2, 10, clock=clock, max_addresses=4)
    for host in range(10):
        throttle.refused(f"198.51.100.{host}")
    assert len(throttle._buckets) == 4
    clock.now += 10
    for host in range(6, 10):
        throttle.check(f"198.51.100.{host}")
    assert not throttle._buckets


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4():
    throttle = RefusalThrottle(2, 60, clock=Clock())
    throttle.refused("2001:db8:1:2::1")
    throttle.refused("2001:db8:1:2:ffff::9")
    with pytest.raises(errors.ResourceExhausted):
        throttle.check("2001:db8:1:2::42")
    throttle.check("2001:db8:1:3::1")
    throttle.refused("::ffff:192.0.2.1")
    throttle.refused("192.0.2.1")
    with pytest.raises(errors.ResourceExhausted):
        throttle.check("192.0.2.1")


def test_a_limit_of_zero_never_throttles():
    throttle = RefusalThrottle(0, 60, clock=Clock())
    for _ in range(1000):
        throttle.refused("192.0.2.7")
    throttle.check("192.0.2.7")
    assert not throttle._buckets
