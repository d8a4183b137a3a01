"""Kernel module selection: dependency order, built-ins, and reading .modinfo."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest

from hyper.errors import InvalidArgument
from hyper.guest import kmod

GRAPH = {
    "virtio_ring": [],
    "virtio": ["virtio_ring"],
    "virtio_mmio": ["virtio", "virtio_ring"],
    "virtio_console": ["virtio", "virtio_ring"],
    "erofs": ["libcrc32c"],
    "libcrc32c": [],
    "net_failover": ["failover"],
    "failover": [],
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
}


def test_dependencies_come_first_in_a_stable_order() -> None:
    wanted = ["virtio_mmio", "virtio_console", "erofs", "virtio_net"]

    order = kmod.load_order(wanted, GRAPH.__getitem__)

    assert order == [
        "virtio_ring",
        "virtio",
        "virtio_mmio",
        "virtio_console",
        "libcrc32c",
        "erofs",
        "failover",
        "net_failover",
        "virtio_net",
    ]
    for name in order:
        for dep in GRAPH[name]:
            assert order.index(dep) < order.index(name)


def test_builtin_modules_are_skipped() -> None:
    order = kmod.load_order(["erofs", "virtio"], GRAPH.__getitem__, {"libcrc32c", "virtio"})
    assert order == ["erofs"]


def test_dashes_and_underscores_are_one_name() -> None:
    assert kmod.load_order(["virtio-ring"], GRAPH.__getitem__) == ["virtio_ring"]


def test_cycles_and_unknown_modules_are_errors() -> None:
    cyclic = {"a": ["b"], "b": ["c"], "c": ["a"]}
    with pytest.raises(InvalidArgument, match="a -> b -> c -> a"):
        kmod.load_order(["a"], cyclic.__getitem__)

    def depends(name: str) -> list[str]:
        raise InvalidArgument(f"no module {name}")

    with pytest.raises(InvalidArgument, match="no module nope"):
        kmod.load_order(["nope"], depends)


def fake_module(modinfo: bytes) -> bytes:
    """A minimal ELF64 with a .shstrtab and a .modinfo section."""
    shstrtab = b"\0.shstrtab\0.modinfo\0"
    data_off = 64
    modinfo_off = data_off + len(shstrtab)
    shoff = modinfo_off + len(modinfo)
    shoff += -shoff % 8
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + b"\0" * 9,
        1,  # ET_REL
        62,  # x86-64
        1,
        0,
        0,
        shoff,
        0,
        64,
        0,
        0,
        64,
        3,
        1,
    )
    blob = bytearray(header + shstrtab + modinfo)
    blob += b"\0" * (shoff - len(blob))
    blob += b"\0" * 64  # the null section
    blob += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, data_off, len(shstrtab), 0, 0, 1, 0)
    blob += struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, modinfo_off, len(modinfo), 0, 0, 1, 0)
    return bytes(blob)


def test_depends_are_read_from_modinfo(tmp_path: Path) -> None:
    info = b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_mmio\0vermagic=6.1\0"
    blob = fake_module(info)

    assert kmod.modinfo(blob)["name"] == ["virtio_mmio"]
    assert kmod.depends_of(blob) == ("virtio", "virtio_ring")
    assert kmod.depends_of(fake_module(b"depends=\0name=virtio_ring\0")) == ()

    compressed = tmp_path / "virtio_mmio.ko.xz"
    compressed.write_bytes(lzma.compress(blob))
    assert kmod.decompress(compressed) == blob


def test_resolve_walks_a_module_tree(tmp_path: Path) -> None:
    tree = tmp_path / "6.1.0-test"
    (tree / "kernel" / "drivers").mkdir(parents=True)
    for name, deps in GRAPH.items():
        info = f"depends={','.join(deps)}\0name={name}\0".encode()
        (tree / "kernel" / "drivers" / f"{name}.ko").write_bytes(fake_module(info))
    (tree / "modules.builtin").write_text("kernel/lib/libcrc32c.ko\n")

    modules = kmod.resolve(tree, ["erofs", "virtio_mmio"])

    assert [m.name for m in modules] == ["erofs", "virtio_ring", "virtio", "virtio_mmio"]
    assert modules[-1].depends == ("virtio", "virtio_ring")
    with pytest.raises(InvalidArgument, match="overlay"):
        kmod.resolve(tree, ["overlay"])
