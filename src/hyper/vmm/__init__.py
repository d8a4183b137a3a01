"""Hypervisor drivers: a `MachineConfig` in, a running micro-VM out (see docs/vmm.md).

This layer knows QEMU, the host and the machine's shape; it knows nothing of pods, agents or
images.
"""

from hyper.vmm.machine import Disk, MachineConfig, VmExit, VmState

__all__ = ["Disk", "MachineConfig", "VmExit", "VmState"]
