"""VM templates as the operator sees them: list, build ahead of time, remove, prune.

Pods need no call here: a pod's supervisor builds the template of its shape on first need
(:mod:`hyper.sandbox.template`). This is for building ahead of time (so that the first pod of a
shape does not pay for the boot) and for freeing memory. Templates are the host's (and list
the tenants of unshared ones): every call is the operator's (:attr:`Action.HOST`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hyper.config import Settings
from hyper.sandbox.runtime import open_runtime
from hyper.sandbox.template import Templates
from hyper.service.caller import Caller
from hyper.tenancy.policy import Action

_log = logging.getLogger(__name__)


class TemplateService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = Templates(settings)

    async def inventory(self, caller: Caller) -> list[dict[str, Any]]:
        caller.may(Action.HOST)
        found = await asyncio.to_thread(self.templates.inventory)
        return [info.to_dict() for info in found]

    async def build(
        self,
        caller: Caller,
        *,
        cpus: int | None = None,
        memory_mb: int | None = None,
        tenant: str = "",
        nic: bool = True,
        force: bool = False,
    ) -> dict[str, Any]:
        """The template for pods of this shape (default: the configured one, with a NIC as
        hyperd's pods have); built unless it exists (``force``: rebuilt, if no pod uses it)."""
        caller.may(Action.HOST)
        runtime = await open_runtime(self.settings, sweep=False)
        shape = runtime.shape(cpus=cpus, memory_mb=memory_mb, tenant=tenant, nic=nic)
        info = await self.templates.build(shape, force=force, logger=_log)
        return info.to_dict()

    async def remove(self, caller: Caller, key: str) -> dict[str, Any]:
        """Remove a template (a key or a unique prefix); refused while pods use it."""
        caller.may(Action.HOST)
        info = await asyncio.to_thread(self.templates.remove, key)
        return info.to_dict()

    async def prune(self, caller: Caller) -> list[str]:
        """Remove every template no pod uses."""
        caller.may(Action.HOST)
        return await asyncio.to_thread(self.templates.prune)
