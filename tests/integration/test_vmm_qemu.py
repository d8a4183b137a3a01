"""The QEMU driver on real QEMU: boot, console, every way to end, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyper.config.settings import VmSettings
from hyper.errors import Unavailable
from hyper.vmm.machine import Disk, MachineConfig, VmState
from hyper.vmm.qemu.driver import QemuVm

from .conftest import INIT_MARKER, pids_mentioning, wait_gone

pytestmark = pytest.mark.vm

SETTINGS = VmSettings()


@pytest.fixture
def agent_socket(vm_dir: Path) -> Iterator[Path]:
    """The caller's side of the agent channel: a listening socket QEMU connects to."""
    path = vm_dir.parent / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    yield path
    listener.close()
    path.unlink(missing_ok=True)


@pytest.fixture
def machine(debian_kernel: Path, busybox_initrd: Path, agent_socket: Path, vm_dir: Path):
    def make(**changes: object) -> MachineConfig:
        values: dict[str, object] = {
            "name": "test-vm",
            "accelerator": "tcg",
            "cpus": 1,
            "memory_mb": 256,
            "kernel": debian_kernel,
            "initrd": busybox_initrd,
            "append": "",
            "disks": (),
            "agent_socket": agent_socket,
            "run_dir": vm_dir / "run",
        }
        values.update(changes)
        return MachineConfig(**values)  # type: ignore[arg-type]

    return make


async def console_shows(vm: QemuVm, text: str, timeout: float = 60.0) -> str:
    """The console once it contains `text` (bounded; the console has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while text not in vm.console_tail():
        if time.monotonic() > deadline or vm.state is not VmState.RUNNING:
            raise AssertionError(f"console never showed {text!r}:\n{vm.console_tail()[-3000:]}")
        await asyncio.sleep(0.05)
    return vm.console_tail()


def alive(pid: int) -> bool:
    return not wait_gone(pid, timeout=0)


def test_boot_console_kill(machine) -> None:
    config = machine(append="loglevel=7")

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        await vm.start()
        try:
            assert vm.state.name == "RUNNING"
            pid = vm.pid
            assert pid is not None and alive(pid)
            assert (config.run_dir / "qmp.sock").exists()
            assert vm.startup_seconds is not None
            print(f"spawn to QMP connected: {vm.startup_seconds * 1000:.0f} ms")
            console = await console_shows(vm, INIT_MARKER)
            assert "Linux version" in console
            assert await vm.execute("query-status") == {
                "status": "running",
                "singlestep": False,
                "running": True,
            }
        finally:
            end = await vm.kill()
        assert (end.code, end.signal, end.reason) == (None, signal.SIGKILL, "killed")
        assert vm.state is VmState.STOPPED and vm.pid is None
        assert wait_gone(pid, timeout=5)
        assert list(config.run_dir.iterdir()) == []
        assert INIT_MARKER in vm.console_tail()  # the console outlives the VM

    asyncio.run(scenario())


def test_guest_power_off_ends_the_vm(machine) -> None:
    config = machine(append="hypertest=poweroff", cpus=2)

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        await vm.start()
        end = await asyncio.wait_for(vm.wait(), 60)
        assert (end.code, end.reason) == (0, "guest powered off")
        assert vm.state is VmState.STOPPED
        assert list(config.run_dir.iterdir()) == []
        assert await vm.stop() == end  # stopping an exited VM tells how it ended

    asyncio.run(scenario())


def test_stop_quits_over_qmp(machine) -> None:
    config = machine()

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        await vm.start()
        pid = vm.pid
        assert pid is not None
        end = await vm.stop(timeout=5)
        assert (end.code, end.reason) == (0, "quit by the host")
        assert wait_gone(pid, timeout=5)
        assert list(config.run_dir.iterdir()) == []

    asyncio.run(scenario())


def test_kill_from_outside_is_noticed(machine) -> None:
    config = machine()

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        await vm.start()
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGKILL)
        end = await asyncio.wait_for(vm.wait(), 10)
        assert (end.signal, end.reason) == (signal.SIGKILL, "qemu killed by SIGKILL")
        assert list(config.run_dir.iterdir()) == []

    asyncio.run(scenario())


def test_disks_are_attached(machine, tmp_path: Path) -> None:
    image = tmp_path / "disk,with-comma.img"
    image.write_bytes(b"\0" * (1 << 20))
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(b"\0" * (1 << 20))
    config = machine(disks=(Disk("rootfs", image), Disk("scratch", scratch, readonly=False)))

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        await vm.start()
        try:
            blocks = await vm.execute("query-block")
            by_id = {block["device"]: block for block in blocks}
            assert by_id["rootfs"]["inserted"]["ro"] is True
            assert by_id["scratch"]["inserted"]["ro"] is False
            assert by_id["rootfs"]["inserted"]["file"] == str(image)
        finally:
            await vm.kill()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"kernel": Path("/nonexistent/vmlinuz")}, "could not"),
        ({"agent_socket": Path("/nonexistent/agent.sock")}, "agent"),
        ({"disks": (Disk("missing", Path("/nonexistent/disk.img")),)}, "nonexistent/disk.img"),
    ],
)
def test_qemu_failing_at_once_leaves_nothing(machine, change, expected: str) -> None:
    config = machine(**change)

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        with pytest.raises(Unavailable) as caught:
            await vm.start()
        assert expected in str(caught.value)
        assert "QEMU said:" in str(caught.value)
        assert vm.state is VmState.FAILED and vm.pid is None
        assert list(config.run_dir.iterdir()) == []
        assert pids_mentioning(str(config.run_dir)) == []

    asyncio.run(scenario())


def test_cancelled_start_leaves_nothing(machine) -> None:
    config = machine()

    async def scenario() -> None:
        vm = QemuVm(config, SETTINGS)
        task = asyncio.create_task(vm.start())
        while vm._process is None:  # cancel once QEMU exists
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert vm.state is VmState.FAILED
        assert list(config.run_dir.iterdir()) == []
        assert pids_mentioning(str(config.run_dir)) == []

    asyncio.run(scenario())


CHILD = """
import asyncio, json, sys
from pathlib import Path
from hyper.config.settings import VmSettings
from hyper.vmm.machine import MachineConfig
from hyper.vmm.qemu.driver import QemuVm

async def main():
    config = MachineConfig(**{k: Path(v) if k in PATHS else v for k, v in ARGS.items()})
    vm = QemuVm(config, VmSettings())
    await vm.start()
    print(vm.pid, flush=True)
    await asyncio.Event().wait()

ARGS = json.loads(sys.argv[1])
PATHS = {"kernel", "initrd", "agent_socket", "run_dir"}
asyncio.run(main())
"""


def test_qemu_dies_with_the_process_that_started_it(machine) -> None:
    config = machine()
    args = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(config).items()
        if key != "disks"
    }
    args["disks"] = ()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"the child did not start QEMU: {line!r}"
        pid = int(line)
        assert alive(pid)
    finally:
        child.kill()  # SIGKILL: no cleanup code of the child runs
        child.wait()
    assert wait_gone(pid, timeout=5), "QEMU outlived the process that started it"
