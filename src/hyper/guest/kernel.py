"""The guest kernel, taken from Debian's cloud kernel package.

Theory of operation: ``linux-image-cloud-amd64`` is a metapackage whose one dependency is the
real package of the current ABI (``linux-image-6.1.0-NN-cloud-amd64``). That package is
downloaded with ``apt-get download`` (never installed), unpacked with ``dpkg-deb -x`` and
reduced to what the guest needs: the kernel and the few modules of :data:`kmod.WANTED`.

The kernel is kept as the uncompressed ``vmlinux`` when possible: QEMU boots an ELF with a PVH
entry note directly, which skips the bzImage's self-decompression (about 0.3 s under TCG). The
bzImage's setup header says where its compressed payload is; the payload is decompressed with
the Debian command-line tool for its format and must yield a PVH-capable ELF of the announced
size, or the bzImage itself is used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyper.errors import Internal, Unavailable
from hyper.guest import elf, kmod

_HDRS_MAGIC = b"HdrS"
_DECOMPRESSORS: tuple[tuple[bytes, str, list[str]], ...] = (
    (b"\x02\x21\x4c\x18", "lz4", ["lz4", "-dcq"]),
    (b"\x28\xb5\x2f\xfd", "zstd", ["zstd", "-dcq"]),
    (b"\x1f\x8b", "gzip", ["gzip", "-dcq"]),
    (b"\xfd7zXZ\x00", "xz", ["xz", "-dcq"]),
)
_APT_TIMEOUT = 600.0
_TOOL_TIMEOUT = 120.0

VMLINUX = "vmlinux"
BZIMAGE = "vmlinuz"
MANIFEST = "kernel.json"


@dataclass(frozen=True)
class Package:
    """A Debian binary package at one version."""

    name: str
    version: str

    @property
    def dirname(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}"


@dataclass(frozen=True)
class PreparedKernel:
    """A kernel package reduced to what the guest needs, in its own cache directory."""

    directory: Path
    package: Package
    release: str
    kernel: Path
    kernel_format: str
    """``vmlinux`` (ELF booted through PVH) or ``bzImage``."""
    modules: tuple[tuple[str, Path], ...]
    """(name, uncompressed .ko) in load order; built-in modules are absent."""
    initrd_compressions: frozenset[str]
    """The initramfs compressions the kernel can unpack (``CONFIG_RD_*``), plus ``none``."""
    wanted: frozenset[str] = frozenset()
    """The modules asked for when it was prepared (a newer :data:`kmod.WANTED` re-prepares)."""

    @classmethod
    def load(cls, directory: Path) -> PreparedKernel:
        data = json.loads((directory / MANIFEST).read_text())
        return cls(
            directory=directory,
            package=Package(data["package"], data["version"]),
            release=data["release"],
            kernel=directory / data["kernel"],
            kernel_format=data["kernel_format"],
            modules=tuple((name, directory / "modules" / f"{name}.ko") for name in data["modules"]),
            initrd_compressions=frozenset(data["initrd_compressions"]),
            wanted=frozenset(data.get("wanted", data["modules"])),
        )

    def is_complete(self, wanted: Sequence[str] = kmod.WANTED) -> bool:
        return (
            self.kernel.is_file()
            and all(path.is_file() for _, path in self.modules)
            and set(wanted) <= self.wanted
        )


def _run(argv: Sequence[str], timeout: float = _TOOL_TIMEOUT, **kwargs: Any) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError:
        raise Unavailable(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip()
        raise Unavailable(f"{' '.join(argv)} failed ({done.returncode}): {detail}")
    return str(done.stdout)


def candidate(metapackage: str) -> Package:
    """The real kernel package that ``metapackage`` currently depends on, at its candidate
    version in the local apt lists (no network)."""
    hint = "run `apt-get update` and check the apt sources"
    try:
        depends = _run(["apt-cache", "depends", metapackage])
    except Unavailable as exc:
        raise Unavailable(f"cannot resolve {metapackage}: {exc}; {hint}") from None
    name = None
    for line in depends.splitlines():
        match = re.match(r"\s*\|?Depends:\s*(linux-image-\S+)", line)
        if match and not match.group(1).startswith("<"):
            name = match.group(1)
            break
    if name is None and re.match(r"linux-image-\d", metapackage):
        name = metapackage  # configured with a real package rather than the metapackage
    if name is None:
        raise Unavailable(f"{metapackage} depends on no linux-image package; {hint}")
    policy = _run(["apt-cache", "policy", name])
    match = re.search(r"^\s*Candidate:\s*(\S+)", policy, re.MULTILINE)
    if match is None or match.group(1) == "(none)":
        raise Unavailable(f"no installable version of {name} in the apt lists; {hint}")
    return Package(name, match.group(1))


def download(package: Package, directory: Path) -> Path:
    """``apt-get download`` the package into ``directory``; returns the .deb."""
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        argv += ["-o", "APT::Sandbox::User=root"]  # _apt may not write our temp dir
    argv.append(f"{package.name}={package.version}")
    try:
        _run(argv, timeout=_APT_TIMEOUT, cwd=directory)
    except Unavailable as exc:
        raise Unavailable(
            f"cannot download the guest kernel {package.name} {package.version}: {exc}. "
            "Check network access to the Debian mirror (or run `apt-get update`), "
            "or configure guest.kernel and guest.initrd to bring your own"
        ) from None
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise Internal(f"apt-get download left {len(debs)} .deb files in {directory}")
    return debs[0]


def payload(bzimage: bytes) -> bytes | None:
    """The compressed kernel inside a bzImage (located by its setup header), or None."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != _HDRS_MAGIC:
        return None
    if struct.unpack_from("<H", bzimage, 0x206)[0] < 0x208:  # boot protocol 2.08 has the fields
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length < 8 or start + length > len(bzimage):
        return None
    return bzimage[start : start + length]


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed, PVH-bootable vmlinux inside a bzImage; None if anything is off."""
    blob = payload(bzimage)
    if blob is None:
        return None
    for magic, _name, argv in _DECOMPRESSORS:
        if not blob.startswith(magic):
            continue
        # The kernel's build appends the uncompressed size (le32) after the stream.
        expected = struct.unpack_from("<I", blob, len(blob) - 4)[0]
        try:
            done = subprocess.run(
                argv, input=blob[:-4], capture_output=True, timeout=_TOOL_TIMEOUT, check=False
            )
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return None
        image = done.stdout
        if done.returncode != 0 or len(image) != expected or not elf.is_elf64(image):
            return None
        return image if elf.has_pvh_entry(image) else None
    return None


def bzimage_release(blob: bytes) -> str | None:
    """The release a bzImage announces in its setup header's kernel_version string."""
    if len(blob) < 0x210 or blob[0x202:0x206] != _HDRS_MAGIC:
        return None
    pointer = struct.unpack_from("<H", blob, 0x20E)[0]
    if pointer == 0:
        return None
    text = blob[pointer + 0x200 : pointer + 0x200 + 256].split(b"\0", 1)[0]
    words = text.decode(errors="replace").split()
    return words[0] if words else None


def release_of(path: Path) -> str:
    """The release of a kernel file (bzImage or vmlinux), or ``unknown``."""
    try:
        blob = path.read_bytes()
    except OSError:
        return "unknown"
    release = bzimage_release(blob)
    if release is None and elf.is_elf64(blob):
        match = re.search(rb"Linux version (\S+) \(", blob)
        release = match.group(1).decode(errors="replace") if match else None
    return release or "unknown"


def initrd_compressions(config: str) -> frozenset[str]:
    """Initramfs compressions enabled in a kernel ``.config``."""
    names = {"GZIP": "gzip", "ZSTD": "zstd", "LZ4": "lz4", "XZ": "xz"}
    enabled = {"none"}
    for option, name in names.items():
        if re.search(rf"^CONFIG_RD_{option}=y$", config, re.MULTILINE):
            enabled.add(name)
    return frozenset(enabled)


def prepare(package: Package, directory: Path, wanted: Sequence[str] = kmod.WANTED) -> None:
    """Download ``package`` and write the reduced kernel tree into ``directory`` (new)."""
    with tempfile.TemporaryDirectory(prefix="hyper-kernel-") as scratch:
        work = Path(scratch)
        os.chmod(work, 0o755)
        deb = download(package, work)
        root = work / "root"
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        deb.unlink()
        boot = root / "boot"
        vmlinuz = sorted(boot.glob("vmlinuz-*"))
        configs = sorted(boot.glob("config-*"))
        if len(vmlinuz) != 1 or len(configs) != 1:
            raise Internal(f"{package.name} has no single /boot/vmlinuz-* and config-*")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        config = configs[0].read_text()
        module_dir = root / "lib" / "modules" / release
        if not module_dir.is_dir():
            module_dir = root / "usr" / "lib" / "modules" / release
        modules = kmod.resolve(module_dir, wanted)

        directory.mkdir(parents=True)
        bzimage = vmlinuz[0].read_bytes()
        image = extract_vmlinux(bzimage) if "CONFIG_PVH=y" in config else None
        if image is not None:
            kernel_name, kernel_format = VMLINUX, "vmlinux"
            (directory / VMLINUX).write_bytes(image)
        else:
            kernel_name, kernel_format = BZIMAGE, "bzImage"
            shutil.copyfile(vmlinuz[0], directory / BZIMAGE)
        (directory / "modules").mkdir()
        for module in modules:
            (directory / "modules" / f"{module.name}.ko").write_bytes(kmod.decompress(module.path))
        manifest = {
            "package": package.name,
            "version": package.version,
            "release": release,
            "kernel": kernel_name,
            "kernel_format": kernel_format,
            "modules": [module.name for module in modules],
            "wanted": list(wanted),
            "depends": {module.name: list(module.depends) for module in modules},
            "initrd_compressions": sorted(initrd_compressions(config)),
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
