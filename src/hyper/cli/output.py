"""How the CLI prints: tables by default, ``--format json`` everywhere, docker-like times."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from hyper import errors


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        out.append("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


def whose(
    rows: Sequence[Sequence[str]], found: Sequence[dict[str, Any]], every: bool
) -> list[Sequence[str]]:
    """A table's ``rows`` (a header, then a row per item of ``found``), with a TENANT column
    first when the listing is ``every`` tenant's (an operator's ``--tenant '*'``)."""
    if not every:
        return list(rows)
    header, *lines = rows
    return [("TENANT", *header)] + [
        (item["tenant"], *row) for item, row in zip(found, lines, strict=True)
    ]


def pairs(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values)
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        print(f"{key.ljust(width)}  {text}")


def ago(when: float | None, now: float | None = None) -> str:
    if not when:
        return ""
    return f"{duration((now or time.time()) - when)} ago"


def duration(seconds: float) -> str:
    """docker's human durations: "Less than a second", "5 seconds", "3 minutes", "2 hours"."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "Less than a second"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size or (unit == "minute" and seconds >= 60):
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def status(view: dict[str, Any]) -> str:
    """The STATUS column of ``hyper ps``: "Up 3 minutes", "Exited (0) 2 seconds ago"."""
    state = str(view["state"])
    if state == "running":
        return f"Up {duration(time.time() - (view.get('started_at') or time.time()))}"
    if state == "restarting":
        return f"Restarting ({view.get('exit_code')}) {ago(view.get('finished_at'))}"
    if state == "exited":
        return f"Exited ({view.get('exit_code')}) {ago(view.get('finished_at'))}"
    return state.capitalize()


def size(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}TB"


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")


def parse_time(text: str | None) -> float | None:
    """``--since``/``--until``: epoch seconds, a duration back from now (``10m``, ``1h30m``),
    or an RFC 3339 date and time."""
    if not text:
        return None
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _RELATIVE.findall(value)
    if parts and "".join(a + b for a, b in parts) == value:
        factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        return time.time() - sum(float(n) * factor[u] for n, u in parts)
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidArgument(
            f"time {text!r} is not understood: use epoch seconds, 10m, 2h, or 2024-05-01T10:00:00Z"
        ) from None
    return parsed.timestamp()
