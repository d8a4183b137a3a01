"""The runtime: what every front end needs to make pods on this host.

It resolves, once, the guest to boot (kernel and initramfs, built or configured), the accelerator
(KVM where a guest really boots on it, else TCG, with the reason), and the image store, and makes
pods from specs. Front ends hold one of these and translate their own requests into calls on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hyper.config import Settings
from hyper.guest.artifacts import GuestArtifacts, resolve
from hyper.images.digest import Digest
from hyper.images.store import ImageStore
from hyper.model.pod import PodSpec
from hyper.sandbox.nic import NetworkAttachment
from hyper.sandbox.pod import Guest, Pod, machine_config
from hyper.sandbox.rundir import sweep as sweep_pods
from hyper.sandbox.template import Shape, Templates
from hyper.vmm.accel import Accelerator, choose
from hyper.vmm.machine import Nic
from hyper.volumes.attachment import Attachment


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    images: ImageStore
    guest: GuestArtifacts
    accelerator: Accelerator

    @property
    def templates(self) -> Templates:
        return Templates(self.settings)

    def shape(
        self,
        *,
        cpus: int | None = None,
        memory_mb: int | None = None,
        tenant: str = "",
        nic: bool = False,
    ) -> Shape:
        """The template shape of pods with these resources (None: the configured defaults)."""
        scratch = self.settings.paths.run_dir / "templates"
        machine = machine_config(
            self.settings,
            self._guest(),
            name="template",
            cpus=cpus or 0,
            memory_mb=memory_mb or 0,
            agent_socket=scratch / "agent.sock",
            run_dir=scratch,
            nic=Nic("template") if nic else None,
        )
        if self.settings.template.share_across_tenants:
            tenant = ""
        return Shape(machine, self.guest.fingerprint, self.guest.agent_version, tenant)

    def _guest(self) -> Guest:
        return Guest(
            kernel=self.guest.kernel,
            initrd=self.guest.initrd,
            accelerator=self.accelerator.name,
            append=self.settings.guest.append,
            fingerprint=self.guest.fingerprint,
            agent_version=self.guest.agent_version,
        )

    def new_pod(
        self,
        spec: PodSpec,
        *,
        pod_id: str | None = None,
        volumes: Sequence[Attachment] = (),
        network: NetworkAttachment | None = None,
        image_digests: Mapping[str, Digest] | None = None,
        tenant: str = "",
    ) -> Pod:
        guest = self._guest()
        return Pod(
            spec,
            settings=self.settings,
            images=self.images,
            guest=guest,
            pod_id=pod_id,
            volumes=volumes,
            templates=self.templates,
            network=network,
            image_digests=image_digests,
            tenant=tenant,
        )


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
