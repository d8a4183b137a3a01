"""Where an API request becomes a :class:`~hyper.service.caller.Caller`.

The operator is whoever reaches the unix socket (mode 0600); a request over TCP (always TLS) is
not the operator, so it may not, for example, mount host directories. The tenant is the default
one, except that the operator may act as another with the interim header :data:`TENANT_HEADER`
(``hyper --tenant T``). The tenancy work (issue 8) replaces this with the request's credentials.
"""

from __future__ import annotations

from fastapi import Request

from hyper.model.pod import check_name
from hyper.service.caller import DEFAULT_TENANT, Caller

TENANT_HEADER = "X-Hyper-Tenant"


def caller(request: Request) -> Caller:
    """Who sent ``request`` (see the module's docstring)."""
    operator = request.url.scheme != "https"
    tenant = request.headers.get(TENANT_HEADER, "") if operator else ""
    tenant = check_name(tenant, "tenant") if tenant else DEFAULT_TENANT
    return Caller(tenant=tenant, operator=operator)
