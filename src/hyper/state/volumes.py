"""hyperd's records of volumes, snapshots and which pod mounts which volume.

The tables live in the same SQLite file as the pods (:mod:`hyper.state.db` creates them in
its migration to schema 3), so that a pod and the volumes it references change in one
transaction. Every listing and lookup takes the tenant (``None``: every tenant, for an
operator's listing and hyperd's own sweeps), put in its WHERE clause by
:func:`~hyper.state.scope.tenant_clause`: a tenant never learns whether another tenant's volume
exists. Names are unique per tenant
(``UNIQUE (tenant, name)``). ``pod_volumes`` rows go with their pod (``ON DELETE CASCADE``); a
volume that a pod references cannot be deleted (a foreign key, checked by SQLite, not only by
us).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hyper import errors
from hyper.state.scope import tenant_clause

if TYPE_CHECKING:
    from hyper.state.db import Database

SCHEMA = """
CREATE TABLE volumes (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    driver        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    owner_pod     TEXT NOT NULL DEFAULT '',
    source_snapshot TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE snapshots (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    volume_id     TEXT NOT NULL REFERENCES volumes(id),
    size          INTEGER NOT NULL,
    consistency   TEXT NOT NULL,
    created_at    REAL NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE pod_volumes (
    pod_id        TEXT NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    volume_id     TEXT NOT NULL REFERENCES volumes(id),
    container     TEXT NOT NULL,
    target        TEXT NOT NULL,
    readonly      INTEGER NOT NULL,
    PRIMARY KEY (pod_id, container, target)
);
CREATE INDEX pod_volumes_by_volume ON pod_volumes(volume_id);
"""


@dataclass
class VolumeRecord:
    id: str
    tenant: str
    name: str
    driver: str
    size: int
    owner_pod: str = ""
    """The pod an anonymous volume belongs to (removed with it); "" for a named volume."""
    source_snapshot: str = ""
    created_at: float = 0.0


@dataclass
class SnapshotRecord:
    id: str
    tenant: str
    name: str
    volume_id: str
    size: int
    consistency: str
    created_at: float = 0.0


@dataclass
class PodVolumeRecord:
    pod_id: str
    volume_id: str
    container: str
    target: str
    readonly: bool


_VOLUME = ["id", "tenant", "name", "driver", "size", "owner_pod", "source_snapshot", "created_at"]
_SNAPSHOT = ["id", "tenant", "name", "volume_id", "size", "consistency", "created_at"]
_POD_VOLUME = ["pod_id", "volume_id", "container", "target", "readonly"]


class VolumeTables:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------ volumes

    def insert_volume(self, volume: VolumeRecord) -> None:
        try:
            with self._db.transaction() as db:
                db.execute(_insert("volumes", _VOLUME), [getattr(volume, c) for c in _VOLUME])
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(f"a volume named {volume.name} exists already") from None

    def delete_volume(self, tenant: str, volume_id: str) -> None:
        try:
            with self._db.transaction() as db:
                db.execute("DELETE FROM volumes WHERE id = ? AND tenant = ?", (volume_id, tenant))
        except sqlite3.IntegrityError:
            raise errors.FailedPrecondition(
                "the volume is in use by a pod or has snapshots"
            ) from None

    def volumes(self, tenant: str | None) -> list[VolumeRecord]:
        """A tenant's volumes; every tenant's with ``None``."""
        clause, params = tenant_clause(tenant)
        rows = self._rows(f"SELECT * FROM volumes WHERE {clause} ORDER BY created_at", *params)
        return [VolumeRecord(**{c: r[c] for c in _VOLUME}) for r in rows]

    def orphans(self) -> list[VolumeRecord]:
        """Anonymous volumes whose pod is gone (hyperd died between the two removals)."""
        rows = self._rows(
            "SELECT * FROM volumes WHERE owner_pod != '' AND owner_pod NOT IN (SELECT id FROM pods)"
        )
        return [VolumeRecord(**{c: r[c] for c in _VOLUME}) for r in rows]

    def owned_by(self, pod_id: str) -> list[VolumeRecord]:
        rows = self._rows("SELECT * FROM volumes WHERE owner_pod = ?", pod_id)
        return [VolumeRecord(**{c: r[c] for c in _VOLUME}) for r in rows]

    # ------------------------------------------------------------ snapshots

    def insert_snapshot(self, snapshot: SnapshotRecord) -> None:
        try:
            with self._db.transaction() as db:
                db.execute(
                    _insert("snapshots", _SNAPSHOT), [getattr(snapshot, c) for c in _SNAPSHOT]
                )
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(f"a snapshot named {snapshot.name} exists already") from None

    def delete_snapshot(self, tenant: str, snapshot_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id = ? AND tenant = ?", (snapshot_id, tenant))

    def snapshots(self, tenant: str | None, volume_id: str | None = None) -> list[SnapshotRecord]:
        """A tenant's snapshots (every tenant's with ``None``), or those of one volume."""
        clause, params = tenant_clause(tenant)
        if volume_id is None:
            rows = self._rows(
                f"SELECT * FROM snapshots WHERE {clause} ORDER BY created_at", *params
            )
        else:
            rows = self._rows(
                f"SELECT * FROM snapshots WHERE {clause} AND volume_id = ? ORDER BY created_at",
                *params,
                volume_id,
            )
        return [SnapshotRecord(**{c: r[c] for c in _SNAPSHOT}) for r in rows]

    # ------------------------------------------------------------ pods' references

    def insert_pod_volumes(self, records: list[PodVolumeRecord]) -> None:
        with self._db.transaction() as db:
            for record in records:
                db.execute(
                    _insert("pod_volumes", _POD_VOLUME),
                    [int(v) if isinstance(v, bool) else v for v in _values(record)],
                )

    def pod_volumes(self, pod_id: str) -> list[PodVolumeRecord]:
        rows = self._rows("SELECT * FROM pod_volumes WHERE pod_id = ? ORDER BY rowid", pod_id)
        return [_pod_volume(r) for r in rows]

    def users(self, volume_id: str) -> list[tuple[PodVolumeRecord, str, str]]:
        """Who references the volume: (reference, the pod's name, the pod's state)."""
        rows = self._rows(
            "SELECT pv.*, p.name AS pod_name, p.state AS pod_state FROM pod_volumes pv"
            " JOIN pods p ON p.id = pv.pod_id WHERE pv.volume_id = ?",
            volume_id,
        )
        return [(_pod_volume(r), r["pod_name"], r["pod_state"]) for r in rows]

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._db.query(sql, args)


def _insert(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def _values(record: PodVolumeRecord) -> list[Any]:
    return [getattr(record, c) for c in _POD_VOLUME]


def _pod_volume(row: sqlite3.Row) -> PodVolumeRecord:
    values = {c: row[c] for c in _POD_VOLUME}
    values["readonly"] = bool(values["readonly"])
    return PodVolumeRecord(**values)
