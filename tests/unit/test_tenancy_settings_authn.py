"""The [tenancy] and [keystone] settings, and how a request's headers become a principal."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import cast

import pytest

from hyper import errors
from hyper.config.settings import KeystoneSettings, TenancySettings
from hyper.tenancy.authn import Authenticator, credential
from hyper.tenancy.keys import KeyStore
from hyper.tenancy.keystone import KeystoneAuthenticator
from hyper.tenancy.principal import Principal, Role
from hyper.tenancy.tenants import TenantStore
from hyper.tenancy.throttle import RefusalThrottle


def test_defaults_are_valid_and_keystone_is_off() -> None:
    assert TenancySettings().validate().quota_defaults()["pods"] == 100
    assert not KeystoneSettings().validate().enabled
    assert KeystoneSettings().roles() == {"admin": "admin", "member": "member", "reader": "member"}


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "ftp://k/v3", "username": "u", "password": "p"},
        {"url": "http://k/v3"},
        {"url": "http://k/v3", "username": "u", "password_file": "relative"},
        {"url": "http://k/v3", "username": "u", "password": "p", "role_map": ("admin=root",)},
        {"url": "http://k/v3", "username": "u", "password": "p", "role_map": ("=admin",)},
        {"url": "http://k/v3", "username": "u", "password": "p", "tenant_from": "domain"},
        {"url": "http://k/v3", "username": "u", "password": "p", "cache_ttl": 7200.0},
        {"url": "http://k/v3", "username": "u", "password": "p", "timeout": 0.0},
    ],
)
def test_bad_keystone_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgument):
        KeystoneSettings(**bad).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"default_tenant": "a b"},
        {"quota_pods": -2},
        {"refused_credentials": -1},
        {"refused_credentials_window": 0},
    ],
)
def test_bad_tenancy_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgument):
        TenancySettings(**bad).validate()  # type: ignore[arg-type]


def test_the_credential_comes_from_authorization_or_x_auth_token() -> None:
    assert credential({"authorization": "Bearer hk_x"}) == "hk_x"
    assert credential({"authorization": "bearer  tok "}) == "tok"
    assert credential({"x-auth-token": "tok"}) == "tok"
    assert credential({}) == ""
    for bad in ("Basic dXNlcjpwdw==", "Bearer", "Bearer " + "x" * 9000):
        with pytest.raises(errors.Unauthenticated):
            credential({"authorization": bad})


def test_access_keys_authenticate_and_other_credentials_need_keystone(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    tenants = TenantStore(conn)
    keys = KeyStore(conn, tenants)
    tenants.create("alpha")
    made = keys.create("alpha", Role.MEMBER)
    authenticator = Authenticator(keys, tenants)

    async def go() -> None:
        principal = await authenticator.authenticate({"authorization": f"Bearer {made.key}"})
        assert (principal.tenant, principal.role) == ("alpha", Role.MEMBER)
        with pytest.raises(errors.Unauthenticated, match="needs a credential"):
            await authenticator.authenticate({})
        with pytest.raises(errors.Unauthenticated):
            await authenticator.authenticate({"x-auth-token": "a-keystone-token"})

    asyncio.run(go())


def test_keystone_tokens_of_no_use_count_as_refused_and_stop_reaching_keystone(
    tmp_path: Path,
) -> None:
    """A valid token without a role of ours is 403, and costs Keystone a validation each time:
    after ``limit`` of them, the address is turned away before Keystone is asked."""
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    tenants = TenantStore(conn)
    asked: list[str] = []

    class NoRoleKeystone:
        async def authenticate(self, token: str) -> Principal:
            asked.append(token)
            raise errors.PermissionDenied("the token has no role of ours")

    throttle = RefusalThrottle(2, 60)
    keystone = cast(KeystoneAuthenticator, NoRoleKeystone())
    authenticator = Authenticator(KeyStore(conn, tenants), tenants, keystone, throttle)

    async def go() -> None:
        for _ in range(2):
            with pytest.raises(errors.PermissionDenied):
                await authenticator.authenticate({"x-auth-token": "tok"}, "192.0.2.9")
        with pytest.raises(errors.ResourceExhausted):
            await authenticator.authenticate({"x-auth-token": "tok"}, "192.0.2.9")

    asyncio.run(go())
    assert asked == ["tok", "tok"]
