"""hyperd's VM template routes: each is one call into
:class:`~hyper.service.templates.TemplateService`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from hyper.daemon.auth import caller_of
from hyper.daemon.schemas import Strict
from hyper.model.pod import check_name, parse_memory
from hyper.service.core import Services


class TemplateBuild(Strict):
    """The shape to build a template for; absent fields take the configured defaults."""

    cpus: Annotated[int, Field(ge=1, le=255)] | None = None
    memory: Annotated[str, Field(max_length=32)] | None = None
    tenant: Annotated[str, Field(max_length=63)] = ""
    network: bool = True
    """Pods on a network (hyperd's, by default) have a NIC: another shape than pods without."""
    force: bool = False


Key = Annotated[str, Path(min_length=4, max_length=64, pattern="^[0-9a-f]+$")]


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/v1")
    templates = services.templates
    caller = caller_of(services)

    @api.get("/templates", tags=["templates"])
    async def list_templates(request: Request) -> list[dict[str, Any]]:
        """Every template: its shape, its files, whether running pods use it."""
        return await templates.inventory(caller(request))

    @api.post("/templates", status_code=201, tags=["templates"])
    async def build_template(body: TemplateBuild, request: Request) -> dict[str, Any]:
        """Build the template of a shape ahead of time (pods otherwise build it on first need)."""
        return await templates.build(
            caller(request),
            cpus=body.cpus,
            memory_mb=parse_memory(body.memory) if body.memory else None,
            tenant=check_name(body.tenant, "tenant") if body.tenant else "",
            nic=body.network,
            force=body.force,
        )

    @api.post("/templates/prune", tags=["templates"])
    async def prune_templates(request: Request) -> dict[str, list[str]]:
        """Remove every template that no pod uses."""
        return {"removed": await templates.prune(caller(request))}

    @api.delete("/templates/{key}", status_code=204, tags=["templates"])
    async def remove_template(key: Key, request: Request) -> Response:
        """Remove a template and its files (409 while a pod uses it)."""
        await templates.remove(caller(request), key)
        return Response(status_code=204)

    return api
