"""One QEMU micro-VM: start it, watch it, stop it, and leave nothing behind.

Theory of operation (docs/vmm.md has the long form):

1. ``start`` binds the QMP socket in the VM's run_dir and makes a socket pair for the serial
   console, then spawns QEMU with both passed as file descriptors. QEMU serves QMP on the socket it
   inherited, so connecting never races with QEMU creating a file.
2. The connection to QMP races the process's exit: a QEMU that dies at once (bad option, missing
   kernel, agent socket not listening) fails ``start`` with its stderr, never a timeout.
3. A watcher task waits for the process to exit, whatever the cause (guest power-off, QMP quit,
   SIGKILL by anyone), reads the last SHUTDOWN event for the reason, removes the files and
   resolves the `VmExit` that ``wait``, ``stop`` and ``kill`` return.
4. Any failure during ``start`` kills QEMU, removes its files and leaves the VM FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyper.config.settings import VmSettings
from hyper.errors import FailedPrecondition, HyperError, Internal, Unavailable
from hyper.vmm import host
from hyper.vmm.machine import Disk, MachineConfig, VmExit, VmState
from hyper.vmm.qemu import binary, cmdline, hotplug, snapshot
from hyper.vmm.qemu.process import QemuProcess
from hyper.vmm.qemu.qmp import Qmp
from hyper.vmm.qemu.ring import ByteRing, drain

_log = logging.getLogger(__name__)

CONSOLE_BYTES = 64 * 1024
QMP_CONNECT_TIMEOUT = 10.0
"""QEMU greets within ~40 ms here; the bound only matters for a QEMU that hangs while starting."""

_SHUTDOWN_REASONS = {
    "guest-shutdown": "guest powered off",
    "guest-reset": "guest reset (reboot or panic)",
    "guest-panic": "guest panicked",
    "host-qmp-quit": "quit by the host",
    "host-signal": "qemu got a termination signal",
    "host-error": "qemu stopped on a host error",
}


class QemuVm:
    """A QEMU process running one micro-VM; used once (NEW → ... → STOPPED or FAILED)."""

    def __init__(
        self, config: MachineConfig, settings: VmSettings, *, logger: logging.Logger | None = None
    ) -> None:
        self.config = config
        self._settings = settings
        self._logger = (logger or _log).getChild(config.name)
        self.state = VmState.NEW
        self.qmp_path = config.run_dir / "qmp.sock"
        self.pidfile = config.run_dir / "qemu.pid"
        self._console = ByteRing(CONSOLE_BYTES)
        self._process: QemuProcess | None = None
        self._qmp: Qmp | None = None
        self._console_task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._exit: asyncio.Future[VmExit] | None = None
        self._killed = False
        self.startup_seconds: float | None = None
        """From spawning QEMU to QMP negotiated."""

    def __repr__(self) -> str:
        return f"<QemuVm {self.config.name} {self.state.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """QEMU's pid while it has not been reaped; None before the start and after the exit."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    def _require(self, action: str, *allowed: VmState) -> None:
        if self.state not in allowed:
            expected = " or ".join(state.name for state in allowed)
            raise FailedPrecondition(
                f"cannot {action} VM {self.config.name}: it is {self.state.name}, not {expected}"
            )

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn QEMU and connect QMP; the guest is booting when this returns."""
        self._require("start", VmState.NEW)
        self.state = VmState.STARTING
        try:
            await self._start()
        except BaseException as exc:
            try:
                await self._rollback()
            except Exception:
                self._logger.exception("rolling back a failed start failed")
            tail = self._process.stderr_tail() if self._process else ""
            self.state = VmState.FAILED
            if not isinstance(exc, Exception):
                raise  # cancelled: rolled back, nothing to add
            message = f"QEMU for VM {self.config.name} failed to start: {exc}"
            if tail:
                message += f"\nQEMU said: {tail}"
            self._logger.debug("%s", message)  # the caller decides whether it is an error
            raise Unavailable(message) from exc

    async def _start(self) -> None:
        qemu = await binary.inspect(self._settings.qemu)
        tsc_khz = await asyncio.to_thread(host.tsc_khz)
        listener, ours, theirs = await asyncio.to_thread(self._open_channels)
        try:
            wiring = cmdline.Wiring(listener.fileno(), theirs.fileno(), self.pidfile)
            argv = cmdline.build(
                qemu.path, self.config, wiring, tsc_khz=tsc_khz, sandbox=qemu.sandbox
            )
            started = time.monotonic()
            self._process = await QemuProcess.spawn(
                argv, pass_fds=(listener.fileno(), theirs.fileno()), logger=self._logger
            )
        except BaseException:
            ours.close()
            raise
        finally:
            # QEMU holds its own copies now; ours would keep a dead QEMU's sockets looking alive.
            listener.close()
            theirs.close()
        self._console_task = asyncio.create_task(self._read_console(ours), name="console")
        self._qmp = await self._connect_qmp(self._process)
        self.startup_seconds = time.monotonic() - started
        self._exit = asyncio.get_running_loop().create_future()
        self._watcher = asyncio.create_task(self._watch(self._process), name="qemu-watch")
        self.state = VmState.RUNNING
        self._logger.info(
            "QEMU %s pid %d running (%s, QMP after %.0f ms)",
            qemu.version,
            self._process.pid,
            self.config.accelerator,
            self.startup_seconds * 1000,
        )

    def _open_channels(self) -> tuple[socket.socket, socket.socket, socket.socket]:
        """The QMP listening socket and the console socket pair (ours, QEMU's)."""
        self.config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.qmp_path.unlink(missing_ok=True)  # a stale file from a crashed host process
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.qmp_path))
            self.qmp_path.chmod(0o600)
            listener.listen(1)
        except BaseException:
            listener.close()
            raise
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return listener, ours, theirs

    async def _connect_qmp(self, process: QemuProcess) -> Qmp:
        qmp = Qmp(self.config.name, self._logger)
        connect = asyncio.create_task(qmp.connect(self.qmp_path, QMP_CONNECT_TIMEOUT))
        exited = asyncio.create_task(process.wait())
        try:
            await asyncio.wait({connect, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                raise Unavailable(f"QEMU exited with {exited.result()} while starting")
            connect.result()
            return qmp
        except BaseException:
            await qmp.close()
            raise
        finally:
            for task in (connect, exited):
                task.cancel()
            await asyncio.gather(connect, exited, return_exceptions=True)

    async def _read_console(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            await drain(reader, self._console, self._logger)
        finally:
            writer.close()

    async def _rollback(self) -> None:
        """Undo a failed start: no process, no reader, no file."""
        if self._qmp is not None:
            await self._qmp.close()
        if self._process is not None:
            await self._process.kill_and_wait()
        await self._finish_console()
        await asyncio.to_thread(self._remove_files)

    # -- running ------------------------------------------------------------------------------

    async def execute(
        self, command: str, arguments: dict[str, object] | None = None, timeout: float = 5.0
    ) -> Any:
        """Run one QMP command (for templates, snapshots, hot-plug)."""
        self._require("execute a QMP command on", VmState.RUNNING)
        assert self._qmp is not None
        return await self._qmp.execute(command, arguments, timeout)

    def expect_event(
        self, name: str, match: Callable[[dict[str, Any]], bool] = lambda data: True
    ) -> asyncio.Future[None]:
        """Resolved by the next QMP event ``name`` whose data match (see `Qmp.expect`)."""
        self._require("expect an event of", VmState.RUNNING)
        assert self._qmp is not None
        return self._qmp.expect(name, match)

    async def attach_disk(self, disk: Disk) -> None:
        """Hot-plug ``disk`` (see `hotplug`): the guest finds it by its serial, ``disk.id``."""
        self._require("attach a disk to", VmState.RUNNING)
        await hotplug.attach(self.execute, disk)
        self._logger.debug("disk %s attached: %s", disk.id, disk.path)

    async def save_state(self, path: Path, timeout: float = 30.0) -> None:
        """Pause the guest and save its device state (a template; RAM is in its file)."""
        self._require("save the state of", VmState.RUNNING)
        await snapshot.save(self.execute, path, timeout)

    async def restore_state(self, path: Path, timeout: float = 30.0) -> None:
        """Load a saved state into this VM (started with ``incoming``) and resume it."""
        self._require("restore a state into", VmState.RUNNING)
        if not self.config.incoming:
            raise FailedPrecondition(f"VM {self.config.name} was not started to take a state")
        await snapshot.load(self.execute, path, timeout)

    def console_tail(self) -> str:
        """The last 64 KiB the guest printed on its serial console (allowed in every state)."""
        return self._console.text()

    # -- the end ------------------------------------------------------------------------------

    async def wait(self) -> VmExit:
        """Until QEMU exits, whatever the cause; files are removed when this returns."""
        self._require("wait for", VmState.RUNNING, VmState.STOPPING, VmState.STOPPED)
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    async def stop(self, timeout: float = 5.0) -> VmExit:
        """Ask QEMU to quit; SIGKILL it if it has not exited after `timeout` seconds.

        The guest is not asked anything: power it off through its agent first for a clean end.
        Stopping a VM that has exited already returns how it exited.
        """
        self._require("stop", VmState.RUNNING, VmState.STOPPING, VmState.STOPPED)
        assert self._exit is not None and self._qmp is not None
        if self.state is VmState.RUNNING:
            self.state = VmState.STOPPING
        deadline = time.monotonic() + timeout
        if not self._exit.done():
            try:
                await self._qmp.execute("quit", timeout=timeout)
            except HyperError as exc:  # exiting already, or QEMU is stuck: the deadline decides
                self._logger.debug("quit: %s", exc)
        try:
            remaining = max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.shield(self._exit), remaining)
        except TimeoutError:
            self._logger.warning("QEMU did not quit within %s s: killing it", timeout)
            return await self.kill()

    async def kill(self) -> VmExit:
        """SIGKILL QEMU now and wait for it; a VM that has exited already returns its exit."""
        self._require("kill", VmState.RUNNING, VmState.STOPPING, VmState.STOPPED)
        assert self._exit is not None and self._process is not None
        if not self._exit.done():
            self.state = VmState.STOPPING
            self._killed = True
            self._process.kill()
        return await asyncio.shield(self._exit)

    async def _watch(self, process: QemuProcess) -> None:
        assert self._exit is not None
        try:
            code = await process.wait()
            shutdown = None
            if self._qmp is not None:
                await self._qmp.hung_up(1.0)
                shutdown = self._qmp.shutdown_reason
                await self._qmp.close()
            await self._finish_console()
            await asyncio.to_thread(self._remove_files)
            result = self._describe(code, shutdown, process.stderr_tail(500))
            self.state = VmState.STOPPED
            self._logger.info("QEMU pid %d exited: %s", process.pid, result.reason)
            self._exit.set_result(result)
        except BaseException as exc:
            if not self._exit.done():
                self._exit.set_exception(Internal(f"watching QEMU failed: {exc!r}"))
            raise

    def _describe(self, code: int, shutdown: str | None, stderr: str) -> VmExit:
        if code < 0:
            number = -code
            if self._killed and number == signal.SIGKILL:
                return VmExit(None, number, "killed")
            return VmExit(None, number, f"qemu killed by {signal.Signals(number).name}")
        if code != 0:
            return VmExit(code, None, f"qemu exited with {code}: {stderr}")
        if shutdown is None:
            return VmExit(0, None, "qemu exited")
        return VmExit(0, None, _SHUTDOWN_REASONS.get(shutdown, f"qemu exited ({shutdown})"))

    async def _finish_console(self) -> None:
        """The console ends with QEMU; give the reader a moment to take the last bytes."""
        task = self._console_task
        if task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _remove_files(self) -> None:
        for path in (self.qmp_path, self.pidfile):
            path.unlink(missing_ok=True)
