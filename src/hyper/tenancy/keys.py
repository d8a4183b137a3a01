"""Access keys of tenants, in hyperd's SQLite file, and :meth:`KeyStore.authenticate`: a key
in, a :class:`~hyper.tenancy.principal.Principal` out.

A key belongs to one tenant and carries one role. Revoking keeps the record (with
``revoked_at``) so that ``key ls --all`` and audit logs can still name it. Every way a key can
fail (malformed, unknown, wrong secret, revoked, expired, tenant gone) gives the same
Unauthenticated answer after the same work, so a caller learns nothing from the failure.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hyper import errors
from hyper.tenancy import accesskey
from hyper.tenancy.principal import Principal, Role
from hyper.tenancy.tenants import TenantStore, check_tenant
from hyper.tenancy.transaction import immediate, open_tables

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tenancy_keys (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        role        TEXT NOT NULL,
        name        TEXT NOT NULL DEFAULT '',
        hash        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL,
        revoked_at  REAL
    )""",
    "CREATE INDEX IF NOT EXISTS tenancy_keys_by_tenant ON tenancy_keys(tenant)",
)
_COLUMNS = "id, tenant, role, name, created_at, expires_at, revoked_at"
MAX_NAME = 64
MAX_KEYS_PER_TENANT = 100
_REFUSED = "the access key is not valid"


@dataclass(frozen=True)
class KeyRecord:
    """A key as listed: never its secret, nor its hash."""

    id: str
    tenant: str
    role: Role
    name: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "role": self.role.value,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class NewKey:
    record: KeyRecord
    key: str
    """The whole key, ``hk_<id>_<secret>``: shown to its creator once, stored nowhere."""


class KeyStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        tenants: TenantStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = open_tables(conn, SCHEMA)
        del tenants  # taken so that its table, which authenticate() joins, exists
        self._clock = clock

    def create(
        self, tenant: str, role: Role, *, name: str = "", expires_at: float | None = None
    ) -> NewKey:
        """A new key of ``role`` in ``tenant`` (who may ask is :func:`policy.require_grant`)."""
        check_tenant(tenant)
        if not isinstance(role, Role):
            raise errors.InvalidArgument(f"role {role!r} is not a role")
        if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
            raise errors.InvalidArgument(f"a key's name is printable, at most {MAX_NAME} long")
        now = self._clock()
        if expires_at is not None and not now < expires_at < now + 100 * 365 * 86400:
            raise errors.InvalidArgument("a key's expiry must be in the future")
        key_id, secret, whole = accesskey.new()
        record = KeyRecord(key_id, tenant, role, name, now, expires_at)
        with immediate(self._db) as tx:
            if (
                tx.execute("SELECT 1 FROM tenancy_tenants WHERE name = ?", (tenant,)).fetchone()
                is None
            ):
                raise errors.NotFound(f"no such tenant: {tenant}")
            live = tx.execute(
                "SELECT COUNT(*) FROM tenancy_keys WHERE tenant = ? AND revoked_at IS NULL",
                (tenant,),
            ).fetchone()[0]
            if live >= MAX_KEYS_PER_TENANT:
                raise errors.FailedPrecondition(
                    f"tenant {tenant} has {live} keys already: revoke some first"
                )
            tx.execute(
                "INSERT INTO tenancy_keys (id, tenant, role, name, hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, tenant, role.value, name, accesskey.hash_secret(secret), now, expires_at),
            )
        return NewKey(record, whole)

    def list(self, tenant: str | None, *, revoked: bool = False) -> list[KeyRecord]:
        """A tenant's keys (every tenant's with None: the operator's view), the revoked ones
        too with ``revoked``."""
        where, params = ["1 = 1"], []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if not revoked:
            where.append("revoked_at IS NULL")
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tenancy_keys WHERE {' AND '.join(where)}"
            " ORDER BY tenant, created_at",
            params,
        ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, tenant: str | None, key_id: str) -> KeyRecord:
        """Revoke a key of ``tenant`` (any tenant's with None). A key of another tenant is
        NotFound, like a key that does not exist."""
        with immediate(self._db) as tx:
            row = tx.execute(f"SELECT {_COLUMNS} FROM tenancy_keys WHERE id = ?", (key_id,))
            found = row.fetchone()
            if found is None or (tenant is not None and found[1] != tenant):
                raise errors.NotFound(f"no such key: {key_id}")
            record = _record(found)
            if record.revoked_at is None:
                now = self._clock()
                tx.execute("UPDATE tenancy_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
                record = KeyRecord(**{**record.__dict__, "revoked_at": now})
        return record

    def authenticate(self, credential: str) -> Principal:
        """The principal of a valid key; Unauthenticated otherwise, always with the same
        message and after one hash, whatever was wrong."""
        key_id, secret = accesskey.parse(credential)
        row = self._db.execute(
            "SELECT k.tenant, k.role, k.hash, k.expires_at, k.revoked_at, t.name"
            " FROM tenancy_keys k LEFT JOIN tenancy_tenants t ON t.name = k.tenant"
            " WHERE k.id = ?",
            (key_id,),
        ).fetchone()
        stored = str(row[2]) if row is not None else accesskey.DUMMY_HASH
        matches = accesskey.verify(secret, stored)
        if row is None or not matches:
            raise errors.Unauthenticated(_REFUSED)
        tenant, role, _, expires_at, revoked_at, tenant_exists = tuple(row)
        if revoked_at is not None or tenant_exists is None:
            raise errors.Unauthenticated(_REFUSED)
        if expires_at is not None and float(expires_at) <= self._clock():
            raise errors.Unauthenticated(_REFUSED)
        return Principal(
            tenant=str(tenant),
            role=Role.parse(role),
            credential=key_id,
            expires_at=None if expires_at is None else float(expires_at),
        )


def _record(row: sqlite3.Row) -> KeyRecord:
    key_id, tenant, role, name, created_at, expires_at, revoked_at = tuple(row)
    return KeyRecord(
        id=str(key_id),
        tenant=str(tenant),
        role=Role.parse(role),
        name=str(name),
        created_at=float(created_at),
        expires_at=None if expires_at is None else float(expires_at),
        revoked_at=None if revoked_at is None else float(revoked_at),
    )
