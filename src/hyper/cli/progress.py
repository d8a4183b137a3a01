"""Progress of a pull or a push, one line per layer, as docker shows it.

On a terminal the lines are redrawn in place (cursor up, clear line) at most every 0.1 s; into a
file or a pipe only the changes of state are written, one line each, so logs stay readable.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from hyper.cli import output

BAR_WIDTH = 40
REDRAW_INTERVAL = 0.1


class TransferDisplay:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._layers: dict[str, dict[str, Any]] = {}
        self._drawn = 0
        self._last_draw = 0.0

    def update(self, line: dict[str, Any]) -> None:
        layer_id = str(line.get("id", ""))[:12]
        previous = self._layers.get(layer_id)
        self._layers[layer_id] = line
        if not self._tty:
            if previous is None or previous.get("status") != line.get("status"):
                print(f"{layer_id}: {_status(line)}", file=self._stream, flush=True)
            return
        now = time.monotonic()
        if previous is None or now - self._last_draw >= REDRAW_INTERVAL:
            self._draw()
            self._last_draw = now

    def finish(self) -> None:
        if self._tty and self._layers:
            self._draw()

    def _draw(self) -> None:
        out = [f"\x1b[{self._drawn}A"] if self._drawn else []
        for layer_id, line in self._layers.items():
            out.append(f"\x1b[2K{layer_id}: {_render(line)}\n")
        self._drawn = len(self._layers)
        self._stream.write("".join(out))
        self._stream.flush()


def _status(line: dict[str, Any]) -> str:
    status = str(line.get("status", ""))
    return {
        "waiting": "Waiting",
        "exists": "Already exists",
        "downloading": "Downloading",
        "uploading": "Pushing",
        "retrying": "Retrying",
        "verifying": "Verifying checksum",
        "done": "Complete",
    }.get(status, status.capitalize())


def _render(line: dict[str, Any]) -> str:
    text = _status(line)
    current, total = int(line.get("current") or 0), int(line.get("total") or 0)
    if line.get("status") in ("downloading", "uploading", "retrying") and total > 0:
        filled = min(BAR_WIDTH, BAR_WIDTH * current // total)
        bar = "=" * max(filled - 1, 0) + (">" if filled else "") + " " * (BAR_WIDTH - filled)
        text += f" [{bar}] {output.size(current)}/{output.size(total)}"
    return text
