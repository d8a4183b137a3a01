"""The guest a VM boots: a kernel and an initramfs holding hyperstart.

Either the operator brings their own (``guest.kernel`` and ``guest.initrd`` in the settings), or
hyper builds the default one from Debian packages into ``settings.paths.guest``: the cloud
kernel (see :mod:`.kernel`) and an initramfs with Debian's python3.11 running hyperstart (see
:mod:`.initramfs`).

The build is keyed by a fingerprint of its inputs: the kernel package and version, the digest of
the agent's sources, the interpreter and busybox on the host, the initramfs compression and
:data:`BUILDER_VERSION`. Editing hyperstart therefore rebuilds only the initramfs; the kernel is
downloaded again only when the package version changes or its cached copy is gone.

:func:`resolve` (called for every VM) never asks apt anything once a build exists: it rebuilds
for changed sources with the cached kernel. Moving to a newer Debian kernel is
:func:`build`'s job (``hyper setup``), because a new kernel changes the fingerprint that VM
templates are keyed on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hyper.config.settings import Settings
from hyper.errors import Unavailable
from hyper.guest import agent, cache, initramfs, interpreter, kernel, kmod

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
"""Bump when the builder changes what it produces from the same inputs."""
COMPRESSION = "none"
"""The initramfs compression: the one that booted fastest under TCG (docs/guest.md)."""
AGENT_VERSION = agent.AGENT_VERSION


@dataclass(frozen=True)
class GuestArtifacts:
    kernel: Path
    """The file QEMU's ``-kernel`` takes."""
    initrd: Path
    """The file QEMU's ``-initrd`` takes."""
    release: str
    """Guest kernel release, e.g. ``6.1.0-28-cloud-amd64`` (``unknown`` if unreadable)."""
    source: str
    """``debian <package> <version>`` or ``configured <path>``."""
    agent_version: str
    """hyperstart's version packed in the initrd (``unknown`` for a configured initrd)."""
    fingerprint: str
    """sha256 over the kernel's and the initrd's contents (VM templates are keyed on it)."""


def content_fingerprint(kernel_sha256: str, initrd_sha256: str) -> str:
    return hashlib.sha256(f"kernel {kernel_sha256}\ninitrd {initrd_sha256}\n".encode()).hexdigest()


def _identity(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns]


def inputs_fingerprint(
    package: kernel.Package, sources: agent.AgentSources, compression: str = COMPRESSION
) -> str:
    """The cache key: everything the build's output depends on."""
    inputs = {
        "builder": BUILDER_VERSION,
        "package": [package.name, package.version],
        "agent": sources.digest(),
        "agent_version": sources.version,
        "python": _identity(interpreter.PYTHON),
        "stdlib": _identity(Path("/usr/lib/python3.11/os.py")),
        "busybox": _identity(initramfs.BUSYBOX),
        "compression": compression,
        "modules": list(kmod.WANTED),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _from_manifest(root: Path, manifest: dict[str, Any]) -> GuestArtifacts | None:
    """The artifacts a manifest describes, if its files are all there."""
    try:
        k, i = manifest["kernel"], manifest["initrd"]
        kernel_path, initrd_path = root / k["path"], root / i["path"]
        if kernel_path.stat().st_size != k["size"] or initrd_path.stat().st_size != i["size"]:
            return None
        return GuestArtifacts(
            kernel=kernel_path,
            initrd=initrd_path,
            release=k["release"],
            source=f"debian {k['package']} {k['version']}",
            agent_version=manifest["agent_version"],
            fingerprint=manifest["fingerprint"],
        )
    except (KeyError, TypeError, OSError):
        return None


def _current(root: Path, inputs: str) -> GuestArtifacts | None:
    manifest = cache.read_manifest(root)
    if manifest is None or manifest.get("inputs") != inputs:
        return None
    return _from_manifest(root, manifest)


def configured(settings: Settings) -> GuestArtifacts:
    """The operator's own kernel and initrd (``guest.kernel`` / ``guest.initrd``)."""
    paths = {"kernel": Path(settings.guest.kernel), "initrd": Path(settings.guest.initrd)}
    for key, path in paths.items():
        if not path.is_file():
            raise Unavailable(f"guest.{key} is set to {path}, which is not a readable file")
    return GuestArtifacts(
        kernel=paths["kernel"],
        initrd=paths["initrd"],
        release=kernel.release_of(paths["kernel"]),
        source=f"configured {paths['kernel']}",
        agent_version="unknown",
        fingerprint=content_fingerprint(
            cache.sha256_file(paths["kernel"]), cache.sha256_file(paths["initrd"])
        ),
    )


def resolve(settings: Settings, *, build: bool = True) -> GuestArtifacts:
    """The guest in use: the configured kernel+initrd if set, else the default built one.

    The default one is built first if it is missing or stale and ``build`` is true; otherwise
    that raises :class:`~hyper.errors.Unavailable`, saying to run ``hyper setup``.
    """
    if settings.guest.kernel or settings.guest.initrd:
        return configured(settings)
    root = settings.paths.guest
    manifest = cache.read_manifest(root)
    if manifest is None and not build:
        raise Unavailable(
            f"the guest kernel and initramfs in {root} are not built: run `hyper setup`"
        )
    sources = agent.sources()
    package = None
    if manifest is not None:
        try:
            package = kernel.Package(manifest["kernel"]["package"], manifest["kernel"]["version"])
        except (KeyError, TypeError):
            package = None
    if package is not None:
        found = _current(root, inputs_fingerprint(package, sources))
        if found is not None:
            return found
        prepared = root / cache.KERNELS / package.dirname
        if not (prepared / kernel.MANIFEST).is_file():
            package = None  # gone: take apt's current candidate
    if not build:
        raise Unavailable(
            f"the guest kernel and initramfs in {root} are out of date: run `hyper setup`"
        )
    return build_with(settings, sources, package, force=False)


def build(settings: Settings, *, force: bool = False) -> GuestArtifacts:
    """Build the default guest for apt's current kernel package, unless it is already built.

    ``force`` rebuilds everything, the kernel download included.
    """
    sources = agent.sources()
    package = kernel.candidate(settings.guest.debian_kernel_package)
    return build_with(settings, sources, package, force=force)


def build_with(
    settings: Settings,
    sources: agent.AgentSources,
    package: kernel.Package | None,
    *,
    force: bool,
) -> GuestArtifacts:
    """Build the default guest from ``sources`` (tests pass a stand-in agent) and the kernel
    ``package`` (None: apt's current candidate), unless the cache already holds it."""
    root = settings.paths.guest
    with cache.locked(root):
        if package is None:
            package = kernel.candidate(settings.guest.debian_kernel_package)
        inputs = inputs_fingerprint(package, sources)
        if not force:
            found = _current(root, inputs)
            if found is not None:
                return found  # another builder just made it
        started = time.monotonic()
        prepared = _kernel(root, package, force=force)
        initrd_path = root / f"initrd-{inputs[:16]}.img"
        with tempfile.TemporaryDirectory(prefix="hyper-guest-") as scratch:
            closure = interpreter.closure(sources, Path(scratch))
            archive = initramfs.assemble(prepared, closure, sources.version)
            raw = archive.to_bytes()
            compression = initramfs.choose(COMPRESSION, prepared.initrd_compressions)
            image = initramfs.compress(raw, compression)
        cache.write_atomic(initrd_path, image)
        kernel_sha = cache.sha256_file(prepared.kernel)
        initrd_sha = hashlib.sha256(image).hexdigest()
        manifest = {
            "builder_version": BUILDER_VERSION,
            "inputs": inputs,
            "fingerprint": content_fingerprint(kernel_sha, initrd_sha),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "agent_version": sources.version,
            "python": closure.version,
            "kernel": {
                "path": str(prepared.kernel.relative_to(root)),
                "format": prepared.kernel_format,
                "release": prepared.release,
                "package": package.name,
                "version": package.version,
                "sha256": kernel_sha,
                "size": prepared.kernel.stat().st_size,
            },
            "initrd": {
                "path": initrd_path.name,
                "compression": compression,
                "sha256": initrd_sha,
                "size": len(image),
                "raw_size": len(raw),
                "files": len(archive),
            },
            "modules": [name for name, _ in prepared.modules],
        }
        cache.write_manifest(root, manifest)
        cache.prune(root, {initrd_path, prepared.directory})
        log.info(
            "built guest %s (%s, initrd %d KiB %s) in %.1f s",
            prepared.release,
            package.version,
            len(image) // 1024,
            compression,
            time.monotonic() - started,
        )
        found = _from_manifest(root, manifest)
        assert found is not None
        return found


def _kernel(root: Path, package: kernel.Package, *, force: bool) -> kernel.PreparedKernel:
    """The cached reduced kernel package, downloaded and prepared if missing (or ``force``)."""
    kernels = root / cache.KERNELS
    final = kernels / package.dirname
    if not force and (final / kernel.MANIFEST).is_file():
        prepared = kernel.PreparedKernel.load(final)
        if prepared.is_complete():
            return prepared
    kernels.mkdir(parents=True, exist_ok=True)
    fresh = kernels / f".{package.dirname}.tmp-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)  # left by a crashed build with our pid
    log.info("downloading guest kernel %s %s", package.name, package.version)
    kernel.prepare(package, fresh)
    if final.exists():
        stale = kernels / f".{package.dirname}.old-{os.getpid()}"
        final.rename(stale)
        shutil.rmtree(stale)
    fresh.rename(final)
    return kernel.PreparedKernel.load(final)


def describe(settings: Settings) -> dict[str, Any]:
    """What ``hyper guest info`` shows: the guest in use, without building anything."""
    if settings.guest.kernel or settings.guest.initrd:
        found = configured(settings)
        return {
            "status": "configured",
            "kernel": str(found.kernel),
            "initrd": str(found.initrd),
            "release": found.release,
            "source": found.source,
            "agent_version": found.agent_version,
            "kernel_size": found.kernel.stat().st_size,
            "initrd_size": found.initrd.stat().st_size,
            "fingerprint": found.fingerprint,
            "built_at": None,
        }
    root = settings.paths.guest
    manifest = cache.read_manifest(root)
    built = _from_manifest(root, manifest) if manifest is not None else None
    if manifest is None or built is None:
        return {"status": "not built", "cache": str(root), "hint": "run `hyper setup`"}
    package = kernel.Package(manifest["kernel"]["package"], manifest["kernel"]["version"])
    try:
        current = manifest["inputs"] == inputs_fingerprint(package, agent.sources())
    except Unavailable:
        current = False
    return {
        "status": "current" if current else "stale (rebuilt at the next VM start)",
        "kernel": str(built.kernel),
        "kernel_format": manifest["kernel"]["format"],
        "initrd": str(built.initrd),
        "release": built.release,
        "source": built.source,
        "agent_version": built.agent_version,
        "python": manifest.get("python"),
        "kernel_size": manifest["kernel"]["size"],
        "initrd_size": manifest["initrd"]["size"],
        "initrd_raw_size": manifest["initrd"]["raw_size"],
        "initrd_compression": manifest["initrd"]["compression"],
        "modules": manifest["modules"],
        "fingerprint": built.fingerprint,
        "built_at": manifest["built_at"],
    }
