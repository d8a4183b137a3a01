"""Keystone tokens as credentials: validate one against a Keystone v3, map its project to a
tenant and its roles to ours.

hyperd validates a caller's token the way every OpenStack service does: ``GET /v3/auth/tokens``
with its own service token in ``X-Auth-Token`` and the caller's in ``X-Subject-Token``. Keystone
answers 404 for a token that is invalid, expired or revoked; hyperd also checks ``expires_at``
itself. A validated token is remembered for ``cache_ttl`` seconds at most and never past its
expiry, keyed by a hash of the token (the token itself is not kept), so the cost of a request is
one Keystone round trip per token per TTL; the price is that a revocation takes up to
``cache_ttl`` to be seen. The service token is fetched with the configured credentials and
renewed before it expires, or at once when Keystone refuses it.

Keystone's answers are untrusted: read up to :data:`MAX_ANSWER` bytes, every field checked.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from hyper import errors
from hyper.config.settings import KeystoneSettings
from hyper.tenancy.principal import KEYSTONE, Principal, Role
from hyper.tenancy.tenants import check_tenant

_log = logging.getLogger(__name__)
MAX_TOKEN = 8192
"""Fernet tokens are ~200 bytes; anything this long is not one."""
MAX_ANSWER = 1 << 20
MAX_ROLES = 256
SERVICE_TOKEN_MARGIN = 60.0
"""Renew the service token this long before it expires."""
_REFUSED = "the Keystone token is not valid (expired, revoked or unknown)"


class KeystoneAuthenticator:
    def __init__(
        self,
        settings: KeystoneSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.enabled:
            raise errors.InvalidArgument("keystone.url is not set")
        self._settings = settings
        self._base = settings.url.rstrip("/")
        self._roles = {k: Role.parse(v) for k, v in settings.roles().items()}
        self._clock = clock
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=settings.timeout,
            verify=settings.ca_file or True,
            follow_redirects=False,
        )
        self._service: tuple[str, float] | None = None  # token, renew after
        self._service_lock = asyncio.Lock()
        self._cache: collections.OrderedDict[bytes, tuple[Principal, float]] = (
            collections.OrderedDict()
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def forget(self) -> None:
        """Drop every cached validation (e.g. when the operator revokes in bulk)."""
        self._cache.clear()

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, project-scoped token; Unauthenticated for an invalid,
        expired or revoked one; PermissionDenied for one with no role of ours or no project;
        Unavailable when Keystone cannot answer."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN or not token.isascii():
            raise errors.Unauthenticated(_REFUSED)
        if not token.isprintable():
            raise errors.Unauthenticated(_REFUSED)
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            principal, until = cached
            if now < until:
                self._cache.move_to_end(key)
                return principal
            del self._cache[key]
        body = await self._validate(token)
        principal = self._principal(body)
        if principal.expires_at is not None and principal.expires_at <= self._clock():
            raise errors.Unauthenticated(_REFUSED)
        self._remember(key, principal)
        return principal

    # ------------------------------------------------------------ Keystone calls

    async def _validate(self, token: str) -> Any:
        for attempt in (1, 2):
            service = await self._service_token(renew=attempt == 2)
            status, body = await self._call(
                "GET",
                "/auth/tokens?nocatalog",
                headers={"X-Auth-Token": service, "X-Subject-Token": token},
            )
            if status == 200:
                return body
            if status == 404:
                raise errors.Unauthenticated(_REFUSED)
            if status == 401 and attempt == 1:
                continue  # our service token expired or was revoked: renew it once
            if status in (401, 403):
                raise errors.Unavailable(
                    f"Keystone refuses hyperd's service credentials ({status}): check [keystone]"
                )
            raise errors.Unavailable(f"Keystone answered {status} to a token validation")
        raise errors.Internal("unreachable")

    async def _service_token(self, *, renew: bool) -> str:
        async with self._service_lock:
            now = self._clock()
            if self._service is not None and not renew and now < self._service[1]:
                return self._service[0]
            settings = self._settings
            auth = {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": settings.username,
                            "domain": {"name": settings.user_domain},
                            "password": self._password(),
                        }
                    },
                },
                "scope": {
                    "project": {
                        "name": settings.project,
                        "domain": {"name": settings.project_domain},
                    }
                },
            }
            status, headers, raw = await self._exchange(
                "POST", "/auth/tokens?nocatalog", json={"auth": auth}
            )
            if status != 201:
                raise errors.Unavailable(
                    f"Keystone refused hyperd's service credentials ({status})"
                )
            token = str(headers.get("X-Subject-Token", ""))
            if not 0 < len(token) <= MAX_TOKEN:
                raise errors.ProtocolError("Keystone issued no usable service token")
            expires = _expires_at(_token_body(_json(raw)))
            lifetime = expires - now
            renew_at = now + max(lifetime - SERVICE_TOKEN_MARGIN, lifetime / 2)
            self._service = (token, renew_at)
            _log.debug("got a Keystone service token, valid for %.0f s", lifetime)
            return token

    async def _call(self, method: str, path: str, *, headers: dict[str, str]) -> tuple[int, Any]:
        status, _, raw = await self._exchange(method, path, headers=headers)
        return status, _json(raw) if status == 200 else None

    async def _exchange(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, httpx.Headers, bytes]:
        """One request: its status, headers and at most :data:`MAX_ANSWER` bytes of body."""
        request = self._client.build_request(method, self._base + path, **kwargs)
        try:
            response = await self._client.send(request, stream=True)
            try:
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER:
                        raise errors.ProtocolError(
                            f"Keystone's answer is larger than {MAX_ANSWER} bytes"
                        )
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"cannot reach Keystone at {self._base}: {exc}") from None
        return response.status_code, response.headers, bytes(data)

    def _password(self) -> str:
        if self._settings.password:
            return self._settings.password
        try:
            text = Path(self._settings.password_file).read_text(errors="strict")
        except (OSError, UnicodeError) as exc:
            raise errors.Unavailable(f"keystone.password_file: {exc}") from None
        return text.splitlines()[0] if text else ""

    # ------------------------------------------------------------ answers

    def _principal(self, body: Any) -> Principal:
        token = _token_body(body)
        expires_at = _expires_at(token)
        project = token.get("project")
        if not isinstance(project, dict):
            raise errors.PermissionDenied("a Keystone token must be scoped to a project")
        ident = _string(project, "id")
        name = _string(project, "name")
        source = ident if self._settings.tenant_from == "id" else name
        try:
            tenant = check_tenant(self._settings.tenant_prefix + source)
        except errors.InvalidArgument:
            raise errors.PermissionDenied(
                f"Keystone project {source[:64]!r} cannot be a tenant: its name is not valid"
            ) from None
        roles = token.get("roles")
        if not isinstance(roles, list) or len(roles) > MAX_ROLES:
            raise errors.ProtocolError("Keystone's token has no valid list of roles")
        names = [r.get("name") for r in roles if isinstance(r, dict)]
        ours = [self._roles[n] for n in names if isinstance(n, str) and n in self._roles]
        if not ours:
            raise errors.PermissionDenied("none of the Keystone token's roles grants access")
        user = token.get("user")
        user_id = _string(user, "id") if isinstance(user, dict) else ""
        return Principal(
            tenant=tenant,
            role=max(ours, key=lambda r: r.rank),
            credential=KEYSTONE,
            user=user_id,
            expires_at=expires_at,
        )

    def _remember(self, key: bytes, principal: Principal) -> None:
        ttl, size = self._settings.cache_ttl, self._settings.cache_size
        if ttl <= 0 or size <= 0:
            return
        until = self._clock() + ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        self._cache[key] = (principal, until)
        while len(self._cache) > size:
            self._cache.popitem(last=False)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise errors.ProtocolError("Keystone's answer is not JSON") from None


def _token_body(body: Any) -> dict[str, Any]:
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, dict):
        raise errors.ProtocolError("Keystone's answer has no token")
    return token


def _string(holder: dict[str, Any], key: str) -> str:
    value = holder.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise errors.ProtocolError(f"Keystone's token has no valid {key}")
    return value


def _expires_at(token: dict[str, Any]) -> float:
    text = _string(token, "expires_at")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise errors.ProtocolError(f"Keystone's expires_at {text[:40]!r} is not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()
