"""VM templates on real QEMU: clones are correct, personal, and templates have a lifecycle.

Every clone must differ from its siblings where a guest's secrets and identity live (RNG output,
random UUIDs, machine id, hostname), tell the host's time, and see only its own disks. A template
in use cannot be removed; an unused one leaves no file behind.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hyper import errors
from hyper.agent.client import Process
from hyper.config.settings import Paths, Settings, TemplateSettings, VmSettings
from hyper.images.busybox import ensure_busybox
from hyper.model.pod import ContainerSpec, PodSpec
from hyper.sandbox.pod import Pod
from hyper.sandbox.runtime import Runtime, open_runtime
from hyper.sandbox.template import Templates

from .conftest import pids_mentioning

pytestmark = pytest.mark.vm

DEADLINE = 600.0
PROBE = (
    "cat /proc/sys/kernel/random/uuid; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo;"
    " date +%s; hostname; ls /"
)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-tpl-", dir="/tmp"))  # short: socket paths
    yield Settings(
        paths=Paths(state_dir=tmp_path / "state", run_dir=run_dir),
        vm=VmSettings(boot_timeout=120.0),
        template=TemplateSettings(memory_dir=str(run_dir / "shm")),
    )
    leftovers = pids_mentioning(str(run_dir))
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


async def _output(process: Process) -> str:
    assert process.stdout is not None
    out = await process.stdout.read_all(1 << 20)
    exit_ = await process.wait()
    assert exit_.status == 0, f"exit {exit_.status}: {out!r}"
    return out.decode()


def _pod(runtime: Runtime, name: str, command: str, **labels: str) -> Pod:
    spec = PodSpec(
        name=name,
        containers=(ContainerSpec(name="box", image="busybox", command=("sh", "-c", command)),),
        labels=labels,
    )
    return runtime.new_pod(spec)


async def _probe(pod: Pod) -> list[str]:
    await pod.start()
    return (await _output(await pod.start_container("box"))).splitlines()


async def _start_and_probe(pod: Pod, name: str) -> list[str]:
    await pod.start()
    await pod.start_container("box")
    exec_ = await pod.exec("box", ["sh", "-c", f"touch /mine-{name}; {PROBE}"])
    return (await _output(exec_)).splitlines()


def test_clones_are_personal_and_see_only_their_own_disks(settings: Settings) -> None:
    async def scenario() -> None:
        runtime = await open_runtime(settings)
        await asyncio.to_thread(ensure_busybox, runtime.images)
        templates = runtime.templates
        pods = [_pod(runtime, "one", "sleep 600"), _pod(runtime, "two", "sleep 600")]
        try:
            # Two supervisors needing the template at once build it once.
            first, second = await asyncio.gather(
                _start_and_probe(pods[0], "one"), _start_and_probe(pods[1], "two")
            )
            host_time = time.time()
            assert all(pod.boot.startswith("clone of template") for pod in pods), [
                pod.boot for pod in pods
            ]
            [template] = templates.inventory()
            assert template.in_use
            for lines, name in ((first, "one"), (second, "two")):
                assert abs(float(lines[2]) - host_time) < 30  # bounded by the run, not timed
                assert lines[3] == name
                assert f"mine-{name}" in lines[4:]
                other = "two" if name == "one" else "one"
                assert f"mine-{other}" not in lines[4:]
            assert first[0] != second[0], "clones share their random UUIDs"
            assert first[1] != second[1], "clones share their /dev/urandom"
            # The clock (busybox's date has whole seconds): within 1 s of the host's.
            for pod in pods:
                before = time.time()
                clock = int(await _output(await pod.exec("box", ["date", "+%s"])))
                assert int(before) - 1 <= clock <= time.time() + 1
            machine_ids = set()
            for pod in pods:
                out = await _output(await pod.exec("box", ["cat", "/proc/1/root/etc/machine-id"]))
                assert len(out.strip()) == 32
                machine_ids.add(out)
            assert len(machine_ids) == 2
            with pytest.raises(errors.FailedPrecondition):
                templates.remove(template.key)
        finally:
            await asyncio.gather(*(pod.destroy() for pod in pods))
        [template] = templates.inventory()
        assert not template.in_use
        assert template.ram.exists() and template.ram.is_relative_to(settings.paths.run_dir / "shm")
        templates.remove(template.key[:12])
        assert not template.ram.exists() and not template.path.exists()
        assert templates.inventory() == []

    asyncio.run(asyncio.wait_for(scenario(), DEADLINE))


def test_a_new_guest_gets_a_new_template_and_running_clones_keep_working(
    settings: Settings,
) -> None:
    async def scenario() -> None:
        runtime = await open_runtime(settings)
        await asyncio.to_thread(ensure_busybox, runtime.images)
        old = _pod(runtime, "old", "sleep 600")
        try:
            await old.start()
            await old.start_container("box")
            [before] = runtime.templates.inventory()
            # A changed agent means another guest fingerprint: another template.
            changed = replace(runtime, guest=replace(runtime.guest, fingerprint="0" * 64))
            new = _pod(changed, "new", "echo hi")
            await new.start()
            assert (await _output(await new.start_container("box"))) == "hi\n"
            keys = {t.key for t in runtime.templates.inventory()}
            assert len(keys) == 2 and before.key in keys
            assert new.boot.startswith("clone") and before.key[:16] not in new.boot
            await new.destroy()
            # The old clone still runs on its (now stale, still kept) template.
            assert (await _output(await old.exec("box", ["echo", "alive"]))) == "alive\n"
            assert [t.key for t in runtime.templates.inventory() if t.in_use] == [before.key]
        finally:
            await old.destroy()
        removed = runtime.templates.prune()
        assert len(removed) == 2 and runtime.templates.inventory() == []

    asyncio.run(asyncio.wait_for(scenario(), DEADLINE))


def test_cold_boot_per_pod_and_by_config(settings: Settings) -> None:
    async def scenario() -> None:
        runtime = await open_runtime(settings)
        await asyncio.to_thread(ensure_busybox, runtime.images)
        pod = _pod(runtime, "cold", "echo cold", **{"hyper.boot": "cold"})
        try:
            assert await _probe(pod) == ["cold"]
            assert pod.boot.startswith("cold: the pod is labelled")
        finally:
            await pod.destroy()
        cold = replace(settings, template=replace(settings.template, boot="cold"))
        pod = _pod(replace(runtime, settings=cold), "cold2", "echo cold")
        try:
            assert await _probe(pod) == ["cold"]
            assert pod.boot == "cold: template.boot is cold"
        finally:
            await pod.destroy()
        assert Templates(settings).inventory() == []

    asyncio.run(asyncio.wait_for(scenario(), DEADLINE))
