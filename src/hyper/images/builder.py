"""Build images from Python values: layers as ``{path: entry}`` dicts, plus a config.

For tests anywhere in the project, and for the built-in busybox image. Layers are written as
deterministic tars (entries sorted by path unless told otherwise, fixed mtimes, numeric owners,
no user or group names), so the same input always gives the same digests.

    build_image(store, "app:1", [
        {"bin/app": File(b"...", mode=0o755), "bin/sh": Symlink("/bin/busybox")},
        {"etc/motd": Whiteout(), "var/cache": Opaque()},
    ], ImageConfig(cmd=("/bin/app",)))

Paths are written exactly as given, so a test can also make hostile layers (``"../evil"``).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hyper.images import oci
from hyper.images.compression import Compression, compress
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import Reference
from hyper.images.store import ImageStore, TenantImages, names_of
from hyper.images.unpack import OPAQUE_MARKER, WHITEOUT_PREFIX

FIXED_MTIME = 1_704_067_200
"""2024-01-01T00:00:00Z: the mtime of every entry unless one is given."""
FIXED_CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME


@dataclass(frozen=True)
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME


@dataclass(frozen=True)
class HardLink:
    target: str
    """The archive path of the file linked to."""


@dataclass(frozen=True)
class Whiteout:
    """Removes the path (as the lower layers left it); written as ``dir/.wh.name``."""


@dataclass(frozen=True)
class Opaque:
    """Hides everything lower layers put in the directory; written as ``dir/.wh..wh..opq``."""


@dataclass(frozen=True)
class Device:
    """A device node or FIFO (``kind``: "char", "block" or "fifo"), to test that it is skipped."""

    kind: str = "char"
    major: int = 1
    minor: int = 3


Entry = bytes | File | Dir | Symlink | HardLink | Whiteout | Opaque | Device
Layer = Mapping[str, Entry]

_MEDIA_TYPES = {
    Compression.NONE: oci.OCI_LAYER,
    Compression.GZIP: oci.OCI_LAYER_GZIP,
    Compression.ZSTD: oci.OCI_LAYER_ZSTD,
}
_DEVICE_TYPES = {"char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def layer_tar(layer: Layer, *, sort: bool = True) -> bytes:
    """The uncompressed tar of ``layer``, deterministic."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(layer) if sort else layer:
            info, data = _tarinfo(path, layer[path])
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def build_image(
    store: ImageStore | TenantImages,
    reference: str | Reference,
    layers: Sequence[Layer | bytes],
    config: oci.ImageConfig | None = None,
    *,
    compression: Compression = Compression.NONE,
    sort: bool = True,
) -> Image:
    """Store an image made of ``layers`` (dicts, or ready tar bytes) and tag it ``reference``
    (in the tenant of ``store``; a whole store: the tenant "default")."""
    store = names_of(store)
    with store.lease():
        descriptors = []
        diff_ids = []
        for layer in layers:
            tar = layer if isinstance(layer, bytes) else layer_tar(layer, sort=sort)
            blob = compress(tar, compression)
            digest = store.content.put(blob)
            descriptors.append(oci.Descriptor(_MEDIA_TYPES[compression], digest, len(blob)))
            diff_ids.append(Digest.of(tar))
        platform = oci.host_platform()
        config_blob = oci.encode_config(
            oci.ConfigDocument(
                config or oci.ImageConfig(),
                tuple(diff_ids),
                platform.architecture,
                platform.os,
                FIXED_CREATED,
            )
        )
        config_descriptor = oci.Descriptor(
            oci.OCI_CONFIG, store.content.put(config_blob), len(config_blob)
        )
        manifest = oci.encode_manifest(config_descriptor, descriptors)
        return store.tag(reference, store.content.put(manifest))


def _tarinfo(path: str, entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    if isinstance(entry, bytes):
        entry = File(entry)
    info = tarfile.TarInfo(path)
    info.mtime = FIXED_MTIME
    info.uname = info.gname = ""
    data = None
    if isinstance(entry, File):
        info.type = tarfile.REGTYPE
        info.size = len(entry.data)
        info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
        info.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
            for k, v in sorted(entry.xattrs.items())
        }
        data = entry.data
    elif isinstance(entry, Dir):
        info.type = tarfile.DIRTYPE
        info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, Symlink):
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode, info.uid, info.gid, info.mtime = 0o777, entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, HardLink):
        info.type = tarfile.LNKTYPE
        info.linkname = entry.target
        info.mode = 0o644
    elif isinstance(entry, Whiteout):
        head, _, name = path.rpartition("/")
        info.name = f"{head}/{WHITEOUT_PREFIX}{name}" if head else WHITEOUT_PREFIX + name
        info.mode = 0o644
    elif isinstance(entry, Opaque):
        info.name = f"{path.rstrip('/')}/{OPAQUE_MARKER}"
        info.mode = 0o644
    else:
        info.type = _DEVICE_TYPES[entry.kind]
        info.devmajor, info.devminor = entry.major, entry.minor
        info.mode = 0o666
    return info, data
