"""Saving a paused VM's device state and loading it into a new QEMU: the VM template mechanism.

With ``x-ignore-shared`` the RAM of a shared memory backend is not written to the state (it is
in the template's RAM file already), so a save is ~60 KB and ~13 ms, and a clone maps that file
copy-on-write and loads only the devices (platform.md). QEMU 7.2 has no
``-global migration.x-ignore-shared``: the capability is set over QMP on both sides.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hyper.errors import Timeout, Unavailable

Execute = Callable[[str, dict[str, object]], Awaitable[Any]]

_CAPABILITIES: dict[str, object] = {
    "capabilities": [{"capability": "x-ignore-shared", "state": True}]
}
_POLL = 0.002  # seconds between query-migrate calls: a save or load takes ~10 ms


async def save(execute: Execute, path: Path, timeout: float) -> None:
    """Pause the VM and write its device state to ``path``; the VM stays paused."""
    await execute("stop", {})
    await execute("migrate-set-capabilities", _CAPABILITIES)
    await execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(path))}"})
    await _completed(execute, timeout, "saving the template's state")


async def load(execute: Execute, path: Path, timeout: float) -> None:
    """Load the state at ``path`` into a QEMU started with ``-incoming defer``, then resume."""
    await execute("migrate-set-capabilities", _CAPABILITIES)
    await execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(path))}"})
    await _completed(execute, timeout, "loading the template's state")
    await execute("cont", {})


async def _completed(execute: Execute, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = await execute("query-migrate", {})
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            detail = info.get("error-desc", status) if isinstance(info, dict) else status
            raise Unavailable(f"{what} failed: {detail}")
        if time.monotonic() > deadline:
            raise Timeout(f"{what} did not complete within {timeout:g} s (status {status})")
        await asyncio.sleep(_POLL)
