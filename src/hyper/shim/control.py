"""A pod's control socket: the agent protocol, served by the process that owns the pod.

``hyper exec`` and ``hyper attach``-like clients connect to ``<pod dir>/control.sock`` and speak
exactly the protocol hyperstart speaks (:mod:`hyper.proto`), so the same
:class:`~hyper.agent.client.AgentClient` drives a guest or a pod. The server relays each request
to the pod, and each stdio stream between the client and the guest with flow control on both
legs: a slow client slows the process in the guest, never the owner's memory.

The socket is root-only (mode 0600 in a 0700 directory). Containers are named by their name in
the pod; a client's process ids are its own and are mapped to unique ids in the guest.

When the server belongs to a pod's supervisor (:mod:`hyper.shim.supervisor`, its ``owner``) it
also has the operations of :mod:`hyper.shim.ops`: ``status``, ``attach``, ``stop``, ``kill``;
``processes`` and ``export`` are relayed to the pod. A client that goes away takes only its own
requests and streams with it: never a container's stdin, never another client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from hyper import __version__, errors
from hyper.agent.client import Process
from hyper.agent.streams import InputStream, OutputStream
from hyper.proto import flow, frames, messages
from hyper.sandbox.pod import Pod
from hyper.shim import ops
from hyper.shim.output import ClientStream, RunOutput, Subscriber

_log = logging.getLogger(__name__)


class Owner(Protocol):
    """What the supervisor of a pod offers its control socket beyond the pod itself."""

    async def status(self, after: int) -> dict[str, Any]: ...

    def attach_target(self, container: str) -> tuple[RunOutput, Process]:
        """The output and process of the container's current run; FailedPrecondition if it
        is not running."""
        ...

    async def stop(self, timeout: float | None) -> None: ...

    async def kill(self, signal: int) -> None: ...


class ControlServer:
    def __init__(self, pod: Pod, path: Path, *, owner: Owner | None = None) -> None:
        self.pod = pod
        self.path = path
        self.owner = owner
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=os.fspath(self.path))
        os.chmod(self.path, 0o600)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def close(self, grace: float = 0.0) -> None:
        """Stop serving; with a ``grace``, first let what is under way (answers, the ends of
        streams, exit events) go out for at most that long."""
        self.stop_accepting()
        if grace > 0:
            pending = {t for session in self._sessions for t in session.pending}
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for session in list(self._sessions):
            session.close()
        if grace > 0:
            for session in list(self._sessions):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.flush(), grace)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self.pod, reader, writer, self.owner)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class _Session:
    """One client connection: the agent side of the protocol, relayed to the pod."""

    def __init__(
        self,
        pod: Pod,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        owner: Owner | None = None,
    ) -> None:
        self.pod = pod
        self.owner = owner
        self._reader = reader
        self._writer = writer
        self._decoder = frames.Decoder()
        self._window = flow.DEFAULT_WINDOW
        self._ready = False
        self._write_lock = asyncio.Lock()
        self._tag = secrets.token_hex(3)
        self._processes: dict[str, Process] = {}  # client's process id -> guest process
        self._inputs: dict[int, _InputRelay] = {}  # client's stdin stream -> relay
        self._outputs: dict[int, InputStream] = {}  # client's output stream -> our credit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribers: set[Subscriber] = set()
        self._answers: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> set[asyncio.Task[Any]]:
        """Answers not sent yet, and attached clients' streams not ended yet."""
        return self._answers | {s.task for s in self._subscribers}

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def run(self) -> None:
        try:
            await self._send_msg(
                messages.encode_event(
                    "ready",
                    messages.Ready(messages.SUPPORTED_VERSIONS, f"hyper {__version__}").to_wire(),
                )
            )
            while data := await self._reader.read(64 * 1024):
                for frame in self._decoder.feed(data):
                    await self._dispatch(frame)
        except errors.ProtocolError as exc:
            _log.info("dropping a control client: %s", exc)
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for subscriber in list(self._subscribers):
            subscriber.detach()
        self._writer.close()

    async def _send(self, data: bytes) -> None:
        async with self._write_lock:
            self._writer.write(data)
            await self._writer.drain()

    async def _send_msg(self, payload: bytes) -> None:
        await self._send(frames.encode(frames.MSG, 0, payload))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(self, frame: frames.Frame) -> None:
        if frame.kind == frames.DATA:
            relay = self._inputs.get(frame.stream)
            if relay is None:
                raise errors.ProtocolError(f"data on unknown stream {frame.stream}")
            relay.feed(frame.payload)
            if not frame.payload:
                del self._inputs[frame.stream]
        elif frame.kind == frames.WINDOW:
            target = self._outputs.get(frame.stream)
            if target is not None:
                target.grant(frames.decode_window(frame))
        else:
            message = messages.parse(frame.payload)
            if not isinstance(message, messages.Request):
                raise errors.ProtocolError("a control client may only send requests")
            answer = self._spawn(self._answer(message))
            self._answers.add(answer)
            answer.add_done_callback(self._answers.discard)

    async def _answer(self, request: messages.Request) -> None:
        try:
            result = await self._handle(request)
        except errors.ProtocolError as exc:
            payload = messages.encode_error(request.id, "InvalidArgument", str(exc))
        except errors.HyperError as exc:
            payload = messages.encode_error(request.id, type(exc).__name__, str(exc))
        else:
            payload = messages.encode_result(request.id, result)
        with contextlib.suppress(ConnectionError, OSError):
            await self._send_msg(payload)

    async def _handle(self, request: messages.Request) -> dict[str, Any]:
        op, args = request.op, request.args
        if op == "hello":
            hello = messages.Hello.from_wire(args)
            if hello.version not in messages.SUPPORTED_VERSIONS:
                raise errors.InvalidArgument(f"unsupported protocol version {hello.version}")
            self._window, self._ready = hello.window, True
            agent = self.pod.agent.hello
            return messages.HelloResult(
                hello.version, f"hyper {__version__}", agent.kernel if agent else ""
            ).to_wire()
        if not self._ready:
            raise errors.FailedPrecondition("say hello first")
        if op == "ping":
            return {}
        if op == "exec":
            return await self._exec(messages.Exec.from_wire(args))
        if op == "signal":
            sig = messages.Signal.from_wire(args)
            await self.pod.signal(self._guest_process(sig.process), sig.signal)
            return {}
        if op == "resize":
            size = messages.Resize.from_wire(args)
            await self.pod.resize(self._guest_process(size.process), size.rows, size.cols)
            return {}
        if op == "stats":
            return (await self.pod.agent.stats()).to_wire()
        if op == "processes":
            query = ops.ContainerQuery.from_wire(args)
            return {"processes": await self.pod.processes(query.container)}
        if op == "export":
            return await self._export(ops.Export.from_wire(args))
        if op == "volume_snapshot":
            snap = ops.VolumeSnapshot.from_wire(args)
            if snap.action == "delete":
                await self.pod.delete_volume_snapshot(snap.disk, snap.name)
                return {}
            consistency = await self.pod.snapshot_volume(snap.disk, snap.name, freeze=snap.freeze)
            return {"consistency": consistency}
        if self.owner is not None:
            if op == "status":
                return await self.owner.status(ops.StatusQuery.from_wire(args).after)
            if op == "attach":
                return self._attach(ops.Attach.from_wire(args))
            if op == "stop":
                await self.owner.stop(ops.Stop.from_wire(args).timeout)
                return {}
            if op == "kill":
                await self.owner.kill(ops.Kill.from_wire(args).signal)
                return {}
        raise errors.InvalidArgument(f"unknown operation {op!r}")

    def _guest_process(self, client_id: str) -> str:
        process = self._processes.get(client_id)
        if process is not None:
            return process.id
        container = self.pod.containers.get(client_id)
        if container is not None and container.process is not None:
            return container.process.id  # a container's main process, by its name
        raise errors.NotFound(f"no process {client_id}")

    async def _exec(self, request: messages.Exec) -> dict[str, Any]:
        if request.process in self._processes:
            raise errors.AlreadyExists(f"process {request.process} exists already")
        process = await self.pod.exec(
            request.container,
            request.argv,
            env=request.env,
            workdir=request.cwd if request.cwd != "/" else "",
            user=request.user,
            tty=request.tty,
            stdin=bool(request.stdin),
            rows=request.rows,
            cols=request.cols,
        )
        self._processes[request.process] = process
        if request.stdin and process.stdin is not None:
            self._inputs[request.stdin] = _InputRelay(
                request.stdin, self._window, process.stdin, self._send, self._spawn
            )
        outputs = []
        for client_stream, source in (
            (request.stdout, process.stdout),
            (request.stderr, process.stderr),
        ):
            if client_stream and source is not None:
                credit = InputStream(client_stream, self._window, self._send)
                self._outputs[client_stream] = credit
                outputs.append(self._pump(source, credit))
            elif source is not None:
                outputs.append(_drain(source))
        self._spawn(self._finish(request.process, process, outputs))
        return messages.ExecResult(process.pid).to_wire()

    def _attach(self, request: ops.Attach) -> dict[str, Any]:
        assert self.owner is not None
        output, process = self.owner.attach_target(request.container)
        tty = self.pod.containers[request.container].spec.tty
        if request.stdin:
            self._inputs[request.stdin] = _InputRelay(
                request.stdin, self._window, process.stdin, self._send, self._spawn
            )
        sinks: dict[str, ClientStream] = {}
        for name, client_stream in (("stdout", request.stdout), ("stderr", request.stderr)):
            if client_stream:
                sinks[name] = ClientStream(client_stream, self._window, self._send)
                self._outputs[client_stream] = sinks[name]

        async def on_exit(exit_: messages.Exit) -> None:
            for sink in sinks.values():
                self._outputs.pop(sink.stream, None)
            await self._send_msg(
                messages.encode_event(
                    "exit", messages.Exit(request.process, exit_.status, exit_.signal).to_wire()
                )
            )

        subscriber = output.subscribe(sinks, on_exit, replay=request.replay)
        self._subscribers.add(subscriber)
        subscriber.task.add_done_callback(lambda _: self._subscribers.discard(subscriber))
        return {"tty": tty}

    async def _export(self, request: ops.Export) -> dict[str, Any]:
        process = await self.pod.export_changes(request.container)
        outputs = []
        if process.stdout is not None:
            credit = InputStream(request.stdout, self._window, self._send)
            self._outputs[request.stdout] = credit
            outputs.append(self._pump(process.stdout, credit))
        if process.stderr is not None:
            outputs.append(_drain(process.stderr))
        self._spawn(self._finish(request.process, process, outputs))
        return {}

    async def _pump(self, source: OutputStream, sink: InputStream) -> None:
        while chunk := await source.read():
            await sink.write(chunk)
        await sink.close()
        self._outputs.pop(sink.stream, None)

    async def _finish(self, client_id: str, process: Process, outputs: list[Any]) -> None:
        try:
            await asyncio.gather(*outputs)
            exit_ = await process.wait()
        except errors.HyperError as exc:
            _log.info("process %s of a control client failed: %s", client_id, exc)
            exit_ = messages.Exit(process.id, 255, 0)
        finally:
            self._processes.pop(client_id, None)
        await self._send_msg(
            messages.encode_event(
                "exit", messages.Exit(client_id, exit_.status, exit_.signal).to_wire()
            )
        )


async def _drain(source: OutputStream) -> None:
    while await source.read():
        pass


class _InputRelay:
    """A client's stdin stream, forwarded to a guest process within both legs' credit."""

    def __init__(
        self, stream: int, window: int, target: InputStream | None, send: Any, spawn: Any
    ) -> None:
        self.stream = stream
        self._window = flow.ReceiveWindow(window)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._target = target
        self._send = send
        spawn(self._forward())

    def feed(self, data: bytes) -> None:
        if data:
            self._window.received(len(data))
        self._queue.put_nowait(data)

    async def _forward(self) -> None:
        # ValueError: another client of the same container closed its stdin already.
        with contextlib.suppress(errors.HyperError, ConnectionError, OSError, ValueError):
            while data := await self._queue.get():
                if self._target is not None:  # None: the process has no stdin, discard
                    await self._target.write(data)
                grant = self._window.consumed(len(data))
                if grant:
                    await self._send(frames.encode_window(self.stream, grant))
            if self._target is not None:
                await self._target.close()
