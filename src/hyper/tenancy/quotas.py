"""Per-tenant quotas: limits, and charges against them reserved atomically.

Usage is not a counter: it is the sum of the charges recorded, one row per resource of each
:class:`Reservation`, each naming the object it pays for (``owner``). A counter drifts when a
release is lost; a sum of charges can be audited and repaired object by object
(:meth:`QuotaStore.release_owner`). :meth:`QuotaStore.reserve` reads the usage, compares, and
records the charge in one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock is taken before
the read, so concurrent reservations, from any thread, connection or process, are serialised and
the limit is never overshot.

Resources are counted when an object is created, not while it runs (like Nova's instances and
cores): a stopped pod keeps its place, so starting it can never fail for quota.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hyper import errors
from hyper.tenancy.tenants import check_tenant
from hyper.tenancy.transaction import immediate, open_tables

RESOURCES = ("pods", "vcpus", "memory_mb", "volume_bytes", "snapshots", "fips", "networks")
UNLIMITED = -1
MAX_AMOUNT = 1 << 62
"""Bound on a limit or a charge: far above any real one, far below SQLite's integer range."""
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tenancy_quota_limits (
        tenant      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        amount      INTEGER NOT NULL,
        PRIMARY KEY (tenant, resource)
    )""",
    """CREATE TABLE IF NOT EXISTS tenancy_quota_charges (
        reservation TEXT NOT NULL,
        tenant      TEXT NOT NULL,
        resource    TEXT NOT NULL,
        amount      INTEGER NOT NULL,
        owner       TEXT NOT NULL,
        created_at  REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS tenancy_charges_by_tenant"
    " ON tenancy_quota_charges(tenant, resource)",
    "CREATE INDEX IF NOT EXISTS tenancy_charges_by_id ON tenancy_quota_charges(reservation)",
    "CREATE INDEX IF NOT EXISTS tenancy_charges_by_owner ON tenancy_quota_charges(tenant, owner)",
)


@dataclass(frozen=True)
class Reservation:
    id: str
    tenant: str
    amounts: Mapping[str, int]
    owner: str = ""


@dataclass(frozen=True)
class QuotaLine:
    resource: str
    limit: int
    """:data:`UNLIMITED` (-1) or the most the tenant may hold."""
    used: int
    default: bool
    """Whether the limit is the settings' default (no ``quota set`` for this tenant)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "limit": self.limit,
            "used": self.used,
            "default": self.default,
        }


def check_amounts(amounts: Mapping[str, int], *, limits: bool = False) -> dict[str, int]:
    """Validated ``{resource: amount}``: known resources, integers in range (limits may also be
    :data:`UNLIMITED`)."""
    if not isinstance(amounts, Mapping):
        raise errors.InvalidArgument("quota amounts must be a mapping of resource to integer")
    checked: dict[str, int] = {}
    for resource, amount in amounts.items():
        if resource not in RESOURCES:
            raise errors.InvalidArgument(
                f"unknown quota resource {resource!r}: use {', '.join(RESOURCES)}"
            )
        lowest = UNLIMITED if limits else 0
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise errors.InvalidArgument(f"quota {resource} must be an integer")
        if not lowest <= amount <= MAX_AMOUNT:
            raise errors.InvalidArgument(f"quota {resource} must be in {lowest}..{MAX_AMOUNT}")
        checked[resource] = amount
    return checked


class QuotaStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        defaults: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = open_tables(conn, SCHEMA)
        self._defaults = {r: UNLIMITED for r in RESOURCES} | check_amounts(defaults, limits=True)
        self._clock = clock

    # ------------------------------------------------------------ limits

    def set_limits(self, tenant: str, limits: Mapping[str, int | None]) -> None:
        """Set some of a tenant's limits; None puts one back to the default. Lowering a limit
        under the current usage is allowed: it only refuses new reservations."""
        check_tenant(tenant)
        explicit = {r: v for r, v in limits.items() if v is not None}
        checked = check_amounts(explicit, limits=True)
        reset = [r for r, v in limits.items() if v is None]
        check_amounts(dict.fromkeys(reset, 0))
        with immediate(self._db) as tx:
            for resource, amount in checked.items():
                tx.execute(
                    "INSERT INTO tenancy_quota_limits (tenant, resource, amount) VALUES (?, ?, ?)"
                    " ON CONFLICT (tenant, resource) DO UPDATE SET amount = excluded.amount",
                    (tenant, resource, amount),
                )
            for resource in reset:
                tx.execute(
                    "DELETE FROM tenancy_quota_limits WHERE tenant = ? AND resource = ?",
                    (tenant, resource),
                )

    def show(self, tenant: str) -> list[QuotaLine]:
        """Every resource's limit and usage for ``tenant`` (one consistent snapshot)."""
        with immediate(self._db) as tx:
            limits = _limits(tx, tenant)
            used = _usage(tx, tenant)
        return [
            QuotaLine(r, limits.get(r, self._defaults[r]), used.get(r, 0), r not in limits)
            for r in RESOURCES
        ]

    # ------------------------------------------------------------ charges

    def reserve(self, tenant: str, amounts: Mapping[str, int], *, owner: str = "") -> Reservation:
        """Charge ``amounts`` to ``tenant`` if every resource stays within its limit, else
        FailedPrecondition naming the first that would not; atomic (the module's docstring)."""
        with immediate(self._db) as tx:
            return self.charge(tx, tenant, amounts, owner=owner)

    def charge(
        self, tx: sqlite3.Connection, tenant: str, amounts: Mapping[str, int], *, owner: str = ""
    ) -> Reservation:
        """:meth:`reserve` inside a transaction the caller opened with ``BEGIN IMMEDIATE``
        (e.g. the one that inserts the object the charge is for): both commit, or neither."""
        check_tenant(tenant)
        checked = {r: a for r, a in check_amounts(amounts).items() if a > 0}
        if not isinstance(owner, str) or len(owner) > 256:
            raise errors.InvalidArgument("a charge's owner is a string of at most 256")
        if not tx.in_transaction:
            raise errors.Internal("QuotaStore.charge needs an open transaction")
        limits = _limits(tx, tenant)
        used = _usage(tx, tenant)
        for resource, amount in checked.items():
            limit = limits.get(resource, self._defaults[resource])
            if limit != UNLIMITED and used.get(resource, 0) + amount > limit:
                raise errors.FailedPrecondition(
                    f"quota exceeded: tenant {tenant} uses {used.get(resource, 0)} of"
                    f" {limit} {resource}, and {amount} more were asked for"
                )
        reservation = Reservation(secrets.token_hex(8), tenant, checked, owner)
        now = self._clock()
        tx.executemany(
            "INSERT INTO tenancy_quota_charges"
            " (reservation, tenant, resource, amount, owner, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(reservation.id, tenant, r, a, owner, now) for r, a in checked.items()],
        )
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (idempotent): the object was not made, or is gone."""
        with immediate(self._db) as tx:
            tx.execute(
                "DELETE FROM tenancy_quota_charges WHERE reservation = ? AND tenant = ?",
                (reservation.id, reservation.tenant),
            )

    def release_owner(self, tenant: str, owner: str, tx: sqlite3.Connection | None = None) -> int:
        """Give back every charge of one object (when it is removed); how many rows went. With
        ``tx``, inside the caller's transaction (the one that deletes the object)."""
        if tx is None:
            with immediate(self._db) as own:
                return self.release_owner(tenant, owner, own)
        cursor = tx.execute(
            "DELETE FROM tenancy_quota_charges WHERE tenant = ? AND owner = ?", (tenant, owner)
        )
        return int(cursor.rowcount)

    def usage(self, tenant: str) -> dict[str, int]:
        return _usage(self._db, tenant)

    def owners(self) -> list[tuple[str, str]]:
        """Every (tenant, owner) that holds a charge: for the audit at start, which releases
        the charges of objects that no longer exist (a crash between a reservation and the
        object's insert, or between its delete and the release)."""
        rows = self._db.execute(
            "SELECT DISTINCT tenant, owner FROM tenancy_quota_charges ORDER BY tenant, owner"
        ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]


def _limits(db: sqlite3.Connection, tenant: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT resource, amount FROM tenancy_quota_limits WHERE tenant = ?", (tenant,)
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def _usage(db: sqlite3.Connection, tenant: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT resource, SUM(amount) FROM tenancy_quota_charges WHERE tenant = ?"
        " GROUP BY resource",
        (tenant,),
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}
