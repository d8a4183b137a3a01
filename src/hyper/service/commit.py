"""``commit``: a running container's changes become a new image.

The guest agent streams the changes of the container's writable layer as a tar (deletions as
whiteouts); the tar is written to the image store's temporary directory, bounded in size
because the guest is hostile, then stored as a layer over the container's own image (by the
manifest digest recorded at create, so retagging the base meanwhile changes nothing). The new
image is named in the container's tenant (the caller's), and its base must still have a name
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from hyper import errors
from hyper.images.commit import ConfigChanges
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import parse
from hyper.images.unpack import UnpackLimits
from hyper.service.caller import Caller
from hyper.service.images import ImageService
from hyper.service.pods import PodService
from hyper.state.db import ContainerRecord, PodRecord

MAX_STDERR = 64 << 10


async def commit_container(
    pods: PodService,
    images: ImageService,
    container_ref: str,
    *,
    caller: Caller,
    reference: str | None,
    comment: str = "",
    author: str = "",
    changes: list[str] | None = None,
) -> Image:
    """Commit ``container_ref``'s changes as a new image, tagged ``reference`` when given."""
    if reference:
        ref = parse(reference)
        if ref.digest is not None:
            raise errors.InvalidArgument(f"cannot commit to a digest: {reference}")
    parsed = ConfigChanges.parse(changes or [])
    pod, container = pods.container(caller.writes(), container_ref)
    if container.state != "running":
        raise errors.FailedPrecondition(
            f"container {container.name} is {container.state}: commit needs a running container"
            " (its writable layer lives in the VM)"
        )
    base = Digest.parse(container.image_id)
    fd, name = tempfile.mkstemp(prefix="commit-", suffix=".tar", dir=images.store.tmp_dir)
    layer = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            await _export(pods, pod, container, file, UnpackLimits().stream_bytes)
        return await asyncio.to_thread(
            images.commit,
            caller,
            base,
            layer,
            reference=reference or None,
            comment=comment,
            author=author,
            changes=parsed,
            created_by=f"hyper commit {container.name}",
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            layer.unlink()


async def _export(
    pods: PodService, pod: PodRecord, container: ContainerRecord, file: BinaryIO, limit: int
) -> None:
    process = await pods.export(pod, container)
    stdout = process.stdout
    if stdout is None:
        raise errors.ProtocolError("the agent's export has no output stream")

    async def copy() -> None:
        written = 0
        while chunk := await stdout.read():
            written += len(chunk)
            if written > limit:
                raise errors.ProtocolError(f"the guest's export exceeds {limit} bytes")
            file.write(chunk)  # local disk, 32 KiB at a time: not worth a thread

    stderr = process.stderr.read_all(MAX_STDERR) if process.stderr else asyncio.sleep(0, b"")
    _, err = await asyncio.gather(copy(), stderr)
    exit_ = await process.wait()
    if exit_.status != 0:
        message = bytes(err or b"").decode(errors="replace").strip()[-2000:]
        raise errors.FailedPrecondition(
            f"exporting the changes of {container.name} failed (status {exit_.status}): {message}"
        )
