"""QEMU's command line, built from a machine config without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyper.vmm.machine import Disk, MachineConfig
from hyper.vmm.qemu import cmdline

WIRING = cmdline.Wiring(qmp_fd=7, console_fd=8, pidfile=Path("/run/vm/qemu.pid"))


def config(**changes: object) -> MachineConfig:
    values: dict[str, object] = {
        "name": "pod-1",
        "accelerator": "tcg",
        "cpus": 1,
        "memory_mb": 256,
        "kernel": Path("/cache/vmlinuz"),
        "initrd": Path("/cache/initrd"),
        "append": "",
        "disks": (),
        "agent_socket": Path("/run/pod/agent.sock"),
        "run_dir": Path("/run/vm"),
    }
    values.update(changes)
    return MachineConfig(**values)  # type: ignore[arg-type]


def build(**changes: object) -> list[str]:
    return cmdline.build("qemu", config(**changes), WIRING, tsc_khz=2596124, sandbox=True)


def option(argv: list[str], name: str) -> list[str]:
    """Every value given to `name`."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_a_small_machine_without_defaults() -> None:
    argv = build()
    assert argv[0] == "qemu"
    assert option(argv, "-M") == ["microvm,acpi=on"]
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in argv
    assert option(argv, "-m") == ["256"]
    assert option(argv, "-smp") == ["1"]
    assert option(argv, "-name") == ["pod-1"]
    assert option(argv, "-pidfile") == ["/run/vm/qemu.pid"]
    assert option(argv, "-sandbox") == [cmdline.SANDBOX]
    assert "-netdev" not in argv


def test_accelerators() -> None:
    kvm = build(accelerator="kvm")
    assert option(kvm, "-accel") == ["kvm"] and option(kvm, "-cpu") == ["host"]
    assert option(build(), "-accel") == ["tcg"] and option(build(), "-cpu") == []
    assert option(build(cpus=2), "-accel") == ["tcg,thread=multi"]


def test_no_sandbox_when_qemu_lacks_it() -> None:
    argv = cmdline.build("qemu", config(), WIRING, tsc_khz=0, sandbox=False)
    assert "-sandbox" not in argv


def test_kernel_arguments_come_first_and_the_configured_ones_win() -> None:
    argv = build(append="loglevel=7 hyper.pod=x")
    assert option(argv, "-kernel") == ["/cache/vmlinuz"]
    assert option(argv, "-initrd") == ["/cache/initrd"]
    (append,) = option(argv, "-append")
    words = append.split()
    assert words[:3] == ["console=ttyS0", "quiet", "panic=-1"]
    assert "tsc_early_khz=2596124" in words
    for knob in ("reboot=t", "cryptomgr.notests", "8250.nr_uarts=1", "random.trust_cpu=on"):
        assert knob in words
    assert words[-2:] == ["loglevel=7", "hyper.pod=x"]


def test_unknown_tsc_frequency_is_left_out() -> None:
    assert "tsc_early_khz" not in cmdline.kernel_args("", 0)


def test_control_channels_are_inherited_descriptors() -> None:
    argv = build()
    chardevs = option(argv, "-chardev")
    assert "socket,id=qmp,fd=7,server=on,wait=off" in chardevs
    assert "socket,id=console,fd=8" in chardevs
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert option(argv, "-serial") == ["chardev:console"]


def test_agent_channel_is_a_virtio_serial_port() -> None:
    argv = build(agent_socket=Path("/run/a,b/agent.sock"))
    assert "socket,id=agent,path=/run/a,,b/agent.sock" in option(argv, "-chardev")
    devices = option(argv, "-device")
    assert devices[:2] == [
        "virtio-serial-device",
        "virtserialport,chardev=agent,name=hyper.agent,id=agentport",  # id: VSERPORT_CHANGE
    ]


def test_disks() -> None:
    argv = build(
        disks=(
            Disk("rootfs", Path("/images/a,b.erofs")),
            Disk("vol-1", Path("/volumes/v.qcow2"), readonly=False, format="qcow2"),
        )
    )
    assert option(argv, "-drive") == [
        "if=none,id=rootfs,file=/images/a,,b.erofs,format=raw,readonly=on,"
        "cache=writeback,aio=threads",
        "if=none,id=vol-1,file=/volumes/v.qcow2,format=qcow2,readonly=off,"
        "cache=writeback,aio=threads",
    ]
    assert option(argv, "-device")[3:] == [
        "virtio-blk-device,drive=rootfs,serial=rootfs",
        "virtio-blk-device,drive=vol-1,serial=vol-1",
    ]


def test_probe_boots_the_kernel_alone_on_kvm() -> None:
    argv = cmdline.build_probe("qemu", Path("/k"), 9, tsc_khz=1000, sandbox=False)
    assert option(argv, "-accel") == ["kvm"] and option(argv, "-cpu") == ["host"]
    assert "-initrd" not in argv and "-no-reboot" in argv
    assert "panic=-1" in option(argv, "-append")[0]
    assert option(argv, "-chardev") == ["socket,id=console,fd=9"]


@pytest.mark.parametrize(
    "changes",
    [
        {"accelerator": "hvf"},
        {"cpus": 0},
        {"memory_mb": 32},
        {"name": "a,b"},
        {"name": ""},
        {"disks": (Disk("d", Path("/a")), Disk("d", Path("/b")))},
    ],
)
def test_impossible_machines_are_refused(changes: dict[str, object]) -> None:
    from hyper.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        config(**changes)


@pytest.mark.parametrize("disk_id", ["", "Root", "a_b", "x" * 21, "a b"])
def test_disk_ids_are_serials(disk_id: str) -> None:
    from hyper.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        Disk(disk_id, Path("/a"))
    with pytest.raises(InvalidArgument):
        Disk("ok", Path("/a"), format="vmdk")
