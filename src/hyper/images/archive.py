"""``hyper save`` and ``hyper load``: images as one tar file, in docker's format or OCI's.

Formats written by ``save``:

- ``docker`` (what ``docker save`` writes and ``docker load``/``skopeo docker-archive:`` read)::

      manifest.json            [{"Config": "<hex>.json", "RepoTags": ["busybox:latest"],
                                  "Layers": ["<diff-id hex>/layer.tar", ...]}]
      repositories             {"busybox": {"latest": "<top layer dir>"}}
      <config hex>.json        the image config, byte for byte
      <diff-id hex>/layer.tar  each layer uncompressed (its sha256 is its diff-id), once
      <diff-id hex>/VERSION, <diff-id hex>/json   legacy metadata docker still writes

- ``oci`` (an OCI image layout in a tar, as ``skopeo copy ... oci-archive:`` writes)::

      oci-layout, index.json (annotated with the tag and the full name), blobs/sha256/<hex>
      (the manifest, config and layers as stored: digests are kept)

``load`` reads either (detected from the content: ``manifest.json`` means docker's, else
``oci-layout`` + ``index.json``), plain or compressed with gzip or zstd. The archive is hostile:

- it is read as a stream and nothing is ever extracted to the filesystem: regular entries go
  into the content store (verified on arrival; ``blobs/sha256/<hex>`` must hash to its name),
  JSON documents into memory (bounded by ``MAX_DOCUMENT_BYTES``);
- entry names must be relative and free of ``..``; symlinks and hard links (old docker versions
  link identical layers) are resolved among the archive's own names only; devices, FIFOs and
  other entry types are refused;
- the number of entries and the total bytes are bounded (``ArchiveLimits``);
- every layer of a docker archive must hash (uncompressed) to its diff-id in the config.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from hyper.errors import FailedPrecondition, InvalidArgument, NotFound
from hyper.images import oci
from hyper.images.compression import Compression, decompressed, detect
from hyper.images.digest import Digest, DigestingReader
from hyper.images.image import Image
from hyper.images.layout import name_entries
from hyper.images.reference import Reference, parse
from hyper.images.store import TenantImages
from hyper.images.tree import split
from hyper.images.unpack import BoundedTarInfo

FORMATS = ("docker", "oci")
_CHUNK = 1 << 20
_METADATA = frozenset({"manifest.json", "repositories", "index.json", "oci-layout"})
_LEGACY = re.compile(r"[0-9a-f]{64}/(VERSION|json)")
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_FIXED_MTIME = 0


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 200_000
    max_bytes: int = 64 << 30
    """Bytes of all regular entries together (after decompressing the archive)."""
    max_images: int = 10_000


# -- save -----------------------------------------------------------------------------------


def save(
    store: TenantImages,
    references: Sequence[str | Reference],
    path: Path,
    format: str = "docker",
) -> None:
    """Write the images ``references`` name to the tar file ``path`` (replaced atomically)."""
    if format not in FORMATS:
        raise InvalidArgument(f"unknown archive format {format!r}: docker or oci")
    if not references:
        raise InvalidArgument("save needs at least one image")
    unique = {(r if isinstance(r, Reference) else parse(r)).canonical: r for r in references}
    refs = [r if isinstance(r, Reference) else parse(r) for r in unique.values()]
    with store.lease():
        images = [(ref, store.resolve(ref)) for ref in refs]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    if format == "docker":
                        _save_docker(store, images, tar)
                    else:
                        _save_oci(store, images, tar)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _save_docker(
    store: TenantImages, images: list[tuple[Reference, Image]], tar: tarfile.TarFile
) -> None:
    entries: dict[Digest, dict[str, Any]] = {}
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for ref, image in images:
        config_name = f"{image.config_digest.hex}.json"
        if config_name not in written:
            _add_bytes(
                tar, config_name, store.content.read(image.config_digest, oci.MAX_DOCUMENT_BYTES)
            )
            written.add(config_name)
        layer_names = []
        for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
            directory = diff_id.hex
            name = f"{directory}/layer.tar"
            if name not in written:
                _add_dir(tar, directory)
                _add_bytes(tar, f"{directory}/VERSION", b"1.0")
                _add_bytes(tar, f"{directory}/json", json.dumps({"id": directory}).encode())
                with _uncompressed_layer(store, layer, diff_id) as (source, size):
                    info = _info(name, size)
                    tar.addfile(info, source)
                written.add(name)
            layer_names.append(name)
        entry = entries.setdefault(
            image.config_digest, {"Config": config_name, "RepoTags": [], "Layers": layer_names}
        )
        if ref.tag is not None:
            tag = f"{ref.familiar_name}:{ref.tag}"
            if tag not in entry["RepoTags"]:
                entry["RepoTags"].append(tag)
            if image.diff_ids:
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = image.diff_ids[-1].hex
    _add_bytes(tar, "manifest.json", json.dumps(list(entries.values())).encode())
    _add_bytes(tar, "repositories", json.dumps(repositories).encode())


@contextmanager
def _uncompressed_layer(
    store: TenantImages, layer: oci.Descriptor, diff_id: Digest
) -> Iterator[tuple[IO[bytes], int]]:
    """The layer's tar (decompressed into a temporary file if it is stored compressed)."""
    with store.content.open(layer.digest) as blob:
        head = typing.cast(io.BufferedReader, blob).peek(4)[:4]
        if detect(head) is Compression.NONE:
            if layer.digest != diff_id:
                raise InvalidArgument(f"layer {layer.digest} is not its diff-id {diff_id}")
            yield blob, layer.size
            return
        with tempfile.TemporaryFile(dir=store.tmp_dir) as tmp:
            with decompressed(blob) as plain:
                reader = DigestingReader(plain)
                shutil.copyfileobj(io.BufferedReader(reader, _CHUNK), tmp, _CHUNK)
            blob.read()  # to the end, where the blob's own digest is checked
            if reader.digest != diff_id:
                raise InvalidArgument(
                    f"layer {layer.digest} unpacks to {reader.digest}, not {diff_id}"
                )
            size = tmp.tell()
            tmp.seek(0)
            yield tmp, size


def _save_oci(
    store: TenantImages, images: list[tuple[Reference, Image]], tar: tarfile.TarFile
) -> None:
    _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    written: set[Digest] = set()
    manifests = []
    _add_dir(tar, "blobs")
    _add_dir(tar, "blobs/sha256")
    for ref, image in images:
        data = store.content.read(image.digest, oci.MAX_DOCUMENT_BYTES)
        annotations = {oci.ANNOTATION_CONTAINERD_NAME: ref.canonical}
        if ref.tag is not None:
            annotations[oci.ANNOTATION_REF_NAME] = ref.tag
        manifests.append(
            oci.Descriptor(image.media_type, image.digest, len(data), annotations).to_json()
        )
        for desc in (
            oci.Descriptor(image.media_type, image.digest, len(data)),
            oci.Descriptor(
                oci.OCI_CONFIG, image.config_digest, store.content.size(image.config_digest)
            ),
            *image.layers,
        ):
            if desc.digest in written:
                continue
            with store.content.open(desc.digest) as blob:
                tar.addfile(
                    _info(f"blobs/sha256/{desc.digest.hex}", store.content.size(desc.digest)), blob
                )
                blob.read()  # verify to the end
            written.add(desc.digest)
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests}
    _add_bytes(tar, "index.json", json.dumps(index).encode())


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size if kind == tarfile.REGTYPE else 0
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = _FIXED_MTIME
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, 0, tarfile.DIRTYPE))


# -- load -----------------------------------------------------------------------------------


@dataclass
class _Contents:
    documents: dict[str, bytes]
    blobs: dict[str, Digest]
    links: dict[str, str]

    def resolve(self, name: str) -> Digest:
        seen = 0
        key = _normalize(name)
        while key in self.links and seen < 40:
            key = self.links[key]
            seen += 1
        digest = self.blobs.get(key)
        if digest is None:
            raise InvalidArgument(f"the archive lacks {name!r}")
        return digest


def load(store: TenantImages, path: Path, limits: ArchiveLimits | None = None) -> list[Image]:
    """Load every image of the archive ``path`` into ``store``; the tagged images."""
    limits = limits or ArchiveLimits()
    try:
        source: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    with store.lease():
        with source:
            contents = _read_archive(store, source, limits)
        if "manifest.json" in contents.documents:
            return _load_docker(store, contents, limits)
        if "index.json" in contents.documents and "oci-layout" in contents.documents:
            return _load_oci(store, contents)
        raise InvalidArgument(
            f"{path} is neither a docker archive (manifest.json) nor an OCI archive"
            " (oci-layout, index.json)"
        )


def _read_archive(store: TenantImages, source: BinaryIO, limits: ArchiveLimits) -> _Contents:
    contents = _Contents({}, {}, {})
    entries = total = 0
    try:
        with decompressed(source) as plain:
            stream = io.BufferedReader(_Raw(plain), _CHUNK)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo) as archive:
                while (member := archive.next()) is not None:
                    archive.members.clear()  # type: ignore[attr-defined]
                    entries += 1
                    if entries > limits.max_entries:
                        raise InvalidArgument(f"the archive has over {limits.max_entries} entries")
                    name = _normalize(member.name)
                    if member.isdir():
                        continue
                    if member.issym() or member.islnk():
                        base = posixpath.dirname(name) if member.issym() else ""
                        target = posixpath.normpath(posixpath.join(base, member.linkname))
                        contents.links[name] = _normalize(target)
                        continue
                    if not member.isreg():
                        raise InvalidArgument(
                            f"archive entry {member.name!r}: entry type {member.type!r} is not"
                            " allowed in an image archive"
                        )
                    total += member.size
                    if total > limits.max_bytes:
                        raise InvalidArgument(f"the archive holds over {limits.max_bytes} bytes")
                    data = archive.extractfile(member)
                    assert data is not None
                    _take(store, contents, name, member.size, data)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"not a valid image archive: {exc}") from None
    return contents


def _take(store: TenantImages, contents: _Contents, name: str, size: int, data: IO[bytes]) -> None:
    if name in _METADATA:
        if size > oci.MAX_DOCUMENT_BYTES:
            raise InvalidArgument(f"archive entry {name} is over {oci.MAX_DOCUMENT_BYTES} bytes")
        contents.documents[name] = data.read(size)
        return
    if _LEGACY.fullmatch(name) and size <= 1 << 20:
        return
    match = _BLOB.fullmatch(name)
    expected = Digest(match.group(1)) if match else None
    try:
        contents.blobs[name] = store.content.ingest(data, expected, size)
    except InvalidArgument as exc:
        raise InvalidArgument(f"archive entry {name}: {exc}") from None


class _Raw(io.RawIOBase):
    def __init__(self, source: Any) -> None:
        super().__init__()
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        return len(data)


def _normalize(name: str) -> str:
    try:
        return "/".join(split(name))
    except InvalidArgument as exc:
        raise InvalidArgument(f"archive entry {name!r}: {exc}") from None


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None


def _load_docker(store: TenantImages, contents: _Contents, limits: ArchiveLimits) -> list[Image]:
    doc = _json(contents.documents["manifest.json"], "manifest.json")
    if not isinstance(doc, list) or len(doc) > limits.max_images:
        raise InvalidArgument("manifest.json must be a list of images")
    images = []
    for i, entry in enumerate(doc):
        what = f"manifest.json[{i}]"
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{what} must be an object")
        config_name, layers, tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags")
        if not isinstance(config_name, str):
            raise InvalidArgument(f"{what}.Config must be a string")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise InvalidArgument(f"{what}.Layers must be a list of strings")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise InvalidArgument(f"{what}.RepoTags must be a list of strings")
        if not tags:
            raise InvalidArgument(
                f"{what}: the image has no tag (RepoTags); hyper keeps images by name:"
                " save it again by name:tag"
            )
        refs = [parse(tag) for tag in tags]
        config_digest = contents.resolve(config_name)
        config_data = store.content.read(config_digest, oci.MAX_DOCUMENT_BYTES)
        config = oci.parse_config(config_data)
        if len(config.diff_ids) != len(layers):
            raise InvalidArgument(
                f"{what}: {len(layers)} layers but {len(config.diff_ids)} diff_ids in the config"
            )
        descriptors = []
        for name, diff_id in zip(layers, config.diff_ids, strict=True):
            digest = contents.resolve(name)
            descriptors.append(_layer_descriptor(store, digest, diff_id, name))
        manifest = oci.encode_manifest(
            oci.Descriptor(oci.OCI_CONFIG, config_digest, len(config_data)), descriptors
        )
        digest = store.content.put(manifest)
        for ref in refs:
            if ref.tag is None:
                raise InvalidArgument(f"{what}: RepoTags entry {ref.familiar} has no tag")
            images.append(store.tag(ref, digest))
    return images


def _layer_descriptor(
    store: TenantImages, digest: Digest, diff_id: Digest, name: str
) -> oci.Descriptor:
    size = store.content.size(digest)
    with store.content.open(digest) as blob:
        kind = detect(typing.cast(io.BufferedReader, blob).peek(4)[:4])
        if kind is Compression.NONE:
            if digest != diff_id:
                raise InvalidArgument(f"layer {name} hashes to {digest}, not its diff-id {diff_id}")
        else:
            with decompressed(blob) as plain:
                reader = DigestingReader(plain)
                reader.drain()
            if reader.digest != diff_id:
                raise InvalidArgument(
                    f"layer {name} unpacks to {reader.digest}, not its diff-id {diff_id}"
                )
    media_type = {
        Compression.NONE: oci.OCI_LAYER,
        Compression.GZIP: oci.OCI_LAYER_GZIP,
        Compression.ZSTD: oci.OCI_LAYER_ZSTD,
    }[kind]
    return oci.Descriptor(media_type, digest, size)


def _load_oci(store: TenantImages, contents: _Contents) -> list[Image]:
    marker = _json(contents.documents["oci-layout"], "oci-layout")
    version = marker.get("imageLayoutVersion") if isinstance(marker, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise InvalidArgument(f"unsupported OCI layout version {version!r}")
    index = oci.parse_manifest_or_index(contents.documents["index.json"], oci.OCI_INDEX)
    if not isinstance(index, oci.Index):
        raise InvalidArgument("index.json is not an image index")
    entries = [e for e in index.manifests if e.media_type in oci.MANIFEST_TYPES | oci.INDEX_TYPES]
    images = []
    # What the archive brought, or the tenant already reaches: never a blob that only another
    # tenant's names reach (the store has it, but this tenant has not shown it has the bytes).
    proven = set(contents.blobs.values()) | store.reachable()
    for ref, entry in name_entries(entries, None, Path("the archive")):
        if entry.digest not in proven or not store.content.exists(entry.digest):
            raise InvalidArgument(f"the archive lacks manifest {entry.digest}")
        if store.content.size(entry.digest) != entry.size:
            raise InvalidArgument(f"manifest {entry.digest} is not {entry.size} bytes")
        try:
            image = store.store.image(entry.digest, ref)
            needed = (image.digest, image.config_digest, *(d.digest for d in image.layers))
            lacking = [digest for digest in needed if digest not in proven]
            if lacking:
                raise InvalidArgument(f"the archive lacks blob {lacking[0]}")
            images.append(store.tag(ref, entry.digest))
        except (NotFound, FailedPrecondition) as exc:
            raise InvalidArgument(f"the archive is incomplete: {exc}") from None
    return images
