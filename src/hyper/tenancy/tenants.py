"""The tenants hyperd knows, in its SQLite file: created by the operator (``hyper tenant
create``), or recorded on first sight of a Keystone project (:meth:`TenantStore.ensure`).

A tenant's name is its id: every object's ``tenant`` column holds it. Removing a tenant removes
its access keys and quota limits in the same transaction; whether it still owns objects is for
the caller to say (``in_use``), inside that transaction, so none can be created in between.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from hyper import errors
from hyper.model.pod import check_name
from hyper.tenancy.transaction import immediate, open_tables

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tenancy_tenants (
        name        TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        source      TEXT NOT NULL,
        created_at  REAL NOT NULL
    )""",
)
_COLUMNS = "name, description, source, created_at"
MAX_DESCRIPTION = 256
SOURCES = ("local", "keystone")


@dataclass(frozen=True)
class TenantRecord:
    name: str
    description: str = ""
    source: str = "local"
    """"local" (made with ``hyper tenant create``) or "keystone" (a Keystone project)."""
    created_at: float = 0.0


def check_tenant(name: object) -> str:
    """A valid tenant name (the rules of every other name: docs/tenancy.md)."""
    if not isinstance(name, str):
        raise errors.InvalidArgument("tenant must be a string")
    return check_name(name, "tenant")


class TenantStore:
    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._db = open_tables(conn, SCHEMA)
        self._clock = clock

    def create(self, name: str, *, description: str = "", source: str = "local") -> TenantRecord:
        record = _record(name, description, source, self._clock())
        try:
            with immediate(self._db) as tx:
                _insert(tx, record)
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(f"tenant {name} exists already") from None
        return record

    def ensure(self, name: str, *, source: str = "local") -> TenantRecord:
        """The tenant, created first if it is new (the default tenant at start, a Keystone
        project on its first request)."""
        with immediate(self._db) as tx:
            found = _get(tx, check_tenant(name))
            if found is not None:
                return found
            record = _record(name, "", source, self._clock())
            _insert(tx, record)
            return record

    def get(self, name: str) -> TenantRecord | None:
        return _get(self._db, name)

    def list(self) -> list[TenantRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM tenancy_tenants ORDER BY name").fetchall()
        return [_from_row(row) for row in rows]

    def remove(
        self,
        name: str,
        *,
        in_use: Callable[[sqlite3.Connection, str], str] | None = None,
    ) -> None:
        """Remove the tenant, its keys and its quota limits, atomically. ``in_use(tx, name)``
        runs inside the transaction and says what the tenant still owns ("" when nothing):
        then the tenant is kept and FailedPrecondition says why."""
        with immediate(self._db) as tx:
            if _get(tx, name) is None:
                raise errors.NotFound(f"no such tenant: {name}")
            owned = in_use(tx, name) if in_use is not None else ""
            if owned:
                raise errors.FailedPrecondition(f"tenant {name} still owns {owned}")
            for table in ("tenancy_keys", "tenancy_quota_limits"):
                if _exists(tx, table):
                    tx.execute(f"DELETE FROM {table} WHERE tenant = ?", (name,))
            tx.execute("DELETE FROM tenancy_tenants WHERE name = ?", (name,))


def _record(name: str, description: str, source: str, now: float) -> TenantRecord:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise errors.InvalidArgument(f"a description has at most {MAX_DESCRIPTION} characters")
    if not description.isprintable():
        raise errors.InvalidArgument("a description must be printable text")
    if source not in SOURCES:
        raise errors.InvalidArgument(f"tenant source {source!r} is not one of {SOURCES}")
    return TenantRecord(check_tenant(name), description, source, now)


def _insert(tx: sqlite3.Connection, record: TenantRecord) -> None:
    tx.execute(
        "INSERT INTO tenancy_tenants (name, description, source, created_at) VALUES (?, ?, ?, ?)",
        (record.name, record.description, record.source, record.created_at),
    )


def _get(db: sqlite3.Connection, name: str) -> TenantRecord | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM tenancy_tenants WHERE name = ?", (name,)).fetchone()
    return None if row is None else _from_row(row)


def _from_row(row: sqlite3.Row) -> TenantRecord:
    return TenantRecord(str(row[0]), str(row[1]), str(row[2]), float(row[3]))


def _exists(tx: sqlite3.Connection, table: str) -> bool:
    found = tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return found.fetchone() is not None
