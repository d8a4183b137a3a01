"""Attach the user's terminal or pipes to a process in a pod, the way ``docker run`` does.

- stdin (with ``-i``) flows to the process until EOF; stdout and stderr flow back, each to the
  same descriptor, and all output is written before the command returns.
- With ``-t`` on a terminal, the terminal goes raw (restored on every way out) and window size
  changes are sent as resizes.
- Signals to the client (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are forwarded to the
  process. SIGTERM also starts the grace period: a process still running when it ends is killed
  (SIGKILL), and the exit status says so (137).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import stat
import struct
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Iterator

from hyper.agent.client import Process
from hyper.agent.streams import OutputStream
from hyper.errors import HyperError, NotFound
from hyper.proto import messages

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

SignalFn = Callable[[int], Awaitable[None]]
ResizeFn = Callable[[int, int], Awaitable[None]]


def terminal_size() -> tuple[int, int]:
    """(rows, cols) of the client's terminal; 24x80 when there is none."""
    for fd in (0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            continue
        if rows and cols:
            return rows, cols
    return 24, 80


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put stdin's terminal in raw mode for the block, and restore it however the block ends."""
    if not enabled or not os.isatty(0):
        yield None
        return
    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield None
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


async def attach(
    process: Process,
    *,
    signal_fn: SignalFn,
    resize_fn: ResizeFn | None,
    grace: float,
    forward_signals: bool = True,
) -> messages.Exit:
    """Relay stdio and signals until the process exits; returns its exit."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    killed = asyncio.Event()

    async def send_signal(signum: int) -> None:
        with contextlib.suppress(Exception):
            await signal_fn(signum)
        if signum == signal.SIGTERM and not killed.is_set():
            killed.set()
            tasks.append(asyncio.create_task(_kill_after(grace)))

    async def _kill_after(delay: float) -> None:
        await asyncio.sleep(delay)  # the grace period itself, not a wait for an event
        if not process.exited:
            with contextlib.suppress(Exception):
                await signal_fn(signal.SIGKILL)

    def on_signal(signum: int) -> None:
        tasks.append(asyncio.create_task(send_signal(signum)))

    installed: list[int] = []
    if forward_signals:
        for forwarded in FORWARDED:
            loop.add_signal_handler(forwarded, on_signal, int(forwarded))
            installed.append(forwarded)
    if resize_fn is not None and os.isatty(0):

        async def on_winch() -> None:
            rows, cols = terminal_size()
            with contextlib.suppress(Exception):
                await resize_fn(rows, cols)

        loop.add_signal_handler(
            signal.SIGWINCH, lambda: tasks.append(asyncio.create_task(on_winch()))
        )
        installed.append(int(signal.SIGWINCH))

    outputs = []
    if process.stdout is not None:
        outputs.append(asyncio.create_task(_pump_out(process.stdout, 1)))
    if process.stderr is not None:
        outputs.append(asyncio.create_task(_pump_out(process.stderr, 2)))
    stdin_task = asyncio.create_task(_pump_in(process)) if process.stdin is not None else None
    try:
        await asyncio.gather(*outputs)
        return await process.wait()
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
        for task in [*tasks, *([stdin_task] if stdin_task else [])]:
            task.cancel()
        for task in outputs:
            task.cancel()


async def _pump_out(stream: OutputStream, fd: int) -> None:
    while chunk := await stream.read():
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.001)  # the fd is non-blocking and full: yield, retry
                continue
            except BrokenPipeError:
                # Like a process writing to a closed pipe: stop relaying, keep draining.
                while await stream.read():
                    pass
                return
            view = view[written:]


async def _pump_in(process: Process) -> None:
    stdin = process.stdin
    assert stdin is not None
    mode = os.fstat(0).st_mode
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    pollable = not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))
    if pollable:
        try:
            loop.add_reader(0, readable.set)
        except (PermissionError, OSError):  # e.g. /dev/null cannot be polled: it never blocks
            pollable = False
    try:
        while True:
            if pollable:
                await readable.wait()
                readable.clear()
            try:
                data = os.read(0, 64 * 1024)
            except BlockingIOError:
                continue
            if not data:
                break
            await stdin.write(data)
    finally:
        if pollable:
            loop.remove_reader(0)
    await stdin.close()


def start_failure_status(error: HyperError) -> int:
    """Report a process that could not start; its exit status as docker gives it:
    127 when the program is not found, 126 when it cannot be invoked."""
    print(f"hyper: {error}", file=sys.stderr)
    return 127 if isinstance(error, NotFound) else 126


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and os.isatty(0)
