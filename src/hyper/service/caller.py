"""Who sends a request, as every service sees it: a tenant and whether it is the host's operator.

One value for all the services (pods, volumes, networks), so the tenancy work (issue 8) changes
how a front end makes it, not what the services take. Until then every caller is the default
tenant, and the operator is whoever the front end says (hyperd: its unix socket).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Caller:
    """Who asks: the tenant whose objects they see, and whether they are the host's operator
    (today: every caller; the daemon says so for its unix socket)."""

    tenant: str = DEFAULT_TENANT
    operator: bool = True
