"""Who sends a request, as every service sees it: a :class:`Caller`.

A front end (hyperd's listeners today; the Docker API, ``runv`` or CRI tomorrow) establishes the
:class:`~hyper.tenancy.principal.Principal` once, from the request's credentials, and hands the
services a ``Caller``. The services, not the front ends, decide what it may do: every lookup and
every create goes through :meth:`Caller.reads` or :meth:`Caller.writes`, which ask
:mod:`hyper.tenancy.policy` and return the :class:`~hyper.tenancy.principal.Scope` that the
repositories' queries take. A front end cannot forget a check, and another tenant's object is
simply not found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyper.tenancy.policy import Action, require, scope
from hyper.tenancy.principal import Principal, Scope

DEFAULT_TENANT = "default"


def _local_operator() -> Principal:
    return Principal.local_operator(DEFAULT_TENANT)


@dataclass(frozen=True)
class Caller:
    """A principal, and the tenant it asks to act in (only an operator may name another than
    its own; ``every`` is an operator's listing of every tenant)."""

    principal: Principal = field(default_factory=_local_operator)
    tenant: str | None = None
    every: bool = False

    @classmethod
    def operator(cls, tenant: str = DEFAULT_TENANT) -> Caller:
        """The host's operator acting in ``tenant`` (the unix socket, tests, recovery)."""
        return cls(Principal.local_operator(tenant))

    @property
    def is_operator(self) -> bool:
        return self.principal.is_operator

    def scope(self, action: Action) -> Scope:
        """The tenants ``action`` may touch for this caller (PermissionDenied if none)."""
        return scope(self.principal, action, self.tenant, every=self.every)

    def reads(self) -> Scope:
        """The scope of a lookup or a listing (any role of the tenant)."""
        return self.scope(Action.READ)

    def writes(self) -> Scope:
        """The scope of a change, by a role that may change things: one tenant, or every
        tenant for an operator's ``--tenant '*'`` (an existing object says whose it is; a
        create takes :meth:`Scope.single`, which refuses every tenant)."""
        return self.scope(Action.WRITE)

    def may(self, action: Action) -> None:
        """Raise PermissionDenied unless the caller may do ``action`` in its tenant."""
        require(self.principal, action, self.tenant or self.principal.tenant)
