"""What each role may do: one table, one function.

Every handler asks :func:`require` (or :func:`scope`, which also hands back the
:class:`~hyper.tenancy.principal.Scope` its queries take) before it touches anything. The rules:
the operator may do everything everywhere; a tenant admin everything in its own tenant, its
access keys included; a member may only read in its own tenant. Acting in another tenant is for
the operator only.
"""

from __future__ import annotations

import enum

from hyper import errors
from hyper.tenancy.principal import Principal, Role, Scope


class Action(enum.StrEnum):
    READ = "read"
    """Inspect or list the tenant's objects (pods, volumes, networks, images...)."""
    WRITE = "write"
    """Create, change or remove the tenant's objects."""
    KEYS = "keys"
    """Create, list and revoke the tenant's access keys."""
    QUOTA_READ = "quota.read"
    USAGE_READ = "usage.read"
    QUOTA_SET = "quota.set"
    TENANTS = "tenants"
    """Create, list and remove tenants."""
    HOST = "host"
    """Host-level operations: templates, host directories as volumes, settings, info."""


_MINIMUM = {
    Action.READ: Role.MEMBER,
    Action.QUOTA_READ: Role.MEMBER,
    Action.USAGE_READ: Role.MEMBER,
    Action.WRITE: Role.ADMIN,
    Action.KEYS: Role.ADMIN,
    Action.QUOTA_SET: Role.OPERATOR,
    Action.TENANTS: Role.OPERATOR,
    Action.HOST: Role.OPERATOR,
}


def require(principal: Principal, action: Action, tenant: str | None) -> None:
    """Allow ``action`` on ``tenant`` (None: on every tenant) or raise PermissionDenied."""
    if principal.is_operator:
        return
    if tenant != principal.tenant:
        raise errors.PermissionDenied(
            f"a tenant {principal.role.value} may act only in its own tenant"
        )
    if principal.role.rank < _MINIMUM[action].rank:
        raise errors.PermissionDenied(
            f"a tenant {principal.role.value} may not do {action.value} operations"
            f" (needs {_MINIMUM[action].value})"
        )


def scope(
    principal: Principal, action: Action, tenant: str | None = None, *, every: bool = False
) -> Scope:
    """The scope of a request: the principal's own tenant, else ``tenant`` (which only an
    operator may name), else every tenant with ``every`` (an operator's listing)."""
    if every:
        require(principal, action, None)
        return Scope(None)
    target = tenant or principal.tenant
    require(principal, action, target)
    return Scope(target)


def require_grant(principal: Principal, tenant: str, role: Role) -> None:
    """Allow ``principal`` to issue a credential of ``role`` in ``tenant``: never above its own
    role, so an admin cannot mint an operator key."""
    require(principal, Action.KEYS, tenant)
    if role.rank > principal.role.rank:
        raise errors.PermissionDenied(
            f"a {principal.role.value} may not create a key with the {role.value} role"
        )
