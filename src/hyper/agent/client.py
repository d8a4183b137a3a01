"""The host side of the agent protocol: a typed asyncio client of hyperstart.

One :class:`AgentClient` owns one byte stream to an agent: the guest's virtio-serial port (through
QEMU's chardev socket), or anything else that speaks the same protocol (a pod's control socket).
It runs one reader task that decodes frames and routes them: responses to the calls waiting for
them, DATA and WINDOW frames to the stream they name, events to the processes they concern.

Everything the peer says is untrusted. Frames are bounded by the codec, fields are checked by
:mod:`hyper.proto.messages`, data beyond the granted credit or on an unknown stream breaks the
connection with :class:`~hyper.errors.ProtocolError`, and every call has a timeout, so a guest
that lies, floods or falls silent costs the host one closed connection and a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any

from hyper import errors
from hyper.agent.streams import InputStream, OutputStream
from hyper.proto import flow, frames, messages

_log = logging.getLogger(__name__)
_READ_CHUNK = 64 * 1024


class AgentState(enum.Enum):
    CONNECTED = "connected"  # bytes flow, no handshake yet
    READY = "ready"  # handshake done: calls allowed
    CLOSED = "closed"


class Process:
    """A process started through the agent: its stdio streams and its exit."""

    def __init__(
        self,
        process_id: str,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
    ) -> None:
        self.id = process_id
        self.pid = 0
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.result: Any = None  # what the operation that started it answered
        self._exit: asyncio.Future[messages.Exit] = asyncio.get_running_loop().create_future()

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def wait(self) -> messages.Exit:
        return await asyncio.shield(self._exit)

    def _set_exit(self, exit_: messages.Exit) -> None:
        if not self._exit.done():
            self._exit.set_result(exit_)

    def _fail(self, error: BaseException) -> None:
        if not self._exit.done():
            self._exit.set_exception(error)
            self._exit.exception()  # mark retrieved: the owner may never wait


class AgentClient:
    """A connection to one agent. Create it, then :meth:`handshake`, then call."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        window: int = flow.DEFAULT_WINDOW,
        call_timeout: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.state = AgentState.CONNECTED
        self.hello: messages.HelloResult | None = None
        self.window = window
        self.call_timeout = call_timeout
        self._log = logger or _log
        self._reader = reader
        self._writer = writer
        self._decoder = frames.Decoder()
        self._write_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._streams = itertools.count(1)
        self._pending: dict[int, asyncio.Future[messages.Response]] = {}
        self._outputs: dict[int, OutputStream] = {}
        self._inputs: dict[int, InputStream] = {}
        self._processes: dict[str, Process] = {}
        self._ready: asyncio.Future[messages.Ready] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self.close_reason: BaseException | None = None
        self._task = asyncio.create_task(self._read_loop(), name="agent-reader")

    # ------------------------------------------------------------ lifecycle

    async def handshake(self, timeout: float) -> messages.HelloResult:
        """Wait for the agent's ``ready``, agree on a version; the client is then READY."""
        self._expect(AgentState.CONNECTED)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise errors.Timeout(
                f"the agent did not announce itself within {timeout:g} s"
            ) from None
        common = set(ready.versions) & set(messages.SUPPORTED_VERSIONS)
        if not common:
            raise errors.ProtocolError(
                f"the agent speaks protocol versions {list(ready.versions)}, "
                f"this host {list(messages.SUPPORTED_VERSIONS)}"
            )
        hello = messages.Hello(max(common), self.window)
        result = await self._call("hello", hello.to_wire(), timeout)
        self.hello = messages.HelloResult.from_wire(result)
        self.state = AgentState.READY
        self._log.debug("agent ready: %s, kernel %s", self.hello.agent, self.hello.kernel)
        return self.hello

    async def close(self) -> None:
        self._shutdown(errors.Unavailable("the agent connection was closed"))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def closed(self) -> BaseException | None:
        """Wait until the connection ends; returns why."""
        await self._closed.wait()
        return self.close_reason

    # ------------------------------------------------------------ operations

    async def ping(self, timeout: float | None = None) -> None:
        await self.call("ping", {}, timeout)

    async def setup_pod(self, setup: messages.SetupPod) -> None:
        await self.call("setup_pod", setup.to_wire())

    async def setup_network(self, setup: messages.SetupNetwork) -> None:
        await self.call("setup_network", setup.to_wire())

    async def add_container(self, spec: messages.AddContainer) -> None:
        await self.call("add_container", spec.to_wire())

    async def remove_container(self, container: str) -> None:
        await self.call("remove_container", messages.RemoveContainer(container).to_wire())

    async def signal(self, process: str, signal: int) -> None:
        await self.call("signal", messages.Signal(process, signal).to_wire())

    async def resize(self, process: str, rows: int, cols: int) -> None:
        await self.call("resize", messages.Resize(process, rows, cols).to_wire())

    async def stats(self) -> messages.Stats:
        return messages.Stats.from_wire(await self.call("stats", {}))

    async def processes(self, container: str) -> list[dict[str, Any]]:
        """The processes of a container (its cgroup), as ``messages.ProcessInfo`` fields."""
        result = messages.ProcessList.from_wire(
            await self.call("processes", messages.Processes(container).to_wire())
        )
        if result.truncated:
            self._log.warning("the agent left processes of %s out of its answer", container)
        return [info._asdict() for info in result.processes]

    async def export(self, container: str, process_id: str | None = None) -> Process:
        """Stream a tar of the container's changes: ``process.stdout`` carries it, then the
        exit event says whether it is complete (0) or not (an error on ``process.stderr``)."""
        process_id = process_id or f"export-{secrets.token_hex(6)}"
        process = await self.open_process(
            "export",
            messages.Export(container, process_id, 0).to_wire(),
            process_id=process_id,
            parse=lambda result: messages.ExecResult.from_wire(result).pid,
        )
        process.pid = process.result
        return process

    async def shutdown(self, timeout: float = 10.0) -> None:
        await self.call("shutdown", {}, timeout)

    async def exec(
        self,
        container: str,
        process_id: str,
        argv: list[str],
        *,
        env: list[str] | None = None,
        cwd: str = "/",
        user: str = "",
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        rows: int = 24,
        cols: int = 80,
    ) -> Process:
        """Start a process; its streams are connected before the agent is asked."""
        request = messages.Exec(
            container, process_id, argv, env or [], cwd, user, tty, 0, 0, 0, rows, cols
        )
        process = await self.open_process(
            "exec",
            request.to_wire(),
            process_id=process_id,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr and not tty,
            parse=lambda result: messages.ExecResult.from_wire(result).pid,
        )
        process.pid = process.result
        return process

    async def open_process(
        self,
        op: str,
        args: dict[str, Any],
        *,
        process_id: str,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        parse: Callable[[dict[str, Any]], Any] = lambda result: result,
    ) -> Process:
        """Call an operation that starts something with stdio streams and an ``exit`` event.

        The streams are connected before the peer is asked; ``args`` get their numbers as
        ``stdin``, ``stdout`` and ``stderr`` (0: not connected). The ``exit`` event naming
        ``process_id`` ends the returned process; ``process.result`` is ``parse(result)``."""
        self._expect(AgentState.READY)
        if process_id in self._processes:
            raise errors.AlreadyExists(f"process {process_id} exists already")
        in_stream = self._input() if stdin else None
        out_stream = self._output() if stdout else None
        err_stream = self._output() if stderr else None
        process = Process(process_id, in_stream, out_stream, err_stream)
        self._processes[process_id] = process
        args = {
            **args,
            "stdin": in_stream.stream if in_stream else 0,
            "stdout": out_stream.stream if out_stream else 0,
            "stderr": err_stream.stream if err_stream else 0,
        }
        try:
            process.result = parse(await self.call(op, args))
        except BaseException as exc:
            self._forget(process)
            process._fail(exc)
            raise
        return process

    async def call(
        self, op: str, args: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        self._expect(AgentState.READY)
        return await self._call(op, args, timeout or self.call_timeout)

    # ------------------------------------------------------------ internals

    def _expect(self, state: AgentState) -> None:
        if self.state is not state:
            detail = f" ({self.close_reason})" if self.close_reason else ""
            raise errors.FailedPrecondition(
                f"agent connection is {self.state.value}{detail}, expected {state.value}"
            )

    def _output(self) -> OutputStream:
        stream = OutputStream(next(self._streams), self.window, self._send)
        self._outputs[stream.stream] = stream
        return stream

    def _input(self) -> InputStream:
        stream = InputStream(next(self._streams), self.window, self._send)
        self._inputs[stream.stream] = stream
        return stream

    def _forget(self, process: Process) -> None:
        self._processes.pop(process.id, None)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                self._outputs.pop(stream.stream, None)
        if process.stdin is not None:
            self._inputs.pop(process.stdin.stream, None)

    async def _call(self, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[messages.Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send(
                frames.encode(frames.MSG, 0, messages.encode_request(request_id, op, args))
            )
            try:
                response = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise errors.Timeout(
                    f"the agent did not answer {op!r} within {timeout:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
        if not response.ok:
            raise errors.by_kind(response.error_kind)(response.error_message)
        return response.result

    async def _send(self, data: bytes) -> None:
        if self.state is AgentState.CLOSED:
            raise errors.Unavailable(f"agent connection closed ({self.close_reason})")
        async with self._write_lock:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._shutdown(errors.Unavailable(f"agent connection lost: {exc}"))
                raise errors.Unavailable(f"agent connection lost: {exc}") from exc

    async def _read_loop(self) -> None:
        reason: BaseException
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    reason = errors.Unavailable("the agent closed the connection")
                    break
                for frame in self._decoder.feed(data):
                    self._dispatch(frame)
        except errors.ProtocolError as exc:
            self._log.error("closing the agent connection: %s", exc)
            reason = exc
        except (ConnectionError, OSError) as exc:
            reason = errors.Unavailable(f"agent connection lost: {exc}")
        self._shutdown(reason)
        self._writer.close()

    def _dispatch(self, frame: frames.Frame) -> None:
        if frame.kind == frames.DATA:
            output = self._outputs.get(frame.stream)
            if output is None:
                raise errors.ProtocolError(f"data on unknown stream {frame.stream}")
            output.feed(frame.payload)
            if output.at_eof or not frame.payload:
                self._outputs.pop(frame.stream, None)
        elif frame.kind == frames.WINDOW:
            increment = frames.decode_window(frame)
            target = self._inputs.get(frame.stream)
            if target is not None:  # credit for a stream already closed is harmless
                target.grant(increment)
        else:
            self._on_message(messages.parse(frame.payload))

    def _on_message(self, message: messages.Message) -> None:
        if isinstance(message, messages.Response):
            future = self._pending.get(message.id)
            if future is None or future.done():
                self._log.debug("dropping a response to unknown request %d", message.id)
                return
            future.set_result(message)
        elif isinstance(message, messages.Event):
            self._on_event(message)
        else:
            raise errors.ProtocolError(f"the agent sent a request ({message.op!r})")

    def _on_event(self, event: messages.Event) -> None:
        if event.name == "ready":
            ready = messages.Ready.from_wire(event.fields)
            if not self._ready.done():
                self._ready.set_result(ready)
        elif event.name == "exit":
            exit_ = messages.Exit.from_wire(event.fields)
            process = self._processes.pop(exit_.process, None)
            if process is None:
                self._log.debug("exit of unknown process %s", exit_.process)
                return
            if process.stdin is not None:
                self._inputs.pop(process.stdin.stream, None)
                process.stdin.fail(errors.FailedPrecondition("the process has exited"))
            process._set_exit(exit_)
        else:
            self._log.debug("ignoring unknown event %r", event.name)

    def _shutdown(self, reason: BaseException) -> None:
        if self.state is AgentState.CLOSED:
            return
        self.state = AgentState.CLOSED
        self.close_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        for output in self._outputs.values():
            output.fail(reason)
        for input_ in self._inputs.values():
            input_.fail(reason)
        for process in self._processes.values():
            process._fail(reason)
        if not self._ready.done():
            self._ready.set_exception(reason)
            self._ready.exception()
        self._closed.set()
