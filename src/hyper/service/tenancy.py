"""The tenancy of one host: who may call (tenants, access keys, Keystone), how much they may
hold (quotas), and what they used (the usage ledger).

Built over hyperd's own SQLite connection, so that a quota charge and the object it pays for
can be written in one transaction, and usage survives a restart with the pods it describes.

Its use cases (``whoami``, tenants, keys, quotas, usage, metrics) take the request's
:class:`~hyper.service.caller.Caller` and ask :mod:`hyper.tenancy.policy` first: the operator
may do everything; a tenant admin everything in its own tenant, its keys included (never a key
above its own role); a member may read its own tenant's quota and usage.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from hyper import errors
from hyper.config import Settings
from hyper.service.caller import Caller
from hyper.tenancy import prometheus
from hyper.tenancy.authn import Authenticator
from hyper.tenancy.keys import KeyRecord, KeyStore, NewKey
from hyper.tenancy.keystone import KeystoneAuthenticator
from hyper.tenancy.ledger import UsageLedger
from hyper.tenancy.metering import Kind, UsageReport
from hyper.tenancy.policy import Action, require, require_grant, scope
from hyper.tenancy.principal import Principal, Role, Scope
from hyper.tenancy.quotas import QuotaLine, QuotaStore, Reservation
from hyper.tenancy.tenants import TenantRecord, TenantStore, check_tenant
from hyper.tenancy.throttle import RefusalThrottle

OWNED = (("pods", "pod"), ("volumes", "volume"), ("snapshots", "snapshot"),
         ("networks", "network"), ("fips", "floating IP"))  # fmt: skip
"""The tables of objects a tenant owns (same SQLite file), and what one row is called."""
MAX_KEY_LIFETIME = 100 * 365 * 86400.0
_log = logging.getLogger(__name__)


class TenancyService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.tenants = TenantStore(conn)
        self.keys = KeyStore(conn, self.tenants)
        self.quotas = QuotaStore(conn, settings.tenancy.quota_defaults())
        self.ledger = UsageLedger(conn)
        self.tenants.ensure(settings.tenancy.default_tenant)
        self.keystone = (
            KeystoneAuthenticator(settings.keystone) if settings.keystone.enabled else None
        )
        throttle = RefusalThrottle(
            settings.tenancy.refused_credentials, settings.tenancy.refused_credentials_window
        )
        self.authenticator = Authenticator(self.keys, self.tenants, self.keystone, throttle)
        self.on_remove: list[Callable[[str], None]] = []
        """What else a removed tenant's name must lose (its image names, its credentials)."""

    @property
    def default_tenant(self) -> str:
        return self.settings.tenancy.default_tenant

    async def close(self) -> None:
        if self.keystone is not None:
            await self.keystone.aclose()

    def release_orphaned_charges(self, existing: set[str]) -> int:
        """Release the quota charges of objects not in ``existing`` (at start, before any
        request: a crash can separate a charge from its object). How many owners were freed."""
        freed = 0
        for tenant, owner in self.quotas.owners():
            if owner not in existing:
                _log.warning("releasing the quota charges of %s (%s): it does not exist", owner,
                             tenant)  # fmt: skip
                self.quotas.release_owner(tenant, owner)
                freed += 1
        return freed

    # ------------------------------------------------------------ identity

    def whoami(self, caller: Caller) -> Principal:
        return caller.principal

    # ------------------------------------------------------------ tenants

    def create_tenant(self, caller: Caller, name: str, *, description: str = "") -> TenantRecord:
        caller.may(Action.TENANTS)
        return self.tenants.create(check_tenant(name), description=description)

    def list_tenants(self, caller: Caller) -> list[TenantRecord]:
        caller.may(Action.TENANTS)
        return self.tenants.list()

    def remove_tenant(self, caller: Caller, name: str) -> None:
        """Remove a tenant that owns nothing any more (its keys and limits go with it)."""
        caller.may(Action.TENANTS)
        if name == self.default_tenant:
            raise errors.FailedPrecondition(f"tenant {name} is the default tenant: it stays")
        self.tenants.remove(check_tenant(name), in_use=_owned)
        for forget in self.on_remove:
            forget(name)

    # ------------------------------------------------------------ access keys

    def create_key(
        self, caller: Caller, role: Role, *, name: str = "", expires_in: float | None = None
    ) -> NewKey:
        """A new key of ``role`` in the caller's tenant: its secret is in this answer only."""
        tenant = self._one_tenant(caller)
        require_grant(caller.principal, tenant, role)
        expires_at = None
        if expires_in is not None:
            if not 0 < expires_in <= MAX_KEY_LIFETIME:
                raise errors.InvalidArgument("a key's lifetime is 1 second to 100 years")
            expires_at = time.time() + expires_in
        self._existing(tenant)
        return self.keys.create(tenant, role, name=name, expires_at=expires_at)

    def list_keys(self, caller: Caller, *, revoked: bool = False) -> list[KeyRecord]:
        found = caller.scope(Action.KEYS)
        return self.keys.list(found.tenant, revoked=revoked)

    def revoke_key(self, caller: Caller, key_id: str) -> KeyRecord:
        """Revoke a key of the caller's tenant (the operator's: of any tenant, unless it named
        one). A key of another tenant is not found."""
        if caller.is_operator and caller.tenant is None:
            return self.keys.revoke(None, key_id)
        return self.keys.revoke(caller.scope(Action.KEYS).single(), key_id)

    # ------------------------------------------------------------ quotas and usage

    def quota(self, caller: Caller, tenant: str) -> list[QuotaLine]:
        require(caller.principal, Action.QUOTA_READ, check_tenant(tenant))
        self._existing(tenant)
        return self.quotas.show(tenant)

    def set_quota(
        self, caller: Caller, tenant: str, limits: Mapping[str, int | None]
    ) -> list[QuotaLine]:
        """Set some limits of ``tenant`` (None: back to the default); the operator's only."""
        require(caller.principal, Action.QUOTA_SET, check_tenant(tenant))
        self._existing(tenant)
        self.quotas.set_limits(tenant, limits)
        return self.quotas.show(tenant)

    async def usage(self, caller: Caller, since: float, until: float | None = None) -> UsageReport:
        """The usage of the caller's tenant (an operator's: any tenant, or every tenant),
        computed in a worker thread: a long history must not stall every other request."""
        scope = caller.scope(Action.USAGE_READ)
        return await asyncio.to_thread(self.ledger.report, scope, since, until)

    def metrics(self, caller: Caller) -> str:
        """Every tenant's usage (since the ledger began) and quotas, for Prometheus."""
        caller.may(Action.HOST)
        usage = self.ledger.lifetime(scope(caller.principal, Action.USAGE_READ, every=True))
        names = [t.name for t in self.tenants.list()]
        return prometheus.render(usage, {t: self.quotas.show(t) for t in names})

    # ------------------------------------------------------------ internals

    def _one_tenant(self, caller: Caller) -> str:
        if caller.every:
            raise errors.InvalidArgument("name one tenant, not every tenant")
        return caller.tenant or caller.principal.tenant

    def _existing(self, tenant: str) -> None:
        if self.tenants.get(tenant) is None:
            raise errors.NotFound(f"no such tenant: {tenant}")


def _owned(tx: sqlite3.Connection, tenant: str) -> str:
    """What ``tenant`` still owns, e.g. "2 pods, 1 volume" ("" when nothing): run inside the
    transaction that removes the tenant, so nothing can be created in between."""
    parts = []
    for table, noun in OWNED:  # hyperd's schema has them all (state/db.py's migrations)
        count = int(tx.execute(f"SELECT COUNT(*) FROM {table} WHERE tenant = ?", (tenant,))
                    .fetchone()[0])  # fmt: skip
        if count:
            parts.append(f"{count} {noun}{'s' if count != 1 else ''}")
    return ", ".join(parts)


class Accounts:
    """What a service charges to quotas and bills to the ledger, in one place for pods,
    volumes, networks and floating IPs; a service built without tenancy (a unit test of that
    service alone) charges and bills nothing."""

    def __init__(self, tenancy: TenancyService | None) -> None:
        self._tenancy = tenancy

    def reserve(self, tenant: str, amounts: Mapping[str, int], owner: str) -> Reservation | None:
        """Charge the tenant's quota for an object about to be made (FailedPrecondition if it
        would go over); give it back with :meth:`release` if the object is not made after all."""
        if self._tenancy is None:
            return None
        return self._tenancy.quotas.reserve(tenant, amounts, owner=owner)

    def release(self, reservation: Reservation | None) -> None:
        if self._tenancy is not None and reservation is not None:
            self._tenancy.quotas.release(reservation)

    def release_owner(self, tenant: str, owner: str) -> None:
        """The object ``owner`` is gone: every charge it held is given back."""
        if self._tenancy is not None:
            self._tenancy.quotas.release_owner(tenant, owner)

    def start(self, tenant: str, object_id: str, kind: Kind, at: float, **amounts: Any) -> None:
        """Bill ``object_id`` from ``at`` on (idempotent; other amounts reopen the interval)."""
        if self._tenancy is not None:
            self._tenancy.ledger.start(tenant, object_id, kind, at, **amounts)

    def stop(self, tenant: str, object_id: str, at: float) -> None:
        if self._tenancy is not None:
            self._tenancy.ledger.stop(tenant, object_id, at)

    def close_gone(self, kind: Kind, exists: Callable[[str, str], bool]) -> None:
        """After a crash between a change and its ledger event: close now (the last time
        known) every open interval of ``kind`` whose object, ``exists(tenant, id)``, is gone."""
        if self._tenancy is None:
            return
        for event in self._tenancy.ledger.running(Scope(None)):
            if event.kind is kind and not exists(event.tenant, event.object_id):
                _log.info("closing the usage of %s %s: it is gone", kind.value, event.name)
                self._tenancy.ledger.stop(event.tenant, event.object_id, at=time.time())
