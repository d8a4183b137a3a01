"""The services of one host, built once by a front end (hyperd) and shared by all its requests."""

from __future__ import annotations

import asyncio
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hyper import __version__, errors
from hyper.config import Settings
from hyper.service import names
from hyper.service.caller import Caller
from hyper.service.events import EventBus
from hyper.service.images import ImageService
from hyper.service.networks import NetworkService
from hyper.service.pods import PodService
from hyper.service.templates import TemplateService
from hyper.service.tenancy import TenancyService
from hyper.service.volumes import VolumeService
from hyper.state.db import Database
from hyper.tenancy.principal import Scope


@dataclass
class Services:
    settings: Settings
    db: Database
    images: ImageService
    events: EventBus
    pods: PodService
    volumes: VolumeService
    networks: NetworkService
    templates: TemplateService
    tenancy: TenancyService

    @classmethod
    async def open(cls, settings: Settings, *, config_file: Path | None) -> Services:
        """Open the state, then re-attach to the pods that kept running without us."""
        services = cls.build(settings, config_file=config_file)
        await services.pods.recover()
        await services.volumes.recover()
        await services.networks.recover()  # repair or remove what the last hyperd left
        services.tenancy.release_orphaned_charges(services.db.object_ids())
        return services

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        config_file: Path | None = None,
        registry_transport: httpx.BaseTransport | None = None,
    ) -> Services:
        """The services over the state in ``settings``, without recovering any pod (tests use
        it directly; ``registry_transport`` replaces the network to registries)."""
        db = Database(settings.paths.state_dir / "hyperd.db")
        tenancy = TenancyService(settings, db.connection)
        events = EventBus()
        images = ImageService(
            settings,
            in_use=lambda digest, tenant: db.image_in_use(str(digest), tenant),
            transport=registry_transport,
        )
        tenancy.on_remove.append(images.forget_tenant)
        volumes = VolumeService(settings, db, events, tenancy=tenancy)
        networks = NetworkService(settings, db, tenancy=tenancy)
        pods = PodService(
            settings,
            db,
            images.store,
            events,
            config_file=config_file,
            volumes=volumes,
            network=networks,
            tenancy=tenancy,
        )
        templates = TemplateService(settings)
        return cls(
            settings,
            db,
            images,
            events,
            pods,
            volumes=volumes,
            networks=networks,
            templates=templates,
            tenancy=tenancy,
        )

    async def close(self) -> None:
        await self.pods.close()
        self.events.close()
        await self.tenancy.close()
        self.db.close()

    def new_name(self, caller: Caller) -> str:
        """A free name in the caller's tenant, docker style."""
        tenant = caller.writes().single()
        return names.generate(lambda name: self.pods.name_taken(tenant, name))

    async def info(self, scope: Scope) -> dict[str, Any]:
        """The host, and the counts of the pods in ``scope``."""
        from hyper.guest.artifacts import resolve
        from hyper.vmm.accel import choose

        try:
            guest = await asyncio.to_thread(resolve, self.settings, build=False)
            accelerator = await choose(self.settings, guest.kernel)
            guest_info = {
                "kernel": str(guest.kernel),
                "initrd": str(guest.initrd),
                "release": guest.release,
                "source": guest.source,
                "error": "",
            }
            accelerator_info = {"name": accelerator.name, "reason": accelerator.reason}
        except errors.HyperError as exc:  # a host not set up (or stale): say so, answer anyway
            guest_info = {
                "kernel": "",
                "initrd": "",
                "release": "",
                "source": "",
                "error": str(exc),
            }
            accelerator_info = {"name": "unknown", "reason": str(exc)}
        pods = self.pods.pods(scope)
        containers = [c for p in pods for c in p.containers]
        return {
            "version": __version__,
            "kernel": platform.release(),
            "guest": guest_info,
            "accelerator": accelerator_info,
            "paths": {
                "state_dir": str(self.settings.paths.state_dir),
                "run_dir": str(self.settings.paths.run_dir),
                "socket": str(self.settings.daemon.socket),
            },
            "pods": {"total": len(pods), "running": sum(p.state == "running" for p in pods)},
            "containers": {
                "total": len(containers),
                "running": sum(c.state == "running" for c in containers),
            },
            "images": await asyncio.to_thread(self.images.count, scope),
        }
