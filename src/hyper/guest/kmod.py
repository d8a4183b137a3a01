"""The guest kernel's modules: which files, and in which order hyperstart loads them.

The Debian cloud kernel builds virtio, erofs and overlay as modules. The initramfs carries only
the modules the guest needs plus what they depend on, read from each module's ``.modinfo``
section (``depends=``, the same field ``modinfo -F depends`` prints), and lists them in an order
where every module comes after its dependencies, since ``finit_module`` does not resolve them.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hyper.errors import Internal, InvalidArgument
from hyper.guest import elf

WANTED: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "erofs",
    "overlay",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_pci",
    "scsi_mod",
    "sd_mod",
    "virtio_scsi",
)
"""What the guest uses: virtio-mmio devices, the agent's serial port, disks, erofs + overlay
root filesystems, networking; virtio_pci for ``microvm,pcie=on`` (harmless otherwise);
virtio-scsi, through which every disk is hot-plugged after the agent is up (docs/vmm.md)."""

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz", ".ko.bz2")


def canonical(name: str) -> str:
    """Module names treat ``-`` and ``_`` alike; the kernel reports ``_``."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    """The module file in the extracted package (maybe compressed)."""
    depends: tuple[str, ...]


def decompress(path: Path) -> bytes:
    """The plain ELF of a module file, whatever compression Debian shipped it with."""
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.bz2"):
        return bz2.decompress(data)
    if path.name.endswith(".ko.zst"):
        done = subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            raise Internal(f"cannot decompress {path}: {done.stderr.decode(errors='replace')}")
        return done.stdout
    raise InvalidArgument(f"{path} is not a kernel module")


def modinfo(blob: bytes) -> dict[str, list[str]]:
    """The ``key=value`` fields of a module's ``.modinfo`` section (keys may repeat)."""
    section = elf.section(blob, ".modinfo")
    if section is None:
        raise InvalidArgument("no .modinfo section: not a kernel module")
    fields: dict[str, list[str]] = {}
    for item in section.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    return fields


def depends_of(blob: bytes) -> tuple[str, ...]:
    values = modinfo(blob).get("depends", [])
    return tuple(canonical(d) for v in values for d in v.split(",") if d)


def index(module_dir: Path) -> dict[str, Path]:
    """Every module file under ``/lib/modules/<release>``, by canonical module name."""
    found: dict[str, Path] = {}
    for path in sorted((module_dir / "kernel").rglob("*.ko*")):
        for suffix in _SUFFIXES:
            if path.name.endswith(suffix):
                found[canonical(path.name[: -len(suffix)])] = path
                break
    return found


def builtin(module_dir: Path) -> set[str]:
    """Modules compiled into the kernel (``modules.builtin``): nothing to load for them."""
    listing = module_dir / "modules.builtin"
    if not listing.exists():
        return set()
    names = set()
    for line in listing.read_text().splitlines():
        base = line.rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(canonical(base[:-3]))
    return names


def load_order(
    wanted: Iterable[str],
    depends: Callable[[str], Sequence[str]],
    builtin: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """The modules to load, dependencies first, in a stable order (``wanted``'s, depth first).

    ``depends(name)`` gives a module's dependencies; it raises :class:`InvalidArgument` for a
    module the kernel does not have. Built-in modules are skipped (with their dependencies,
    which are built in too). A dependency cycle is an error.
    """
    order: list[str] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        name = canonical(name)
        if name in done or name in builtin:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise InvalidArgument(f"kernel module dependency cycle: {cycle}")
        visiting.append(name)
        for dep in depends(name):
            visit(dep)
        visiting.pop()
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def resolve(module_dir: Path, wanted: Iterable[str] = WANTED) -> list[Module]:
    """The modules of an extracted kernel tree to load for ``wanted``, in load order."""
    files = index(module_dir)
    compiled_in = builtin(module_dir)
    infos: dict[str, tuple[str, ...]] = {}

    def depends(name: str) -> tuple[str, ...]:
        if name not in infos:
            path = files.get(name)
            if path is None:
                raise InvalidArgument(
                    f"kernel module {name} is neither in {module_dir} nor built in"
                )
            infos[name] = depends_of(decompress(path))
        return infos[name]

    order = load_order(wanted, depends, compiled_in)
    return [Module(name, files[name], infos[name]) for name in order]
