"""Keystone token validation against a fake Keystone (httpx.MockTransport): caching bounded by
TTL and expiry, role and project mapping, service token renewal, hostile answers.
The real Keystone is in tests/integration/test_keystone.py."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import httpx
import pytest

from hyper import errors
from hyper.config.settings import KeystoneSettings
from hyper.tenancy.keystone import KeystoneAuthenticator
from hyper.tenancy.principal import KEYSTONE, Role

NOW = 1_800_000_000.0
PROJECT = "0123456789abcdef0123456789abcdef"


def iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeKeystone:
    def __init__(self) -> None:
        self.now = NOW
        self.tokens: dict[str, dict[str, Any]] = {}
        self.service_tokens: set[str] = set()
        self.validations = 0
        self.logins = 0
        self.answer: httpx.Response | None = None

    def token(self, name: str, *, roles: tuple[str, ...] = ("member",), ttl: float = 3600) -> str:
        self.tokens[name] = {
            "expires_at": iso(self.now + ttl),
            "project": {"id": PROJECT, "name": "alpha", "domain": {"id": "default"}},
            "roles": [{"id": r + "-id", "name": r} for r in roles],
            "user": {"id": "u-" + name, "name": name},
        }
        return name

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/auth/tokens"
        if request.method == "POST":
            self.logins += 1
            body = json.loads(request.content)
            assert body["auth"]["identity"]["password"]["user"]["password"] == "pw"
            token = f"service-{self.logins}"
            self.service_tokens.add(token)
            answer = {"token": {"expires_at": iso(self.now + 3600)}}
            return httpx.Response(201, json=answer, headers={"X-Subject-Token": token})
        self.validations += 1
        if self.answer is not None:
            return self.answer
        if request.headers.get("X-Auth-Token") not in self.service_tokens:
            return httpx.Response(401, json={"error": {"code": 401}})
        found = self.tokens.get(request.headers.get("X-Subject-Token", ""))
        if found is None:
            return httpx.Response(404, json={"error": {"code": 404}})
        return httpx.Response(200, json={"token": found})


@pytest.fixture
def keystone() -> FakeKeystone:
    return FakeKeystone()


def make(keystone: FakeKeystone, **overrides: Any) -> KeystoneAuthenticator:
    settings = KeystoneSettings(
        url="http://keystone.test/v3", username="hyperd", password="pw", **overrides
    ).validate()
    return KeystoneAuthenticator(
        settings, transport=httpx.MockTransport(keystone.handler), clock=lambda: keystone.now
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_valid_token_maps_to_its_project_and_highest_role(keystone: FakeKeystone) -> None:
    async def go() -> None:
        auth = make(keystone)
        principal = await auth.authenticate(keystone.token("alice", roles=("reader", "admin")))
        assert (principal.tenant, principal.role, principal.credential) == (
            PROJECT,
            Role.ADMIN,
            KEYSTONE,
        )
        assert principal.user == "u-alice" and principal.expires_at == pytest.approx(NOW + 3600)
        reader = await auth.authenticate(keystone.token("bob", roles=("reader",)))
        assert reader.role is Role.MEMBER
        await auth.aclose()

    run(go())


def test_the_tenant_can_come_from_the_project_name_with_a_prefix(keystone: FakeKeystone) -> None:
    principal = run(make(keystone, tenant_from="name", tenant_prefix="ks-").authenticate(
        keystone.token("alice")
    ))  # fmt: skip
    assert principal.tenant == "ks-alpha"


def test_validations_are_cached_within_ttl_and_never_past_expiry(keystone: FakeKeystone) -> None:
    async def go() -> None:
        auth = make(keystone, cache_ttl=30)
        token = keystone.token("alice")
        await auth.authenticate(token)
        await auth.authenticate(token)
        assert keystone.validations == 1
        del keystone.tokens[token]  # revoked in Keystone
        keystone.now += 29
        await auth.authenticate(token)  # within the TTL: still trusted
        keystone.now += 2
        with pytest.raises(errors.Unauthenticated):
            await auth.authenticate(token)  # the TTL is over: Keystone says no
        short = keystone.token("brief", ttl=5)
        await auth.authenticate(short)
        keystone.now += 6  # Keystone would still say yes (a fake that forgets expiry)
        with pytest.raises(errors.Unauthenticated):
            await auth.authenticate(short)  # but the expiry bounds the cache and is checked

    run(go())


def test_no_cache_asks_every_time(keystone: FakeKeystone) -> None:
    async def go() -> None:
        auth = make(keystone, cache_ttl=0)
        token = keystone.token("alice")
        for _ in range(3):
            await auth.authenticate(token)
        assert keystone.validations == 3

    run(go())


def test_the_service_token_is_renewed_when_refused(keystone: FakeKeystone) -> None:
    async def go() -> None:
        auth = make(keystone, cache_ttl=0)
        token = keystone.token("alice")
        await auth.authenticate(token)
        keystone.service_tokens.clear()  # Keystone forgot it (revoked, keys rotated)
        await auth.authenticate(token)
        assert keystone.logins == 2
        keystone.now += 3600  # and before it expires
        keystone.token("alice")
        await auth.authenticate(token)
        assert keystone.logins == 3

    run(go())


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (httpx.Response(200, content=b"not json"), errors.ProtocolError),
        (httpx.Response(200, json={"token": "x"}), errors.ProtocolError),
        (httpx.Response(200, json={"token": {"expires_at": 5}}), errors.ProtocolError),
        (httpx.Response(200, content=b"[" * (2 << 20)), errors.ProtocolError),
        (httpx.Response(403, json={}), errors.Unavailable),
        (httpx.Response(500, json={}), errors.Unavailable),
    ],
)
def test_hostile_or_failing_answers(
    keystone: FakeKeystone, answer: httpx.Response, kind: type[Exception]
) -> None:
    keystone.answer = answer
    with pytest.raises(kind):
        run(make(keystone).authenticate(keystone.token("alice")))


def test_tokens_without_a_project_or_a_role_of_ours_are_refused(keystone: FakeKeystone) -> None:
    token = keystone.token("alice", roles=("observer",))
    with pytest.raises(errors.PermissionDenied, match="roles"):
        run(make(keystone).authenticate(token))
    del keystone.tokens["alice"]["project"]
    keystone.tokens["alice"]["roles"] = [{"name": "admin"}]
    with pytest.raises(errors.PermissionDenied, match="project"):
        run(make(keystone).authenticate(token))
    keystone.token("evil")
    keystone.tokens["evil"]["project"]["name"] = "../etc"
    with pytest.raises(errors.PermissionDenied):
        run(make(keystone, tenant_from="name").authenticate("evil"))


@pytest.mark.parametrize("token", ["", "x" * 9000, "tok\nen", "tökén"])
def test_malformed_tokens_never_reach_keystone(keystone: FakeKeystone, token: str) -> None:
    with pytest.raises(errors.Unauthenticated):
        run(make(keystone).authenticate(token))
    assert keystone.validations == 0 and keystone.logins == 0


def test_an_unreachable_keystone_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    settings = KeystoneSettings(url="http://keystone.test/v3", username="u", password="p")
    auth = KeystoneAuthenticator(settings, transport=httpx.MockTransport(refuse))
    with pytest.raises(errors.Unavailable, match="cannot reach"):
        run(auth.authenticate("token"))
