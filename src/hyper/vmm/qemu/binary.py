"""What the installed QEMU binary is and supports, asked once per binary and process."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from hyper.errors import Unavailable

_VERSION = re.compile(r"QEMU emulator version (\S+)")
_cache: dict[str, QemuBinary] = {}


@dataclass(frozen=True)
class QemuBinary:
    path: str
    version: str
    """For example ``7.2.22``."""
    sandbox: bool
    """Built with seccomp: ``-sandbox on`` is available."""


async def _output(*argv: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise Unavailable(f"cannot run {argv[0]}: {exc.strerror}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Unavailable(f"{argv[0]} {argv[1]} did not answer within 10 s") from None
    if proc.returncode != 0:
        raise Unavailable(f"{' '.join(argv)} exited with {proc.returncode}: {out[-500:]!r}")
    return out.decode(errors="replace")


async def inspect(path: str) -> QemuBinary:
    """The version and features of the QEMU at `path` (a name on PATH or a path)."""
    cached = _cache.get(path)
    if cached is not None:
        return cached
    version_text = await _output(path, "-version")
    match = _VERSION.search(version_text)
    if match is None:
        raise Unavailable(f"{path} -version printed no QEMU version: {version_text[:200]!r}")
    help_text = await _output(path, "-help")
    binary = QemuBinary(
        path=path,
        version=match.group(1),
        sandbox=any(line.startswith("-sandbox ") for line in help_text.splitlines()),
    )
    _cache[path] = binary  # two concurrent first calls both ask: harmless
    return binary
