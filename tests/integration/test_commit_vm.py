"""`processes`, `export` and commit on real QEMU: the changes a container makes in its guest
become an image layer, and a second pod from the committed image sees them.

Images live in a private store (busybox built into it from /bin/busybox); pods run under a short
private run_dir in /tmp; the guest (kernel, initramfs with the current hyperstart) is the
machine's shared cache, rebuilt when hyperstart changed.
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyper.agent.client import Process
from hyper.config.settings import Paths, Settings, VmSettings
from hyper.images.busybox import ensure_busybox
from hyper.images.commit import ConfigChanges, commit
from hyper.model.pod import ContainerSpec, PodSpec
from hyper.sandbox.runtime import open_runtime

from .conftest import pids_mentioning

pytestmark = pytest.mark.vm

DEADLINE = 600.0  # the whole scenario: two boots (TCG is slow), one export, one commit
# The renamed lower directory must arrive whole: the guest's overlay has no redirects.
SCRIPT = "echo hi > /new; rm /bin/vi; mkdir /d; touch /d/f; mv /usr/sbin /usr/sbin2"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-it-", dir="/tmp"))  # short: socket paths
    yield Settings(
        paths=Paths(state_dir=tmp_path / "state", run_dir=run_dir),
        vm=VmSettings(boot_timeout=120.0),
    )
    leftovers = pids_mentioning(str(run_dir))
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


async def _finish(process: Process, what: str, out: Path | None = None) -> bytes:
    """Read stdout (into ``out`` if given) and stderr, then the exit; returns stdout."""

    async def drain_stdout() -> bytes:
        assert process.stdout is not None
        if out is None:
            return await process.stdout.read_all(1 << 20)
        with out.open("wb") as file:
            while chunk := await process.stdout.read():
                file.write(chunk)
        return b""

    stdout, stderr = await asyncio.gather(
        drain_stdout(),
        process.stderr.read_all(1 << 20) if process.stderr else asyncio.sleep(0, b""),
    )
    exit_ = await process.wait()
    assert exit_.status == 0, f"{what}: exit {exit_.status}, stderr {stderr!r}"
    return stdout


def test_processes_export_commit_and_run_the_committed_image(
    settings: Settings, tmp_path: Path
) -> None:
    async def scenario() -> None:
        runtime = await open_runtime(settings)
        store = runtime.images
        await asyncio.to_thread(ensure_busybox, store)
        source = runtime.new_pod(
            PodSpec(
                name="commit-src",
                containers=(ContainerSpec(name="box", image="busybox", command=("sleep", "600")),),
            )
        )
        layer = tmp_path / "changes.tar"
        try:
            await source.start()
            await source.start_container("box")
            await _finish(await source.exec("box", ["sh", "-c", SCRIPT]), "the exec")

            processes = await source.processes("box")
            assert [p["command"] for p in processes] == ["sleep 600"], processes
            sleep = processes[0]
            assert (sleep["user"], sleep["uid"], sleep["state"]) == ("root", 0, "S")
            assert sleep["rss"] > 0 and sleep["started"] > 0

            await _finish(await source.export_changes("box"), "the export", layer)
        finally:
            await source.destroy()

        with tarfile.open(layer) as archive:
            names = {member.name for member in archive}
        assert {"new", "bin/.wh.vi", "d", "d/f", "usr/.wh.sbin", "usr/sbin2/chroot"} <= names
        assert not {"etc/hostname", "etc/hosts"} & names  # the agent's files are not changes

        base = store.resolve("busybox")
        image = await asyncio.to_thread(
            commit,
            store.tenant("default"),
            base,
            layer,
            reference="committed:test",
            changes=ConfigChanges.parse(['CMD ["sh"]']),
            created_by="hyper commit box",
        )
        assert len(image.layers) == len(base.layers) + 1

        check = (
            "cat /new; test -e /bin/vi && echo vi-present || echo vi-gone; ls /d;"
            " test -e /usr/sbin && echo sbin-present; readlink /usr/sbin2/chroot"
        )
        target = runtime.new_pod(
            PodSpec(
                name="commit-dst",
                containers=(
                    ContainerSpec(name="box2", image="committed:test", command=("sh", "-c", check)),
                ),
            )
        )
        try:
            await target.start()
            output = await _finish(await target.start_container("box2"), "the check")
        finally:
            await target.destroy()
        assert output == b"hi\nvi-gone\nf\n/bin/busybox\n"

    asyncio.run(asyncio.wait_for(scenario(), DEADLINE))
