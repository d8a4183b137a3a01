"""Which accelerator the VMs use: KVM where a guest really boots on it, TCG otherwise.

``/dev/kvm`` existing is not enough: on a nested "PVM" host a stock kernel hangs under KVM (see
docs/platform.md). So "auto" boots the configured guest kernel on KVM once, with no initrd: a kernel
that boots panics at mounting its root file system, and with ``panic=-1 reboot=t -no-reboot`` QEMU
exits by itself within a second. Anything else within ``vm.kvm_probe_timeout`` means TCG.

The result is cached in ``<cache_dir>/accel.json`` per (kernel digest, QEMU version, host kernel),
so the probe runs once per machine and kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hyper.config.settings import Settings
from hyper.vmm import host
from hyper.vmm.qemu import binary, cmdline
from hyper.vmm.qemu.process import QemuProcess
from hyper.vmm.qemu.ring import ByteRing, drain

_log = logging.getLogger(__name__)

CACHE_FILE = "accel.json"
CACHE_ENTRIES = 16
BOOTED_MARKERS = ("Kernel panic", "VFS: Unable to mount root")
"""What a kernel that boots prints when it finds no root file system."""


@dataclass(frozen=True)
class Accelerator:
    name: str
    """``kvm`` or ``tcg``."""
    reason: str
    """Why, for people: shown by the CLI and logged at start."""


async def choose(settings: Settings, kernel: Path) -> Accelerator:
    """The accelerator for VMs booting `kernel`, forced by the settings or probed (and cached)."""
    if settings.vm.accelerator in ("kvm", "tcg"):
        return Accelerator(settings.vm.accelerator, "configured in vm.accelerator")
    unusable = await asyncio.to_thread(host.kvm_unusable_reason)
    if unusable is not None:
        return Accelerator("tcg", unusable)
    qemu = await binary.inspect(settings.vm.qemu)
    key = await asyncio.to_thread(_cache_key, kernel, qemu.version)
    cache = settings.paths.cache_dir / CACHE_FILE
    cached = await asyncio.to_thread(_load, cache, key)
    if cached is not None:
        return cached
    result = await probe(qemu, kernel, settings.vm.kvm_probe_timeout)
    await asyncio.to_thread(_store, cache, key, result)
    return result


async def probe(qemu: binary.QemuBinary, kernel: Path, timeout: float) -> Accelerator:
    """Boot `kernel` on KVM and see whether it reaches its root-mount panic within `timeout`."""
    logger = _log.getChild("probe")
    tsc_khz = await asyncio.to_thread(host.tsc_khz)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = cmdline.build_probe(
        qemu.path, kernel, theirs.fileno(), tsc_khz=tsc_khz, sandbox=qemu.sandbox
    )
    started = time.monotonic()
    try:
        process = await QemuProcess.spawn(argv, pass_fds=(theirs.fileno(),), logger=logger)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    console = ByteRing(16 * 1024)
    reader, writer = await asyncio.open_connection(sock=ours)
    reading = asyncio.create_task(drain(reader, console, logger))
    try:
        try:
            code: int | None = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            code = None
    finally:
        await process.kill_and_wait()  # a no-op when it exited; always reaped
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reading, 1.0)
        writer.close()
    seconds = time.monotonic() - started
    text = console.text()
    if code is None:
        result = Accelerator(
            "tcg",
            f"KVM present but the guest kernel did not boot on it within {timeout:g} s "
            "(nested PVM?)",
        )
    elif code == 0 and any(marker in text for marker in BOOTED_MARKERS):
        result = Accelerator("kvm", f"the guest kernel booted on KVM in {seconds:.1f} s")
    elif code != 0:
        lines = process.stderr_tail(1000).splitlines()
        said = lines[0] if lines else f"exit status {code}"
        result = Accelerator("tcg", f"KVM present but QEMU failed on it: {said}")
    else:
        result = Accelerator("tcg", "KVM present but the guest kernel did not boot on it")
    logger.info("KVM probe took %.2f s: %s (%s)", seconds, result.name, result.reason)
    return result


def _cache_key(kernel: Path, qemu_version: str) -> str:
    digest = hashlib.sha256()
    with open(kernel, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return f"{digest.hexdigest()} qemu-{qemu_version} host-{host.release()}"


def _load(path: Path, key: str) -> Accelerator | None:
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict):
        return None
    name, reason = entry.get("name"), entry.get("reason")
    if name not in ("kvm", "tcg") or not isinstance(reason, str):
        return None
    return Accelerator(name, reason)


def _store(path: Path, key: str, result: Accelerator) -> None:
    """Add the result to the cache file, atomically; the oldest entries go past CACHE_ENTRIES."""
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries.pop(key, None)
    entries[key] = asdict(result)
    while len(entries) > CACHE_ENTRIES:
        entries.pop(next(iter(entries)))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(entries, indent=2) + "\n")
    os.replace(temporary, path)
