"""A request's credential in, its :class:`~hyper.tenancy.principal.Principal` out.

One place decides what counts as a credential, so that every front end (the REST API over TCP,
later the CRI server) treats them alike: ``Authorization: Bearer <credential>`` or OpenStack's
``X-Auth-Token: <credential>``. A credential that reads ``hk_...`` is a hyper access key
(:class:`~hyper.tenancy.keys.KeyStore`); anything else is a Keystone token, when Keystone is
configured. The unix socket is not authenticated here: its caller is the local operator
(:meth:`Principal.local_operator`), decided by the listener, never by a header.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyper import errors
from hyper.tenancy import accesskey
from hyper.tenancy.keys import KeyStore
from hyper.tenancy.keystone import MAX_TOKEN, KeystoneAuthenticator
from hyper.tenancy.principal import Principal
from hyper.tenancy.tenants import TenantStore
from hyper.tenancy.throttle import RefusalThrottle

MISSING = (
    "hyperd needs a credential over TCP: an access key (`hyper config set`, --key or $HYPER_KEY)"
    " or a Keystone token"
)


def credential(headers: Mapping[str, str]) -> str:
    """The credential a request carries ("" when none); headers' names in lower case."""
    value = headers.get("authorization", "")
    if value:
        scheme, _, rest = value.partition(" ")
        if scheme.lower() != "bearer" or not rest.strip():
            raise errors.Unauthenticated("the Authorization header must be `Bearer <credential>`")
        value = rest.strip()
    else:
        value = headers.get("x-auth-token", "").strip()
    if len(value) > MAX_TOKEN:
        raise errors.Unauthenticated("the credential is too long")
    return value


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        tenants: TenantStore,
        keystone: KeystoneAuthenticator | None = None,
        throttle: RefusalThrottle | None = None,
    ) -> None:
        self._keys = keys
        self._tenants = tenants
        self._keystone = keystone
        self._throttle = throttle or RefusalThrottle(0, 1)

    async def authenticate(self, headers: Mapping[str, str], peer: str = "") -> Principal:
        """The principal of the request's credential, or Unauthenticated (PermissionDenied
        for a Keystone token whose roles grant nothing here). ``peer``, the client's address,
        is refused at once (ResourceExhausted) after too many refused credentials, both kinds
        counted: each costs a hash or a Keystone call."""
        value = credential(headers)
        if not value:
            raise errors.Unauthenticated(MISSING)
        self._throttle.check(peer)
        try:
            if accesskey.looks_like(value):
                return self._keys.authenticate(value)
            if self._keystone is None:
                raise errors.Unauthenticated("the credential is not a hyper access key")
            principal = await self._keystone.authenticate(value)
        except (errors.Unauthenticated, errors.PermissionDenied):
            self._throttle.refused(peer)
            raise
        self._tenants.ensure(principal.tenant, source="keystone")
        return principal
