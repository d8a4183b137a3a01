"""Reading kernels: the bzImage header, its payload, the PVH note, the config."""

from __future__ import annotations

import gzip
import struct

from hyper.guest import elf, kernel

CONFIG = """\
CONFIG_PVH=y
CONFIG_RD_GZIP=y
CONFIG_RD_ZSTD=y
# CONFIG_RD_LZ4 is not set
CONFIG_RD_XZ=m
"""


def fake_vmlinux(pvh: bool = True) -> bytes:
    """An ELF64 with one note section: Xen PHYS32_ENTRY (PVH) or another Xen note."""
    note_type = elf.XEN_ELFNOTE_PHYS32_ENTRY if pvh else 6
    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + b"\0\0\0\1"
    shstrtab = b"\0.shstrtab\0.notes\0"
    strings = b"Linux version 6.1.0-77-test (gcc) #1 SMP\0"
    body = shstrtab + note + strings
    shoff = 64 + len(body)
    shoff += -shoff % 8
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + b"\0" * 9,
        2,
        62,
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
    blob = bytearray(header + body)
    blob += b"\0" * (shoff - len(blob))
    blob += b"\0" * 64
    blob += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, 64, len(shstrtab), 0, 0, 1, 0)
    blob += struct.pack("<IIQQQQIIQQ", 11, 7, 0, 0, 64 + len(shstrtab), len(note), 0, 0, 4, 0)
    return bytes(blob)


def fake_bzimage(payload: bytes, release: str = "6.1.0-77-test") -> bytes:
    """Setup sectors with a boot-protocol 2.15 header, then the payload at offset 0x100."""
    setup_sects = 3
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    version_at = 0x400
    struct.pack_into("<H", setup, 0x20E, version_at - 0x200)
    text = f"{release} (builder@example) #1 SMP".encode() + b"\0"
    setup[version_at : version_at + len(text)] = text
    struct.pack_into("<II", setup, 0x248, 0x100, len(payload))
    return bytes(setup) + b"\0" * 0x100 + payload + b"\0" * 64


def gzip_payload(image: bytes) -> bytes:
    return gzip.compress(image, mtime=0) + struct.pack("<I", len(image))


def test_the_payload_is_found_and_decompressed() -> None:
    image = fake_vmlinux()
    bzimage = fake_bzimage(gzip_payload(image))

    assert kernel.payload(bzimage) == gzip_payload(image)
    assert kernel.extract_vmlinux(bzimage) == image


def test_no_vmlinux_without_pvh_or_with_a_wrong_size() -> None:
    assert kernel.extract_vmlinux(fake_bzimage(gzip_payload(fake_vmlinux(pvh=False)))) is None
    bad_size = gzip.compress(fake_vmlinux(), mtime=0) + struct.pack("<I", 12)
    assert kernel.extract_vmlinux(fake_bzimage(bad_size)) is None
    assert kernel.extract_vmlinux(fake_bzimage(b"not compressed at all")) is None
    assert kernel.extract_vmlinux(b"MZ not a bzImage") is None


def test_release_from_bzimage_and_vmlinux(tmp_path) -> None:
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(fake_bzimage(b"\0" * 16, release="6.1.0-42-cloud-amd64"))
    vm = tmp_path / "vmlinux"
    vm.write_bytes(fake_vmlinux())
    other = tmp_path / "other"
    other.write_bytes(b"hello")

    assert kernel.release_of(bz) == "6.1.0-42-cloud-amd64"
    assert kernel.release_of(vm) == "6.1.0-77-test"
    assert kernel.release_of(other) == "unknown"
    assert kernel.release_of(tmp_path / "missing") == "unknown"


def test_initrd_compressions_from_config() -> None:
    assert kernel.initrd_compressions(CONFIG) == {"none", "gzip", "zstd"}


def test_package_dirname_is_a_plain_name() -> None:
    assert kernel.Package("linux-image-x", "1:6.1-2").dirname == "linux-image-x_1%3a6.1-2"
