"""A process's stdio over a websocket: ``hyper attach``, ``hyper exec`` and attached runs.

Websockets because they carry both directions over one HTTP connection that uvicorn serves and
proxies pass, and Kubernetes made the same choice for exec and attach. Each binary message starts
with a channel byte, as Kubernetes' channel protocol does:

    client -> hyperd   0 stdin data (an empty one: end of stdin)
                       4 resize   {"rows": R, "cols": C}
                       5 signal   {"signal": N}
    hyperd -> client   1 stdout data, 2 stderr data
                       3 the end  {"exit_code": N, "signal": S} or {"kind": K, "message": M}

Flow control is the websocket's (TCP's): a client that stops reading stops the relay, which
stops granting credit to the pod, which stops the process's writes; nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from hyper import errors
from hyper.agent.client import Process
from hyper.agent.streams import OutputStream

_log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, END, RESIZE, SIGNAL = 0, 1, 2, 3, 4, 5
MAX_CONTROL = 4096

Resize = Callable[[int, int], Awaitable[None]]
Signal = Callable[[int], Awaitable[None]]


async def relay(
    ws: WebSocket, process: Process, *, resize: Resize, signal: Signal, detach_only: bool
) -> None:
    """Relay until the process ends (then send its status) or the client goes away.

    ``detach_only``: the client leaving must not end the process (attach); otherwise the
    process's stdin is closed when the client leaves (exec), as docker does."""
    send_lock = asyncio.Lock()

    async def send(channel: int, payload: bytes) -> None:
        async with send_lock:
            await ws.send_bytes(bytes([channel]) + payload)

    outputs = [
        asyncio.create_task(_pump(stream, channel, send))
        for stream, channel in ((process.stdout, STDOUT), (process.stderr, STDERR))
        if stream is not None
    ]
    inbound = asyncio.create_task(_inbound(ws, process, resize, signal))
    try:
        ended = asyncio.create_task(_outputs_then_exit(outputs, process))
        done, _ = await asyncio.wait({ended, inbound}, return_when=asyncio.FIRST_COMPLETED)
        if ended in done:
            try:
                exit_ = ended.result()
                end: dict[str, Any] = {"exit_code": exit_.status, "signal": exit_.signal}
            except errors.HyperError as exc:
                end = {"kind": type(exc).__name__, "message": str(exc)}
            except Exception:  # the client went away while output was being sent
                return
            with contextlib.suppress(Exception):
                await send(END, json.dumps(end).encode())
                await ws.close()
        else:
            ended.cancel()
            if not detach_only and process.stdin is not None:
                with contextlib.suppress(errors.HyperError):
                    await process.stdin.close()
    finally:
        inbound.cancel()
        for task in outputs:
            task.cancel()


async def _pump(
    stream: OutputStream, channel: int, send: Callable[[int, bytes], Awaitable[None]]
) -> None:
    while chunk := await stream.read():
        await send(channel, chunk)


async def _outputs_then_exit(outputs: list[asyncio.Task[None]], process: Process) -> Any:
    for task in outputs:
        with contextlib.suppress(errors.HyperError):
            await task  # all output reaches the client before the status does; a failed
            # send (the client left) propagates and ends the relay
    return await process.wait()


async def _inbound(ws: WebSocket, process: Process, resize: Resize, signal: Signal) -> None:
    stdin_open = process.stdin is not None
    try:
        while True:
            message = await ws.receive_bytes()
            if not message:
                continue
            channel, payload = message[0], message[1:]
            if channel == STDIN:
                if not stdin_open or process.stdin is None:
                    continue
                try:
                    if payload:
                        await process.stdin.write(payload)
                    else:
                        stdin_open = False
                        await process.stdin.close()
                except errors.HyperError as exc:  # the process is gone: its status follows
                    _log.debug("stdin of %s ended: %s", process.id, exc)
                    stdin_open = False
            elif channel in (RESIZE, SIGNAL) and len(payload) <= MAX_CONTROL:
                await _control(channel, payload, resize, signal)
    except (WebSocketDisconnect, RuntimeError, KeyError):
        return  # the client left (KeyError: a text frame where bytes were expected)


async def _control(channel: int, payload: bytes, resize: Resize, signal: Signal) -> None:
    try:
        data = json.loads(payload)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    with contextlib.suppress(errors.HyperError):
        if channel == RESIZE:
            rows, cols = data.get("rows"), data.get("cols")
            if (
                isinstance(rows, int)
                and isinstance(cols, int)
                and 0 < rows < 65536
                and 0 < cols < 65536
            ):
                await resize(rows, cols)
        else:
            number = data.get("signal")
            if isinstance(number, int) and 0 < number < 65:
                await signal(number)
