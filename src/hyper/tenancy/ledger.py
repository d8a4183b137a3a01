"""The usage ledger: an append-only table of start and stop events of billable objects, in
hyperd's SQLite file, so that usage survives a restart of hyperd.

An object's interval is open from its start event until a stop event is appended, and the
stop's time is when the object stopped, not when hyperd learnt of it: a pod that ran, or
stopped, while hyperd was down is billed exactly once hyperd records the stop with the pod's
``finished_at`` (docs/tenancy.md, "Feeding the ledger"). Rows are never updated or deleted;
what a row means comes from the rows before it, which :meth:`UsageLedger.start` and
:meth:`UsageLedger.stop` check inside one ``BEGIN IMMEDIATE`` transaction so that the events of
one object always alternate start, stop, start... and never overlap in time. Both are
idempotent: hyperd may replay them after a restart.

Two summaries are kept in the same transactions as the events, so that Prometheus' scrape of
every tenant's usage since the beginning costs what the tenants and the open intervals cost,
not what the whole history costs: the open intervals (``tenancy_usage_open``) and each
tenant's sums over its closed ones (``tenancy_usage_closed``). A file whose events predate them
gets them built once, from its events, when the ledger opens it.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path

from hyper import errors
from hyper.tenancy.metering import (
    Amounts,
    Event,
    Kind,
    UsageEvent,
    UsageReport,
    compute,
    interval,
    intervals,
)
from hyper.tenancy.principal import Scope
from hyper.tenancy.tenants import check_tenant
from hyper.tenancy.transaction import immediate, open_tables

_AMOUNTS = [f.name for f in fields(Amounts)]
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tenancy_usage_events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant      TEXT NOT NULL,
        object_id   TEXT NOT NULL,
        kind        TEXT NOT NULL,
        event       TEXT NOT NULL,
        at          REAL NOT NULL,
        vcpus       INTEGER NOT NULL DEFAULT 0,
        memory_mb   INTEGER NOT NULL DEFAULT 0,
        bytes       INTEGER NOT NULL DEFAULT 0,
        name        TEXT NOT NULL DEFAULT '',
        recorded_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS tenancy_usage_by_object"
    " ON tenancy_usage_events(tenant, object_id, seq)",
    "CREATE INDEX IF NOT EXISTS tenancy_usage_by_time ON tenancy_usage_events(tenant, at)",
    """CREATE TABLE IF NOT EXISTS tenancy_usage_open (
        tenant      TEXT NOT NULL,
        object_id   TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (tenant, object_id)
    ) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS tenancy_usage_closed (
        tenant      TEXT PRIMARY KEY,
        {", ".join(f"{name} REAL NOT NULL" for name in _AMOUNTS)}
    )""",
)
_COLUMNS = "seq, tenant, object_id, kind, event, at, vcpus, memory_mb, bytes, name"
MAX_SKEW = 300.0
"""How far in the future (by our clock) an event's time may be: clocks of one host agree."""
MAX_ID = 256


class UsageLedger:
    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._db = open_tables(conn, SCHEMA)
        self._path = str(conn.execute("PRAGMA database_list").fetchone()[2] or "")
        self._clock = clock
        self._summarize()

    def start(
        self,
        tenant: str,
        object_id: str,
        kind: Kind,
        at: float,
        *,
        vcpus: int = 0,
        memory_mb: int = 0,
        size: int = 0,
        name: str = "",
    ) -> bool:
        """``object_id`` consumes from ``at`` on. Replaying the start of an open interval does
        nothing; a start with other amounts (a resized volume) closes the interval at ``at``
        and opens another. Whether an event was appended."""
        check_tenant(tenant)
        _check_id(object_id)
        if not isinstance(kind, Kind):
            raise errors.InvalidArgument(f"usage kind {kind!r} is not one of pod, volume, fip")
        at = self._check_time(at)
        for value, bound, what in (
            (vcpus, 4096, "vcpus"),
            (memory_mb, 1 << 40, "memory_mb"),
            (size, 1 << 62, "size"),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= bound:
                raise errors.InvalidArgument(f"usage {what} must be an integer in 0..{bound}")
        if not isinstance(name, str) or len(name) > MAX_ID:
            raise errors.InvalidArgument(f"a usage name is a string of at most {MAX_ID}")
        with immediate(self._db) as tx:
            last = _last(tx, tenant, object_id)
            if last is not None and last.event is Event.START:
                if last.kind is kind and (last.vcpus, last.memory_mb, last.bytes) == (
                    vcpus,
                    memory_mb,
                    size,
                ):
                    return False
                at = max(at, last.at)
                self._append(tx, last, Event.STOP, at)
            elif last is not None:
                at = max(at, last.at)  # never before the last stop: intervals never overlap
            event = UsageEvent(
                0, tenant, object_id, kind, Event.START, at, vcpus, memory_mb, size, name
            )
            self._append(tx, event, Event.START, at)
        return True

    def stop(self, tenant: str, object_id: str, at: float) -> bool:
        """``object_id`` stopped consuming at ``at`` (clamped to its start). Stopping what is
        not running does nothing. Whether an event was appended."""
        check_tenant(tenant)
        _check_id(object_id)
        at = self._check_time(at)
        with immediate(self._db) as tx:
            last = _last(tx, tenant, object_id)
            if last is None or last.event is Event.STOP:
                return False
            self._append(tx, last, Event.STOP, max(at, last.at))
        return True

    def running(self, scope: Scope) -> list[UsageEvent]:
        """The start events of the intervals still open: at hyperd's start, each one whose
        object no longer consumes must be stopped (with the time it stopped)."""
        clause, params = scope.sql("o.tenant")
        rows = self._db.execute(
            f"SELECT {_prefixed('e')} FROM tenancy_usage_open o"
            f" JOIN tenancy_usage_events e ON e.seq = o.seq WHERE {clause} ORDER BY e.seq",
            params,
        ).fetchall()
        return [_event(row) for row in rows]

    def lifetime(self, scope: Scope) -> dict[str, Amounts]:
        """Each tenant's usage from the ledger's beginning to now (Prometheus' counters):
        its closed intervals' sums and its open intervals so far. Tenants that consumed
        nothing are left out, as in :meth:`report`."""
        clause, params = scope.sql("tenant")
        found: dict[str, Amounts] = {}
        for tenant, *amounts in self._db.execute(
            f"SELECT tenant, {', '.join(_AMOUNTS)} FROM tenancy_usage_closed WHERE {clause}",
            params,
        ):
            found[str(tenant)] = Amounts(*map(float, amounts))
        now = self._clock()
        for started in self.running(scope):
            found.setdefault(started.tenant, Amounts()).add(interval(started, now - started.at))
        return {tenant: amounts for tenant, amounts in found.items() if amounts.seconds > 0}

    def events(self, scope: Scope, since: float, until: float) -> list[UsageEvent]:
        """Every event needed to compute the usage of ``[since, until)``: those of the objects
        with an event in the window, or with an interval open when it begins. Safe to call
        from another thread than the ledger's (see :meth:`_reader`)."""
        clause, params = scope.sql("tenant")
        with self._reader() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM tenancy_usage_events WHERE {clause} AND at < ?"
                " AND (tenant, object_id) IN ("
                f"  SELECT tenant, object_id FROM tenancy_usage_events WHERE {clause} AND at >= ?"
                "   UNION"
                f"  SELECT tenant, object_id FROM tenancy_usage_events WHERE {clause} AND at < ?"
                "   GROUP BY tenant, object_id"
                "   HAVING SUM(event = 'start') > SUM(event = 'stop')"
                ") ORDER BY seq",
                (*params, until, *params, since, *params, since),
            ).fetchall()
        return [_event(row) for row in rows]

    def report(self, scope: Scope, since: float, until: float | None = None) -> UsageReport:
        """The usage of ``scope`` in ``[since, until)``, ``until`` at most now. A long history
        takes seconds to replay: a server calls this in a worker thread (it may)."""
        now = self._clock()
        end = now if until is None else min(until, now)
        start = min(self._check_window(since), end)
        return compute(self.events(scope, start, end), start, end)

    # ------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with from any thread: a read-only one of its own to the
        ledger's file (WAL lets it read while hyperd writes), or the ledger's own connection
        when the database is not a file."""
        if not self._path:
            yield self._db
            return
        reader = sqlite3.connect(f"{Path(self._path).as_uri()}?mode=ro", uri=True)
        try:
            reader.execute("PRAGMA busy_timeout=30000")
            yield reader
        finally:
            reader.close()

    def _append(self, tx: sqlite3.Connection, like: UsageEvent, event: Event, at: float) -> None:
        tx.execute(
            "INSERT INTO tenancy_usage_events (tenant, object_id, kind, event, at, vcpus,"
            " memory_mb, bytes, name, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (like.tenant, like.object_id, like.kind.value, event.value, at, like.vcpus,
             like.memory_mb, like.bytes, like.name, self._clock()),
        )  # fmt: skip
        if event is Event.START:
            tx.execute(
                "INSERT OR REPLACE INTO tenancy_usage_open (tenant, object_id, seq)"
                " VALUES (?, ?, last_insert_rowid())",
                (like.tenant, like.object_id),
            )
        else:  # ``like`` is the start this stop closes
            tx.execute(
                "DELETE FROM tenancy_usage_open WHERE tenant = ? AND object_id = ?",
                (like.tenant, like.object_id),
            )
            _add_closed(tx, [(like, at)])

    def _summarize(self) -> None:
        """Build the summaries of a file whose events predate them (once: afterwards every
        append keeps them, and a ledger with events always has an open or a closed row)."""
        with immediate(self._db) as tx:
            if tx.execute(
                "SELECT EXISTS (SELECT 1 FROM tenancy_usage_events)"
                " AND NOT EXISTS (SELECT 1 FROM tenancy_usage_open)"
                " AND NOT EXISTS (SELECT 1 FROM tenancy_usage_closed)"
            ).fetchone()[0]:
                rows = tx.execute(f"SELECT {_COLUMNS} FROM tenancy_usage_events ORDER BY seq")
                history = list(intervals(_event(row) for row in rows))
                tx.executemany(
                    "INSERT INTO tenancy_usage_open (tenant, object_id, seq) VALUES (?, ?, ?)",
                    [(e.tenant, e.object_id, e.seq) for e, stopped in history if stopped is None],
                )
                _add_closed(tx, [(e, stopped) for e, stopped in history if stopped is not None])

    def _check_time(self, at: float) -> float:
        at = self._check_window(at)
        if at > self._clock() + MAX_SKEW:
            raise errors.InvalidArgument(f"usage time {at} is in the future")
        return at

    @staticmethod
    def _check_window(at: float) -> float:
        if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
            raise errors.InvalidArgument(f"usage time {at!r} is not a number")
        if at < 0:
            raise errors.InvalidArgument(f"usage time {at} is before the epoch")
        return float(at)


def _check_id(object_id: str) -> None:
    if not isinstance(object_id, str) or not 0 < len(object_id) <= MAX_ID:
        raise errors.InvalidArgument(f"a usage object id is a string of 1..{MAX_ID}")


def _last(tx: sqlite3.Connection, tenant: str, object_id: str) -> UsageEvent | None:
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM tenancy_usage_events WHERE tenant = ? AND object_id = ?"
        " ORDER BY seq DESC LIMIT 1",
        (tenant, object_id),
    ).fetchone()
    return None if row is None else _event(row)


def _add_closed(tx: sqlite3.Connection, closed: Iterable[tuple[UsageEvent, float]]) -> None:
    """Add intervals, ``(start, when it stopped)``, to their tenants' sums."""
    sums: dict[str, Amounts] = {}
    for started, stopped_at in closed:
        sums.setdefault(started.tenant, Amounts()).add(interval(started, stopped_at - started.at))
    tx.executemany(
        f"INSERT INTO tenancy_usage_closed (tenant, {', '.join(_AMOUNTS)})"
        f" VALUES (?{', ?' * len(_AMOUNTS)}) ON CONFLICT (tenant) DO UPDATE SET "
        + ", ".join(f"{name} = {name} + excluded.{name}" for name in _AMOUNTS),
        [
            (tenant, *(getattr(amounts, name) for name in _AMOUNTS))
            for tenant, amounts in sums.items()
        ],
    )


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _COLUMNS.split(","))


def _event(row: sqlite3.Row) -> UsageEvent:
    seq, tenant, object_id, kind, event, at, vcpus, memory_mb, size, name = tuple(row)
    return UsageEvent(
        seq=int(seq),
        tenant=str(tenant),
        object_id=str(object_id),
        kind=Kind(kind),
        event=Event(event),
        at=float(at),
        vcpus=int(vcpus),
        memory_mb=int(memory_mb),
        bytes=int(size),
        name=str(name),
    )
