"""The local image store: blobs shared by every tenant, names (tags) per tenant.

Layout under ``root`` (``settings.paths.images``)::

    blobs/sha256/<hex>      manifests, configs and layers (see content.py)
    refs.json               the tenant "default"'s names: tag -> manifest digest (see refs.py)
    refs/<tenant>.json      every other tenant's names
    rootfs/<hex>.erofs      read-only root filesystems built from images (see rootfs.py)
    tmp/                    work in progress
    gc.lock                 writers hold it shared (``lease``), ``gc`` exclusive

Blobs and root filesystems are content-addressed and deduplicated across tenants; the names that
reach them are not. A tenant sees, resolves, tags from and removes only its own names
(:meth:`ImageStore.tenant` gives that view, :class:`TenantImages`), so tenant A pulling, tagging
or removing ``busybox:latest`` never changes what tenant B's ``busybox:latest`` means, and B's
lookup of a name only A has answers exactly like a missing one. An image is visible only through
a name (or a digest reference recorded for its repository): ``resolve("busybox@sha256:...")``
finds nothing unless one of the tenant's references of ``docker.io/library/busybox`` points at
that manifest. ``gc`` marks from every tenant's names and removes the blobs none reaches.

The tenant "default" keeps ``refs.json``, the one file of the store before tenancy (the state
database gave every existing pod that tenant too), so an existing store needs no migration. A
tenant's name is checked (``hyper.model.pod.check_name``: it starts with a letter or a digit,
no ``/``) before it becomes part of a path.

Possession: sharing blobs must not let a tenant reach another's content by knowing a digest.
Whoever tags an image must have had its bytes: the writers (pull, load, commit, the builder)
store every blob they name from bytes they hold, except those the tenant already reaches
(:meth:`TenantImages.reachable`); a blob another tenant stored is fetched again, and checked.
"""

from __future__ import annotations

import contextlib
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
from hyper.model.pod import check_name

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
"""The tenant whose names are ``refs.json`` (and of the host's own tools: ``hyper setup``)."""


@dataclass(frozen=True)
class GcResult:
    blobs_removed: int
    bytes_freed: int
    rootfs_removed: int


class ImageStore:
    """The shared part (blobs, root filesystems, leases, ``gc``) and each tenant's names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.content = ContentStore(root)
        self.rootfs_dir = root / "rootfs"
        self.rootfs_dir.mkdir(exist_ok=True)
        self._refs_dir = root / "refs"
        self._refs_dir.mkdir(mode=0o700, exist_ok=True)
        self._gc_lock = root / "gc.lock"

    @property
    def tmp_dir(self) -> Path:
        return self.content.tmp_dir

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep ``gc`` away while blobs are written but not yet tagged (or being read)."""
        with file_lock(self._gc_lock, shared=True):
            yield

    # -- tenants ---------------------------------------------------------------------------

    def tenant(self, tenant: str) -> TenantImages:
        """``tenant``'s names over this store: what every naming operation goes through."""
        return TenantImages(self, check_name(tenant, "tenant"), self._refs_of(tenant))

    def tenants(self) -> list[str]:
        """The tenants that have (or had) names in this store, sorted."""
        found = {DEFAULT_TENANT}
        for entry in os.scandir(self._refs_dir):
            stem = entry.name.removesuffix(".json")
            if stem != entry.name and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(InvalidArgument):
                    found.add(check_name(stem, "tenant"))
        return sorted(found)

    def _refs_of(self, tenant: str) -> RefStore:
        if tenant == DEFAULT_TENANT:
            return RefStore(self.root / "refs.json")
        return RefStore(self._refs_dir / f"{check_name(tenant, 'tenant')}.json")

    # -- images by digest ------------------------------------------------------------------

    def image(self, digest: Digest, reference: str | Reference) -> Image:
        """The image whose manifest (or index) is ``digest``, found by its content alone;
        NotFound if it is not stored. No tenant is asked: this is for what holds a digest it
        got from a tenant's own name earlier (a pod's containers, recorded at create), never
        for a name a client sends. ``reference`` is the name the image is shown by."""
        if not self.content.exists(digest):
            raise NotFound(f"no such image: {_as_reference(reference).familiar}")
        return self._load(_as_reference(reference), digest)

    # -- the default tenant's names (the host's tools; hyperd's services never use these) ---

    def resolve(self, reference: str | Reference) -> Image:
        """The tenant "default"'s image ``reference``: for the host's own tools (``hyper
        setup``, benchmarks, tests) and the shim until it resolves by digest
        (:meth:`image`). Everything that serves a tenant uses :meth:`tenant`."""
        return self.tenant(DEFAULT_TENANT).resolve(reference)

    def list(self) -> list[Image]:
        """The tenant "default"'s images (see :meth:`resolve`)."""
        return self.tenant(DEFAULT_TENANT).list()

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
        with contextlib.ExitStack() as held:
            names = self._hold_every_refs_lock(held)
            live: set[Digest] = set()
            manifests: set[Digest] = set()
            for tenant, refs in names.items():
                for key, digest in refs.read().items():
                    try:
                        self._mark(digest, live, manifests)
                    except (NotFound, InvalidArgument, Internal) as exc:
                        raise Internal(
                            f"gc stopped: image {key} of tenant {tenant} cannot be read ({exc})"
                        ) from exc
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

    def _hold_every_refs_lock(self, stack: contextlib.ExitStack) -> dict[str, RefStore]:
        """Lock every tenant's names, a tenant that appears meanwhile included (only ``gc``
        ever holds two of these locks, and ``gc.lock`` serialises it: no lock order needed)."""
        held: dict[str, RefStore] = {}
        while new := [t for t in self.tenants() if t not in held]:
            for tenant in new:
                refs = self._refs_of(tenant)
                stack.enter_context(refs.locked())
                held[tenant] = refs
        return held

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


class TenantImages:
    """One tenant's names over the shared store: tag, resolve, list, remove. Also hands out the
    shared parts (``content``, ``lease``, ``tmp_dir``) so that the writers (pull, load, commit,
    the builder) take this one value."""

    def __init__(self, store: ImageStore, tenant: str, refs: RefStore) -> None:
        self.store = store
        self.tenant = tenant
        self.refs = refs

    @property
    def content(self) -> ContentStore:
        return self.store.content

    @property
    def tmp_dir(self) -> Path:
        return self.store.tmp_dir

    def lease(self) -> contextlib.AbstractContextManager[None]:
        return self.store.lease()

    def tag(self, reference: str | Reference, digest: Digest) -> Image:
        """Point ``reference`` at the manifest ``digest`` (which must be stored, with its blobs).

        A reference with a tag records the tag; one with only a digest records the digest for
        that repository. A digest in the reference must be ``digest``.
        """
        ref = _as_reference(reference)
        if ref.digest is not None and ref.digest != digest:
            raise InvalidArgument(f"{ref.familiar} names {ref.digest}, not {digest}")
        image = self.store._load(ref, digest)
        content = self.store.content
        missing = [layer.digest for layer in image.layers if not content.exists(layer.digest)]
        if missing:
            raise FailedPrecondition(f"cannot tag {ref.familiar}: layer {missing[0]} is missing")
        key = _key(ref)

        def record(refs: dict[str, Digest]) -> None:
            refs[key] = digest

        self.refs.update(record)
        return image

    def resolve(self, reference: str | Reference) -> Image:
        """The image ``reference`` names in this tenant; NotFound if it has no such name."""
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
        return self.store._load(ref, digest)

    def list(self) -> list[Image]:
        """Every reference of this tenant, resolved, sorted by reference."""
        images = []
        for key, digest in sorted(self.refs.read().items()):
            try:
                images.append(self.store._load(parse(key), digest))
            except (NotFound, InvalidArgument, Internal) as exc:
                log.warning("image %s of tenant %s is damaged: %s", key, self.tenant, exc)
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

    def forget(self) -> None:
        """Drop every name of this tenant (it is being removed); the blobs go at ``gc``."""
        if self.tenant == DEFAULT_TENANT:
            raise FailedPrecondition("the default tenant's names stay")
        with self.refs.locked():
            self.refs.path.unlink(missing_ok=True)
        self.refs.path.with_name(self.refs.path.name + ".lock").unlink(missing_ok=True)

    def reachable(self) -> set[Digest]:
        """Every blob this tenant's names reach (what it may reuse without its bytes)."""
        live: set[Digest] = set()
        for key, digest in self.refs.read().items():
            try:
                self.store._mark(digest, live, set())
            except (NotFound, InvalidArgument, Internal) as exc:
                log.warning("image %s of tenant %s is damaged: %s", key, self.tenant, exc)
        return live


def names_of(store: ImageStore | TenantImages) -> TenantImages:
    """The names to write into: a tenant's, or for the host's own tools given the whole store
    (``hyper setup``, benchmarks, tests), the tenant "default"'s."""
    return store if isinstance(store, TenantImages) else store.tenant(DEFAULT_TENANT)


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
