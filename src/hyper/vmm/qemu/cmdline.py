"""QEMU's command line for a micro-VM, as a pure function of the machine and the host's facts.

Every option here is explained in docs/vmm.md. The driver owns the control channels: it creates the
QMP listening socket and the console socket itself and hands them to QEMU as inherited file
descriptors, so nothing waits for QEMU to create a socket file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyper.vmm.machine import Disk, MachineConfig, MemoryFile, Nic

SCSI_BUS = "scsi0.0"
"""The virtio-scsi controller's bus: every pod disk is hot-plugged on it (docs/vmm.md, "Disks")."""
RAM_ID = "ram0"

AGENT_PORT = "hyper.agent"
"""The virtio-serial port name the guest agent opens (``/dev/virtio-ports/hyper.agent``)."""

BASE_KERNEL_ARGS = (
    "console=ttyS0",
    "quiet",
    "panic=-1",
    # microvm ignores the kernel's default reboot methods (the guest loops instead of exiting);
    # a triple fault is a reset QEMU sees, so with -no-reboot a panicking guest ends QEMU.
    "reboot=t",
    "cryptomgr.notests",
    "tsc=reliable",
    "no_timer_check",
    "nokaslr",
    "mitigations=off",
    "audit=0",
    "8250.nr_uarts=1",
    "random.trust_cpu=on",
)

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"
"""seccomp for QEMU. ``spawn`` stays allowed: VM templates migrate to ``exec:`` targets."""


@dataclass(frozen=True)
class Wiring:
    """Host-side ends the driver prepared before spawning QEMU."""

    qmp_fd: int
    """A listening unix socket (QEMU serves QMP on it)."""
    console_fd: int
    """A connected stream socket (QEMU writes the serial console to it)."""
    pidfile: Path


def escape(value: str) -> str:
    """Quote a value for QEMU's ``key=value,...`` option syntax (a comma is doubled)."""
    return value.replace(",", ",,")


def kernel_args(append: str, tsc_khz: int) -> str:
    """The driver's kernel arguments, then the configured ones (later ones win)."""
    args = list(BASE_KERNEL_ARGS)
    if tsc_khz > 0:
        args.insert(3, f"tsc_early_khz={tsc_khz}")
    if append.strip():
        args.append(append.strip())
    return " ".join(args)


def machine_args(accelerator: str, cpus: int, memory_mb: int, sandbox: bool) -> list[str]:
    """The machine, accelerator and CPU shape; shared by real VMs and the KVM probe."""
    args = [
        "-M", "microvm,acpi=on",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    ]  # fmt: skip
    if accelerator == "kvm":
        args += ["-accel", "kvm", "-cpu", "host"]
    elif cpus > 1:
        args += ["-accel", "tcg,thread=multi"]
    else:
        args += ["-accel", "tcg"]
    args += ["-m", str(memory_mb), "-smp", str(cpus)]
    if sandbox:
        args += ["-sandbox", SANDBOX]
    return args


def memory_args(memory: MemoryFile, memory_mb: int) -> list[str]:
    """RAM in a file: the template's (shared) or a clone's copy-on-write mapping of it."""
    backend = ",".join(
        [
            "memory-backend-file",
            f"id={RAM_ID}",
            f"size={memory_mb}M",
            f"mem-path={escape(str(memory.path))}",
            f"share={'on' if memory.shared else 'off'}",
        ]
    )
    return ["-object", backend, "-machine", f"memory-backend={RAM_ID}"]


def console_args(console_fd: int) -> list[str]:
    return ["-chardev", f"socket,id=console,fd={console_fd}", "-serial", "chardev:console"]


def disk_args(disk: Disk) -> list[str]:
    drive = ",".join(
        [
            "if=none",
            f"id={disk.id}",
            f"file={escape(str(disk.path))}",
            f"format={disk.format}",
            f"readonly={'on' if disk.readonly else 'off'}",
            # The host page cache, flushed when the guest flushes; threads work on any file system
            # (tmpfs has no O_DIRECT, which cache=none and aio=native need).
            "cache=writeback",
            "aio=threads",
        ]
    )
    return ["-drive", drive, "-device", f"virtio-blk-device,drive={disk.id},serial={disk.id}"]


def nic_args(nic: Nic) -> list[str]:
    """virtio-net on an existing tap: no scripts (the host's network layer made and wired the
    tap), no vhost (no /dev/vhost-net on this kind of host)."""
    return [
        "-netdev", f"tap,id=net0,ifname={nic.tap},script=no,downscript=no",
        "-device", "virtio-net-device,netdev=net0",
    ]  # fmt: skip


def build(
    binary: str, config: MachineConfig, wiring: Wiring, *, tsc_khz: int, sandbox: bool
) -> list[str]:
    """The argv that starts `config` as a QEMU micro-VM."""
    argv = [binary, "-name", escape(config.name)]
    argv += machine_args(config.accelerator, config.cpus, config.memory_mb, sandbox)
    if config.memory_file is not None:
        argv += memory_args(config.memory_file, config.memory_mb)
    argv += [
        "-kernel", str(config.kernel),
        "-initrd", str(config.initrd),
        "-append", kernel_args(config.append, tsc_khz),
    ]  # fmt: skip
    argv += console_args(wiring.console_fd)
    argv += [
        "-chardev", f"socket,id=qmp,fd={wiring.qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={escape(str(config.agent_socket))}",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT},id=agentport",
        "-device", f"virtio-scsi-device,id={SCSI_BUS.split('.')[0]}",
    ]  # fmt: skip
    if config.nic is not None:  # before any disk: its virtio-mmio slot is the same in every VM
        argv += nic_args(config.nic)
    for disk in config.disks:
        argv += disk_args(disk)
    if config.incoming:
        argv += ["-incoming", "defer"]
    argv += ["-pidfile", str(wiring.pidfile)]
    return argv


def build_probe(
    binary: str, kernel: Path, console_fd: int, *, tsc_khz: int, sandbox: bool
) -> list[str]:
    """Boot `kernel` on KVM with no initrd: a kernel that boots panics at mounting root and exits.

    The machine shape is the smallest real one, with the same CPU model as a real VM.
    """
    argv = [binary, "-name", "kvm-probe"]
    argv += machine_args("kvm", 1, 256, sandbox)
    argv += ["-kernel", str(kernel), "-append", kernel_args("", tsc_khz)]
    argv += console_args(console_fd)
    return argv
