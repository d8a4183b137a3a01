"""Import images from an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``).

This is what ``skopeo copy ... oci:DIR:TAG`` writes and what ``hyper load`` will read. Every blob
is verified on arrival; only the blobs the selected manifests reach are copied. A multi-platform
index is narrowed to the host's platform.

Naming: with ``reference`` given, the layout must hold one image, or several of which exactly one
has ``org.opencontainers.image.ref.name`` equal to the reference's tag. Without it, each entry
must carry a full name in ``io.containerd.image.name`` or in ``org.opencontainers.image.ref.name``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

from hyper.errors import InvalidArgument, NotFound
from hyper.images import oci
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import Reference, parse
from hyper.images.store import ImageStore, TenantImages, names_of


def import_layout(
    store: ImageStore | TenantImages, layout: Path, reference: str | Reference | None = None
) -> list[Image]:
    """Copy the images of ``layout`` into ``store`` and tag them (a whole store: in the tenant
    "default"); returns the tagged images. A host tool: the layout is a path of the host."""
    names = names_of(store)
    marker = _read_small(layout / "oci-layout", "oci-layout")
    try:
        version = json.loads(marker).get("imageLayoutVersion")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str) or not version.startswith("1."):
        raise InvalidArgument(
            f"{layout} is not an OCI image layout (oci-layout version {version!r})"
        )
    index = oci.parse_manifest_or_index(
        _read_small(layout / "index.json", "index.json"), oci.OCI_INDEX
    )
    if not isinstance(index, oci.Index):
        raise InvalidArgument(f"{layout}/index.json is not an image index")
    entries = [e for e in index.manifests if e.media_type in oci.MANIFEST_TYPES | oci.INDEX_TYPES]
    named = name_entries(entries, reference, layout)
    images = []
    with names.lease():
        for ref, entry in named:
            digest = _copy_tree(names, layout, entry)
            images.append(names.tag(ref, digest))
    return images


def name_entries(
    entries: list[oci.Descriptor], reference: str | Reference | None, layout: Path
) -> list[tuple[Reference, oci.Descriptor]]:
    if reference is not None:
        ref = reference if isinstance(reference, Reference) else parse(reference)
        if len(entries) == 1:
            return [(ref, entries[0])]
        matching = [e for e in entries if e.annotations.get(oci.ANNOTATION_REF_NAME) == ref.tag]
        if len(matching) != 1:
            raise InvalidArgument(
                f"{layout} holds {len(entries)} images; none or several are tagged {ref.tag!r}"
            )
        return [(ref, matching[0])]
    if not entries:
        raise NotFound(f"{layout} holds no image")
    named = []
    for entry in entries:
        name = entry.annotations.get(oci.ANNOTATION_CONTAINERD_NAME) or entry.annotations.get(
            oci.ANNOTATION_REF_NAME, ""
        )
        if not name or ("/" not in name and ":" not in name):
            raise InvalidArgument(
                f"{layout}: image {entry.digest} has no full name; give a reference to import it as"
            )
        named.append((parse(name), entry))
    return named


def _copy_tree(store: TenantImages, layout: Path, entry: oci.Descriptor) -> Digest:
    """Copy the manifest (narrowing an index to the host platform) and its blobs."""
    data = _copy_document(store, layout, entry)
    doc = oci.parse_manifest_or_index(data, entry.media_type)
    if isinstance(doc, oci.Index):
        return _copy_tree(store, layout, oci.select_platform(doc))
    _copy_document(store, layout, doc.config)
    for layer in doc.layers:
        if not store.content.exists(layer.digest):
            with _open_blob(layout, layer.digest) as source:
                store.content.ingest(source, layer.digest, layer.size)
    return entry.digest


def _copy_document(store: TenantImages, layout: Path, desc: oci.Descriptor) -> bytes:
    if desc.size > oci.MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{desc.digest} is {desc.size} bytes, over the document limit")
    with _open_blob(layout, desc.digest) as source:
        data = source.read(oci.MAX_DOCUMENT_BYTES + 1)
    if len(data) != desc.size:
        raise InvalidArgument(f"blob {desc.digest} is {len(data)} bytes, not {desc.size}")
    store.content.put(data, desc.digest)
    return data


def _open_blob(layout: Path, digest: Digest) -> BinaryIO:
    path = layout / "blobs" / digest.algorithm / digest.hex
    try:
        return _open_file(path)
    except FileNotFoundError:
        raise NotFound(f"{layout} lacks blob {digest}") from None


def _read_small(path: Path, what: str) -> bytes:
    try:
        with _open_file(path) as f:
            data = f.read(oci.MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise InvalidArgument(f"{path.parent} is not an OCI image layout: {what} missing") from None
    if len(data) > oci.MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{path} is over the {oci.MAX_DOCUMENT_BYTES} byte limit")
    return data


def _open_file(path: Path) -> BinaryIO:
    """Open a regular file of the layout; a symlink, FIFO or device there is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidArgument(f"cannot open {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgument(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")
