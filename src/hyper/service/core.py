"""The services of one host, built once by a front end (hyperd) and shared by all its requests."""

from __future__ import annotations

import asyncio
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyper import __version__, errors
from hyper.config import Settings
from hyper.images.store import ImageStore
from hyper.service import names
from hyper.service.events import EventBus
from hyper.service.pods import PodService
from hyper.state.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    images: ImageStore
    events: EventBus
    pods: PodService

    @classmethod
    async def open(cls, settings: Settings, *, config_file: Path | None) -> Services:
        """Open the state, then re-attach to the pods that kept running without us."""
        db = Database(settings.paths.state_dir / "hyperd.db")
        images = ImageStore(settings.paths.images)
        events = EventBus()
        pods = PodService(settings, db, images, events, config_file=config_file)
        await pods.recover()
        return cls(settings, db, images, events, pods)

    async def close(self) -> None:
        await self.pods.close()
        self.events.close()
        self.db.close()

    def new_name(self) -> str:
        return names.generate(self.pods.name_taken)

    async def info(self) -> dict[str, Any]:
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
        pods = self.pods.pods()
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
            "images": len(await asyncio.to_thread(self.images.list)),
        }
