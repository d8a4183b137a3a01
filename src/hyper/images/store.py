"""The local image store: content store + tags, giving resolved images.

Layout under ``root`` (``settings.paths.images``)::

    blobs/sha256/<hex>      manifests, configs and layers (see content.py)
    refs.json               tag -> manifest digest (see refs.py)
    rootfs/<hex>.erofs      read-only root filesystems built from images (see rootfs.py)
    tmp/                    work in progress
    gc.lock                 writers hold it shared (``lease``), ``gc`` exclusive

An image is visible only through a tag (or a digest reference recorded for its repository):
``resolve("busybox@sha256:...")`` finds nothing unless some reference of
``docker.io/library/busybox`` points at that manifest. Blobs that no reference reaches are
removed by ``gc``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hyper.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from hyper.images import oci
from hyper.images.content import ContentStore
from hyper.images.digest import Digest
from hyper.images.files import file_lock
from hyper.images.image import Image
from hyper.images.reference import Reference, parse
from hyper.images.refs import RefStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcResult:
    blobs_removed: int
    bytes_freed: int
    rootfs_removed: int


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(root)
        self.refs = RefStore(root / "refs.json")
        self.rootfs_dir = root / "rootfs"
        self.rootfs_dir.mkdir(exist_ok=True)
        self._gc_lock = root / "gc.lock"

    @property
    def tmp_dir(self) -> Path:
        return self.content.tmp_dir

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep ``gc`` away while blobs are written but not yet tagged (or being read)."""
        with file_lock(self._gc_lock, shared=True):
            yield

    # -- naming ----------------------------------------------------------------------------

    def tag(self, reference: str | Reference, digest: Digest) -> Image:
        """Point ``reference`` at the manifest ``digest`` (which must be stored, with its blobs).

        A reference with a tag records the tag; one with only a digest records the digest for
        that repository. A digest in the reference must be ``digest``.
        """
        ref = _as_reference(reference)
        if ref.digest is not None and ref.digest != digest:
            raise InvalidArgument(f"{ref.familiar} names {ref.digest}, not {digest}")
        image = self._load(ref, digest)
        missing = [layer.digest for layer in image.layers if not self.content.exists(layer.digest)]
        if missing:
            raise FailedPrecondition(f"cannot tag {ref.familiar}: layer {missing[0]} is missing")
        key = _key(ref)

        def record(refs: dict[str, Digest]) -> None:
            refs[key] = digest

        self.refs.update(record)
        return image

    def resolve(self, reference: str | Reference) -> Image:
        """The image ``reference`` names; NotFound if the store does not have it."""
        ref = _as_reference(reference)
        refs = self.refs.read()
        if ref.digest is None:
            digest = refs.get(_key(ref))
            if digest is None:
                raise NotFound(f"no such image: {ref.familiar}")
        else:
            digest = ref.digest
            prefix = ref.name
            known = any(
                value == digest and _repository_of(key) == prefix for key, value in refs.items()
            )
            if not known:
                raise NotFound(f"no such image: {ref.familiar}")
        return self._load(ref, digest)

    def list(self) -> list[Image]:
        """Every reference in the store, resolved, sorted by reference."""
        images = []
        for key, digest in sorted(self.refs.read().items()):
            try:
                images.append(self._load(parse(key), digest))
            except (NotFound, InvalidArgument, Internal) as exc:
                log.warning("image %s is damaged: %s", key, exc)
        return images

    def remove(self, reference: str | Reference) -> Digest:
        """Remove a reference (blobs stay until ``gc``). A digest reference removes every
        reference of that repository pointing at the digest. Returns the manifest digest."""
        ref = _as_reference(reference)

        def drop(refs: dict[str, Digest]) -> Digest:
            if ref.digest is None:
                digest = refs.pop(_key(ref), None)
                if digest is None:
                    raise NotFound(f"no such image: {ref.familiar}")
                return digest
            keys = [k for k, v in refs.items() if v == ref.digest and _repository_of(k) == ref.name]
            if not keys:
                raise NotFound(f"no such image: {ref.familiar}")
            for k in keys:
                del refs[k]
            return ref.digest

        return self.refs.update(drop)

    # -- collecting ------------------------------------------------------------------------

    def gc(self) -> GcResult:
        """Remove every blob and root filesystem that no reference reaches (waits for leases)."""
        with file_lock(self._gc_lock):
            return self._collect()

    def try_gc(self) -> GcResult | None:
        """``gc`` now, or None if a writer holds a lease (a pull in progress): for ``rmi``."""
        try:
            with file_lock(self._gc_lock, blocking=False):
                return self._collect()
        except BlockingIOError:
            return None

    def _collect(self) -> GcResult:
        with self.refs.locked():
            live: set[Digest] = set()
            manifests: set[Digest] = set()
            for key, digest in self.refs.read().items():
                try:
                    self._mark(digest, live, manifests)
                except (NotFound, InvalidArgument, Internal) as exc:
                    raise Internal(f"gc stopped: image {key} cannot be read ({exc})") from exc
            removed = freed = 0
            for digest in list(self.content):
                if digest not in live:
                    freed += self.content.size(digest)
                    self.content.delete(digest)
                    removed += 1
            rootfs_removed = 0
            live_hex = {d.hex for d in manifests}
            for entry in os.scandir(self.rootfs_dir):
                stem = entry.name.split(".", 1)[0]
                if stem not in live_hex:
                    os.unlink(entry.path)
                    rootfs_removed += entry.name.endswith(".erofs")
            _remove_stale_partials(self.tmp_dir)
        log.info("gc removed %d blobs (%d bytes), %d rootfs", removed, freed, rootfs_removed)
        return GcResult(removed, freed, rootfs_removed)

    def _mark(self, digest: Digest, live: set[Digest], manifests: set[Digest]) -> None:
        live.add(digest)
        doc = oci.parse_manifest_or_index(self.content.read(digest, oci.MAX_DOCUMENT_BYTES))
        if isinstance(doc, oci.Index):
            for entry in doc.manifests:
                if entry.media_type in oci.MANIFEST_TYPES and self.content.exists(entry.digest):
                    self._mark(entry.digest, live, manifests)
            return
        manifests.add(digest)
        live.add(doc.config.digest)
        live.update(layer.digest for layer in doc.layers)

    # -- loading ---------------------------------------------------------------------------

    def _load(self, ref: Reference, digest: Digest) -> Image:
        doc = oci.parse_manifest_or_index(self.content.read(digest, oci.MAX_DOCUMENT_BYTES))
        if isinstance(doc, oci.Index):
            entry = oci.select_platform(doc)
            digest = entry.digest
            doc = oci.parse_manifest_or_index(
                self.content.read(digest, oci.MAX_DOCUMENT_BYTES), entry.media_type
            )
            if isinstance(doc, oci.Index):
                raise InvalidArgument(f"index {digest} points at another index")
        config = oci.parse_config(self.content.read(doc.config.digest, oci.MAX_DOCUMENT_BYTES))
        if len(config.diff_ids) != len(doc.layers):
            raise InvalidArgument(
                f"image {digest}: {len(doc.layers)} layers but {len(config.diff_ids)} diff_ids"
            )
        return Image(
            reference=ref,
            digest=digest,
            media_type=doc.media_type,
            config_digest=doc.config.digest,
            config=config.config,
            layers=doc.layers,
            diff_ids=config.diff_ids,
            architecture=config.architecture,
            os=config.os,
        )


def _as_reference(reference: str | Reference) -> Reference:
    return reference if isinstance(reference, Reference) else parse(reference)


def _key(ref: Reference) -> str:
    """The refs-file key: the tag if there is one, else the digest."""
    if ref.tag is not None:
        return f"{ref.name}:{ref.tag}"
    return f"{ref.name}@{ref.digest}"


def _repository_of(key: str) -> str:
    name = key.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


PARTIAL_MAX_AGE = 7 * 24 * 3600.0
"""Interrupted downloads (``tmp/*.partial``) are kept this long for a later pull to resume."""


def _remove_stale_partials(tmp: Path) -> None:
    now = time.time()
    for entry in os.scandir(tmp):
        if not entry.name.endswith(".partial"):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < PARTIAL_MAX_AGE:
                continue
            with file_lock(Path(entry.path), blocking=False):
                os.unlink(entry.path)
        except (BlockingIOError, FileNotFoundError):
            continue  # a pull is resuming it, or it just finished
