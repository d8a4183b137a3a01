"""hyperstart's protocol loop and process handling, driven from a host over a socketpair.

The agent runs in a forked child (it must own the main thread for its signal handling and be
the parent of what it spawns), on the host's own root through HostDirectoryBackend: no chroot,
no mounts, no cgroups. The host side here speaks the real codec and checks the flow control.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hyper.proto import flow, frames, messages
from hyperstart import syscalls
from hyperstart.agent import Agent
from hyperstart.containers import HostDirectoryBackend

TIMEOUT = 20.0
WINDOW = 64 * 1024


class SocketPorts:
    """Connections to hand to the agent, one after the other; then no more."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def open(self) -> int | None:
        if not self.fds:
            raise EOFError
        fd = self.fds.pop(0)
        os.set_blocking(fd, False)
        return fd

    def close(self, fd: int) -> None:
        os.close(fd)


class RecordingPod:
    def __init__(self) -> None:
        self.setups: list[messages.SetupPod] = []

    def setup(self, spec: messages.SetupPod) -> None:
        self.setups.append(spec)

    def power_off(self) -> None:
        pass


class Host:
    """The host's end of one connection: frames in and out, streams, windows, credit."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(TIMEOUT)
        self.decoder = frames.Decoder()
        self.log: list[tuple[Any, ...]] = []  # ("data", stream), ("eof", stream), ("event", name)
        self.responses: dict[int, messages.Response] = {}
        self.events: list[messages.Event] = []
        self.streams: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.receive_windows: dict[int, flow.ReceiveWindow] = {}
        self.credit: dict[int, flow.SendCredit] = {}
        self.window = flow.DEFAULT_WINDOW
        self.closed = False
        self._next_id = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def step(self) -> None:
        """Read and handle at least one frame (or the end of the connection)."""
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:  # the agent closed with our bytes unread
            data = b""
        if not data:
            self.closed = True
            return
        for frame in self.decoder.feed(data):
            self._handle(frame)

    def _handle(self, frame: frames.Frame) -> None:
        if frame.kind == frames.MSG:
            message = messages.parse(frame.payload)
            if isinstance(message, messages.Response):
                self.responses[message.id] = message
            elif isinstance(message, messages.Event):
                self.events.append(message)
                self.log.append(("event", message.name, message.fields))
        elif frame.kind == frames.DATA:
            window = self.receive_windows.setdefault(frame.stream, flow.ReceiveWindow(self.window))
            window.received(len(frame.payload))  # raises if the agent exceeded its credit
            if frame.payload:
                self.streams.setdefault(frame.stream, bytearray()).extend(frame.payload)
                self.log.append(("data", frame.stream))
                grant = window.consumed(len(frame.payload))
                if grant:
                    self.send(frames.encode_window(frame.stream, grant))
            else:
                self.ended.add(frame.stream)
                self.log.append(("eof", frame.stream))
        else:
            increment = frames.decode_window(frame)
            self.credit.setdefault(frame.stream, flow.SendCredit(self.window)).grant(increment)

    def wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            assert not self.closed, "the agent closed the connection"
            self.step()

    def call(self, op: str, args: dict[str, Any] | None = None) -> messages.Response:
        self._next_id += 1
        request_id = self._next_id
        payload = messages.encode_request(request_id, op, args or {})
        self.send(frames.encode(frames.MSG, 0, payload))
        self.wait(lambda: request_id in self.responses)
        return self.responses.pop(request_id)

    def ok(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.call(op, args)
        assert response.ok, f"{op}: {response.error_kind}: {response.error_message}"
        return response.result

    def hello(self, window: int = WINDOW) -> messages.HelloResult:
        self.wait(lambda: any(e.name == "ready" for e in self.events))
        result = self.ok("hello", messages.Hello(1, window).to_wire())
        self.window = window
        return messages.HelloResult.from_wire(result)

    def exit_of(self, process: str) -> messages.Exit:
        def find() -> messages.Event | None:
            for event in self.events:
                if event.name == "exit" and event.fields["process"] == process:
                    return event
            return None

        self.wait(lambda: find() is not None)
        event = find()
        assert event is not None
        return messages.Exit.from_wire(event.fields)

    def write_stdin(self, stream: int, data: bytes) -> None:
        """Send all of ``data`` within the agent's credit, serving frames while waiting."""
        credit = self.credit.setdefault(stream, flow.SendCredit(self.window))
        view = memoryview(data)
        while view:
            size = credit.take(min(len(view), frames.MAX_DATA))
            if size == 0:
                self.step()
                continue
            self.send(frames.encode(frames.DATA, stream, bytes(view[:size])))
            view = view[size:]
        self.send(frames.encode(frames.DATA, stream, b""))


def _run_agent(fds: list[int], close: list[int]) -> None:
    status = 1
    try:
        for fd in close:
            os.close(fd)
        syscalls.set_child_subreaper()
        Agent(SocketPorts(fds), HostDirectoryBackend(), RecordingPod()).run()
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


class Guest:
    """An agent in a child process with ``connections`` socketpairs to serve in turn."""

    def __init__(self, connections: int = 1) -> None:
        pairs = [socket.socketpair() for _ in range(connections)]
        self.hosts = [Host(host) for host, _ in pairs]
        agent_fds = [agent.detach() for _, agent in pairs]
        self.pid = os.fork()
        if self.pid == 0:
            _run_agent(agent_fds, [host.sock.fileno() for host in self.hosts])
        for fd in agent_fds:
            os.close(fd)

    @property
    def host(self) -> Host:
        return self.hosts[0]

    def wait_exit(self) -> int:
        pidfd = os.pidfd_open(self.pid)
        try:
            assert select.select([pidfd], [], [], TIMEOUT)[0], "the agent did not exit"
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> None:
        for host in self.hosts:
            host.sock.close()
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


@pytest.fixture
def guest() -> Iterator[Guest]:
    running = Guest()
    yield running
    running.stop()


@pytest.fixture
def host(guest: Guest) -> Host:
    """A greeted connection with a container ``c1`` on the host's root."""
    guest.host.hello()
    guest.host.ok("add_container", messages.AddContainer("c1", "disk1", "erofs", 64).to_wire())
    return guest.host


def exec_args(process: str, argv: list[str], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"container": "c1", "process": process, "argv": argv}
    base.update(fields)
    return base


# ---------------------------------------------------------------- handshake


def test_ready_then_hello(guest: Guest) -> None:
    result = guest.host.hello()
    ready = messages.Ready.from_wire(guest.host.events[0].fields)
    assert ready.versions == (1,)
    assert ready.agent.startswith("hyperstart ")
    assert result.version == 1
    assert result.kernel == os.uname().release


def test_operations_need_hello(guest: Guest) -> None:
    assert guest.host.ok("ping") == {}
    response = guest.host.call("stats")
    assert response.error_kind == "FailedPrecondition"
    guest.host.hello()
    second = guest.host.call("hello", messages.Hello(1, WINDOW).to_wire())
    assert second.error_kind == "FailedPrecondition"


def test_bad_requests_get_errors_and_the_agent_keeps_serving(host: Host) -> None:
    assert host.call("no_such_op").error_kind == "InvalidArgument"
    assert host.call("exec", {"container": "c1", "process": "p"}).error_kind == "InvalidArgument"
    missing = host.call("exec", exec_args("p", ["true"], container="nope"))
    assert missing.error_kind == "NotFound"
    assert host.call("signal", {"process": "ghost", "signal": 9}).error_kind == "NotFound"
    again = host.call("add_container", messages.AddContainer("c1", "d", "erofs", 1).to_wire())
    assert again.error_kind == "AlreadyExists"
    assert host.ok("ping") == {}


def test_setup_pod_and_stats(host: Host) -> None:
    spec = messages.SetupPod("pod1", 1_700_000_000 * 10**9, "00ff", {"net.ipv4.ip_forward": "1"})
    assert host.ok("setup_pod", spec.to_wire()) == {}
    stats = messages.Stats.from_wire(host.ok("stats"))
    assert stats.memory_total > 0
    assert stats.processes > 0
    assert stats.containers == {"c1": 0}


# ---------------------------------------------------------------- processes


def test_exec_relays_output_then_ends_streams_then_exits(host: Host) -> None:
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = host.ok("exec", exec_args("p1", argv, stdout=1, stderr=2))
    assert messages.ExecResult.from_wire(result).pid > 0
    exit_event = host.exit_of("p1")
    assert (exit_event.status, exit_event.signal) == (3, 0)
    assert bytes(host.streams[1]) == b"out\n"
    assert bytes(host.streams[2]) == b"err\n"
    order = [entry[:2] for entry in host.log if entry[0] != "event" or entry[1] == "exit"]
    exit_at = order.index(("event", "exit"))
    assert order.index(("eof", 1)) < exit_at
    assert order.index(("eof", 2)) < exit_at
    assert max(i for i, entry in enumerate(order) if entry[0] == "data") < exit_at


def test_missing_program_is_not_found(host: Host, tmp_path: Any) -> None:
    response = host.call("exec", exec_args("p1", ["no-such-program-xyz"], stdout=1))
    assert response.error_kind == "NotFound"
    assert response.error_message == (
        'exec: "no-such-program-xyz": executable file not found in $PATH'
    )
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    denied = host.call("exec", exec_args("p2", [str(script)]))
    assert denied.error_kind == "FailedPrecondition"
    assert "permission denied" in denied.error_message
    assert host.ok("ping") == {}


def test_missing_working_directory_and_user(host: Host) -> None:
    cwd = host.call("exec", exec_args("p1", ["true"], cwd="/no/such/dir"))
    assert cwd.error_kind == "NotFound"
    user = host.call("exec", exec_args("p2", ["true"], user="no-such-user-xyz"))
    assert user.error_kind == "NotFound"


def test_user_and_environment(host: Host) -> None:
    argv = ["sh", "-c", 'echo "$(id -u):$(id -g) $HOME $FOO"']
    host.ok("exec", exec_args("p1", argv, stdout=1, user="65534:65534", env=["FOO=bar"]))
    assert host.exit_of("p1").status == 0
    assert bytes(host.streams[1]).split()[0] == b"65534:65534"
    assert bytes(host.streams[1]).endswith(b" bar\n")


def test_stdin_round_trip_with_flow_control(host: Host) -> None:
    data = os.urandom(1 << 20)
    host.ok("exec", exec_args("cat", ["cat"], stdin=1, stdout=2))
    host.write_stdin(1, data)
    exit_event = host.exit_of("cat")
    assert exit_event.status == 0
    assert 2 in host.ended
    assert bytes(host.streams[2]) == data


def test_output_waits_for_credit(host: Host) -> None:
    """With no WINDOW from the host, the agent sends at most one window, then stalls."""
    size = 4 * WINDOW
    host.receive_windows[1] = flow.ReceiveWindow(WINDOW)
    original = host._handle

    def hold_credit(frame: frames.Frame) -> None:
        if frame.kind == frames.DATA and frame.payload:
            host.receive_windows[1].received(len(frame.payload))
            host.streams.setdefault(1, bytearray()).extend(frame.payload)
        else:
            original(frame)

    host._handle = hold_credit  # type: ignore[method-assign]
    host.ok("exec", exec_args("p", ["head", "-c", str(size), "/dev/zero"], stdout=1))
    host.wait(lambda: len(host.streams.get(1, b"")) == WINDOW)
    assert host.ok("ping") == {}  # the agent keeps serving; nothing more arrived meanwhile
    assert len(host.streams[1]) == WINDOW
    host._handle = original  # type: ignore[method-assign]
    host.send(frames.encode_window(1, host.receive_windows[1].consumed(WINDOW)))
    host.wait(lambda: 1 in host.ended)
    assert len(host.streams[1]) == size
    assert host.exit_of("p").status == 0


def test_killed_by_signal(host: Host) -> None:
    host.ok("exec", exec_args("p1", ["sh", "-c", "kill -9 $$"]))
    assert host.exit_of("p1") == messages.Exit("p1", 137, 9)
    host.ok("exec", exec_args("p2", ["sleep", "1000"]))
    host.ok("signal", {"process": "p2", "signal": 15})
    assert host.exit_of("p2") == messages.Exit("p2", 143, 15)
    after = host.call("signal", {"process": "p2", "signal": 15})
    assert after.error_kind == "NotFound"


def test_tty_size_and_resize(host: Host) -> None:
    host.ok("exec", exec_args("t1", ["stty", "size"], tty=True, stdout=1, rows=33, cols=101))
    assert host.exit_of("t1").status == 0
    assert bytes(host.streams[1]) == b"33 101\r\n"

    argv = ["sh", "-c", "read line; stty size"]
    host.ok("exec", exec_args("t2", argv, tty=True, stdin=3, stdout=4))
    assert host.call("resize", {"process": "t1", "rows": 1, "cols": 1}).error_kind == "NotFound"
    host.ok("resize", {"process": "t2", "rows": 40, "cols": 120})
    host.send(frames.encode(frames.DATA, 3, b"go\n"))
    assert host.exit_of("t2").status == 0
    assert bytes(host.streams[4]).endswith(b"40 120\r\n")


def test_exit_does_not_wait_for_a_grandchild_holding_the_pipes(host: Host, tmp_path: Any) -> None:
    """The shell exits while its orphan keeps stdout open; the orphan is reaped later."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = ["sh", "-c", f"(read x < {fifo}) & echo $!"]
    host.ok("exec", exec_args("p1", argv, stdout=1, stderr=2))
    assert host.exit_of("p1").status == 0
    assert {1, 2} <= host.ended
    orphan = int(bytes(host.streams[1]))
    pidfd = os.pidfd_open(orphan)
    try:
        with open(fifo, "w") as writer:
            writer.write("done\n")

        assert select.select([pidfd], [], [], TIMEOUT)[0]
    finally:
        os.close(pidfd)
    host.ok("ping")  # the agent reaps before it serves what arrived after the orphan died
    assert not os.path.exists(f"/proc/{orphan}")


def test_main_process_exit_kills_the_container(host: Host) -> None:
    host.ok("exec", exec_args("side", ["sleep", "1000"]))
    host.ok("exec", exec_args("c1", ["true"]))
    assert host.exit_of("c1").status == 0
    assert host.exit_of("side") == messages.Exit("side", 137, 9)
    assert host.ok("stats")["containers"] == {"c1": 0}


def test_remove_container(host: Host) -> None:
    host.ok("exec", exec_args("p1", ["sleep", "1000"], stdout=1))
    host.ok("remove_container", {"container": "c1"})
    assert host.exit_of("p1").status == 137
    assert host.call("exec", exec_args("p2", ["true"])).error_kind == "NotFound"


def test_duplicate_process_and_stream(host: Host) -> None:
    host.ok("exec", exec_args("p1", ["sleep", "1000"], stdout=1))
    assert host.call("exec", exec_args("p1", ["true"])).error_kind == "AlreadyExists"
    assert host.call("exec", exec_args("p2", ["true"], stdout=1)).error_kind == "AlreadyExists"


# ---------------------------------------------------------------- connections


def test_malformed_frame_drops_the_connection_and_serves_the_next() -> None:
    guest = Guest(connections=2)
    try:
        first, second = guest.hosts
        first.hello()
        first.ok("add_container", messages.AddContainer("c1", "d", "erofs", 8).to_wire())
        first.ok("exec", exec_args("p1", ["sh", "-c", "read x; exit 5"], stdin=1))
        first.send(b"\x09" + b"\0" * 9)  # an unknown frame type
        while not first.closed:
            first.step()
        second.wait(lambda: any(e.name == "ready" for e in second.events))
        second.hello()
        assert second.ok("ping") == {}
        second.ok("signal", {"process": "p1", "signal": 9})
        assert second.exit_of("p1").status == 137  # the process survived the first host
    finally:
        guest.stop()


def test_flooding_stdin_is_a_protocol_error(host: Host) -> None:
    host.ok("exec", exec_args("p1", ["sleep", "1000"], stdin=1))
    chunk = b"x" * frames.MAX_DATA
    # more than the window plus what the pipe can take: beyond any credit the agent gave
    with contextlib.suppress(OSError):
        for _ in range(4 * WINDOW // len(chunk)):
            host.send(frames.encode(frames.DATA, 1, chunk))
    while not host.closed:
        host.step()


def test_shutdown_answers_then_stops(guest: Guest) -> None:
    guest.host.hello()
    guest.host.ok("add_container", messages.AddContainer("c1", "d", "erofs", 8).to_wire())
    guest.host.ok("exec", exec_args("p1", ["sleep", "1000"]))
    assert guest.host.ok("shutdown") == {}
    assert guest.wait_exit() == 0
