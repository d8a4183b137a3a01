"""hyperd's network and floating IP routes: each one call into
:class:`hyper.service.networks.NetworkService` for the request's tenant
(:func:`hyper.daemon.caller.caller`: today the default tenant, or the operator's interim
``X-Hyper-Tenant`` header)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from hyper.daemon.caller import caller
from hyper.daemon.schemas import Strict
from hyper.service.core import Services

Name = Annotated[str, Field(min_length=1, max_length=63)]
Address = Annotated[str, Field(min_length=7, max_length=15)]


class NetworkCreate(Strict):
    name: Name
    subnet: Annotated[str, Field(max_length=18)] = ""
    """IPv4 CIDR, private space, /8 to /29; empty: the next free one of the configured pool."""
    nat: bool = True
    """Outbound traffic is masqueraded to the uplink; false: the network reaches no outside."""


class FipAssociate(Strict):
    container: Annotated[str, Field(min_length=1, max_length=256)]


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/v1")
    networks = services.networks

    def tenant(request: Request) -> str:
        return caller(request).tenant

    @api.post("/networks", status_code=201)
    async def create_network(body: NetworkCreate, request: Request) -> dict[str, Any]:
        record = await networks.create(tenant(request), body.name, subnet=body.subnet, nat=body.nat)
        return networks.inspect(record.tenant, record.id)

    @api.get("/networks")
    async def list_networks(request: Request) -> list[dict[str, Any]]:
        return networks.networks(tenant(request))

    @api.get("/networks/{ref}")
    async def inspect_network(ref: Name, request: Request) -> dict[str, Any]:
        return networks.inspect(tenant(request), ref)

    @api.delete("/networks/{ref}", status_code=204)
    async def remove_network(ref: Name, request: Request) -> Response:
        await networks.remove(tenant(request), ref)
        return Response(status_code=204)

    @api.post("/fips", status_code=201)
    async def allocate_fip(request: Request) -> dict[str, Any]:
        record = await networks.fip_allocate(tenant(request))
        return {"address": record.address, "tenant": record.tenant, "container": ""}

    @api.get("/fips")
    async def list_fips(request: Request) -> list[dict[str, Any]]:
        return networks.fips(tenant(request))

    @api.post("/fips/{address}/associate")
    async def associate_fip(
        address: Address, body: FipAssociate, request: Request
    ) -> dict[str, Any]:
        pod, _ = services.pods.container(body.container)
        await networks.fip_associate(tenant(request), address, pod)
        return next(f for f in networks.fips(tenant(request)) if f["address"] == address)

    @api.post("/fips/{address}/disassociate")
    async def disassociate_fip(address: Address, request: Request) -> dict[str, Any]:
        await networks.fip_disassociate(tenant(request), address)
        return next(f for f in networks.fips(tenant(request)) if f["address"] == address)

    @api.delete("/fips/{address}", status_code=204)
    async def release_fip(address: Address, request: Request) -> Response:
        await networks.fip_release(tenant(request), address)
        return Response(status_code=204)

    return api
