"""hyperd's REST API (version 1): FastAPI routes over the service layer, nothing more.

FastAPI (on Starlette and uvicorn) because it gives request validation and the OpenAPI document
from the same typed code (``docs/api/openapi.json`` is generated from it and checked in CI), async
handlers that stay responsive while pods boot, and websockets for stdio. Every handler translates
HTTP into one service call; errors map to statuses by kind (:mod:`hyper.daemon.status`) with a
body ``{"kind": ..., "message": ...}`` the CLI turns back into the same error and exit code.
"""

from __future__ import annotations

import asyncio
import json
import platform
import signal as signals
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from hyper import __version__, errors
from hyper.daemon import images, networks, relay, templates, tenancy, views, volumes
from hyper.daemon.auth import caller_of
from hyper.daemon.schemas import ContainerCreate, Created, ExecConfig, PodCreate
from hyper.daemon.status import error_response
from hyper.model.mount import parse_mounts
from hyper.model.pod import (
    ContainerSpec,
    PodSpec,
    check_name,
    parse_link,
    parse_memory,
    pod_from_dict,
)
from hyper.model.ports import PortMap
from hyper.model.restart import RestartPolicy
from hyper.service.core import Services
from hyper.shim.logs import LogEntry
from hyper.state.db import ACTIVE, ContainerRecord, PodRecord

API_VERSION = "1"
Ref = Annotated[str, Query(max_length=256)]
Filters = Annotated[list[Annotated[str, Query(max_length=512)]], Query(alias="filter")]


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="hyperd",
        version=__version__,
        description="Pods and containers, each pod in its own micro-VM.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    pods = services.pods
    caller = caller_of(services)
    app.include_router(images.router(services))
    app.include_router(volumes.router(services))
    app.include_router(networks.router(services))
    app.include_router(templates.router(services))
    app.include_router(tenancy.router(services))

    @app.exception_handler(errors.HyperError)
    async def _hyper_error(request: Request, exc: errors.HyperError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"kind": "InvalidArgument", "message": str(exc)}, status_code=400)

    # ------------------------------------------------------------ system

    @app.get("/v1/_ping")
    async def ping() -> dict[str, str]:
        return {"api_version": API_VERSION}

    @app.get("/v1/version")
    async def version() -> dict[str, Any]:
        return {
            "version": __version__,
            "api_version": API_VERSION,
            "python": platform.python_version(),
            "kernel": platform.release(),
            "arch": platform.machine(),
        }

    @app.get("/v1/info")
    async def info(http: Request) -> dict[str, Any]:
        return await services.info(caller(http).reads())

    @app.get("/v1/events")
    async def events(
        http: Request,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        filters: Filters = [],  # noqa: B006 (FastAPI reads, never mutates, the default)
    ) -> StreamingResponse:
        for item in filters:
            if item.partition("=")[0] not in ("type", "action", "name", "id") or "=" not in item:
                raise errors.InvalidArgument(f"bad filter {item!r}: use type=, action=, name=, id=")

        scope = caller(http).reads()

        async def lines() -> AsyncIterator[bytes]:
            async for event in services.events.subscribe(since=since, until=until):
                if not scope.sees(event.tenant):
                    continue
                data = event.to_dict()
                if all(_event_match(data, item) for item in filters):
                    yield json.dumps(data).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # ------------------------------------------------------------ containers

    @app.post("/v1/containers", status_code=201)
    async def create_container(request: ContainerCreate, http: Request) -> Created:
        who = caller(http)
        name = request.name or services.new_name(who)
        check_name(name, "container name")
        spec = PodSpec(
            name=name,
            hostname=request.hostname,
            cpus=request.cpus or 0,
            memory_mb=parse_memory(request.memory) if request.memory else 0,
            containers=(
                ContainerSpec(
                    name=name,
                    image=request.image,
                    command=tuple(request.command) if request.command is not None else None,
                    entrypoint=(
                        tuple(request.entrypoint) if request.entrypoint is not None else None
                    ),
                    env=tuple(request.env),
                    workdir=request.workdir,
                    user=request.user,
                    tty=request.tty,
                    stdin=request.stdin,
                    volumes=parse_mounts(request.volumes),
                ),
            ),
            network=request.network,
            ports=tuple(PortMap.parse(p) for p in request.ports),
            links=tuple(parse_link(link) for link in request.links),
        )
        pod = await pods.create(
            spec,
            restart=RestartPolicy.parse(request.restart),
            labels=request.labels,
            auto_remove=request.auto_remove,
            caller=who,
        )
        return Created(id=pod.containers[0].id, name=pod.containers[0].name)

    @app.get("/v1/containers")
    async def list_containers(
        http: Request,
        all: bool = False,
        filters: Filters = [],  # noqa: B006
    ) -> list[dict[str, Any]]:
        views.check_filters(filters)
        found = []
        for pod in pods.pods(caller(http).reads()):
            for record in pod.containers:
                view = views.container(pod, record)
                if (all or view["running"] or view["state"] == "starting") and views.matches(
                    view, filters
                ):
                    found.append(view)
        return found

    @app.get("/v1/containers/{ref}")
    async def inspect_container(ref: str, http: Request) -> dict[str, Any]:
        return views.container(*pods.container(caller(http).reads(), ref))

    @app.post("/v1/containers/{ref}/start", status_code=204)
    async def start_container(
        ref: str,
        http: Request,
        rows: Annotated[int, Query(ge=1, le=65535)] = 24,
        cols: Annotated[int, Query(ge=1, le=65535)] = 80,
    ) -> Response:
        pod = _single(*pods.container(caller(http).writes(), ref), "start")
        await pods.start(pod.id, console=(rows, cols))
        return Response(status_code=204)

    @app.post("/v1/containers/{ref}/stop", status_code=204)
    async def stop_container(ref: str, http: Request, timeout: _Timeout = None) -> Response:
        pod = _single(*pods.container(caller(http).writes(), ref), "stop")
        await pods.stop(pod.id, timeout)
        return Response(status_code=204)

    @app.post("/v1/containers/{ref}/restart", status_code=204)
    async def restart_container(ref: str, http: Request, timeout: _Timeout = None) -> Response:
        pod = _single(*pods.container(caller(http).writes(), ref), "restart")
        await pods.restart(pod.id, timeout)
        return Response(status_code=204)

    @app.post("/v1/containers/{ref}/kill", status_code=204)
    async def kill_container(
        ref: str, http: Request, signal: Annotated[str, Query(max_length=16)] = "KILL"
    ) -> Response:
        pod, record = pods.container(caller(http).writes(), ref)
        number = parse_signal(signal)
        if len(pod.containers) == 1:
            await pods.kill(pod.id, number)
        else:
            await pods.signal_container(pod, record, number)
        return Response(status_code=204)

    @app.delete("/v1/containers/{ref}", status_code=204)
    async def remove_container(ref: str, http: Request, force: bool = False) -> Response:
        pod = _single(*pods.container(caller(http).writes(), ref), "rm")
        await pods.remove(pod.id, force=force)
        return Response(status_code=204)

    @app.post("/v1/containers/{ref}/wait")
    async def wait_container(
        ref: str, http: Request, condition: Annotated[str, Query(max_length=16)] = "not-running"
    ) -> dict[str, Any]:
        _, record = pods.container(caller(http).reads(), ref)
        done = await pods.wait(record.id, condition)
        return {"exit_code": done.exit_code, "error": done.error, "state": done.state}

    @app.get("/v1/containers/{ref}/logs")
    async def container_logs(
        ref: str,
        http: Request,
        follow: bool = False,
        tail: Annotated[int | None, Query(ge=0, le=1 << 24)] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    ) -> StreamingResponse:
        _, record = pods.container(caller(http).reads(), ref)

        async def lines() -> AsyncIterator[bytes]:
            if follow:
                async for entry in pods.follow_logs(record, tail=tail, since=since):
                    yield _log_line(entry) + b"\n"
            else:
                entries = await asyncio.to_thread(
                    pods.logs, record, tail=tail, since=since, until=until
                )
                for entry in entries:
                    yield _log_line(entry) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/containers/{ref}/stats")
    async def container_stats(ref: str, http: Request) -> dict[str, Any]:
        pod, record = pods.container(caller(http).reads(), ref)
        stats = await pods.stats(pod)
        return {"id": record.id, "name": record.name, "time": time.time(), **stats}

    @app.get("/v1/containers/{ref}/top")
    async def container_top(ref: str, http: Request) -> dict[str, Any]:
        pod, record = pods.container(caller(http).reads(), ref)
        return {"processes": await pods.processes(pod, record)}

    @app.websocket("/v1/containers/{ref}/attach")
    async def attach(
        ws: WebSocket,
        ref: str,
        stdin: bool = False,
        start: bool = False,
        rows: Annotated[int, Query(ge=1, le=65535)] = 24,
        cols: Annotated[int, Query(ge=1, le=65535)] = 80,
    ) -> None:
        """Attach to a container's main process; with ``start``, start it first (``hyper
        run``, ``hyper start -a``). The output since the start of the current run comes first,
        so nothing printed before the attach is lost; and a run that ended before the attach
        still gives its output (from the logs) and its status."""
        await ws.accept()
        try:
            who = caller(ws)
            scope = who.writes() if stdin or start else who.reads()
            pod, record = pods.container(scope, ref)
            if start:
                _single(pod, record, "start")
        except errors.HyperError as exc:
            await _refuse(ws, exc)
            return
        async with pods.pinned(pod.id):
            try:
                if start:
                    await pods.start(pod.id, console=(rows, cols))
                pod, record = pods.container(scope, record.id)
                process = await pods.attach(pod, record, stdin=stdin, replay=True)
            except errors.FailedPrecondition as exc:
                if pod.started_at is None:  # never started: nothing to replay
                    await _refuse(ws, exc)
                    return
                entries, done = await pods.ended_run(record.id, since=pod.started_at)
                for entry in entries:
                    channel = relay.STDERR if entry.stream == "stderr" else relay.STDOUT
                    await ws.send_bytes(bytes([channel]) + entry.log.encode())
                await _end(ws, done)
                return
            except errors.HyperError as exc:
                await _refuse(ws, exc)
                return

            async def resize(rows: int, cols: int) -> None:
                await pods.resize(pod, record.local_name, rows, cols)

            async def signal(number: int) -> None:
                await pods.signal_container(pod, record, number)

            await relay.relay(ws, process, resize=resize, signal=signal, detach_only=True)

    @app.websocket("/v1/containers/{ref}/exec")
    async def exec_(ws: WebSocket, ref: str) -> None:
        await ws.accept()
        try:
            first = await ws.receive_text()
            if len(first) > 1 << 20:
                raise errors.InvalidArgument("the exec configuration is too large")
            config = ExecConfig.model_validate_json(first)
            pod, record = pods.container(caller(ws).writes(), ref)
            process = await pods.exec(
                pod,
                record,
                config.cmd,
                env=config.env,
                workdir=config.workdir,
                user=config.user,
                tty=config.tty,
                stdin=config.stdin,
                rows=config.rows,
                cols=config.cols,
            )
        except ValidationError as exc:
            await _refuse(ws, errors.InvalidArgument(str(exc)))
            return
        except errors.HyperError as exc:
            await _refuse(ws, exc)
            return
        except Exception:
            await ws.close()
            return

        async def resize(rows: int, cols: int) -> None:
            await pods.resize(pod, process.id, rows, cols)

        async def signal(number: int) -> None:
            await pods.signal_process(pod, process.id, number)

        await relay.relay(ws, process, resize=resize, signal=signal, detach_only=False)

    # ------------------------------------------------------------ pods

    @app.post("/v1/pods", status_code=201)
    async def create_pod(request: Annotated[PodCreate, Body()], http: Request) -> Created:
        who = caller(http)
        spec = pod_from_dict(request.spec, services.new_name(who))
        pod = await pods.create(
            spec,
            restart=RestartPolicy.parse(request.restart),
            labels=request.labels,
            auto_remove=request.auto_remove,
            caller=who,
        )
        return Created(id=pod.id, name=pod.name)

    @app.get("/v1/pods")
    async def list_pods(
        http: Request,
        all: bool = False,
        filters: Filters = [],  # noqa: B006
    ) -> list[dict[str, Any]]:
        views.check_filters(filters)
        found = []
        for pod in pods.pods(caller(http).reads()):
            view = views.pod(pod)
            if (all or pod.state in ACTIVE) and views.matches({**view, "pod": None}, filters):
                found.append(view)
        return found

    @app.get("/v1/pods/{ref}")
    async def inspect_pod(ref: str, http: Request) -> dict[str, Any]:
        return views.pod(pods.pod(caller(http).reads(), ref))

    @app.post("/v1/pods/{ref}/start", status_code=204)
    async def start_pod(ref: str, http: Request) -> Response:
        await pods.start(pods.pod(caller(http).writes(), ref).id)
        return Response(status_code=204)

    @app.post("/v1/pods/{ref}/stop", status_code=204)
    async def stop_pod(ref: str, http: Request, timeout: _Timeout = None) -> Response:
        await pods.stop(pods.pod(caller(http).writes(), ref).id, timeout)
        return Response(status_code=204)

    @app.post("/v1/pods/{ref}/restart", status_code=204)
    async def restart_pod(ref: str, http: Request, timeout: _Timeout = None) -> Response:
        await pods.restart(pods.pod(caller(http).writes(), ref).id, timeout)
        return Response(status_code=204)

    @app.post("/v1/pods/{ref}/kill", status_code=204)
    async def kill_pod(
        ref: str, http: Request, signal: Annotated[str, Query(max_length=16)] = "KILL"
    ) -> Response:
        await pods.kill(pods.pod(caller(http).writes(), ref).id, parse_signal(signal))
        return Response(status_code=204)

    @app.delete("/v1/pods/{ref}", status_code=204)
    async def remove_pod(ref: str, http: Request, force: bool = False) -> Response:
        await pods.remove(pods.pod(caller(http).writes(), ref).id, force=force)
        return Response(status_code=204)

    return app


_Timeout = Annotated[float | None, Query(ge=0, le=3600)]


def parse_signal(value: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL``."""
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        member = getattr(signals.Signals, name, None) if name.isidentifier() else None
        if not isinstance(member, signals.Signals):
            raise errors.InvalidArgument(f"unknown signal {value!r}")
        number = int(member)
    if not 1 <= number <= 64:
        raise errors.InvalidArgument(f"signal {value!r} is out of range")
    return number


def _log_line(entry: LogEntry) -> bytes:
    return (
        json.dumps({"stream": entry.stream, "time": entry.time, "log": entry.log}).encode() + b"\n"
    )


def _single(pod: PodRecord, record: ContainerRecord, verb: str) -> PodRecord:
    if len(pod.containers) != 1:
        raise errors.FailedPrecondition(
            f"container {record.name} is one of the {len(pod.containers)} containers of pod "
            f"{pod.name}: use `hyper pod {verb} {pod.name}`"
        )
    return pod


def _event_match(event: dict[str, Any], item: str) -> bool:
    key, _, value = item.partition("=")
    return str(event.get(key)) == value


async def _end(ws: WebSocket, done: ContainerRecord) -> None:
    """The status of a run that has ended, then the end of the stream."""
    if done.exit_code is None and done.error:
        end: dict[str, Any] = {"kind": "Unavailable", "message": done.error}
    else:
        end = {"exit_code": 255 if done.exit_code is None else done.exit_code, "signal": 0}
    await ws.send_bytes(bytes([relay.END]) + json.dumps(end).encode())
    await ws.close()


async def _refuse(ws: WebSocket, exc: errors.HyperError) -> None:
    end = {"kind": type(exc).__name__, "message": str(exc)}
    await ws.send_bytes(bytes([relay.END]) + json.dumps(end).encode())
    await ws.close()
