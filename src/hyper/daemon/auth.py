"""Who is calling: each listener says so, and a handler reads it as a :class:`Caller`.

A listener wraps the app in :class:`Identified`, which puts the request's
:class:`~hyper.tenancy.principal.Principal` into the ASGI scope before any route runs. The unix
socket (mode 0600) is the host's operator, without a credential; every request on TCP must carry
one (``Authorization: Bearer`` or ``X-Auth-Token``: an access key or a Keystone token), else it
is answered 401 before it reaches a route. The identity comes from the listener the request
arrived on, never from a header or the URL's scheme.

The operator alone may act in another tenant than its own, with :data:`TENANT_HEADER`
(``hyper --tenant T``) naming an existing tenant, or ``*`` for every tenant's listing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from hyper import errors
from hyper.daemon.status import error_response
from hyper.service.caller import Caller
from hyper.service.core import Services
from hyper.tenancy.principal import Principal
from hyper.tenancy.tenants import check_tenant

TENANT_HEADER = "X-Hyper-Tenant"
EVERY_TENANT = "*"
_PRINCIPAL = "principal"
_log = logging.getLogger(__name__)

Identify = Callable[[Mapping[str, str], str], Awaitable[Principal]]
"""``(headers with lower-case names, the client's address)`` to the caller's principal."""


class Identified:
    """ASGI middleware: ``identify(headers)`` gives the principal of every HTTP request and
    websocket, or an error answered at once (401, 403, 429 or 503; a websocket is closed, 1008)."""

    def __init__(self, app: ASGIApp, identify: Identify) -> None:
        self.app = app
        self.identify = identify

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope.get("headers", ())
            }
            client = scope.get("client") or ("", 0)
            try:
                principal = await self.identify(headers, str(client[0]))
            except errors.HyperError as exc:
                await _refuse(scope, receive, send, exc)
                return
            scope.setdefault("state", {})[_PRINCIPAL] = principal
        await self.app(scope, receive, send)


def local_operator(tenant: str) -> Identify:
    principal = Principal.local_operator(tenant)

    async def identify(headers: Mapping[str, str], peer: str) -> Principal:
        return principal

    return identify


def principal(connection: HTTPConnection) -> Principal:
    """The principal :class:`Identified` established (a route served without it is a bug)."""
    found = connection.scope.get("state", {}).get(_PRINCIPAL)
    if not isinstance(found, Principal):
        raise errors.Internal("this listener does not identify its callers")
    return found


def caller_of(services: Services) -> Callable[[HTTPConnection], Caller]:
    """What gives a handler the :class:`Caller` of a request or websocket."""

    def caller(connection: HTTPConnection) -> Caller:
        who = principal(connection)
        wanted = connection.headers.get(TENANT_HEADER, "")
        if not wanted or wanted == who.tenant:
            return Caller(who)
        if not who.is_operator:
            raise errors.PermissionDenied("only the operator may act in another tenant")
        if wanted == EVERY_TENANT:
            return Caller(who, every=True)
        if services.tenancy.tenants.get(check_tenant(wanted)) is None:
            raise errors.NotFound(f"no such tenant: {wanted}")
        return Caller(who, tenant=wanted)

    return caller


async def _refuse(scope: AsgiScope, receive: Receive, send: Send, exc: errors.HyperError) -> None:
    expected = errors.Unauthenticated | errors.PermissionDenied | errors.Unavailable
    if isinstance(exc, errors.ResourceExhausted):
        _log.warning("refused credentials: %s (%s)", exc, (scope.get("client") or ("?",))[0])
    elif not isinstance(exc, expected):
        _log.warning("authentication failed: %s: %s", type(exc).__name__, exc)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
        return
    headers = {}
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="hyperd"'
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after:
        headers["Retry-After"] = str(int(exc.retry_after))
    await error_response(exc, headers or None)(scope, receive, send)


def as_operator(app: ASGIApp, tenant: str = "default") -> Identified:
    """``app`` as the unix socket serves it: every caller is the host's operator."""
    return Identified(app, local_operator(tenant))
