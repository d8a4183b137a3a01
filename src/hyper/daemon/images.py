"""hyperd's image routes: pull, push, list, inspect, history, tag, remove, save, load, commit,
login and logout, each one call into :class:`hyper.service.images.ImageService`.

Image references contain slashes and colons, so the routes that name one take it as a path
suffix (``/v1/images/{reference}/json``), as docker's API does. A pull or a push answers with
an NDJSON stream: one progress line per layer change (throttled), then one last line that is
either ``{"result": {...}}`` or ``{"error": {"kind", "message"}}``, because a failure
after the first byte can no longer change the HTTP status. Archives travel as the request or
response body (the client's files are not the daemon's), through a temporary file in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from hyper import errors
from hyper.daemon.auth import caller_of
from hyper.daemon.schemas import CommitRequest, LoginRequest, LogoutRequest
from hyper.images.reference import parse
from hyper.registry.pull import Progress, ProgressCallback
from hyper.service.caller import Caller
from hyper.service.commit import commit_container
from hyper.service.core import Services
from hyper.service.events import Event

_log = logging.getLogger(__name__)
Reference = Annotated[str, Query(min_length=1, max_length=512)]
PROGRESS_INTERVAL = 0.1
"""Seconds between two progress lines of the same layer in the same state."""
MAX_ARCHIVE = 64 << 30
"""The largest archive ``load`` accepts."""


def router(services: Services) -> APIRouter:
    caller = caller_of(services)
    api = APIRouter(prefix="/v1")
    images = services.images

    def publish(tenant: str, action: str, reference: str, digest: str = "") -> None:
        attributes = {"digest": digest} if digest else {}
        event = Event("image", action, digest or reference, reference, attributes, tenant=tenant)
        services.events.publish(event)

    def writer(http: Request) -> tuple[Caller, str]:
        """The caller of a change, and its tenant (PermissionDenied here is a 403, before any
        stream starts)."""
        who = caller(http)
        return who, who.writes().single()

    @api.get("/images")
    async def list_images(http: Request) -> list[dict[str, Any]]:
        return await asyncio.to_thread(images.list, caller(http))

    @api.post("/images/pull")
    async def pull(reference: Reference, http: Request) -> StreamingResponse:
        ref = parse(reference)  # a bad reference is a 400, before the stream starts
        who, tenant = writer(http)

        def work(progress: ProgressCallback) -> dict[str, Any]:
            image = images.pull(who, reference, progress)
            return {"reference": ref.familiar, "digest": str(image.digest), "id": image.id}

        return _progress_stream(
            work, lambda r: publish(tenant, "pull", r["reference"], r["digest"])
        )

    @api.post("/images/{reference:path}/push")
    async def push(reference: str, http: Request) -> StreamingResponse:
        ref = parse(reference)
        who, tenant = writer(http)
        await asyncio.to_thread(images.resolve, who, reference)  # a 404, not a stream

        def work(progress: ProgressCallback) -> dict[str, Any]:
            result = images.push(who, reference, progress)
            return {"reference": ref.familiar, "digest": str(result.digest), "size": result.size}

        return _progress_stream(
            work, lambda r: publish(tenant, "push", r["reference"], r["digest"])
        )

    @api.get("/images/{reference:path}/json")
    async def inspect_image(reference: str, http: Request) -> dict[str, Any]:
        return await asyncio.to_thread(images.inspect, caller(http), reference)

    @api.get("/images/{reference:path}/history")
    async def image_history(reference: str, http: Request) -> list[dict[str, Any]]:
        return await asyncio.to_thread(images.history, caller(http), reference)

    @api.post("/images/{reference:path}/tag", status_code=201)
    async def tag_image(reference: str, target: Reference, http: Request) -> dict[str, str]:
        who, tenant = writer(http)
        image = await asyncio.to_thread(images.tag, who, reference, target)
        familiar = parse(target).familiar
        publish(tenant, "tag", familiar, str(image.digest))
        return {"reference": familiar, "digest": str(image.digest)}

    @api.delete("/images/{reference:path}")
    async def remove_image(
        reference: str, http: Request, force: bool = False
    ) -> list[dict[str, str]]:
        who, tenant = writer(http)
        result = await asyncio.to_thread(images.remove, who, reference, force)
        for item in result:
            for action, what in item.items():
                publish(tenant, "untag" if action == "Untagged" else "delete", what)
        return result

    @api.post("/images/prune")
    async def prune_images(http: Request) -> dict[str, int]:
        who, _ = writer(http)
        return await asyncio.to_thread(images.prune, who)

    @api.get("/images/save")
    async def save(
        http: Request,
        reference: Annotated[list[Annotated[str, Query(max_length=512)]], Query(max_length=64)],
        format: Annotated[str, Query(pattern="^(docker|oci)$")] = "docker",
    ) -> FileResponse:
        if not reference:
            raise errors.InvalidArgument("save needs at least one image")
        who = caller(http)
        who.reads()  # PermissionDenied before the body is read
        path = _temporary(images.store.tmp_dir, "save-", ".tar")
        try:
            await asyncio.to_thread(images.save, who, reference, path, format)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return FileResponse(
            path,
            media_type="application/x-tar",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    @api.post("/images/load")
    async def load(request: Request) -> dict[str, list[str]]:
        who, tenant = writer(request)  # PermissionDenied before the body is read
        path = _temporary(images.store.tmp_dir, "load-", ".tar")
        try:
            with path.open("wb") as file:
                size = 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_ARCHIVE:
                        raise errors.InvalidArgument(f"archive larger than {MAX_ARCHIVE} bytes")
                    file.write(chunk)
            if size == 0:
                raise errors.InvalidArgument("load needs an archive in the request body")
            loaded = await asyncio.to_thread(images.load, who, path)
        finally:
            path.unlink(missing_ok=True)
        for reference in loaded:
            publish(tenant, "load", reference)
        return {"loaded": loaded}

    @api.post("/commit", status_code=201)
    async def commit(request: CommitRequest, http: Request) -> dict[str, str]:
        who, tenant = writer(http)
        image = await commit_container(
            services.pods,
            images,
            request.container,
            caller=who,
            reference=request.reference or None,
            comment=request.comment,
            author=request.author,
            changes=request.changes,
        )
        publish(tenant, "commit", image.reference.familiar, str(image.digest))
        return {"id": image.id, "digest": str(image.digest), "reference": image.reference.familiar}

    @api.post("/auth/login")
    async def login(request: LoginRequest, http: Request) -> dict[str, str]:
        status = await asyncio.to_thread(
            images.login, caller(http), request.registry, request.username, request.password
        )
        return {"status": status}

    @api.post("/auth/logout")
    async def logout(request: LogoutRequest, http: Request) -> dict[str, bool]:
        return {"removed": await asyncio.to_thread(images.logout, caller(http), request.registry)}

    return api


def _temporary(directory: Path, prefix: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def _progress_stream(
    work: Callable[[ProgressCallback], dict[str, Any]],
    done: Callable[[dict[str, Any]], None],
) -> StreamingResponse:
    """Run ``work`` in a thread; stream its progress, then its result or its error, as NDJSON;
    ``done`` is told the result (on the event loop) before the client is.

    Progress comes from the download threads: it is throttled per layer and handed to the event
    loop. A client that goes away does not cancel the work (a pull finishes, like docker's).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    lock = threading.Lock()
    last: dict[str, tuple[str, float]] = {}

    def progress(item: Progress) -> None:
        now = time.monotonic()
        with lock:
            previous = last.get(item.id)
            if previous and previous[0] == item.status and now - previous[1] < PROGRESS_INTERVAL:
                return
            last[item.id] = (item.status, now)
        line = {"id": item.id, "status": item.status, "current": item.current, "total": item.total}
        loop.call_soon_threadsafe(queue.put_nowait, _line(line))

    async def run() -> None:
        try:
            result = await asyncio.to_thread(work, progress)
            done(result)
            queue.put_nowait(_line({"result": result}))
        except errors.HyperError as exc:
            queue.put_nowait(_line({"error": {"kind": type(exc).__name__, "message": str(exc)}}))
        except Exception as exc:
            _log.exception("image transfer failed")
            queue.put_nowait(_line({"error": {"kind": "Internal", "message": str(exc)}}))
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())

    async def lines() -> AsyncIterator[bytes]:
        while (line := await queue.get()) is not None:
            yield line
        with contextlib.suppress(Exception):
            await task

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"
