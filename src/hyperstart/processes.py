"""Processes of containers: spawning them, and what the agent keeps about each until it ends.

:func:`spawn` forks. The child puts itself in its own session and the container's cgroup, takes
its stdio (pipes, or a pty's slave as controlling terminal), chroots into the container's root,
changes directory, drops to its user and execs with a PATH lookup done inside the root. Any
failure before the exec travels back over a close-on-exec pipe as ``{"kind", "message"}``, which
the parent raises before it answers the request, so the host gets a precise error:
``NotFound`` for a missing program (the host maps it to exit code 127), ``FailedPrecondition``
for one it may not run (126).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import struct
import termios

from hyper import errors
from hyper.proto.messages import Exec, Export
from hyperstart import cgroups, users
from hyperstart.containers import Container
from hyperstart.stdio import InputSink, OutputPump

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RESET_SIGNALS = ("SIGCHLD", "SIGPIPE", "SIGIO", "SIGINT", "SIGTERM", "SIGHUP", "SIGXFSZ")


class Process:
    """One spawned process: its pid, its stdio, and how it ended."""

    def __init__(self, spec: Exec | Export, pid: int) -> None:
        self.name = spec.process
        self.container = spec.container
        self.pid = pid
        self.helper = False
        """The agent's own work for the container (an export), not one of its processes."""
        self.tty_fd = -1
        self.outputs: list[OutputPump] = []
        self.stdin: InputSink | None = None
        self.status: int | None = None
        self.signal = 0

    @property
    def exited(self) -> bool:
        return self.status is not None

    @property
    def finished(self) -> bool:
        """Exited, and its output streams all ended: time for the exit event."""
        return self.status is not None and all(pump.ended for pump in self.outputs)

    def wait_status(self, status: int) -> None:
        """Record a status from waitpid; the output pumps start draining."""
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
            self.status = 128 + self.signal
        else:
            self.status = os.waitstatus_to_exitcode(status) & 0xFF
        for pump in self.outputs:
            pump.process_exited()
        if self.stdin is not None:
            self.stdin.close(None)

    def resize(self, rows: int, cols: int) -> None:
        if self.tty_fd < 0:
            raise errors.FailedPrecondition(f"process {self.name!r} has no terminal")
        set_window_size(self.tty_fd, rows, cols)

    def release(self) -> None:
        """Close every descriptor the agent holds for the process."""
        fds = {pump.fd for pump in self.outputs}
        if self.stdin is not None:
            if not self.stdin.closed and not self.stdin.tty:
                fds.add(self.stdin.fd)
            self.stdin.closed = True
        for fd in fds:
            os.close(fd)
        self.outputs = []


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn(spec: Exec, container: Container, window: int) -> Process:
    """Start ``spec`` in ``container``; raises a :mod:`hyper.errors` kind if it cannot run."""
    parent_fds: list[int] = []  # the agent's ends, kept by the Process
    child_fds: list[int] = []  # the child's ends, closed here after the fork
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    child_fds.append(null)
    try:
        if spec.tty:
            master, slave = os.openpty()
            child_fds.append(slave)
            parent_fds.append(master)
            os.set_blocking(master, False)
            set_window_size(master, spec.rows, spec.cols)
            stdio = (slave, slave, slave)
        else:
            stdio = (
                _pipe(parent_fds, child_fds, spec.stdin, read_end_to_child=True, null=null),
                _pipe(parent_fds, child_fds, spec.stdout, read_end_to_child=False, null=null),
                _pipe(parent_fds, child_fds, spec.stderr, read_end_to_child=False, null=null),
            )
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        child_fds.append(report_w)
        parent_fds_copy = list(parent_fds)
        pid = os.fork()
        if pid == 0:
            for fd in parent_fds_copy:
                os.close(fd)
            os.close(report_r)
            _child(spec, container, stdio, report_w)  # never returns
    except BaseException:
        for fd in parent_fds + child_fds:
            os.close(fd)
        raise
    for fd in child_fds:
        os.close(fd)
    with os.fdopen(report_r, "rb") as report:
        failure = report.read()
    if failure:
        os.waitpid(pid, 0)
        for fd in parent_fds:
            os.close(fd)
        raise _decode_failure(failure)
    return _attach(Process(spec, pid), spec, parent_fds, window)


def _pipe(
    parent_fds: list[int], child_fds: list[int], stream: int, *, read_end_to_child: bool, null: int
) -> int:
    if not stream:
        return null
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    mine, theirs = (write_fd, read_fd) if read_end_to_child else (read_fd, write_fd)
    os.set_blocking(mine, False)
    parent_fds.append(mine)
    child_fds.append(theirs)
    return theirs


def _attach(process: Process, spec: Exec, fds: list[int], window: int) -> Process:
    if spec.tty:
        master = fds[0]
        process.tty_fd = master
        process.outputs.append(OutputPump(master, spec.stdout, window))
        if spec.stdin:
            process.stdin = InputSink(master, spec.stdin, window, tty=True)
        return process
    ends = iter(fds)
    if spec.stdin:
        process.stdin = InputSink(next(ends), spec.stdin, window, tty=False)
    for stream in (spec.stdout, spec.stderr):
        if stream:
            process.outputs.append(OutputPump(next(ends), stream, window))
    return process


def _decode_failure(data: bytes) -> errors.HyperError:
    try:
        report = json.loads(data)
        kind, message = str(report["kind"]), str(report["message"])
    except (ValueError, KeyError, TypeError):
        return errors.Internal(f"exec failed: {data[:200]!r}")
    cls = getattr(errors, kind, errors.Internal)
    if not (isinstance(cls, type) and issubclass(cls, errors.HyperError)):
        cls = errors.Internal
    return cls(message)


# ---------------------------------------------------------------- the child, after fork


def _child(spec: Exec, container: Container, stdio: tuple[int, int, int], report: int) -> None:
    try:
        try:
            _prepare(spec, container, stdio)
            _exec(spec)
        except errors.HyperError as exc:
            kind, message = type(exc).__name__, str(exc)
        except OSError as exc:
            kind, message = "FailedPrecondition", str(exc)
        except BaseException as exc:
            kind, message = "Internal", f"{type(exc).__name__}: {exc}"
        os.write(report, json.dumps({"kind": kind, "message": message}).encode())
    finally:
        os._exit(127)


def _prepare(spec: Exec, container: Container, stdio: tuple[int, int, int]) -> None:
    signal.set_wakeup_fd(-1)
    for name in _RESET_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    os.setsid()
    if container.cgroup:
        cgroups.join(container.cgroup)
    if spec.tty:
        fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)  # inheritable copies; every other fd is close-on-exec
    if container.rootfs:
        os.chroot(container.rootfs)
    os.chdir("/")
    user = users.resolve(spec.user)
    try:
        os.chdir(spec.cwd)
    except FileNotFoundError:
        raise errors.NotFound(f"working directory {spec.cwd!r} does not exist") from None
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)
    env = _environment(spec, user.home)
    os.environ.clear()
    os.environ.update(env)


def _environment(spec: Exec, home: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in spec.env:
        key, _, value = entry.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home)
    if spec.tty:
        env.setdefault("TERM", "xterm")
    return env


def _exec(spec: Exec) -> None:
    program = spec.argv[0]
    path = program if "/" in program else _look_path(program, os.environ["PATH"])
    try:
        os.execve(path, spec.argv, os.environ)
    except FileNotFoundError:
        raise errors.NotFound(f'exec: "{program}": no such file or directory') from None
    except PermissionError:
        raise errors.FailedPrecondition(f'exec: "{program}": permission denied') from None
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:
            raise errors.FailedPrecondition(f'exec: "{program}": exec format error') from None
        raise errors.FailedPrecondition(f'exec: "{program}": {exc.strerror}') from None


def _look_path(program: str, search: str) -> str:
    denied = False
    for directory in search.split(":"):
        candidate = f"{directory or '.'}/{program}"
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = True
    if denied:
        raise errors.FailedPrecondition(f'exec: "{program}": permission denied')
    raise errors.NotFound(f'exec: "{program}": executable file not found in $PATH')
