"""Restart policies (docker's spelling) and the back-off between restarts."""

import pytest

from hyper.errors import InvalidArgument
from hyper.model.restart import Backoff, RestartPolicy


@pytest.mark.parametrize(
    ("text", "policy", "retries"),
    [
        ("no", "no", 0),
        ("always", "always", 0),
        ("on-failure", "on-failure", 0),
        ("on-failure:3", "on-failure", 3),
        ("on-failure:0", "on-failure", 0),
        (" always ", "always", 0),
    ],
)
def test_parse(text, policy, retries):
    parsed = RestartPolicy.parse(text)
    assert (parsed.policy, parsed.max_retries) == (policy, retries)
    assert RestartPolicy.from_dict(parsed.to_dict()) == parsed
    assert RestartPolicy.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "not one of"),
        ("", "not one of"),
        ("always:3", "only on-failure"),
        ("no:1", "only on-failure"),
        ("on-failure:-1", "whole number"),
        ("on-failure:x", "whole number"),
        ("on-failure:", "whole number"),
        ("unless-stopped", "not one of"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(InvalidArgument, match=message):
        RestartPolicy.parse(text)


@pytest.mark.parametrize(
    "data",
    [
        "always",
        {"policy": "always", "max_retries": 2},
        {"policy": "bogus"},
        {"policy": "on-failure", "max_retries": "2"},
        {"policy": "on-failure", "max_retries": True},
        {"policy": "on-failure", "max_retries": -1},
        {"policy": "no", "extra": 1},
    ],
)
def test_from_dict_errors(data):
    with pytest.raises(InvalidArgument):
        RestartPolicy.from_dict(data)


def test_decisions():
    never, always = RestartPolicy("no"), RestartPolicy("always")
    unlimited, twice = RestartPolicy("on-failure"), RestartPolicy("on-failure", 2)
    assert not never.should_restart(1, 0)
    assert always.should_restart(0, 0) and always.should_restart(137, 1000)
    assert not unlimited.should_restart(0, 0)
    assert unlimited.should_restart(1, 1000)
    assert unlimited.should_restart(137, 0)  # killed by a signal is a failure
    assert [twice.should_restart(3, n) for n in range(4)] == [True, True, False, False]
    assert not twice.should_restart(0, 0)


def test_backoff_doubles_up_to_ten_seconds():
    backoff = Backoff()
    delays = [backoff.delay(ran_for=0.5) for _ in range(10)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]


def test_backoff_resets_after_a_long_run():
    backoff = Backoff()
    for _ in range(5):
        backoff.delay(ran_for=1)
    assert backoff.delay(ran_for=10.0) == 0.1
    assert backoff.delay(ran_for=9.9) == 0.2
    assert backoff.delay(ran_for=60) == 0.1
