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
from hyper.sandbox.rundir import sweep
from hyper.vmm.accel import Accelerator, choose


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    images: ImageStore
    guest: GuestArtifacts
    accelerator: Accelerator

    def new_pod(self, spec: PodSpec) -> Pod:
        guest = Guest(
            kernel=self.guest.kernel,
            initrd=self.guest.initrd,
            accelerator=self.accelerator.name,
            append=self.settings.guest.append,
        )
        return Pod(spec, settings=self.settings, images=self.images, guest=guest)


async def open_runtime(settings: Settings, *, build_guest: bool = True) -> Runtime:
    """Everything needed to start pods; sweeps what crashed owners left behind first."""
    sweep(settings.paths.pods)
    guest = resolve(settings, build=build_guest)
    accelerator = await choose(settings, guest.kernel)
    return Runtime(settings, ImageStore(settings.paths.images), guest, accelerator)
