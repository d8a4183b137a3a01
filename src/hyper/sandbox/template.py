"""VM templates: one booted, paused guest per shape, that new pods clone (docs/templates.md).

A template is a guest booted once with its RAM in a file (``memory-backend-file,share=on``),
paused once hyperstart is up and waiting for a host, and its device state saved. A clone is a new
QEMU with the identical device model that maps that file privately (copy-on-write), loads the
state and resumes: ~65 ms instead of a ~1.8 s boot, and guest pages shared until written.

On disk, ``<run_dir>/templates/<key[:16]>/``: ``template.json`` (written last: a directory
without it is a build in progress or a leftover), ``state``, ``ram`` (unless
``template.memory_dir`` puts RAM files elsewhere) and ``lock``. Every clone holds a shared
``flock`` on ``lock`` for its whole life (the kernel drops it when the clone's owner dies), so a
template is in use exactly while someone holds it: removal takes the lock exclusively or refuses.
Builds are serialised by an exclusive ``flock`` on ``<run_dir>/templates/build.lock``, so several
pod supervisors that need the same template at once build it once.

The key is a sha256 over QEMU's version and the template's whole command line with host paths
replaced by placeholders: the kernel and initrd (and so the agent, whose version is part of the
initrd's path), vCPUs, memory, accelerator, kernel arguments and every device. Change any of them
and the next pod gets a new template; the old one stays while clones use it, and is pruned once
unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.config import Settings
from hyper.sandbox.boot import connect_agent, listen
from hyper.sandbox.rundir import lock_held, younger_than
from hyper.vmm.machine import MachineConfig, MemoryFile, Nic
from hyper.vmm.qemu import binary, cmdline
from hyper.vmm.qemu.driver import QemuVm

_log = logging.getLogger(__name__)

BOOT_LABEL = "hyper.boot"
"""A pod labelled ``hyper.boot=cold`` boots cold."""
INFO = "template.json"
STATE = "state"
RAM = "ram"
LOCK = "lock"
_PLACEHOLDER = Path("/template")
_PARK_TIMEOUT = 10.0
"""Seconds for hyperstart to notice that the host hung up and wait for the next one."""
_LOCK_POLL = 0.05


@dataclass(frozen=True)
class Shape:
    """What a template is made of; clones must have exactly this machine."""

    machine: MachineConfig
    """The pod's machine: no disks, host paths are ignored."""
    guest: str
    """The guest's content fingerprint (kernel + initramfs)."""
    agent_version: str = ""
    tenant: str = ""
    """Set when tenants must not share memory (``template.share_across_tenants = false``)."""

    def generic(self) -> MachineConfig:
        """The machine with placeholders for everything host-side: what the key covers."""
        return replace(
            self.machine,
            name="template",
            run_dir=_PLACEHOLDER,
            agent_socket=_PLACEHOLDER / "agent.sock",
            memory_file=MemoryFile(_PLACEHOLDER / RAM, shared=True),
            incoming=False,
            nic=Nic("template") if self.machine.nic is not None else None,
        )

    def key(self, qemu_version: str) -> str:
        argv = cmdline.build(
            "qemu",
            self.generic(),
            cmdline.Wiring(3, 4, _PLACEHOLDER / "qemu.pid"),
            tsc_khz=0,
            sandbox=False,
        )
        document = {"qemu": qemu_version, "argv": argv, "guest": self.guest, "tenant": self.tenant}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TemplateInfo:
    key: str
    path: Path
    ram: Path
    created_at: str
    cpus: int
    memory_mb: int
    accelerator: str
    guest: str
    agent_version: str
    tenant: str
    build_seconds: float
    in_use: bool = False

    @property
    def state(self) -> Path:
        return self.path / STATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "ram": str(self.ram),
            "created_at": self.created_at,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "accelerator": self.accelerator,
            "guest": self.guest,
            "agent_version": self.agent_version,
            "tenant": self.tenant,
            "build_seconds": self.build_seconds,
            "in_use": self.in_use,
            "ram_bytes": _allocated(self.ram),
        }


class Lease:
    """A clone's hold on its template (a shared flock); released with the clone."""

    def __init__(self, info: TemplateInfo, fd: int) -> None:
        self.info = info
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Templates:
    """The templates of one host (one run dir)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.paths.run_dir / "templates"
        configured = settings.template.memory_dir
        self._memory_dir = Path(configured) if configured else None

    # ------------------------------------------------------------ clones

    async def lease(self, shape: Shape, logger: logging.Logger | None = None) -> Lease:
        """The template of ``shape``, built first if there is none; held until released."""
        key = await self._key(shape)
        held = await asyncio.to_thread(self._try_lease, key)
        if held is not None:
            return held
        await self.build(shape, logger=logger)
        held = await asyncio.to_thread(self._try_lease, key)
        if held is None:
            raise errors.Unavailable(f"template {key[:16]} vanished right after its build")
        return held

    def _try_lease(self, key: str) -> Lease | None:
        path = self.root / key[:16]
        try:
            fd = os.open(path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            info = _read(path)  # after the lock: a removal may have run meanwhile
            if info is not None and info.key == key:
                return Lease(info, fd)
        except BlockingIOError:
            pass  # being removed
        os.close(fd)
        return None

    # ------------------------------------------------------------ build

    async def build(
        self, shape: Shape, *, force: bool = False, logger: logging.Logger | None = None
    ) -> TemplateInfo:
        """Build the template of ``shape`` unless it exists (``force``: replace it if unused)."""
        log = logger or _log
        key = await self._key(shape)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = await self._lock(self.root / "build.lock", self.settings.vm.boot_timeout * 2)
        try:
            existing = _read(self.root / key[:16])
            if existing is not None and existing.key == key:
                if not force:
                    return existing
                await asyncio.to_thread(self._remove, existing)
            elif existing is None:
                await asyncio.to_thread(_clear_broken, self.root / key[:16])
            info = await self._build(shape, key, log)
        finally:
            os.close(lock)
        removed = await asyncio.to_thread(self.prune, stale_only=True)
        if removed:
            log.info("removed unused stale templates: %s", ", ".join(removed))
        return info

    async def _build(self, shape: Shape, key: str, log: logging.Logger) -> TemplateInfo:
        started = time.monotonic()
        final = self.root / key[:16]
        work = self.root / f".build-{key[:16]}-{secrets.token_hex(4)}"
        work.mkdir(mode=0o700)
        (work / LOCK).touch(mode=0o600)
        ram = self._ram_path(key, work)
        socket_path = work / "agent.sock"
        config = replace(
            shape.generic(),
            name=f"template-{key[:8]}",
            run_dir=work / "vm",
            agent_socket=socket_path,
            memory_file=MemoryFile(ram, shared=True),
            # The NIC's device is part of the shape; its host end is not. The template gets a
            # tap of its own that QEMU makes and that vanishes with it; clones get the pod's.
            nic=Nic(f"hyt{secrets.token_hex(6)}") if shape.machine.nic is not None else None,
        )
        vm = QemuVm(config, self.settings.vm, logger=log)
        listener = listen(socket_path)
        try:
            try:
                await vm.start()
                agent = await connect_agent(listener, vm, self.settings.vm.boot_timeout, log)
            finally:
                listener.close()
                socket_path.unlink(missing_ok=True)
            # hyperstart must be waiting for its next host when the state is saved: each clone
            # is that next host. Once the host hangs up it closes its port and opens it again,
            # which QEMU reports as VSERPORT_CHANGE events; QEMU sends at most one a second per
            # port (the latest state), so the close may never show, but an "open" event after
            # our hang-up can only be the reopening (the boot's own was sent at once).
            reopened = vm.expect_event("VSERPORT_CHANGE", lambda data: data.get("open") is True)
            await agent.close()
            try:
                await asyncio.wait_for(reopened, _PARK_TIMEOUT)
            except TimeoutError:
                raise errors.Timeout(
                    f"hyperstart did not wait for a new host within {_PARK_TIMEOUT:g} s"
                ) from None
            await vm.save_state(work / STATE)
            await vm.stop()
            info = TemplateInfo(
                key=key,
                path=final,
                ram=ram if ram.parent != work else final / RAM,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                cpus=shape.machine.cpus,
                memory_mb=shape.machine.memory_mb,
                accelerator=shape.machine.accelerator,
                guest=shape.guest,
                agent_version=shape.agent_version,
                tenant=shape.tenant,
                build_seconds=round(time.monotonic() - started, 3),
            )
            _write(work, info)
            work.rename(final)
        except BaseException:
            if vm.pid is not None:
                with contextlib.suppress(errors.HyperError):
                    await vm.kill()
            shutil.rmtree(work, ignore_errors=True)
            ram.unlink(missing_ok=True)
            raise
        log.info(
            "built template %s (%d vCPU, %d MiB, %s) in %.2f s",
            key[:16],
            info.cpus,
            info.memory_mb,
            info.accelerator,
            info.build_seconds,
        )
        return info

    def _ram_path(self, key: str, work: Path) -> Path:
        if self._memory_dir is None:
            return work / RAM
        self._memory_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A unique name: several run dirs (hosts in tests) may share one memory dir.
        return self._memory_dir / f"{key[:16]}-{secrets.token_hex(4)}.ram"

    # ------------------------------------------------------------ inventory

    def inventory(self) -> list[TemplateInfo]:
        found = []
        for path in sorted(self.root.glob("[0-9a-f]*")):
            info = _read(path)
            if info is not None:
                found.append(replace(info, in_use=_in_use(path)))
        return found

    def find(self, prefix: str) -> TemplateInfo:
        matches = [t for t in self.inventory() if t.key.startswith(prefix)] if prefix else []
        if not matches:
            raise errors.NotFound(f"no template {prefix!r}")
        if len(matches) > 1:
            raise errors.InvalidArgument(f"template prefix {prefix!r} is ambiguous")
        return matches[0]

    def remove(self, prefix: str) -> TemplateInfo:
        """Remove a template and its files; refused while a clone uses it."""
        info = self.find(prefix)
        self._remove(info)
        return info

    def _remove(self, info: TemplateInfo) -> None:
        try:
            fd = os.open(info.path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise errors.NotFound(f"no template {info.key[:16]}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise errors.FailedPrecondition(
                    f"template {info.key[:16]} is in use by running pods"
                ) from None
            # Held exclusively: nobody can lease it; the info file goes first so that a lease
            # racing with us finds no template.
            (info.path / INFO).unlink(missing_ok=True)
            info.ram.unlink(missing_ok=True)
            shutil.rmtree(info.path, ignore_errors=True)
        finally:
            os.close(fd)

    def prune(self, *, stale_only: bool = False, current: str | None = None) -> list[str]:
        """Remove unused templates (``stale_only``: only those of another guest than the newest
        template's, or than ``current``); also build leftovers of crashed builders."""
        templates = self.inventory()
        if current is None and templates:
            current = max(templates, key=lambda t: t.created_at).guest
        removed = []
        for info in templates:
            if info.in_use or (stale_only and info.guest == current):
                continue
            with contextlib.suppress(errors.FailedPrecondition, errors.NotFound):
                self._remove(info)
                removed.append(info.key[:16])
        for leftover in self.root.glob(".build-*"):
            if not _young(leftover) and not self._building():
                shutil.rmtree(leftover, ignore_errors=True)
        return removed

    # ------------------------------------------------------------ helpers

    async def _key(self, shape: Shape) -> str:
        qemu = await binary.inspect(self.settings.vm.qemu)
        return shape.key(qemu.version)

    def _building(self) -> bool:
        return bool(lock_held(self.root / "build.lock", shared=True))

    @staticmethod
    async def _lock(path: Path, timeout: float) -> int:
        """An exclusive flock on ``path``, waited for (without blocking the loop) up to
        ``timeout`` seconds: another process builds a template meanwhile."""
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise errors.Timeout(
                        f"another template build held {path} for more than {timeout:g} s"
                    ) from None
                await asyncio.sleep(_LOCK_POLL)
            except BaseException:
                os.close(fd)
                raise


def _write(path: Path, info: TemplateInfo) -> None:
    data = info.to_dict()
    data.pop("in_use")
    data.pop("ram_bytes")
    data["path"] = info.path.name
    tmp = path / f"{INFO}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.rename(path / INFO)


def _read(path: Path) -> TemplateInfo | None:
    """A template's info, or None if it is incomplete or unreadable (a build, a leftover)."""
    try:
        data = json.loads((path / INFO).read_text())
        info = TemplateInfo(
            key=str(data["key"]),
            path=path,
            ram=Path(data["ram"]),
            created_at=str(data["created_at"]),
            cpus=int(data["cpus"]),
            memory_mb=int(data["memory_mb"]),
            accelerator=str(data["accelerator"]),
            guest=str(data["guest"]),
            agent_version=str(data["agent_version"]),
            tenant=str(data["tenant"]),
            build_seconds=float(data["build_seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (path / STATE).is_file() or not info.ram.is_file():
        return None
    return info


def _in_use(path: Path) -> bool:
    return bool(lock_held(path / LOCK))


def _clear_broken(path: Path) -> None:
    """Remove a template directory that is not a complete template (its RAM file vanished, a
    half-removed one) so that a build can take its place; never one in use."""
    if path.exists() and not _in_use(path):
        shutil.rmtree(path, ignore_errors=True)


def _allocated(path: Path) -> int:
    """Bytes the (sparse) RAM file really holds."""
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def _young(path: Path) -> bool:
    return younger_than(path, 600)
