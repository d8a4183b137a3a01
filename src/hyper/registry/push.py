"""Push an image from the local store to a registry.

For each blob (the config and the layers, at most ``max_concurrent`` at a time): a ``HEAD`` says
whether the repository has it already; if not and another repository of the same registry is
known to have it (the store has an image of that repository holding the blob), a
cross-repository mount is asked for (``POST ...?mount=<digest>&from=<repo>``); if the registry
does not mount it (it answers 202 and an upload location instead), the blob is uploaded:
in one ``PUT`` up to ``chunk_size`` bytes, otherwise in ``PATCH`` chunks of ``chunk_size``
followed by a closing ``PUT``. Blobs are read back through the store's verifying reader, so a
corrupt local blob fails the push before the registry accepts it.

Then the manifest is ``PUT`` with its own media type and its exact stored bytes (its digest is
kept), under the reference's tag (or digest). A stored index is pushed as it is only when the
store has every manifest it lists (an image pulled for one platform pushes that platform's
manifest, as docker does).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hyper.errors import HyperError, NotFound
from hyper.images import oci
from hyper.images.digest import Digest
from hyper.images.reference import Reference, parse
from hyper.images.store import TenantImages
from hyper.registry.client import RegistryClient
from hyper.registry.pull import Progress, ProgressCallback

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 16 << 20


@dataclass(frozen=True)
class PushResult:
    digest: Digest
    """The digest of the manifest (or index) pushed: what ``name@digest`` pulls."""
    size: int
    """The size of that manifest, as docker prints it."""
    uploaded: int
    mounted: int
    existing: int


def push(
    store: TenantImages,
    client: RegistryClient,
    reference: Reference,
    *,
    progress: ProgressCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_concurrent: int = 3,
) -> PushResult:
    image = store.resolve(reference)  # NotFound unless the store has it
    stored_top = store.refs.get(_key(reference)) if reference.digest is None else reference.digest
    top = stored_top if stored_top is not None else image.digest
    manifests = _manifests_to_push(store, top, image.digest)
    pusher = _Pusher(store, client, reference, progress, chunk_size)
    with store.lease():
        for digest, media_type, data in manifests:
            doc = oci.parse_manifest_or_index(data, media_type)
            if isinstance(doc, oci.Manifest):
                blobs = list({d.digest: d for d in (doc.config, *doc.layers)}.values())
                with ThreadPoolExecutor(
                    max_workers=max(1, min(max_concurrent, len(blobs))), thread_name_prefix="push"
                ) as pool:
                    for future in [pool.submit(pusher.push_blob, blob) for blob in blobs]:
                        future.result()
            target = reference.tag if reference.digest is None else str(digest)
            if digest != manifests[-1][0]:
                target = str(digest)  # an index's children go by digest
            client.put_manifest(reference.repository, target or "latest", data, media_type)
    last_digest, _, last_data = manifests[-1]
    return PushResult(last_digest, len(last_data), pusher.uploaded, pusher.mounted, pusher.existing)


def _manifests_to_push(
    store: TenantImages, top: Digest, platform_manifest: Digest
) -> list[tuple[Digest, str, bytes]]:
    """(digest, media type, bytes), children first."""
    data = store.content.read(top, oci.MAX_DOCUMENT_BYTES)
    doc = oci.parse_manifest_or_index(data)
    if isinstance(doc, oci.Manifest):
        return [(top, doc.media_type, data)]
    children = []
    for entry in doc.manifests:
        if not store.content.exists(entry.digest):
            break
        child = store.content.read(entry.digest, oci.MAX_DOCUMENT_BYTES)
        child_doc = oci.parse_manifest_or_index(child, entry.media_type)
        if not isinstance(child_doc, oci.Manifest) or not all(
            store.content.exists(d.digest) for d in (child_doc.config, *child_doc.layers)
        ):
            break
        children.append((entry.digest, child_doc.media_type, child))
    else:
        return [*children, (top, doc.media_type, data)]
    single = store.content.read(platform_manifest, oci.MAX_DOCUMENT_BYTES)
    single_doc = oci.parse_manifest_or_index(single)
    return [(platform_manifest, single_doc.media_type, single)]


class _Pusher:
    def __init__(
        self,
        store: TenantImages,
        client: RegistryClient,
        reference: Reference,
        progress: ProgressCallback | None,
        chunk_size: int,
    ) -> None:
        self.store = store
        self.client = client
        self.repository = reference.repository
        self.progress = progress
        self.chunk_size = max(1 << 16, chunk_size)
        self.sources = _mount_sources(store, reference)
        self.uploaded = self.mounted = self.existing = 0

    def report(self, desc: oci.Descriptor, status: str, current: int) -> None:
        if self.progress is not None:
            self.progress(Progress(desc.digest, status, current, desc.size))

    def push_blob(self, desc: oci.Descriptor) -> None:
        if self.client.blob_exists(self.repository, desc.digest, push=True):
            self.existing += 1
            self.report(desc, "exists", desc.size)
            return
        source = self.sources.get(desc.digest)
        location = self.client.start_upload(self.repository, mount=desc.digest, source=source)
        if location is None:
            self.mounted += 1
            self.report(desc, f"mounted from {source}", desc.size)
            return
        if desc.size <= self.chunk_size:
            data = self.store.content.read(desc.digest, self.chunk_size)
            self.report(desc, "uploading", 0)
            self.client.finish_upload(self.repository, location, desc.digest, data)
        else:
            sent = 0
            with self.store.content.open(desc.digest) as blob:
                while chunk := _read_full(blob, self.chunk_size):
                    location = self.client.upload_chunk(self.repository, location, chunk, sent)
                    sent += len(chunk)
                    self.report(desc, "uploading", sent)
            self.client.finish_upload(self.repository, location, desc.digest)
        self.uploaded += 1
        self.report(desc, "done", desc.size)


def _read_full(blob: object, size: int) -> bytes:
    read = blob.read  # type: ignore[attr-defined]
    parts = []
    left = size
    while left:
        chunk = read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _mount_sources(store: TenantImages, reference: Reference) -> dict[Digest, str]:
    """Blob -> another repository of the same registry whose image in the store holds it."""
    sources: dict[Digest, str] = {}
    for key in sorted(store.refs.read()):
        try:
            other = parse(key)
        except HyperError:
            continue
        if other.registry != reference.registry or other.repository == reference.repository:
            continue
        try:
            image = store.resolve(other)
        except (NotFound, HyperError) as exc:
            log.debug("skipping %s as a mount source: %s", key, exc)
            continue
        for desc in (*image.layers,):
            sources.setdefault(desc.digest, other.repository)
        sources.setdefault(image.config_digest, other.repository)
    return sources


def _key(ref: Reference) -> str:
    return f"{ref.name}:{ref.tag}"
