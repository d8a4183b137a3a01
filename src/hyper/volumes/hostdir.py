"""Host directories for the operator's tooling: packed into a read-only erofs image per start.

The guest kernel has no 9p, and virtio-fs needs a shared memory backend that VM templates cannot
use (docs/platform.md), so a host directory cannot be shared live. What the operator gets is a
read-only copy taken when the pod starts: ``mkfs.erofs`` of the directory (the same tool and
format as the images' root file systems), attached like any volume. Later changes on the host
are not seen; the container cannot write to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from hyper import errors

_TIMEOUT = 600.0


async def pack(directory: Path, output: Path) -> None:
    """``directory`` as an erofs image at ``output`` (owners, modes and times kept)."""
    if not directory.is_dir():
        raise errors.NotFound(f"host directory {directory} does not exist")
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        process = await asyncio.create_subprocess_exec(
            "mkfs.erofs", "--quiet", str(tmp), str(directory),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except FileNotFoundError:
        raise errors.Unavailable("mkfs.erofs is missing: install erofs-utils") from None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), _TIMEOUT)
        if process.returncode != 0:
            text = out.decode(errors="replace")[-2000:]
            raise errors.Unavailable(f"cannot pack host directory {directory}: {text}")
        os.rename(tmp, output)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
