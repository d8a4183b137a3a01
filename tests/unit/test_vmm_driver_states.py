"""The VM refuses what its state does not allow, and a start that cannot even spawn rolls back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyper.config.settings import VmSettings
from hyper.errors import FailedPrecondition, Unavailable
from hyper.vmm.machine import MachineConfig, VmState
from hyper.vmm.qemu.driver import QemuVm


def machine(tmp_path: Path) -> MachineConfig:
    return MachineConfig(
        name="pod-1",
        accelerator="tcg",
        cpus=1,
        memory_mb=256,
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd",
        append="",
        disks=(),
        agent_socket=tmp_path / "agent.sock",
        run_dir=tmp_path / "run",
    )


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("stop", "not RUNNING or STOPPING or STOPPED"),
        ("kill", "not RUNNING or STOPPING or STOPPED"),
        ("wait", "not RUNNING or STOPPING or STOPPED"),
    ],
)
def test_a_new_vm_only_starts(tmp_path: Path, action: str, expected: str) -> None:
    vm = QemuVm(machine(tmp_path), VmSettings())

    async def scenario() -> None:
        with pytest.raises(FailedPrecondition, match=f"it is NEW, {expected}"):
            await getattr(vm, action)()

    asyncio.run(scenario())
    assert vm.state is VmState.NEW and vm.pid is None
    assert vm.console_tail() == ""


def test_a_start_that_cannot_spawn_fails_and_leaves_nothing(tmp_path: Path) -> None:
    vm = QemuVm(machine(tmp_path), VmSettings(qemu=str(tmp_path / "no-such-qemu")))

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="no-such-qemu"):
            await vm.start()
        assert vm.state is VmState.FAILED
        with pytest.raises(FailedPrecondition, match="it is FAILED, not NEW"):
            await vm.start()
        with pytest.raises(FailedPrecondition, match="it is FAILED"):
            await vm.execute("query-status")

    asyncio.run(scenario())
    assert not (tmp_path / "run").exists() or list((tmp_path / "run").iterdir()) == []
