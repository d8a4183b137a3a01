"""Keystone tokens against a real Keystone (Debian's package, started by the test on loopback
with SQLite and fernet tokens: tests/keystone_fixture.py): a valid token is the principal of its
project with its mapped role; a revoked or an expired one is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyper import errors
from hyper.tenancy.keystone import KeystoneAuthenticator
from hyper.tenancy.principal import KEYSTONE, Role
from hyper.tenancy.settings import KeystoneSettings
from tests import keystone_fixture
from tests.keystone_fixture import SERVICE_PASSWORD, USER_PASSWORD, Keystone

SHORT_LIFE = 5
"""Seconds the tokens of the second Keystone process live."""


@pytest.fixture(scope="module")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    missing = keystone_fixture.available()
    if missing:
        pytest.fail(missing)
    root: Path = tmp_path_factory.mktemp("keystone")
    server = keystone_fixture.start_keystone(root)
    try:
        yield server
    finally:
        server.stop()
        keystone_fixture.remove(root)


@pytest.fixture(scope="module")
def short_lived(keystone: Keystone) -> Keystone:
    return keystone_fixture.start_short_lived(keystone, SHORT_LIFE)


def settings(keystone: Keystone, **overrides: Any) -> KeystoneSettings:
    values: dict[str, Any] = {
        "url": keystone.url,
        "username": "hyperd",
        "password": SERVICE_PASSWORD,
        "project": "service",
        "cache_ttl": 0.0,
    }
    values.update(overrides)
    return KeystoneSettings(**values).validate()


def authenticate(config: KeystoneSettings, token: str) -> Any:
    async def go() -> Any:
        auth = KeystoneAuthenticator(config)
        try:
            return await auth.authenticate(token)
        finally:
            await auth.aclose()

    return asyncio.run(go())


def test_a_valid_token_is_its_project_with_the_mapped_role(keystone: Keystone) -> None:
    alpha = keystone.find("project", "alpha")
    token = keystone.password_token("alice", USER_PASSWORD, project="alpha")
    principal = authenticate(settings(keystone), token)
    assert (principal.tenant, principal.role, principal.credential) == (
        alpha["id"],
        Role.MEMBER,
        KEYSTONE,
    )
    assert principal.user == keystone.find("user", "alice")["id"]
    assert principal.expires_at is not None and principal.expires_at > time.time()
    by_name = authenticate(settings(keystone, tenant_from="name", tenant_prefix="ks-"), token)
    assert by_name.tenant == "ks-alpha"


def test_a_project_admin_is_a_tenant_admin(keystone: Keystone) -> None:
    principal = authenticate(settings(keystone), keystone.admin_token())
    assert principal.role is Role.ADMIN
    assert principal.tenant == keystone.find("project", "admin")["id"]


def test_a_revoked_token_is_refused(keystone: Keystone) -> None:
    token = keystone.password_token("alice", USER_PASSWORD, project="alpha")
    assert authenticate(settings(keystone), token).role is Role.MEMBER
    keystone.revoke(token)
    with pytest.raises(errors.Unauthenticated):
        authenticate(settings(keystone), token)


def test_an_expired_token_is_refused(keystone: Keystone, short_lived: Keystone) -> None:
    token = short_lived.password_token("alice", USER_PASSWORD, project="alpha")
    principal = authenticate(settings(keystone), token)  # validated by the other process
    assert principal.expires_at is not None
    assert principal.expires_at <= time.time() + SHORT_LIFE + 1
    deadline = principal.expires_at + 60
    while True:  # wait for the expiry itself, then for Keystone to say so
        try:
            authenticate(settings(keystone), token)
        except errors.Unauthenticated:
            break
        assert time.time() < deadline, (
            f"a token that expired at {principal.expires_at} was still accepted at {time.time()}"
        )
        time.sleep(max(0.2, min(1.0, principal.expires_at - time.time())))
    assert time.time() >= principal.expires_at - 1  # refused for expiry, not for anything else


def test_an_unscoped_token_is_refused(keystone: Keystone) -> None:
    token = keystone.password_token("alice", USER_PASSWORD)
    with pytest.raises(errors.PermissionDenied, match="project"):
        authenticate(settings(keystone), token)


def test_wrong_service_credentials_are_reported_as_such(keystone: Keystone) -> None:
    token = keystone.password_token("alice", USER_PASSWORD, project="alpha")
    with pytest.raises(errors.Unavailable, match="service credentials"):
        authenticate(settings(keystone, password="wrong"), token)
