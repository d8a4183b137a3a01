"""Quotas: limits and defaults, reservations and releases, and no overshoot when 50 threads,
each with its own connection, reserve at once against a limit of 10."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from hyper import errors
from hyper.tenancy.quotas import RESOURCES, UNLIMITED, QuotaStore

DEFAULTS = {"pods": 10, "vcpus": 20, "memory_mb": 8192, "fips": 2}


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


@pytest.fixture
def quotas(tmp_path: Path) -> QuotaStore:
    return QuotaStore(connect(tmp_path / "hyperd.db"), DEFAULTS)


def test_limits_default_and_can_be_set_and_reset(quotas: QuotaStore) -> None:
    lines = {line.resource: line for line in quotas.show("alpha")}
    assert set(lines) == set(RESOURCES)
    assert (lines["pods"].limit, lines["pods"].used, lines["pods"].default) == (10, 0, True)
    assert lines["snapshots"].limit == UNLIMITED
    quotas.set_limits("alpha", {"pods": 3, "snapshots": 0})
    lines = {line.resource: line for line in quotas.show("alpha")}
    assert (lines["pods"].limit, lines["pods"].default) == (3, False)
    assert lines["snapshots"].limit == 0
    assert quotas.show("beta")[0].limit == 10  # other tenants keep the default
    quotas.set_limits("alpha", {"pods": None})
    assert {line.resource: line.limit for line in quotas.show("alpha")}["pods"] == 10


@pytest.mark.parametrize(
    "limits",
    [{"cpus": 1}, {"pods": -2}, {"pods": 1.5}, {"pods": True}, {"pods": "3"}, {"pods": 1 << 63}],
)
def test_bad_limits_are_refused(quotas: QuotaStore, limits: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgument):
        quotas.set_limits("alpha", limits)  # type: ignore[arg-type]


def test_reserve_charges_and_release_gives_back(quotas: QuotaStore) -> None:
    first = quotas.reserve("alpha", {"pods": 1, "vcpus": 8, "memory_mb": 4096}, owner="p1")
    quotas.reserve("alpha", {"pods": 1, "vcpus": 8, "memory_mb": 4096}, owner="p2")
    assert quotas.usage("alpha") == {"pods": 2, "vcpus": 16, "memory_mb": 8192}
    with pytest.raises(errors.FailedPrecondition, match=r"quota exceeded.*vcpus"):
        quotas.reserve("alpha", {"pods": 1, "vcpus": 8}, owner="p3")
    assert quotas.usage("alpha")["pods"] == 2  # nothing of the refused one was charged
    quotas.release(first)
    quotas.release(first)  # idempotent
    assert quotas.usage("alpha") == {"pods": 1, "vcpus": 8, "memory_mb": 4096}
    assert quotas.release_owner("alpha", "p2") == 3
    assert quotas.usage("alpha") == {}
    assert quotas.usage("beta") == {}


def test_a_lower_limit_refuses_only_new_reservations(quotas: QuotaStore) -> None:
    for n in range(3):
        quotas.reserve("alpha", {"pods": 1}, owner=f"p{n}")
    quotas.set_limits("alpha", {"pods": 1})
    with pytest.raises(errors.FailedPrecondition):
        quotas.reserve("alpha", {"pods": 1})
    assert quotas.usage("alpha")["pods"] == 3


def test_charge_joins_the_callers_transaction(tmp_path: Path) -> None:
    conn = connect(tmp_path / "hyperd.db")
    quotas = QuotaStore(conn, DEFAULTS)
    conn.execute("CREATE TABLE pods (id TEXT)")
    with pytest.raises(RuntimeError):
        conn.execute("BEGIN IMMEDIATE")
        try:
            quotas.charge(conn, "alpha", {"pods": 1}, owner="p1")
            conn.execute("INSERT INTO pods VALUES ('p1')")
            raise RuntimeError("the pod could not be made")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    assert quotas.usage("alpha") == {}  # rolled back with the pod
    with pytest.raises(errors.Internal):
        quotas.charge(conn, "alpha", {"pods": 1})  # outside a transaction


def test_50_concurrent_reservations_against_10_exactly_10_succeed(tmp_path: Path) -> None:
    path = tmp_path / "hyperd.db"
    QuotaStore(connect(path), DEFAULTS).set_limits("alpha", {"pods": 10})
    stores = [QuotaStore(connect(path), DEFAULTS) for _ in range(50)]
    start = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(store: QuotaStore, n: int) -> None:
        start.wait(timeout=60)
        try:
            store.reserve("alpha", {"pods": 1, "vcpus": 1}, owner=f"pod{n}")
            outcome = "ok"
        except errors.FailedPrecondition:
            outcome = "refused"
        except Exception as exc:  # any other failure must show in the assertion
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a reservation hung"
    assert sorted(set(outcomes)) == ["ok", "refused"], outcomes
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 40
    assert QuotaStore(connect(path), DEFAULTS).usage("alpha") == {"pods": 10, "vcpus": 10}
