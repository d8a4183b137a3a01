"""The one WHERE clause of every tenant-scoped query of hyperd's stores.

The stores (pods, volumes, networks) take the tenant the service layer got from the caller's
scope; ``None`` is every tenant (an operator's listing, or hyperd's own sweeps). ``state`` may
not import ``hyper.tenancy`` (they are siblings in the layers), hence this plain function.
"""

from __future__ import annotations


def tenant_clause(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause of a tenant's rows (every tenant's with None), and its parameters."""
    return ("1 = 1", ()) if tenant is None else ("tenant = ?", (tenant,))
