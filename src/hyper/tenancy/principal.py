"""Who a request acts for: a :class:`Principal` (tenant and role) and the :class:`Scope` of
tenants a query may see.

A principal is established once, at the edge (an access key, a Keystone token, or the unix
socket's local operator), and travels down as a value. Repositories never take a bare tenant
string from a request: they take a :class:`Scope`, which only :func:`hyper.tenancy.policy.scope`
makes after checking the principal's role, so a query is scoped by construction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from hyper import errors


class Role(enum.StrEnum):
    """Ranked: each role may do everything the ones below it may (:attr:`rank`)."""

    MEMBER = "member"
    """Read-only, in its own tenant."""
    ADMIN = "admin"
    """Everything in its own tenant, its access keys included."""
    OPERATOR = "operator"
    """Everything, in every tenant: tenants, quotas, host-level operations."""

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, value: object) -> Role:
        if isinstance(value, str):
            for role in cls:
                if role.value == value:
                    return role
        raise errors.InvalidArgument(
            f"role {value!r} is not one of {', '.join(r.value for r in cls)}"
        )


_RANK = {Role.MEMBER: 1, Role.ADMIN: 2, Role.OPERATOR: 3}

LOCAL = "local"
"""The credential of the unix socket's caller (file mode 0600: root, the local operator)."""
KEYSTONE = "keystone"
"""The credential of a caller that presented a Keystone token."""


@dataclass(frozen=True)
class Principal:
    tenant: str
    """The caller's own tenant: where its objects are created and looked up."""
    role: Role
    credential: str
    """An access key's id, :data:`KEYSTONE` or :data:`LOCAL`: for audit logs and ``whoami``."""
    user: str = ""
    """The Keystone user id, when the credential is a Keystone token."""
    expires_at: float | None = None
    """When the credential stops being valid (seconds since the epoch); None: no bound."""

    @classmethod
    def local_operator(cls, tenant: str) -> Principal:
        return cls(tenant=tenant, role=Role.OPERATOR, credential=LOCAL)

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "role": self.role.value,
            "credential": self.credential,
            "user": self.user,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class Scope:
    """The tenants one query may see: exactly one, or every tenant (``tenant is None``, only
    ever made for an operator). Made by :func:`hyper.tenancy.policy.scope`, not by handlers."""

    tenant: str | None

    @property
    def every_tenant(self) -> bool:
        return self.tenant is None

    def sql(self, column: str = "tenant") -> tuple[str, tuple[str, ...]]:
        """A WHERE clause restricting ``column`` to this scope, and its parameters: write
        ``f"... WHERE {clause} AND ..."`` so that no query of a repository forgets it."""
        if not column.replace("_", "").replace(".", "").isalnum():
            raise errors.Internal(f"column {column!r} is not an identifier")
        if self.tenant is None:
            return "1 = 1", ()
        return f"{column} = ?", (self.tenant,)

    def sees(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant

    def check(self, tenant: str, missing: str) -> None:
        """Raise NotFound(``missing``) for an object of another tenant: pass the very message
        the caller gives for an object that does not exist, so that nothing leaks across
        tenants (better still, look objects up with :meth:`sql` and never see them)."""
        if not self.sees(tenant):
            raise errors.NotFound(missing)

    def single(self) -> str:
        """The one tenant of this scope: where an object is created."""
        if self.tenant is None:
            raise errors.InvalidArgument("name one tenant for this operation")
        return self.tenant
