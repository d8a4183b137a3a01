"""hyperd's tenancy routes: who am I, tenants, access keys, quotas, usage and ``/metrics``, each
one call into :class:`hyper.service.tenancy.TenancyService` on behalf of the request's caller
(:func:`hyper.daemon.auth.caller_of`), which checks the policy.

A key's secret appears in one answer only: the one to the ``POST /v1/keys`` that made it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field

from hyper.daemon.auth import EVERY_TENANT, caller_of
from hyper.daemon.schemas import Strict
from hyper.service.caller import Caller
from hyper.service.core import Services
from hyper.tenancy import prometheus
from hyper.tenancy.keys import MAX_NAME
from hyper.tenancy.principal import Role
from hyper.tenancy.quotas import MAX_AMOUNT, UNLIMITED, QuotaLine
from hyper.tenancy.tenants import MAX_DESCRIPTION, TenantRecord

TenantName = Annotated[str, Field(min_length=1, max_length=63)]
TenantPath = Annotated[str, Path(min_length=1, max_length=63)]
Limit = Annotated[int, Field(ge=UNLIMITED, le=MAX_AMOUNT)] | None
Time = Annotated[float | None, Query(ge=0, le=1e11, description="seconds since the epoch")]


class TenantCreate(Strict):
    name: TenantName
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""


class KeyCreate(Strict):
    """A new access key in the caller's tenant (the operator's: ``X-Hyper-Tenant``)."""

    role: Literal["member", "admin", "operator"] = "member"
    name: Annotated[str, Field(max_length=MAX_NAME)] = ""
    expires_in: Annotated[float, Field(gt=0, le=100 * 365 * 86400)] | None = None
    """Seconds from now until the key stops being valid (none: it never expires)."""


class QuotaSet(Strict):
    """Limits to set; -1 is unlimited, null puts a limit back to the default, and a resource
    left out keeps its limit."""

    pods: Limit = None
    vcpus: Limit = None
    memory_mb: Limit = None
    volume_bytes: Limit = None
    snapshots: Limit = None
    fips: Limit = None
    networks: Limit = None


def router(services: Services) -> APIRouter:
    api = APIRouter()
    tenancy = services.tenancy
    caller = caller_of(services)

    def quota_view(tenant: str, lines: list[QuotaLine]) -> dict[str, Any]:
        return {"tenant": tenant, "resources": [line.to_dict() for line in lines]}

    @api.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return tenancy.whoami(caller(request)).to_dict()

    @api.get("/v1/tenants")
    async def list_tenants(request: Request) -> list[dict[str, Any]]:
        return [_tenant_view(t) for t in tenancy.list_tenants(caller(request))]

    @api.post("/v1/tenants", status_code=201)
    async def create_tenant(body: TenantCreate, request: Request) -> dict[str, Any]:
        record = tenancy.create_tenant(caller(request), body.name, description=body.description)
        return _tenant_view(record)

    @api.delete("/v1/tenants/{name}", status_code=204)
    async def remove_tenant(name: TenantPath, request: Request) -> Response:
        tenancy.remove_tenant(caller(request), name)
        return Response(status_code=204)

    @api.get("/v1/keys")
    async def list_keys(request: Request, revoked: bool = False) -> list[dict[str, Any]]:
        return [k.to_dict() for k in tenancy.list_keys(caller(request), revoked=revoked)]

    @api.post("/v1/keys", status_code=201)
    async def create_key(body: KeyCreate, request: Request) -> dict[str, Any]:
        made = tenancy.create_key(
            caller(request), Role(body.role), name=body.name, expires_in=body.expires_in
        )
        return {**made.record.to_dict(), "key": made.key}

    @api.delete("/v1/keys/{key_id}", status_code=204)
    async def revoke_key(
        key_id: Annotated[str, Path(min_length=1, max_length=64)], request: Request
    ) -> Response:
        tenancy.revoke_key(caller(request), key_id)
        return Response(status_code=204)

    @api.get("/v1/quotas/{tenant}")
    async def show_quota(tenant: TenantPath, request: Request) -> dict[str, Any]:
        return quota_view(tenant, tenancy.quota(caller(request), tenant))

    @api.put("/v1/quotas/{tenant}")
    async def set_quota(tenant: TenantPath, body: QuotaSet, request: Request) -> dict[str, Any]:
        limits = body.model_dump(exclude_unset=True)
        return quota_view(tenant, tenancy.set_quota(caller(request), tenant, limits))

    @api.get("/v1/usage", response_model=dict[str, Any])
    async def usage(
        request: Request,
        since: Time = None,
        until: Time = None,
        tenant: Annotated[
            str | None, Query(max_length=63, description="a tenant, or * for every tenant")
        ] = None,
    ) -> Response:
        report = await tenancy.usage(_in_tenant(caller(request), tenant), since or 0.0, until)
        # encoded in a worker thread too: 100,000 objects take ~0.5 s
        body = await asyncio.to_thread(lambda: json.dumps(report.to_dict()).encode())
        return Response(body, media_type="application/json")

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        """Usage and quotas of every tenant, in Prometheus' text format (operator only)."""
        text = tenancy.metrics(caller(request))
        return PlainTextResponse(text, media_type=prometheus.CONTENT_TYPE)

    return api


def _in_tenant(caller: Caller, tenant: str | None) -> Caller:
    """The caller acting in ``tenant`` (a query parameter; the policy says who may)."""
    if not tenant:
        return caller
    if tenant == EVERY_TENANT:
        return Caller(caller.principal, every=True)
    return Caller(caller.principal, tenant=tenant)


def _tenant_view(record: TenantRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "description": record.description,
        "source": record.source,
        "created_at": record.created_at,
    }
