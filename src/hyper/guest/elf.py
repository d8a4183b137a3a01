"""Just enough of ELF64 to read a kernel module's ``.modinfo`` and a vmlinux's notes."""

from __future__ import annotations

import struct

from hyper.errors import InvalidArgument

ELF_MAGIC = b"\x7fELF"
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_NOTE_HEADER = struct.Struct("<III")
_SHT_NOTE = 7
XEN_ELFNOTE_PHYS32_ENTRY = 18
"""The note that makes a vmlinux bootable through PVH (QEMU's fast path for ``-kernel``)."""


def is_elf64(blob: bytes) -> bool:
    return blob[:4] == ELF_MAGIC and blob[4:5] == b"\x02" and blob[5:6] == b"\x01"


def _sections(blob: bytes) -> list[tuple[str, int, bytes]]:
    """(name, type, contents) of every section of a little-endian ELF64 file."""
    if not is_elf64(blob) or len(blob) < _ELF_HEADER.size:
        raise InvalidArgument("not a little-endian ELF64 file")
    fields = _ELF_HEADER.unpack_from(blob)
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    if shoff == 0 or shnum == 0:
        return []
    raw = []
    for i in range(shnum):
        start = shoff + i * shentsize
        if start + _SECTION_HEADER.size > len(blob):
            raise InvalidArgument("ELF section table runs past the end of the file")
        name, kind, _flags, _addr, offset, size, *_ = _SECTION_HEADER.unpack_from(blob, start)
        raw.append((name, kind, offset, size))
    strtab = raw[shstrndx]
    names = blob[strtab[2] : strtab[2] + strtab[3]]
    result = []
    for name_off, kind, offset, size in raw:
        name = names[name_off : names.index(b"\0", name_off)].decode(errors="replace")
        contents = b"" if kind == 8 else blob[offset : offset + size]  # 8: SHT_NOBITS
        result.append((name, kind, contents))
    return result


def section(blob: bytes, name: str) -> bytes | None:
    for section_name, _kind, contents in _sections(blob):
        if section_name == name:
            return contents
    return None


def notes(blob: bytes) -> list[tuple[str, int, bytes]]:
    """(owner, type, description) of every note in the file's SHT_NOTE sections."""
    found = []
    for _name, kind, contents in _sections(blob):
        if kind != _SHT_NOTE:
            continue
        offset = 0
        while offset + _NOTE_HEADER.size <= len(contents):
            namesz, descsz, note_type = _NOTE_HEADER.unpack_from(contents, offset)
            offset += _NOTE_HEADER.size
            owner = contents[offset : offset + namesz].rstrip(b"\0").decode(errors="replace")
            offset += (namesz + 3) & ~3
            found.append((owner, note_type, contents[offset : offset + descsz]))
            offset += (descsz + 3) & ~3
    return found


def has_pvh_entry(blob: bytes) -> bool:
    return any(
        owner == "Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY for owner, kind, _ in notes(blob)
    )
