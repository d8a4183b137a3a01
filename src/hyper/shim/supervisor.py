"""The shim: one small process per pod that owns it, so that pods outlive the daemon.

QEMU dies with the process that started it (PR_SET_PDEATHSIG), and a pod's guest connection,
stdio streams and restart decisions need a live owner. If hyperd were that owner, restarting or
upgrading hyperd would kill every pod; so hyperd starts one shim per pod (in its own session),
and the shim boots the pod, runs the containers' main processes, writes their logs and the pod's
status to files, applies the restart policy, and serves the pod's control socket. hyperd talks to
it through that socket (:mod:`hyper.shim.client`) and, after a restart of its own, finds it again
from the files in the pod's state directory::

    spec.json       written by hyperd: the pod, the restart policy, console size, log options
    status.json     written here, atomically, on every change (``version`` + 1 each time)
    containers/<name>/log.jsonl[.N]   each container's output (docker's json-file format)
    shim.log        this process's stderr (hyperd redirects it)

On stdout the shim prints one line of JSON once the pod and every main process started (or
failed), then closes it: the caller's only synchronous signal. The rest is in ``docs/shim.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import Process
from hyper.agent.streams import OutputStream
from hyper.config import Settings, load
from hyper.model.pod import ContainerSpec
from hyper.model.restart import Backoff
from hyper.proto import messages
from hyper.sandbox.pod import Pod
from hyper.sandbox.rundir import PodDir
from hyper.sandbox.runtime import open_runtime
from hyper.shim.control import ControlServer
from hyper.shim.logs import LogWriter
from hyper.shim.output import RunOutput
from hyper.shim.spec import ShimSpec, read_spec
from hyper.shim.status import ContainerStatus, Status, StatusFile

_log = logging.getLogger("hyper.shim")

STATUS_NAME = "status.json"
CONTAINERS_DIR = "containers"
EXIT_WAIT = 15.0  # after the VM stopped: how long the containers' output may take to drain
CLOSE_GRACE = 2.0  # for the control socket's last answers (the final status, stop's answer)


class ReadyLine:
    """The one line on stdout; after it, stdout is /dev/null (the reader may be gone)."""

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self.sent = False

    def ok(self, vm_pid: int | None) -> None:
        self._send({"ok": True, "pid": os.getpid(), "vm_pid": vm_pid})

    def fail(self, error: BaseException) -> None:
        kind = type(error).__name__ if isinstance(error, errors.HyperError) else "Internal"
        self._send({"ok": False, "kind": kind, "message": str(error) or repr(error)})

    def _send(self, document: dict[str, Any]) -> None:
        if self.sent:
            return
        self.sent = True
        data = json.dumps(document).encode() + b"\n"
        with contextlib.suppress(OSError):  # EPIPE: whoever started us is gone; carry on
            while data:
                data = data[os.write(self._fd, data) :]
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(null, self._fd)
            os.close(null)


class _Container:
    def __init__(self, spec: ContainerSpec, status: ContainerStatus, log: LogWriter) -> None:
        self.spec = spec
        self.status = status
        self.log = log
        self.process: Process | None = None
        self.output: RunOutput | None = None
        self.task: asyncio.Task[None] | None = None
        self.backoff = Backoff()
        self.started = 0.0  # monotonic time of the current run's start


class Supervisor:
    """Boots one pod, runs its containers until they are done, then removes the pod."""

    def __init__(
        self, state_dir: Path, spec: ShimSpec, settings: Settings, ready: ReadyLine
    ) -> None:
        self.state_dir = state_dir
        self.spec = spec
        self.settings = settings
        self.ready = ready
        self.pod: Pod | None = None
        self.control: ControlServer | None = None
        status = Status(shim_pid=os.getpid())
        self.containers: dict[str, _Container] = {}
        for container_spec in spec.pod.containers:
            status.containers[container_spec.name] = ContainerStatus()
            self.containers[container_spec.name] = _Container(
                container_spec,
                status.containers[container_spec.name],
                LogWriter(
                    state_dir / CONTAINERS_DIR / container_spec.name,
                    max_bytes=spec.log.max_bytes,
                    max_files=spec.log.max_files,
                ),
            )
        self._status = status
        self.status_file = StatusFile(state_dir / STATUS_NAME, status)
        self._no_restart = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._finished = asyncio.Event()
        self._stopping = False  # the VM's exit from here on is ours, not a failure
        self._stop_timeout: float | None = None
        self._failed = False
        self._final = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ life

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._publish()
        boot = asyncio.create_task(self._boot(), name="boot")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, boot.cancel)
        try:
            await boot
        except BaseException as exc:
            if boot.cancelled():
                error: BaseException = errors.Unavailable("the shim was stopped during the boot")
            elif isinstance(exc, errors.HyperError):
                error = exc
            elif isinstance(exc, Exception):
                _log.exception("boot failed")
                error = errors.Internal(f"the pod could not start: {exc!r}")
            else:
                raise
            _log.error("the pod did not start: %s", error)
            await self._abort(error)
            self.ready.fail(error)
            return 1
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal)
        assert self.pod is not None
        self._status.pod.state = "running"
        self._status.pod.started_at = time.time()
        self._publish()
        self.ready.ok(self.pod.vm_pid)
        _log.info("pod %s running, VM pid %s", self.spec.pod.name, self.pod.vm_pid)
        watch = asyncio.create_task(self._watch_vm(), name="watch-vm")
        for container in self.containers.values():
            container.task = asyncio.create_task(
                self._supervise(container), name=f"supervise-{container.spec.name}"
            )
        await self._shutdown.wait()
        await self._finish()
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        return 1 if self._failed else 0

    async def _boot(self) -> None:
        runtime = await open_runtime(self.settings, sweep=False)
        self.pod = runtime.new_pod(
            self.spec.pod,
            pod_id=self.spec.id,
            volumes=self.spec.volumes,
            network=self.spec.network,
            image_digests=self.spec.images,
            tenant=self.spec.tenant,
        )
        await self.pod.start()
        self._status.vm_pid = self.pod.vm_pid
        self.control = ControlServer(self.pod, PodDir(self.pod.dir).control_socket, owner=self)
        await self.control.start()
        for container in self.containers.values():
            await self._launch(container)

    async def _abort(self, error: BaseException) -> None:
        """Undo a boot that failed: nothing may be left but the state directory's files."""
        self._stopping = True
        if self.control is not None:
            await self.control.close()
        if self.pod is not None:
            await asyncio.shield(self.pod.destroy())
        now = time.time()
        for container in self.containers.values():
            if container.status.state == "running":
                container.status.state = "exited"
                container.status.finished_at = now
            container.log.close()
        self._status.pod.state = "failed"
        self._status.pod.error = str(error)
        self._status.pod.finished_at = now
        self._final = True
        self._publish()

    async def _finish(self) -> None:
        """Shut the pod down (gracefully unless the VM failed) and write the final status."""
        assert self.pod is not None and self.control is not None
        self._stopping = True
        self._no_restart.set()
        self.control.stop_accepting()
        if not self._failed:
            self._status.pod.state = "stopping"
            self._publish()
            try:
                await self.pod.stop(self._stop_timeout)
            except errors.HyperError as exc:
                _log.error("the pod did not stop cleanly, killing it: %s", exc)
                await self.pod.destroy()
            running = [c.task for c in self.containers.values() if c.task and not c.task.done()]
            if running:
                await asyncio.wait(running, timeout=EXIT_WAIT)
        else:
            await self.pod.destroy()
        now = time.time()
        for container in self.containers.values():
            if container.task is not None and not container.task.done():
                container.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await container.task
            if container.status.state != "exited":
                container.status.state = "exited"
                container.status.finished_at = container.status.finished_at or now
                container.status.pid = 0
            container.log.close()
        self._status.pod.state = "failed" if self._failed else "exited"
        self._status.pod.finished_at = now
        self._final = True
        self._publish()
        self._finished.set()
        await self.control.close(grace=CLOSE_GRACE)
        _log.info("pod %s %s", self.spec.pod.name, self._status.pod.state)

    def _on_stop_signal(self) -> None:
        _log.info("stopping on a signal")
        self._spawn(self.stop(None))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self) -> None:
        try:
            self.status_file.publish()
        except OSError as exc:  # the state directory is gone or full: keep the pod alive
            _log.error("cannot write %s: %s", self.status_file.path, exc)

    # ------------------------------------------------------------ containers

    async def _launch(self, container: _Container) -> None:
        assert self.pod is not None
        container.process = await self.pod.start_container(
            container.spec.name,
            stdin=container.spec.stdin,
            rows=self.spec.rows,
            cols=self.spec.cols,
        )
        container.output = RunOutput()
        container.started = time.monotonic()
        status = container.status
        status.state = "running"
        status.pid = container.process.pid
        status.started_at = time.time()
        status.exit_code = None
        status.signal = 0
        status.finished_at = None
        status.error = ""

    async def _supervise(self, container: _Container) -> None:
        """Relay one container's runs to its log and clients; restart it per the policy."""
        status = container.status
        while True:
            exit_, error = await self._run_once(container)
            if exit_ is None:
                if not self._stopping:
                    assert self.pod is not None and error is not None
                    await self._fail(str(await self.pod.explain(error)))
                return
            status.exit_code = exit_.status
            status.signal = exit_.signal
            status.finished_at = time.time()
            status.pid = 0
            ran_for = time.monotonic() - container.started
            if self._no_restart.is_set() or not self.spec.restart.should_restart(
                exit_.status, status.restart_count
            ):
                break
            status.state = "restarting"
            self._publish()
            delay = container.backoff.delay(ran_for)
            _log.info(
                "container %s exited with %d: restarting in %.1f s",
                container.spec.name,
                exit_.status,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_restart.wait(), delay)
            if self._no_restart.is_set():
                break
            status.restart_count += 1
            try:
                await self._launch(container)
            except errors.HyperError as exc:
                _log.error("container %s did not restart: %s", container.spec.name, exc)
                status.error = f"restart failed: {exc}"
                break
            self._publish()
        status.state = "exited"
        self._publish()
        if all(c.status.state == "exited" for c in self.containers.values()):
            self._shutdown.set()

    async def _run_once(
        self, container: _Container
    ) -> tuple[messages.Exit | None, errors.HyperError | None]:
        process, output = container.process, container.output
        assert process is not None and output is not None
        pumps = [
            self._pump(container, output, name, stream)
            for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
            if stream is not None
        ]
        try:
            await asyncio.gather(*pumps)
            exit_ = await process.wait()
        except errors.HyperError as exc:
            output.end(messages.Exit(container.spec.name, 255, 0))
            return None, exc
        finally:
            for name in ("stdout", "stderr"):
                with contextlib.suppress(OSError):
                    container.log.end(name)
        output.end(messages.Exit(container.spec.name, exit_.status, exit_.signal))
        return exit_, None

    async def _pump(
        self, container: _Container, output: RunOutput, name: str, stream: OutputStream
    ) -> None:
        while chunk := await stream.read():
            try:
                container.log.write(name, chunk)
            except OSError as exc:
                _log.error("cannot write the log of %s: %s", container.spec.name, exc)
            await output.publish(name, chunk)

    async def _watch_vm(self) -> None:
        assert self.pod is not None
        vm_exit = await self.pod.wait_vm_exit()
        if not self._stopping:
            await self._fail(f"the pod's VM exited unexpectedly: {vm_exit.reason}")

    async def _fail(self, reason: str) -> None:
        """The VM (or its agent) is gone: every container that had not ended ends now."""
        if self._failed or self._stopping:
            return
        _log.error("pod %s failed: %s", self.spec.pod.name, reason)
        self._failed = True
        self._no_restart.set()
        now = time.time()
        for container in self.containers.values():
            status = container.status
            if status.state != "exited":
                status.state = "exited"
                status.exit_code = 255
                status.signal = 0
                status.pid = 0
                status.finished_at = now
                status.error = reason
        self._status.pod.state = "failed"
        self._status.pod.error = reason
        self._publish()
        self._shutdown.set()

    # ------------------------------------------------------------ the control socket's owner

    async def status(self, after: int) -> dict[str, Any]:
        if self._final:
            return self.status_file.current()
        return await self.status_file.wait_newer(after)

    def attach_target(self, container: str) -> tuple[RunOutput, Process]:
        found = self.containers.get(container)
        if found is None:
            raise errors.NotFound(f"pod {self.spec.pod.name} has no container {container!r}")
        output, process = found.output, found.process
        if (
            found.status.state != "running"
            or output is None
            or process is None
            or output.exit is not None
        ):
            raise errors.FailedPrecondition(
                f"container {container} is not running ({found.status.state})"
            )
        return output, process

    async def stop(self, timeout: float | None) -> None:
        if not self._shutdown.is_set():
            self._stop_timeout = timeout
            self._no_restart.set()
            self._shutdown.set()
        await self._finished.wait()

    async def kill(self, signum: int) -> None:
        assert self.pod is not None
        self._no_restart.set()
        for container in self.containers.values():
            process = container.process
            if process is not None and not process.exited:
                with contextlib.suppress(errors.NotFound, errors.FailedPrecondition):
                    await self.pod.signal(process.id, signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hyper.shim", description="Own and supervise one pod (started by hyperd)."
    )
    parser.add_argument("state_dir", type=Path, help="the pod's state directory (spec.json)")
    parser.add_argument("--config", type=Path, default=None, help="the settings file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.raiseExceptions = False  # a closed stderr must not take the pod down
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # EPIPE instead (Python's default too)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ready = ReadyLine()
    try:
        settings = load(args.config)
        spec = read_spec(args.state_dir)
        supervisor = Supervisor(args.state_dir, spec, settings, ready)
    except (errors.HyperError, OSError) as exc:
        _log.error("cannot start: %s", exc)
        ready.fail(exc if isinstance(exc, errors.HyperError) else errors.InvalidArgument(str(exc)))
        return 1
    return asyncio.run(supervisor.run())
