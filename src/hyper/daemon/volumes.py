"""hyperd's volume and snapshot routes, each one call into
:class:`hyper.service.volumes.VolumeService` on behalf of the request's caller
(:func:`hyper.daemon.auth.caller_of`), which decides what the caller may see and change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from hyper.daemon.auth import caller_of
from hyper.daemon.schemas import Strict
from hyper.service.core import Services
from hyper.state.volumes import SnapshotRecord, VolumeRecord

Name = Annotated[str, Field(min_length=1, max_length=63)]


class VolumeCreate(Strict):
    """A new volume: empty (``size``, default 1G) or a copy of a snapshot."""

    name: Name | None = None
    size: Annotated[str, Field(max_length=32)] | None = None
    from_snapshot: Annotated[str, Field(max_length=256)] | None = None


class SnapshotCreate(Strict):
    volume: Annotated[str, Field(min_length=1, max_length=256)]
    name: Name | None = None


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/v1")
    volumes = services.volumes
    caller = caller_of(services)

    async def volume_view(record: VolumeRecord, *, detail: bool = False) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": record.id,
            "name": record.name,
            "tenant": record.tenant,
            "driver": record.driver,
            "size": record.size,
            "anonymous": bool(record.owner_pod),
            "source_snapshot": record.source_snapshot,
            "created": record.created_at,
            "users": volumes.users(record),
        }
        if detail:
            view["allocated"] = await volumes.allocated(record)
            view["snapshots"] = [s.name for s in volumes.snapshots_of(record)]
        return view

    def snapshot_view(record: SnapshotRecord) -> dict[str, Any]:
        volume = volumes.volume_of(record)
        return {
            "id": record.id,
            "name": record.name,
            "tenant": record.tenant,
            "volume": volume.name if volume else "",
            "volume_id": record.volume_id,
            "size": record.size,
            "consistency": record.consistency,
            "created": record.created_at,
        }

    @api.post("/volumes", status_code=201)
    async def create_volume(body: VolumeCreate, request: Request) -> dict[str, Any]:
        record = await volumes.create(
            caller(request), name=body.name, size=body.size, from_snapshot=body.from_snapshot
        )
        return await volume_view(record)

    @api.get("/volumes")
    async def list_volumes(request: Request) -> list[dict[str, Any]]:
        return [await volume_view(v) for v in volumes.volumes(caller(request))]

    @api.get("/volumes/{ref}")
    async def inspect_volume(ref: str, request: Request) -> dict[str, Any]:
        return await volume_view(volumes.volume(caller(request), ref), detail=True)

    @api.delete("/volumes/{ref}", status_code=204)
    async def remove_volume(ref: str, request: Request) -> Response:
        await volumes.remove(caller(request), ref)
        return Response(status_code=204)

    @api.post("/snapshots", status_code=201)
    async def create_snapshot(body: SnapshotCreate, request: Request) -> dict[str, Any]:
        record = await volumes.create_snapshot(caller(request), body.volume, name=body.name)
        return snapshot_view(record)

    @api.get("/snapshots")
    async def list_snapshots(
        request: Request, volume: Annotated[str | None, Query(max_length=256)] = None
    ) -> list[dict[str, Any]]:
        return [snapshot_view(s) for s in volumes.snapshots(caller(request), volume)]

    @api.get("/snapshots/{ref}")
    async def inspect_snapshot(ref: str, request: Request) -> dict[str, Any]:
        return snapshot_view(volumes.snapshot(caller(request), ref))

    @api.delete("/snapshots/{ref}", status_code=204)
    async def remove_snapshot(ref: str, request: Request) -> Response:
        await volumes.remove_snapshot(caller(request), ref)
        return Response(status_code=204)

    return api
