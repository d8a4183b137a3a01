"""The protocol loop: one thread, non-blocking, everything multiplexed on one ``poll``.

Per turn: poll the port, the wake-up pipe (SIGCHLD and SIGIO land there through
``signal.set_wakeup_fd``), the output pipes that hold send credit and the stdin pipes that have
bytes to take; then reap children, serve what became ready, and send the ``exit`` event of
every process that ended and whose output streams are drained and ended (always in that order).

A connection goes OPEN (``ready`` sent) -> GREETED (``hello`` done: every operation allowed) ->
gone. A malformed frame or a host that hangs up ends the connection, never the agent: processes
keep running with their output read and dropped, their exit events are kept for the next host,
and the port is opened again. Failures of a request answer with an error of one of
``messages.ERROR_KINDS`` and the agent goes on serving.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
from collections.abc import Callable
from typing import Any, Protocol

from hyper import errors
from hyper.proto import frames, messages
from hyperstart import __version__, export, processes, ps, stats
from hyperstart.connection import Connection
from hyperstart.console import log
from hyperstart.containers import Containers
from hyperstart.port import Port
from hyperstart.processes import Process
from hyperstart.stdio import InputSink, OutputPump

AGENT = f"hyperstart {__version__}"
_RECONNECT_TICK_MS = 50
_OUTBOX_HIGH = 1024 * 1024
"""Stop reading process output while this much waits for the port (the windows bound it too)."""
_MAX_UNDELIVERED = 4096
_FLUSH_MS = 2000
_ERRNO_KINDS = {
    errno.ENOENT: "NotFound",
    errno.ESRCH: "NotFound",
    errno.EEXIST: "AlreadyExists",
    errno.EINVAL: "InvalidArgument",
    errno.EBUSY: "FailedPrecondition",
    errno.EACCES: "FailedPrecondition",
    errno.EPERM: "FailedPrecondition",
}
_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_OUT = select.POLLOUT | select.POLLHUP | select.POLLERR


class Pod(Protocol):
    def setup(self, spec: messages.SetupPod) -> None: ...

    def power_off(self) -> None: ...


class Agent:
    """Serves the host over connections from ``port``; run it in the main thread."""

    def __init__(
        self,
        port: Port,
        containers: Containers,
        pod: Pod | None = None,
        network: Callable[[messages.SetupNetwork], str] | None = None,
    ) -> None:
        self.port = port
        self.containers = containers
        self.pod = pod
        self.network = network  # configures the NIC (hyperstart.network.configure)
        self.conn: Connection | None = None
        self.processes: dict[str, Process] = {}
        self._by_pid: dict[int, Process] = {}
        self._inputs: dict[int, InputSink] = {}  # stream -> stdin of a process
        self._outputs: dict[int, OutputPump] = {}  # stream -> stdout/stderr of a process
        self._undelivered: list[dict[str, Any]] = []  # exit events while no host listened
        self._stopping = False
        self._poller = select.poll()
        self._polled: dict[int, int] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "hello": self._hello,
            "setup_pod": self._setup_pod,
            "setup_network": self._setup_network,
            "add_container": self._add_container,
            "exec": self._exec,
            "signal": self._signal,
            "resize": self._resize,
            "remove_container": self._remove_container,
            "stats": self._stats,
            "processes": self._processes,
            "export": self._export,
            "freeze": self._freeze,
            "ping": lambda args: {},
            "shutdown": self._shutdown,
        }

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Serve until ``shutdown`` (then power off) or until the port has no more hosts."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGCHLD, signal.SIGIO)}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            while not self._stopping:
                if self.conn is None and not self._connect():
                    return
                self._turn(wake_r)
            self._flush_before_exit()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
        self._power_off()

    def _turn(self, wake_r: int) -> None:
        conn = self.conn
        interest: dict[int, int] = {wake_r: select.POLLIN}
        readers: dict[int, OutputPump] = {}
        writers: dict[int, InputSink] = {}
        if conn is not None:
            interest[conn.fd] = select.POLLIN | (select.POLLOUT if conn.buffered else 0)
        output_open = conn is None or conn.buffered < _OUTBOX_HIGH
        for process in self.processes.values():
            for pump in process.outputs:
                if output_open and pump.wants_read(conn):
                    interest[pump.fd] = interest.get(pump.fd, 0) | select.POLLIN
                    readers[pump.fd] = pump
            sink = process.stdin
            if sink is not None and sink.wants_write():
                interest[sink.fd] = interest.get(sink.fd, 0) | select.POLLOUT
                writers[sink.fd] = sink
        self._sync_poller(interest)
        events = self._poller.poll(-1 if conn is not None else _RECONNECT_TICK_MS)
        _drain(wake_r)
        self._reap()
        for fd, revents in events:
            if conn is not None and fd == conn.fd and self.conn is conn:
                self._serve_port(conn, revents)
                continue
            reader = readers.get(fd)
            if reader is not None and revents & _IN:
                self._guard(reader.pump)
            writer = writers.get(fd)
            if writer is not None and revents & _OUT:
                self._guard(writer.write)
        self._finish_processes()
        if self.conn is not None:
            self._flush(self.conn)

    def _guard(self, move: Callable[[Connection | None], None]) -> None:
        """Run a pump or a sink; an unexpected I/O error ends that stream, not the agent."""
        try:
            move(self.conn)
        except OSError as exc:
            log(f"stdio of a process: {exc}")
            target = getattr(move, "__self__", None)
            if isinstance(target, OutputPump):
                target.end(self.conn)
            elif isinstance(target, InputSink):
                with contextlib.suppress(OSError):
                    target.close(self.conn)

    def _sync_poller(self, interest: dict[int, int]) -> None:
        for fd in list(self._polled):
            if fd not in interest:
                self._poller.unregister(fd)
                del self._polled[fd]
        for fd, mask in interest.items():
            if self._polled.get(fd) != mask:
                if fd in self._polled:
                    self._poller.modify(fd, mask)
                else:
                    self._poller.register(fd, mask)
                self._polled[fd] = mask

    # ------------------------------------------------------------ the connection

    def _connect(self) -> bool:
        try:
            fd = self.port.open()
        except EOFError:
            return False
        if fd is not None:
            self.conn = Connection(fd)
            ready = messages.Ready(messages.SUPPORTED_VERSIONS, AGENT)
            self.conn.send_event("ready", ready.to_wire())
            self._flush(self.conn)
        return True

    def _drop(self, reason: str) -> None:
        """End the connection: detach every stream, keep every process."""
        conn = self.conn
        if conn is None:
            return
        log(f"connection dropped: {reason}")
        self.conn = None
        self._inputs.clear()
        self._outputs.clear()
        for process in self.processes.values():
            for pump in process.outputs:
                pump.detach()
            if process.stdin is not None:
                process.stdin.stream = 0
        self.port.close(conn.fd)

    def _flush(self, conn: Connection) -> None:
        try:
            conn.flush()
        except OSError as exc:
            self._drop(f"writing to the host: {exc}")

    def _flush_before_exit(self) -> None:
        conn = self.conn
        if conn is None:
            return
        poller = select.poll()
        poller.register(conn.fd, select.POLLOUT)
        while conn.buffered and self.conn is conn and poller.poll(_FLUSH_MS):
            self._flush(conn)

    def _serve_port(self, conn: Connection, revents: int) -> None:
        if revents & select.POLLOUT:
            self._flush(conn)
        if not revents & _IN or self.conn is not conn:
            return
        try:
            received = conn.receive()
            if received is None:
                self._drop("the host hung up")
                return
            for frame in received:
                self._frame(conn, frame)
                if self.conn is not conn:
                    return
        except errors.ProtocolError as exc:
            self._drop(f"protocol error: {exc}")
        except OSError as exc:
            self._drop(f"reading from the host: {exc}")

    def _frame(self, conn: Connection, frame: frames.Frame) -> None:
        if frame.kind == frames.MSG:
            message = messages.parse(frame.payload)
            if not isinstance(message, messages.Request):
                raise errors.ProtocolError(f"the host sent a {type(message).__name__.lower()}")
            self._request(conn, message)
        elif frame.kind == frames.DATA:
            sink = self._inputs.get(frame.stream)
            if sink is not None:
                sink.receive(frame.payload, conn)
        else:
            increment = frames.decode_window(frame)
            pump = self._outputs.get(frame.stream)
            if pump is not None:
                pump.credit.grant(increment)

    def _request(self, conn: Connection, request: messages.Request) -> None:
        handler = self._handlers.get(request.op)
        try:
            if handler is None:
                raise errors.InvalidArgument(f"unknown operation {request.op!r}")
            if not conn.greeted and request.op not in ("hello", "ping"):
                raise errors.FailedPrecondition(
                    f"{request.op} before hello: the connection is not greeted yet"
                )
            result = handler(request.args)
        except errors.ProtocolError as exc:
            conn.send_error(request.id, "InvalidArgument", str(exc))
        except errors.HyperError as exc:
            conn.send_error(request.id, _kind(exc), str(exc))
        except OSError as exc:
            conn.send_error(request.id, _ERRNO_KINDS.get(exc.errno or 0, "Internal"), str(exc))
        except Exception as exc:
            log(f"{request.op} failed: {type(exc).__name__}: {exc}")
            conn.send_error(request.id, "Internal", f"{type(exc).__name__}: {exc}")
        else:
            conn.send_result(request.id, result)
            if request.op == "hello":
                for event in self._undelivered:
                    conn.send_event("exit", event)
                self._undelivered.clear()

    # ------------------------------------------------------------ processes

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = self._by_pid.pop(pid, None)
            if process is None:
                continue  # an orphan that was reparented to us
            if process.stdin is not None:
                self._inputs.pop(process.stdin.stream, None)
            process.wait_status(status)
            if process.name == process.container and not process.helper:
                self._kill_container(process.container, helpers=False)

    def _kill_container(self, container_id: str, *, helpers: bool) -> None:
        """What the end of a PID namespace's init does: SIGKILL everything left (and the
        agent's exports from the container too if ``helpers``: its files are going away)."""
        for process in self.processes.values():
            mine = process.container == container_id and not process.exited
            if mine and (helpers or not process.helper):
                _kill(process.pid, signal.SIGKILL)
        if container_id in self.containers.ids():
            self.containers.kill(container_id)

    def _finish_processes(self) -> None:
        for process in self.processes.values():
            if process.exited:
                for pump in process.outputs:
                    self._guard(pump.drain)
        for process in [p for p in self.processes.values() if p.finished]:
            for pump in process.outputs:
                if self._outputs.get(pump.stream) is pump:
                    del self._outputs[pump.stream]
            process.release()
            del self.processes[process.name]
            assert process.status is not None
            event = messages.Exit(process.name, process.status, process.signal).to_wire()
            if self.conn is not None and self.conn.greeted:
                self.conn.send_event("exit", event)
            elif len(self._undelivered) < _MAX_UNDELIVERED:
                self._undelivered.append(event)

    def _live(self, name: str) -> Process:
        process = self.processes.get(name)
        if process is None or process.exited:
            raise errors.NotFound(f"no running process {name!r}")
        return process

    # ------------------------------------------------------------ operations

    def _hello(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Hello.from_wire(args)
        conn = self.conn
        assert conn is not None
        if conn.greeted:
            raise errors.FailedPrecondition("hello on a connection that is greeted already")
        if spec.version not in messages.SUPPORTED_VERSIONS:
            raise errors.FailedPrecondition(
                f"protocol version {spec.version} is not supported; "
                f"this agent speaks {list(messages.SUPPORTED_VERSIONS)}"
            )
        conn.window = spec.window
        conn.greeted = True
        return messages.HelloResult(spec.version, AGENT, os.uname().release).to_wire()

    def _setup_pod(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.SetupPod.from_wire(args)
        if self.pod is None:
            raise errors.FailedPrecondition("this agent does not manage its machine")
        self.pod.setup(spec)
        self.containers.hostname = spec.hostname
        return {}

    def _setup_network(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.SetupNetwork.from_wire(args)
        if self.network is None:
            raise errors.FailedPrecondition("this agent does not manage a network interface")
        interface = self.network(spec)
        self.containers.nameservers = spec.nameservers
        self.containers.extra_hosts = spec.hosts
        return {"interface": interface}

    def _add_container(self, args: dict[str, Any]) -> dict[str, Any]:
        self.containers.add(messages.AddContainer.from_wire(args))
        return {}

    def _freeze(self, args: dict[str, Any]) -> dict[str, Any]:
        request = messages.Freeze.from_wire(args)
        self.containers.freeze(request.disk, request.frozen)
        return {}

    def _exec(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Exec.from_wire(args)
        container = self.containers.get(spec.container)
        self._check_new(spec.process, (spec.stdin, spec.stdout, spec.stderr))
        conn = self.conn
        assert conn is not None
        return self._register(processes.spawn(spec, container, conn.window))

    def _register(self, process: Process) -> dict[str, Any]:
        self.processes[process.name] = process
        self._by_pid[process.pid] = process
        if process.stdin is not None:
            self._inputs[process.stdin.stream] = process.stdin
        for pump in process.outputs:
            if pump.stream:
                self._outputs[pump.stream] = pump
        return messages.ExecResult(process.pid).to_wire()

    def _check_new(self, name: str, streams: tuple[int, ...]) -> None:
        if name in self.processes:
            raise errors.AlreadyExists(f"process {name!r} exists already")
        for stream in streams:
            if stream and (stream in self._inputs or stream in self._outputs):
                raise errors.AlreadyExists(f"stream {stream} is in use")

    def _export(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Export.from_wire(args)
        container = self.containers.get(spec.container)
        self._check_new(spec.process, (spec.stdout, spec.stderr))
        conn = self.conn
        assert conn is not None
        return self._register(export.spawn(spec, container, conn.window))

    def _processes(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Processes.from_wire(args)
        container = self.containers.get(spec.container)
        pids = self.containers.pids(spec.container)
        if pids is None:  # no cgroup: what the agent started there, and their descendants
            pids = ps.descendants(
                {
                    p.pid
                    for p in self.processes.values()
                    if p.container == spec.container and not p.exited and not p.helper
                }
            )
        names = ps.passwd_names(container.rootfs)
        return ps.collect(pids, names=names).to_wire()

    def _signal(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Signal.from_wire(args)
        if not _kill(self._live(spec.process).pid, spec.signal):
            raise errors.NotFound(f"process {spec.process!r} has exited")
        return {}

    def _resize(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.Resize.from_wire(args)
        self._live(spec.process).resize(spec.rows, spec.cols)
        return {}

    def _remove_container(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = messages.RemoveContainer.from_wire(args)
        self.containers.get(spec.container)
        self._kill_container(spec.container, helpers=True)
        self.containers.remove(spec.container)
        return {}

    def _stats(self, args: dict[str, Any]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for container_id in self.containers.ids():
            count = self.containers.process_count(container_id)
            if count is None:
                count = sum(
                    1
                    for p in self.processes.values()
                    if p.container == container_id and not p.exited
                )
            counts[container_id] = count
        return stats.collect(counts).to_wire()

    def _shutdown(self, args: dict[str, Any]) -> dict[str, Any]:
        self._stopping = True
        return {}

    def _power_off(self) -> None:
        for process in self.processes.values():
            if not process.exited:
                _kill(process.pid, signal.SIGKILL)
        self.containers.remove_all()
        if self.pod is not None:
            self.pod.power_off()


def _ignore(signum: int, frame: object) -> None:
    """A handler, so that the signal reaches the wake-up fd; the loop does the work."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _kill(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _kind(exc: errors.HyperError) -> str:
    for cls in type(exc).__mro__:
        if cls.__name__ in messages.ERROR_KINDS:
            return cls.__name__
    return "Internal"
