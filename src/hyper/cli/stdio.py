"""The user's terminal or pipes, relayed to a process through hyperd, as ``docker run`` does.

- stdin (with ``-i``) flows to the process until EOF; stdout and stderr flow back, each to the
  same descriptor, and all output is written before the command returns.
- With ``-t`` on a terminal, the terminal goes raw (restored on every way out) and window size
  changes are sent as resizes.
- Without a TTY, signals to the client (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are
  forwarded to the process (docker's ``--sig-proxy``).

The websocket's channels are described in :mod:`hyper.daemon.relay`. A thread copies stdin; the
main thread writes output, so a full stdout blocks only the relay, which is the back-pressure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import struct
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

from hyper.errors import start_failure_status

STDIN, STDOUT, STDERR, END, RESIZE, SIGNAL = 0, 1, 2, 3, 4, 5
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


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


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and os.isatty(0)


def relay(ws: Any, *, stdin: bool, tty_: bool) -> int:
    """Relay until the process ends; its exit status (or hyper's error status)."""
    sender = threading.Lock()

    def send(channel: int, payload: bytes = b"") -> None:
        with sender, contextlib.suppress(Exception):
            ws.send(bytes([channel]) + payload)

    previous: dict[signal.Signals, Any] = {}
    if tty_ and os.isatty(0):
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: _send_size(send))
    elif not tty_:
        for number in FORWARDED:
            previous[number] = signal.signal(
                number, lambda n, _f: send(SIGNAL, json.dumps({"signal": n}).encode())
            )
    if stdin:
        threading.Thread(target=_copy_stdin, args=(send,), daemon=True).start()
    try:
        with raw_terminal(tty_):
            if tty_:
                _send_size(send)
            return _receive(ws)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        with contextlib.suppress(Exception):
            ws.close()


def _receive(ws: Any) -> int:
    from websockets.exceptions import ConnectionClosed

    try:
        for message in ws:
            if isinstance(message, str) or not message:
                continue
            channel, payload = message[0], message[1:]
            if channel in (STDOUT, STDERR):
                _write_all(channel, payload)
            elif channel == END:
                return _end(payload)
    except ConnectionClosed:
        pass
    print("hyper: the connection to hyperd ended before the process did", file=sys.stderr)
    return 125


def _end(payload: bytes) -> int:
    try:
        end = json.loads(payload)
    except ValueError:
        end = {}
    if isinstance(end, dict) and isinstance(end.get("exit_code"), int):
        return int(end["exit_code"])
    if not isinstance(end, dict):
        end = {}
    print(f"hyper: {end.get('message') or 'the process ended without a status'}", file=sys.stderr)
    return start_failure_status(str(end.get("kind", "")))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return
        view = view[written:]


def _copy_stdin(send: Any) -> None:
    while True:
        try:
            data = os.read(0, 32 * 1024)
        except OSError:
            data = b""
        send(STDIN, data)
        if not data:
            return


def _send_size(send: Any) -> None:
    rows, cols = terminal_size()
    send(RESIZE, json.dumps({"rows": rows, "cols": cols}).encode())
