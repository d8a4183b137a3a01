"""hyperd's network and floating IP routes: each one call into
:class:`hyper.service.networks.NetworkService` on behalf of the request's caller
(:func:`hyper.daemon.auth.caller_of`), which decides what the caller may see and change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from hyper.daemon.auth import caller_of
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

    caller = caller_of(services)

    @api.post("/networks", status_code=201)
    async def create_network(body: NetworkCreate, request: Request) -> dict[str, Any]:
        who = caller(request)
        record = await networks.create(who, body.name, subnet=body.subnet, nat=body.nat)
        return networks.inspect(who, record.id)

    @api.get("/networks")
    async def list_networks(request: Request) -> list[dict[str, Any]]:
        return networks.networks(caller(request))

    @api.get("/networks/{ref}")
    async def inspect_network(ref: Name, request: Request) -> dict[str, Any]:
        return networks.inspect(caller(request), ref)

    @api.delete("/networks/{ref}", status_code=204)
    async def remove_network(ref: Name, request: Request) -> Response:
        await networks.remove(caller(request), ref)
        return Response(status_code=204)

    @api.post("/fips", status_code=201)
    async def allocate_fip(request: Request) -> dict[str, Any]:
        who = caller(request)
        record = await networks.fip_allocate(who)
        return networks.fip(who, record.address)

    @api.get("/fips")
    async def list_fips(request: Request) -> list[dict[str, Any]]:
        return networks.fips(caller(request))

    @api.post("/fips/{address}/associate")
    async def associate_fip(
        address: Address, body: FipAssociate, request: Request
    ) -> dict[str, Any]:
        who = caller(request)
        pod, _ = services.pods.container(who.writes(), body.container)  # the caller's only
        await networks.fip_associate(who, address, pod)
        return networks.fip(who, address)

    @api.post("/fips/{address}/disassociate")
    async def disassociate_fip(address: Address, request: Request) -> dict[str, Any]:
        who = caller(request)
        await networks.fip_disassociate(who, address)
        return networks.fip(who, address)

    @api.delete("/fips/{address}", status_code=204)
    async def release_fip(address: Address, request: Request) -> Response:
        await networks.fip_release(caller(request), address)
        return Response(status_code=204)

    return api
