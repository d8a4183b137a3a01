"""Tenants and access keys: created, listed, removed and revoked; a key authenticates to its
tenant and role, and every way of being wrong gives the same refusal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hyper import errors
from hyper.state.db import Database
from hyper.tenancy import accesskey
from hyper.tenancy.keys import KeyStore
from hyper.tenancy.principal import Role
from hyper.tenancy.tenants import TenantStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(tmp_path: Path, clock: Clock) -> tuple[TenantStore, KeyStore]:
    conn = connect(tmp_path / "hyperd.db")
    tenants = TenantStore(conn, clock=clock)
    return tenants, KeyStore(conn, tenants, clock=clock)


def test_tenants_are_created_listed_and_removed(stores: tuple[TenantStore, KeyStore]) -> None:
    tenants, keys = stores
    tenants.create("beta", description="the B team")
    tenants.create("alpha")
    assert [t.name for t in tenants.list()] == ["alpha", "beta"]
    beta = tenants.get("beta")
    assert beta is not None and beta.description == "the B team"
    with pytest.raises(errors.AlreadyExists):
        tenants.create("alpha")
    keys.create("alpha", Role.ADMIN)
    tenants.remove("alpha")
    assert tenants.get("alpha") is None
    assert keys.list(None, revoked=True) == []  # its keys went with it
    with pytest.raises(errors.NotFound):
        tenants.remove("alpha")


@pytest.mark.parametrize(
    "name", ["", "-x", "a" * 64, "a/b", "a b", "../x", "é", "x\n", "a;DROP TABLE x"]
)
def test_tenant_names_are_validated(stores: tuple[TenantStore, KeyStore], name: str) -> None:
    tenants, _ = stores
    with pytest.raises(errors.InvalidArgument):
        tenants.create(name)


def test_a_tenant_that_still_owns_objects_is_kept(stores: tuple[TenantStore, KeyStore]) -> None:
    tenants, _ = stores
    tenants.create("alpha")
    seen: list[bool] = []

    def in_use(tx: sqlite3.Connection, name: str) -> str:
        seen.append(tx.in_transaction)
        return "2 pods"

    with pytest.raises(errors.FailedPrecondition, match="2 pods"):
        tenants.remove("alpha", in_use=in_use)
    assert seen == [True] and tenants.get("alpha") is not None


def test_ensure_creates_once(stores: tuple[TenantStore, KeyStore]) -> None:
    tenants, _ = stores
    first = tenants.ensure("0123456789abcdef0123456789abcdef", source="keystone")
    again = tenants.ensure("0123456789abcdef0123456789abcdef", source="keystone")
    assert first == again and first.source == "keystone"


def test_a_key_authenticates_to_its_tenant_and_role(
    stores: tuple[TenantStore, KeyStore],
) -> None:
    tenants, keys = stores
    tenants.create("alpha")
    made = keys.create("alpha", Role.MEMBER, name="ci")
    assert made.key.startswith(f"hk_{made.record.id}_")
    principal = keys.authenticate(made.key)
    assert (principal.tenant, principal.role, principal.credential) == (
        "alpha",
        Role.MEMBER,
        made.record.id,
    )
    listed = keys.list("alpha")
    assert [k.id for k in listed] == [made.record.id] and listed[0].name == "ci"


def test_only_a_salted_hash_is_stored(tmp_path: Path, stores: tuple[TenantStore, KeyStore]) -> None:
    tenants, keys = stores
    tenants.create("alpha")
    one = keys.create("alpha", Role.ADMIN)
    two = keys.create("alpha", Role.ADMIN)
    raw = (tmp_path / "hyperd.db").read_bytes() + (tmp_path / "hyperd.db-wal").read_bytes()
    for made in (one, two):
        assert made.key.split("_")[2].encode() not in raw
    conn = connect(tmp_path / "hyperd.db")
    hashes = [row[0] for row in conn.execute("SELECT hash FROM tenancy_keys")]
    assert len(set(hashes)) == 2 and all(h.startswith("pbkdf2_sha256$") for h in hashes)


def test_every_bad_key_is_refused_alike(stores: tuple[TenantStore, KeyStore], clock: Clock) -> None:
    tenants, keys = stores
    tenants.create("alpha")
    tenants.create("beta")
    good = keys.create("alpha", Role.ADMIN)
    revoked = keys.create("alpha", Role.ADMIN)
    keys.revoke("alpha", revoked.record.id)
    expiring = keys.create("alpha", Role.ADMIN, expires_at=clock.now + 10)
    orphan = keys.create("beta", Role.ADMIN)
    tenants.remove("beta")
    key_id, secret = accesskey.parse(good.key)
    wrong_secret = f"hk_{key_id}_{'0' * 48}"
    unknown = f"hk_{'f' * 16}_{secret}"
    keys.authenticate(expiring.key)
    clock.now += 11
    messages = set()
    for bad in (
        wrong_secret,
        unknown,
        revoked.key,
        expiring.key,
        orphan.key,
        "",
        "hk_",
        good.key + "0",
        good.key.upper(),
        "x" * 100_000,
        "hk_" + key_id + "_" + secret[:-1] + "\x00",
    ):
        with pytest.raises(errors.Unauthenticated) as raised:
            keys.authenticate(bad)
        messages.add(str(raised.value))
    assert keys.authenticate(good.key).tenant == "alpha"
    assert len(messages) <= 2  # "malformed" (no lookup at all) or "not valid"


def test_revoking_another_tenants_key_is_not_found(stores: tuple[TenantStore, KeyStore]) -> None:
    tenants, keys = stores
    tenants.create("alpha")
    tenants.create("beta")
    theirs = keys.create("beta", Role.ADMIN)
    with pytest.raises(errors.NotFound) as foreign:
        keys.revoke("alpha", theirs.record.id)
    with pytest.raises(errors.NotFound) as missing:
        keys.revoke("alpha", "0" * 16)
    assert str(foreign.value).replace(theirs.record.id, "X") == str(missing.value).replace(
        "0" * 16, "X"
    )
    assert keys.authenticate(theirs.key).tenant == "beta"  # untouched
    assert keys.list("alpha") == []
    assert [k.id for k in keys.list(None)] == [theirs.record.id]
    record = keys.revoke(None, theirs.record.id)  # the operator's view spans tenants
    assert record.revoked_at is not None and keys.list("beta") == []
    assert [k.id for k in keys.list("beta", revoked=True)] == [theirs.record.id]


def test_key_inputs_are_validated(stores: tuple[TenantStore, KeyStore], clock: Clock) -> None:
    tenants, keys = stores
    tenants.create("alpha")
    with pytest.raises(errors.NotFound):
        keys.create("nobody", Role.ADMIN)
    with pytest.raises(errors.InvalidArgument):
        keys.create("alpha", "admin")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        keys.create("alpha", Role.ADMIN, name="x" * 65)
    with pytest.raises(errors.InvalidArgument):
        keys.create("alpha", Role.ADMIN, expires_at=clock.now - 1)


def test_the_stores_share_hyperds_own_database(tmp_path: Path) -> None:
    database = Database(tmp_path / "hyperd.db")
    try:
        tenants = TenantStore(database._db)
        keys = KeyStore(database._db, tenants)
        tenants.ensure("default")
        made = keys.create("default", Role.OPERATOR)
        assert keys.authenticate(made.key).is_operator
        assert database.pods(None) == []  # hyperd's own tables are untouched
    finally:
        database.close()
    reopened = Database(tmp_path / "hyperd.db")  # and its migrations still apply
    try:
        tenants = TenantStore(reopened._db)
        assert [t.name for t in tenants.list()] == ["default"]
    finally:
        reopened.close()


def test_a_connection_that_opens_transactions_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.Internal):
        TenantStore(sqlite3.connect(tmp_path / "x.db"))
