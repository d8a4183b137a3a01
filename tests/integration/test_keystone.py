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
from hyper.config.settings import KeystoneSettings
from hyper.tenancy.keystone import KeystoneAuthenticator
from hyper.tenancy.principal import KEYSTONE, Role
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


def test_hyperd_takes_keystone_tokens_over_tcp(
    keystone: Keystone, short_lived: Keystone, tmp_path: Path
) -> None:
    """The whole path: a Keystone token on hyperd's TCP listener is its project's tenant with
    the mapped role (the tenant is made on first use); revoked or expired, it is refused."""
    import json
    import shutil
    import ssl
    import tempfile

    import httpx

    from tests.e2e.conftest import Daemon
    from tests.registry_fixtures import free_port, make_tls

    tls = make_tls(tmp_path / "tls")
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-ks-"))
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    password = tmp_path / "keystone.password"
    password.write_text(SERVICE_PASSWORD + "\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{state}"\nrun_dir = "{run_dir}"\n'
        f'[daemon]\nsocket = "{run_dir}/hyperd.sock"\ntcp = "127.0.0.1:{port}"\n'
        f'tls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n'
        f'[keystone]\nurl = "{keystone.url}"\nusername = "hyperd"\n'
        f'password_file = "{password}"\nproject = "service"\ncache_ttl = 0.0\n'
    )
    daemon = Daemon(config, state, run_dir)
    daemon.start()
    api = httpx.Client(
        base_url=f"https://127.0.0.1:{port}/v1",
        verify=ssl.create_default_context(cafile=str(tls.ca)),
        timeout=60,
    )
    try:

        def call(method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
            return api.request(method, path, headers={"X-Auth-Token": token}, **kwargs)

        alpha = keystone.find("project", "alpha")
        token = keystone.password_token("alice", USER_PASSWORD, project="alpha")
        me = call("GET", "/whoami", token)
        assert me.status_code == 200, me.text
        assert (me.json()["tenant"], me.json()["role"]) == (alpha["id"], "member")
        assert call("GET", "/containers", token).json() == []
        assert call("GET", "/keys", token).status_code == 403  # a member reads, no more
        refused = call("POST", "/volumes", token, json={"name": "v", "size": "16M"})
        assert refused.status_code == 403, refused.text
        admin = keystone.admin_token()
        assert call("GET", "/keys", admin).status_code == 200  # Keystone admin: tenant admin
        local = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)))
        tenants = local.get("http://hyperd/v1/tenants").json()
        assert {t["name"]: t["source"] for t in tenants}[alpha["id"]] == "keystone"
        local.close()

        keystone.revoke(token)
        answer = call("GET", "/whoami", token)
        assert answer.status_code == 401 and answer.json()["kind"] == "Unauthenticated"

        brief = short_lived.password_token("alice", USER_PASSWORD, project="alpha")
        assert call("GET", "/whoami", brief).status_code == 200
        expires = json.loads(call("GET", "/whoami", brief).text)["expires_at"]
        deadline = expires + 60
        while call("GET", "/whoami", brief).status_code == 200:
            assert time.time() < deadline, "an expired Keystone token is still accepted"
            time.sleep(0.5)
        assert time.time() >= expires - 1
        assert call("GET", "/whoami", brief).status_code == 401
    finally:
        api.close()
        daemon.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
