"""The QEMU process: spawned so that it can never outlive us, reaped, killed only by its own pid.

- Its own session (a terminal's signals don't reach it), stdin and stdout on /dev/null.
- ``PR_SET_PDEATHSIG=SIGKILL``: if the thread that spawned it dies (even by ``kill -9``), the kernel
  kills QEMU. Spawn from the event loop's thread, which lives as long as the process.
- stderr goes into a bounded ring that error messages quote.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable, Sequence

from hyper.errors import Unavailable
from hyper.vmm.qemu.ring import ByteRing, drain

STDERR_BYTES = 16 * 1024
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _die_with(parent: int) -> Callable[[], None]:
    """The pre-exec hook of the child; runs between fork and exec, so it only makes syscalls."""

    def hook() -> None:
        os.setsid()
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(127)

    return hook


class QemuProcess:
    """One spawned QEMU. `wait` reaps it; `kill` signals only this pid, and only while unreaped."""

    def __init__(self, proc: asyncio.subprocess.Process, logger: logging.Logger) -> None:
        self._proc = proc
        self._logger = logger
        self.stderr = ByteRing(STDERR_BYTES)
        assert proc.stderr is not None
        self._stderr_task = asyncio.create_task(
            drain(proc.stderr, self.stderr, logger), name=f"qemu-stderr-{proc.pid}"
        )

    @classmethod
    async def spawn(
        cls, argv: Sequence[str], *, pass_fds: Sequence[int] = (), logger: logging.Logger
    ) -> QemuProcess:
        logger.debug("spawn: %s", " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=tuple(pass_fds),
                preexec_fn=_die_with(os.getpid()),
            )
        except OSError as exc:
            raise Unavailable(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        logger.debug("qemu pid %d", proc.pid)
        return cls(proc, logger)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        """Reap the process; also waits until its stderr is read to the end (bounded)."""
        code = await self._proc.wait()
        with contextlib.suppress(TimeoutError):
            # stderr ends when QEMU exits, unless a child of QEMU inherited it
            await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout=1.0)
        if not self._stderr_task.done():
            self._stderr_task.cancel()
        return code

    def kill(self) -> None:
        """SIGKILL, unless it was reaped already (then the pid may belong to someone else)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)

    async def kill_and_wait(self) -> int:
        self.kill()
        return await self.wait()

    def stderr_tail(self, limit: int = 2000) -> str:
        return self.stderr.text(limit).strip()
