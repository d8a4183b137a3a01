"""Per-second metering: events become usage (a pure function), the ledger keeps them across
restarts of hyperd, and the Prometheus exposition shows them."""

from __future__ import annotations

import concurrent.futures
import random
import sqlite3
from pathlib import Path

import pytest

from hyper import errors
from hyper.tenancy import prometheus
from hyper.tenancy.ledger import UsageLedger
from hyper.tenancy.metering import Amounts, Event, Kind, UsageEvent, compute
from hyper.tenancy.principal import Scope
from hyper.tenancy.quotas import QuotaLine

T0 = 1_700_000_000.0
ALL = Scope(None)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def ev(seq: int, event: Event, at: float, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {"tenant": "alpha", "object_id": "p1", "kind": Kind.POD}
    fields.update(kw)
    return UsageEvent(seq=seq, event=event, at=at, **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the pure function


def test_a_pod_is_billed_per_second_for_its_vcpus_and_memory() -> None:
    events = [ev(1, Event.START, T0, vcpus=2, memory_mb=512), ev(2, Event.STOP, T0 + 60)]
    report = compute(events, 0, T0 + 1000)
    [pod] = report.objects
    assert pod.amounts == Amounts(
        seconds=60, vcpu_seconds=120, memory_gib_seconds=30, volume_gib_seconds=0, fip_seconds=0
    )
    assert report.total.to_dict()["vcpu_seconds"] == 120


def test_intervals_are_clipped_to_the_window_and_open_ones_run_to_its_end() -> None:
    events = [
        ev(1, Event.START, T0, vcpus=1),
        ev(2, Event.STOP, T0 + 100),
        ev(3, Event.START, T0 + 200, vcpus=1),  # still running
        ev(4, Event.START, T0 + 50, object_id="f1", kind=Kind.FIP),
    ]
    report = compute(events, T0 + 90, T0 + 250)
    usage = {o.object_id: o.amounts for o in report.objects}
    assert usage["p1"].seconds == pytest.approx(10 + 50)
    assert usage["f1"].fip_seconds == pytest.approx(160)
    assert compute(events, T0 + 100, T0 + 200).objects[0].object_id == "f1"  # p1 was off


def test_a_resized_volume_is_billed_at_each_size() -> None:
    gib = 1 << 30
    events = [
        ev(1, Event.START, T0, object_id="v1", kind=Kind.VOLUME, bytes=gib),
        ev(2, Event.START, T0 + 10, object_id="v1", kind=Kind.VOLUME, bytes=3 * gib),
        ev(3, Event.STOP, T0 + 20, object_id="v1", kind=Kind.VOLUME),
    ]
    [volume] = compute(events, 0, T0 + 100).objects
    assert volume.amounts.volume_gib_seconds == pytest.approx(10 * 1 + 10 * 3)


def test_tenants_are_reported_apart() -> None:
    events = [
        ev(1, Event.START, T0, vcpus=1),
        ev(2, Event.START, T0, vcpus=4, tenant="beta"),  # same id, other tenant
    ]
    report = compute(events, T0, T0 + 10)
    assert {t: a.vcpu_seconds for t, a in report.by_tenant().items()} == {"alpha": 10, "beta": 40}


def test_a_window_must_be_one() -> None:
    with pytest.raises(ValueError):
        compute([], T0, T0 - 1)
    with pytest.raises(ValueError):
        compute([], float("nan"), T0)


# ---------------------------------------------------------------- the ledger


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_start_and_stop_are_idempotent_and_never_overlap(tmp_path: Path, clock: Clock) -> None:
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    assert ledger.start("alpha", "p1", Kind.POD, T0, vcpus=1, memory_mb=256)
    assert not ledger.start("alpha", "p1", Kind.POD, T0 + 5, vcpus=1, memory_mb=256)  # replay
    clock.now = T0 + 30
    assert ledger.stop("alpha", "p1", T0 + 30)
    assert not ledger.stop("alpha", "p1", T0 + 40)  # replay
    assert ledger.start("alpha", "p1", Kind.POD, T0 + 10, vcpus=1, memory_mb=256)  # late start
    assert ledger.stop("alpha", "p1", T0 + 20)  # a stop before its start is clamped to it
    clock.now = T0 + 100
    report = ledger.report(ALL, 0)
    assert report.objects[0].amounts.seconds == pytest.approx(30)
    assert [e.event for e in ledger.events(ALL, 0, clock.now)] == ["start", "stop"] * 2


def test_a_pod_that_ran_while_hyperd_was_down_is_billed(tmp_path: Path, clock: Clock) -> None:
    """hyperd records the start, is killed, and the next hyperd records the stop it observes
    later with the pod's own finished_at: 60 s billed, however long hyperd was gone."""
    path = tmp_path / "hyperd.db"
    first = connect(path)
    UsageLedger(first, clock=clock).start("alpha", "p1", Kind.POD, T0, vcpus=2, memory_mb=1024)
    first.close()  # hyperd killed
    clock.now = T0 + 600  # ... and back ten minutes later
    ledger = UsageLedger(connect(path), clock=clock)
    [still_open] = ledger.running(ALL)
    assert (still_open.object_id, still_open.at) == ("p1", T0)
    ledger.stop("alpha", "p1", T0 + 60)  # the pod's status.json said finished_at
    assert ledger.running(ALL) == []
    [pod] = ledger.report(Scope("alpha"), T0 - 10).objects
    assert pod.amounts.seconds == pytest.approx(60, abs=1)
    assert pod.amounts.vcpu_seconds == pytest.approx(120, abs=2)
    assert pod.amounts.memory_gib_seconds == pytest.approx(60, abs=1)


def test_a_pod_still_running_is_billed_up_to_now(tmp_path: Path, clock: Clock) -> None:
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    ledger.start("alpha", "p1", Kind.POD, T0, vcpus=1)
    clock.now = T0 + 42
    assert ledger.report(ALL, 0, T0 + 10_000).objects[0].amounts.seconds == pytest.approx(42)


def test_reports_are_scoped(tmp_path: Path, clock: Clock) -> None:
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    ledger.start("alpha", "p1", Kind.POD, T0, vcpus=1)
    ledger.start("beta", "p2", Kind.POD, T0, vcpus=1)
    clock.now = T0 + 10
    assert [o.object_id for o in ledger.report(Scope("alpha"), 0).objects] == ["p1"]
    assert [e.object_id for e in ledger.running(Scope("beta"))] == ["p2"]
    assert len(ledger.report(ALL, 0).objects) == 2


def test_the_windowed_query_loses_nothing(tmp_path: Path, clock: Clock) -> None:
    """The events the ledger selects for a window give the same usage as all of them."""
    rng = random.Random(8)
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    clock.now = T0 + 10_000
    for step in range(400):
        obj = f"o{rng.randrange(12)}"
        at = T0 + step * 20 + rng.random()
        if rng.random() < 0.55:
            ledger.start("alpha", obj, Kind.POD, at, vcpus=rng.randrange(1, 4))
        else:
            ledger.stop("alpha", obj, at)
    every = ledger.events(ALL, 0, clock.now)
    for _ in range(50):
        since = T0 + rng.uniform(-100, 8100)
        until = since + rng.uniform(0, 3000)
        expected = compute(every, since, until).total
        got = compute(ledger.events(ALL, since, until), since, until).total
        assert got.vcpu_seconds == pytest.approx(expected.vcpu_seconds)


def _random_history(ledger: UsageLedger, clock: Clock, seed: int) -> None:
    """Starts, stops and resizes of pods, volumes and FIPs of three tenants, some still open."""
    rng = random.Random(seed)
    for step in range(300):
        clock.now = T0 + step * 10 + rng.random()
        tenant, obj = rng.choice(["alpha", "beta", "gamma"]), f"o{rng.randrange(8)}"
        kind = [Kind.POD, Kind.VOLUME, Kind.FIP][int(obj[1:]) % 3]
        if rng.random() < 0.6:
            at = clock.now - rng.uniform(0, 30)  # recorded late, as after a restart of hyperd
            if kind is Kind.POD:
                memory = 256 * rng.randrange(1, 5)
                ledger.start(tenant, obj, kind, at, vcpus=rng.randrange(1, 4), memory_mb=memory)
            elif kind is Kind.VOLUME:
                ledger.start(tenant, obj, kind, at, size=rng.randrange(1, 4) << 30)
            else:
                ledger.start(tenant, obj, kind, at)
        else:
            ledger.stop(tenant, obj, clock.now)


def _assert_lifetime_is_the_report(ledger: UsageLedger, scope: Scope) -> None:
    expected = ledger.report(scope, 0).by_tenant()
    got = ledger.lifetime(scope)
    assert got.keys() == expected.keys()
    for tenant, amounts in expected.items():
        for name, value in amounts.to_dict().items():
            assert got[tenant].to_dict()[name] == pytest.approx(value, abs=1e-3), (tenant, name)


def test_the_lifetime_sums_are_the_whole_report(tmp_path: Path, clock: Clock) -> None:
    """What /metrics reads from the summaries equals the report over every event, now and
    later, while intervals are still open."""
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    _random_history(ledger, clock, seed=3)
    assert ledger.running(ALL), "the history should leave intervals open"
    for later in (0.0, 55.5, 3600.0):
        clock.now += later
        _assert_lifetime_is_the_report(ledger, ALL)
        _assert_lifetime_is_the_report(ledger, Scope("beta"))
    assert set(ledger.lifetime(Scope("beta"))) == {"beta"}


def test_a_ledger_older_than_its_summaries_gets_them_built_once(
    tmp_path: Path, clock: Clock
) -> None:
    conn = connect(tmp_path / "db")
    ledger = UsageLedger(conn, clock=clock)
    _random_history(ledger, clock, seed=4)
    open_before = ledger.running(ALL)
    conn.execute("DROP TABLE tenancy_usage_open")  # as a file of the previous version
    conn.execute("DROP TABLE tenancy_usage_closed")
    reopened = UsageLedger(conn, clock=clock)
    assert reopened.running(ALL) == open_before
    _assert_lifetime_is_the_report(reopened, ALL)
    reopened.stop(open_before[0].tenant, open_before[0].object_id, clock.now)
    assert UsageLedger(conn, clock=clock).running(ALL) == open_before[1:]  # not built again
    _assert_lifetime_is_the_report(reopened, ALL)


def test_reports_read_from_any_thread_while_hyperd_holds_the_write_lock(
    tmp_path: Path, clock: Clock
) -> None:
    """A report opens its own read-only connection (WAL): neither hyperd's open transaction
    nor the thread it runs in stands in its way, and it sees only committed events."""
    conn = connect(tmp_path / "db")
    conn.execute("PRAGMA journal_mode=WAL")
    ledger = UsageLedger(conn, clock=clock)
    ledger.start("alpha", "p1", Kind.POD, T0 - 60, vcpus=1)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO tenancy_usage_events (tenant, object_id, kind, event, at, recorded_at)"
        " VALUES ('alpha', 'p2', 'pod', 'start', ?, ?)",
        (T0 - 60, T0),
    )
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as worker:
            report = worker.submit(ledger.report, ALL, 0).result(timeout=30)
    finally:
        conn.execute("ROLLBACK")
    assert [item.object_id for item in report.objects] == ["p1"]
    assert report.total.vcpu_seconds == pytest.approx(60)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("start", ("alpha", "", Kind.POD, T0)),
        ("start", ("alpha", "p" * 257, Kind.POD, T0)),
        ("start", ("no/such", "p1", Kind.POD, T0)),
        ("start", ("alpha", "p1", "pod", T0)),
        ("start", ("alpha", "p1", Kind.POD, float("inf"))),
        ("start", ("alpha", "p1", Kind.POD, T0 + 86400)),  # the future
        ("start", ("alpha", "p1", Kind.POD, -1.0)),
        ("stop", ("alpha", "p1", float("nan"))),
    ],
)
def test_ledger_inputs_are_validated(
    tmp_path: Path, clock: Clock, call: str, args: tuple[object, ...]
) -> None:
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    with pytest.raises(errors.InvalidArgument):
        getattr(ledger, call)(*args)


def test_ledger_amounts_are_validated(tmp_path: Path, clock: Clock) -> None:
    ledger = UsageLedger(connect(tmp_path / "db"), clock=clock)
    for bad in ({"vcpus": -1}, {"memory_mb": 1.5}, {"size": True}, {"name": "x" * 300}):
        with pytest.raises(errors.InvalidArgument):
            ledger.start("alpha", "p1", Kind.POD, T0, **bad)


# ---------------------------------------------------------------- Prometheus


def test_the_exposition_has_counters_and_gauges_with_escaped_labels() -> None:
    usage = {"alpha": Amounts(seconds=60, vcpu_seconds=120.5), 'we"ird\\': Amounts()}
    quotas = {
        "alpha": [QuotaLine("pods", 10, 3, True), QuotaLine("fips", -1, 0, True)],
    }
    text = prometheus.render(usage, quotas)
    lines = text.splitlines()
    assert "# TYPE hyper_usage_vcpu_seconds_total counter" in lines
    assert 'hyper_usage_vcpu_seconds_total{tenant="alpha"} 120.5' in lines
    assert 'hyper_usage_vcpu_seconds_total{tenant="we\\"ird\\\\"} 0.0' in lines
    assert 'hyper_quota_limit{tenant="alpha",resource="pods"} 10' in lines
    assert not any(
        line.startswith('hyper_quota_limit{tenant="alpha",resource="fips"}') for line in lines
    )
    assert 'hyper_quota_used{tenant="alpha",resource="fips"} 0' in lines
    assert text.endswith("\n")
    for line in lines:  # every sample line is "name{labels} value"
        if not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            float(value)
            assert name.startswith("hyper_") and name.endswith("}")
