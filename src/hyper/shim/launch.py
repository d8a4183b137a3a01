"""Starting a shim, and watching one that is not our child (after a restart of hyperd).

The shim runs in a session of its own (a signal to hyperd's process group does not reach it),
with stdin on /dev/null, stderr appended to ``shim.log`` in the pod's state directory, and
stdout on a pipe that carries exactly one line: whether the pod started. Everything after that
goes through the control socket and the state directory's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hyper import errors

LOG_NAME = "shim.log"
TERM_GRACE = 10.0  # a shim told to give up removes its pod; then it is killed


async def spawn(
    pod_state_dir: Path, *, config: Path | None, timeout: float
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Start the shim of the pod whose ``spec.json`` is in ``pod_state_dir``; returns it and
    its ready line ``{"ok": true, "pid": ..., "vm_pid": ...}`` once every main process runs.

    A failed start raises the error class the shim names (NotFound for a missing image...);
    no ready line within ``timeout`` stops the shim and raises Timeout."""
    argv = [sys.executable, "-m", "hyper.shim", os.fspath(pod_state_dir)]
    if config is not None:
        argv += ["--config", os.fspath(config)]
    with open(pod_state_dir / LOG_NAME, "ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
    except TimeoutError:
        await _terminate(process)
        raise errors.Timeout(
            f"the pod did not start within {timeout:g} s (see {pod_state_dir / LOG_NAME})"
        ) from None
    except BaseException:
        await _terminate(process)
        raise
    if not line:
        status = await _reap(process)
        raise errors.Internal(
            f"the shim exited ({status}) without saying why: see {pod_state_dir / LOG_NAME}"
        )
    try:
        ready = json.loads(line)
        if not isinstance(ready, dict) or not isinstance(ready.get("ok"), bool):
            raise ValueError("not a ready line")
    except ValueError:
        await _terminate(process)
        raise errors.Internal(f"the shim said something unexpected: {line[:200]!r}") from None
    if not ready["ok"]:
        await _reap(process)
        raise errors.by_kind(str(ready.get("kind", "")))(str(ready.get("message", "")))
    return process, ready


async def _reap(process: asyncio.subprocess.Process) -> int:
    """The shim's exit status; it exits right after a failed start (after its clean-up)."""
    try:
        return await asyncio.wait_for(process.wait(), TERM_GRACE)
    except TimeoutError:
        await _terminate(process)
        return await process.wait()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the shim removes its pod), SIGKILL if it does not exit within TERM_GRACE."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), TERM_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()  # its QEMU dies with it (PDEATHSIG)
        await process.wait()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


async def wait_exit(pid: int) -> None:
    """Until process ``pid`` (any process, not only a child) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    try:
        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
