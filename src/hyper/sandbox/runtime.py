"""The runtime: what every front end needs to make pods on this host.

It resolves, once, the guest to boot (kernel and initramfs, built or configured), the accelerator
(KVM where a guest really boots on it, else TCG, with the reason), and the image store, and makes
pods from specs. Front ends hold one of these and translate their own requests into calls on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyper.config import Settings
from hyper.guest.artifacts import GuestArtifacts, resolve
from hyper.images.store import ImageStore
from hyper.model.pod import PodSpec
from hyper.sandbox.pod import Guest, Pod
from hyper.sandbox.rundir import sweep as sweep_pods
from hyper.vmm.accel import Accelerator, choose


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    images: ImageStore
    guest: GuestArtifacts
    accelerator: Accelerator

    def new_pod(self, spec: PodSpec, *, pod_id: str | None = None) -> Pod:
        guest = Guest(
            kernel=self.guest.kernel,
            initrd=self.guest.initrd,
            accelerator=self.accelerator.name,
            append=self.settings.guest.append,
        )
        return Pod(spec, settings=self.settings, images=self.images, guest=guest, pod_id=pod_id)


async def open_runtime(
    settings: Settings, *, build_guest: bool = True, sweep: bool = True
) -> Runtime:
    """Everything needed to start pods; sweeps what crashed owners left behind first.

    Only one process may sweep (hyperd at its start, or a stand-alone ``hyper run``): a sweep
    racing with another process's pod creation could take its new directory for a leftover."""
    if sweep:
        sweep_pods(settings.paths.pods)
    guest = resolve(settings, build=build_guest)
    accelerator = await choose(settings, guest.kernel)
    return Runtime(settings, ImageStore(settings.paths.images), guest, accelerator)
