"""hyperd's records of pods and containers, in one SQLite file.

SQLite because it is in the standard library, needs no server, and gives atomic transactions: the
file is opened in WAL mode with ``synchronous=FULL``, and every change that must be seen whole
(a pod and its containers, a pod's state and its containers' exits) is one transaction, so a crash
at any instant leaves either the old state or the new one. The schema is versioned with
``PRAGMA user_version``; a file from a newer hyperd is refused rather than misread.

Only this module writes SQL. Records are plain dataclasses; the service layer decides what they
mean. The connection is used from one thread (hyperd's event loop).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.state import volumes
from hyper.state.scope import tenant_clause

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE pods (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    spec          TEXT NOT NULL,
    restart       TEXT NOT NULL,
    labels        TEXT NOT NULL,
    auto_remove   INTEGER NOT NULL,
    state         TEXT NOT NULL,
    error         TEXT NOT NULL DEFAULT '',
    shim_pid      INTEGER,
    vm_pid        INTEGER,
    status_version INTEGER NOT NULL DEFAULT -1,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL
);
CREATE TABLE containers (
    id            TEXT PRIMARY KEY,
    pod_id        TEXT NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    name          TEXT NOT NULL UNIQUE,
    local_name    TEXT NOT NULL,
    image         TEXT NOT NULL,
    image_id      TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL,
    pid           INTEGER NOT NULL DEFAULT 0,
    exit_code     INTEGER,
    signal        INTEGER NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    UNIQUE (pod_id, local_name)
);
CREATE INDEX containers_by_pod ON containers(pod_id);
"""
_MIGRATIONS = {
    # 2: networks, their endpoints (one per pod, released with it) and floating IPs
    2: """
CREATE TABLE networks (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    subnet        TEXT NOT NULL UNIQUE,
    nat           INTEGER NOT NULL,
    created_at    REAL NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE endpoints (
    pod_id        TEXT PRIMARY KEY REFERENCES pods(id) ON DELETE CASCADE,
    network_id    TEXT NOT NULL REFERENCES networks(id),
    address       TEXT NOT NULL UNIQUE,
    aliases       TEXT NOT NULL,
    ports         TEXT NOT NULL
);
CREATE TABLE fips (
    address       TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    pod_id        TEXT REFERENCES pods(id) ON DELETE SET NULL,
    created_at    REAL NOT NULL
);
""",
    # 3: volumes, their snapshots, and which pod mounts which volume (hyper.state.volumes)
    3: volumes.SCHEMA,
    # 4: pods and containers belong to a tenant, and their names are unique within it (SQLite
    # cannot drop a UNIQUE constraint: the tables are rebuilt, with foreign keys off meanwhile)
    4: """
CREATE TABLE pods_v4 (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    restart       TEXT NOT NULL,
    labels        TEXT NOT NULL,
    auto_remove   INTEGER NOT NULL,
    state         TEXT NOT NULL,
    error         TEXT NOT NULL DEFAULT '',
    shim_pid      INTEGER,
    vm_pid        INTEGER,
    status_version INTEGER NOT NULL DEFAULT -1,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    UNIQUE (tenant, name)
);
INSERT INTO pods_v4 SELECT id, 'default', name, spec, restart, labels, auto_remove, state, error,
    shim_pid, vm_pid, status_version, created_at, started_at, finished_at FROM pods;
CREATE TABLE containers_v4 (
    id            TEXT PRIMARY KEY,
    pod_id        TEXT NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    local_name    TEXT NOT NULL,
    image         TEXT NOT NULL,
    image_id      TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL,
    pid           INTEGER NOT NULL DEFAULT 0,
    exit_code     INTEGER,
    signal        INTEGER NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    UNIQUE (pod_id, local_name),
    UNIQUE (tenant, name)
);
INSERT INTO containers_v4 SELECT id, pod_id, 'default', name, local_name, image, image_id, state,
    pid, exit_code, signal, error, restart_count, created_at, started_at, finished_at
    FROM containers;
DROP TABLE containers;
DROP TABLE pods;
ALTER TABLE pods_v4 RENAME TO pods;
ALTER TABLE containers_v4 RENAME TO containers;
CREATE INDEX containers_by_pod ON containers(pod_id);
CREATE INDEX pods_by_tenant ON pods(tenant);
""",
}


@dataclass
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    local_name: str
    image: str
    tenant: str = "default"
    image_id: str = ""
    state: str = "created"
    pid: int = 0
    exit_code: int | None = None
    signal: int = 0
    error: str = ""
    restart_count: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


ACTIVE = ("starting", "running", "stopping")
"""The states of a pod whose VM is being made, runs or is being stopped."""
FINAL = ("created", "exited", "failed")
"""The states of a pod with no VM."""


@dataclass
class PodRecord:
    id: str
    name: str
    spec: dict[str, Any]
    restart: dict[str, Any]
    labels: dict[str, str]
    auto_remove: bool
    tenant: str = "default"
    state: str = "created"
    error: str = ""
    shim_pid: int | None = None
    vm_pid: int | None = None
    status_version: int = -1
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    containers: list[ContainerRecord] = field(default_factory=list)


_POD_COLUMNS = [
    "id",
    "tenant",
    "name",
    "spec",
    "restart",
    "labels",
    "auto_remove",
    "state",
    "error",
    "shim_pid",
    "vm_pid",
    "status_version",
    "created_at",
    "started_at",
    "finished_at",
]
_CONTAINER_COLUMNS = [
    "id",
    "pod_id",
    "tenant",
    "name",
    "local_name",
    "image",
    "image_id",
    "state",
    "pid",
    "exit_code",
    "signal",
    "error",
    "restart_count",
    "created_at",
    "started_at",
    "finished_at",
]
_JSON_COLUMNS = {"spec", "restart", "labels"}


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection itself, for the stores that keep their own tables in this file
        (:mod:`hyper.tenancy`): one file, so one transaction can span them."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise errors.FailedPrecondition(
                f"{self.path} has schema {version}, newer than this hyperd's {SCHEMA_VERSION}"
            )
        if version == 0:  # one script, one transaction: the schema exists whole or not at all
            self._db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = 1; COMMIT;")
            version = 1
        self._db.execute("PRAGMA foreign_keys=OFF")  # a table may be rebuilt (SQLite's way)
        for step in range(version + 1, SCHEMA_VERSION + 1):  # each migration whole or not at all
            self._db.executescript(
                f"BEGIN; {_MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;"
            )
            broken = self._db.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise errors.Internal(f"{self.path}: migration {step} broke references: {broken}")
        self._db.execute("PRAGMA foreign_keys=ON")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Read rows (for the stores of other records, e.g. :mod:`hyper.state.networks`)."""
        return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: committed whole on success, rolled back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------ pods

    def insert_pod(self, pod: PodRecord) -> None:
        for container in pod.containers:
            container.tenant = pod.tenant
        try:
            with self.transaction() as db:
                db.execute(_insert("pods", _POD_COLUMNS), _values(pod, _POD_COLUMNS))
                for container in pod.containers:
                    db.execute(
                        _insert("containers", _CONTAINER_COLUMNS),
                        _values(container, _CONTAINER_COLUMNS),
                    )
        except sqlite3.IntegrityError as exc:
            raise errors.AlreadyExists(_conflict(exc, pod)) from None

    def update_pod(self, pod: PodRecord) -> None:
        """Write the pod's and its containers' mutable fields, in one transaction."""
        with self.transaction() as db:
            _update(db, "pods", pod, _POD_COLUMNS)
            for container in pod.containers:
                _update(db, "containers", container, _CONTAINER_COLUMNS)

    def delete_pod(self, pod_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM pods WHERE id = ?", (pod_id,))

    def pods(self, tenant: str | None) -> list[PodRecord]:
        """The pods of ``tenant``; of every tenant with None (hyperd's own sweeps, or an
        operator's listing: the service layer decides, from the caller's scope)."""
        where, params = tenant_clause(tenant)
        rows = self._db.execute(
            f"SELECT * FROM pods WHERE {where} ORDER BY created_at", params
        ).fetchall()
        containers: dict[str, list[ContainerRecord]] = {}
        for row in self._db.execute(
            f"SELECT * FROM containers WHERE {where} ORDER BY created_at, rowid", params
        ):
            record = _container(row)
            containers.setdefault(record.pod_id, []).append(record)
        return [_pod(row, containers.get(row["id"], [])) for row in rows]

    def pod(self, pod_id: str, tenant: str | None) -> PodRecord | None:
        """The pod ``pod_id`` if it belongs to ``tenant`` (any tenant's with None)."""
        where, params = tenant_clause(tenant)
        row = self._db.execute(
            f"SELECT * FROM pods WHERE id = ? AND {where}", (pod_id, *params)
        ).fetchone()
        if row is None:
            return None
        found = self._db.execute(
            "SELECT * FROM containers WHERE pod_id = ? ORDER BY created_at, rowid", (pod_id,)
        ).fetchall()
        return _pod(row, [_container(c) for c in found])

    def pod_of_container(self, container_id: str, tenant: str | None) -> PodRecord | None:
        where, params = tenant_clause(tenant)
        row = self._db.execute(
            f"SELECT pod_id FROM containers WHERE id = ? AND {where}", (container_id, *params)
        ).fetchone()
        return None if row is None else self.pod(row["pod_id"], tenant)

    def object_ids(self) -> set[str]:
        """The ids of every pod, volume, snapshot and network, and every floating IP's address:
        what quota charges may belong to (see :meth:`QuotaStore.owners`)."""
        rows = self._db.execute(
            "SELECT id FROM pods UNION SELECT id FROM volumes UNION SELECT id FROM snapshots"
            " UNION SELECT id FROM networks UNION SELECT address FROM fips"
        ).fetchall()
        return {str(row[0]) for row in rows}

    def image_in_use(self, image_id: str, tenant: str) -> bool:
        """Whether a container of the tenant's pods, running or not, was created from this
        image (another tenant's containers are none of its business)."""
        row = self._db.execute(
            "SELECT 1 FROM containers WHERE image_id = ? AND tenant = ? LIMIT 1",
            (image_id, tenant),
        ).fetchone()
        return row is not None


def _insert(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def _values(record: object, columns: list[str]) -> list[Any]:
    values = []
    for column in columns:
        value = getattr(record, column)
        if column in _JSON_COLUMNS:
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            value = int(value)
        values.append(value)
    return values


def _update(db: sqlite3.Connection, table: str, record: object, columns: list[str]) -> None:
    settable = [c for c in columns if c not in ("id", "pod_id", "tenant")]
    db.execute(
        f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in settable)} WHERE id = ?",
        [*_values(record, settable), record.id],  # type: ignore[attr-defined]
    )


def _pod(row: sqlite3.Row, containers: list[ContainerRecord]) -> PodRecord:
    values = {c: row[c] for c in _POD_COLUMNS}
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column])
    values["auto_remove"] = bool(values["auto_remove"])
    return PodRecord(**values, containers=containers)


def _container(row: sqlite3.Row) -> ContainerRecord:
    return ContainerRecord(**{c: row[c] for c in _CONTAINER_COLUMNS})


def _conflict(exc: sqlite3.IntegrityError, pod: PodRecord) -> str:
    if "containers.name" in str(exc):
        names = ", ".join(c.name for c in pod.containers)
        return f"a container named {names} exists already"
    if "pods.name" in str(exc):
        return f"a pod named {pod.name} exists already"
    return f"pod {pod.name} conflicts with an existing one: {exc}"
