"""Pull an image from a registry into the local store.

1. The manifest is fetched by tag or digest with an ``Accept`` header naming the OCI and Docker
   schema 2 manifests and indexes; its bytes are hashed (a pinned digest must match, and so must
   the registry's ``Docker-Content-Digest``). An index (manifest list) is narrowed to the
   platform (the host's, linux/amd64 here), and that manifest fetched by digest and checked.
2. Under a store lease (gc waits), the config and then the layers are downloaded, at most
   ``max_concurrent`` at a time. A blob the tenant's names already reach is verified and skipped
   (a corrupt one is deleted and fetched again); one that only another tenant's names reach is
   downloaded again and checked, then dropped: a tenant may reuse only content it has proved it
   holds, never another's private layer it merely knows the digest of (a registry of its own
   could serve a manifest naming it). A download goes to ``tmp/<hex>.partial``, under an flock
   (two pulls of one blob download it once); it is hashed as it streams, and a partial file left
   by a cut connection or an earlier, interrupted pull is resumed with an HTTP ``Range`` request.
   More bytes than the descriptor's size, a short body or a digest mismatch: the download is
   retried (from scratch after a mismatch), ``attempts`` times in all.
3. The manifests are stored and the reference tagged: the index's digest for a pull by tag
   of a multi-platform image, as docker records it.

``progress`` is called from the download threads with a ``Progress`` per blob: it must be
thread-safe and quick (the CLI turns these into progress bars).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hyper.errors import HyperError, Internal, InvalidArgument, Unavailable
from hyper.images import oci
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import Reference
from hyper.images.store import TenantImages
from hyper.registry.client import FetchedManifest, RangeRefused, RegistryClient

log = logging.getLogger(__name__)

MAX_BLOB_BYTES = 64 << 30
"""A layer claiming to be larger than this is refused before it is downloaded."""
_CHUNK = 1 << 20
SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


@dataclass(frozen=True)
class Progress:
    """Where one blob of a pull or push is. ``status`` is one of: waiting, exists, downloading,
    retrying, verifying, done (pull); exists, mounted, uploading, done (push)."""

    digest: Digest
    status: str
    current: int
    total: int

    @property
    def id(self) -> str:
        """The short id docker shows for a layer (12 hex digits)."""
        return self.digest.hex[:12]


ProgressCallback = Callable[[Progress], None]


class Cancelled(HyperError):
    """Another download of the same pull failed: this one stops."""


@dataclass(frozen=True)
class ResolvedManifest:
    top: FetchedManifest
    """What the reference names: an index, or the manifest itself."""
    manifest: FetchedManifest
    """The image manifest for the platform."""
    parsed: oci.Manifest


def resolve(
    client: RegistryClient, ref: Reference, platform: oci.Platform | None = None
) -> ResolvedManifest:
    """Fetch and check the manifest ``ref`` names, narrowed to ``platform``."""
    wanted = str(ref.digest) if ref.digest is not None else (ref.tag or "latest")
    top = client.get_manifest(ref.repository, wanted)
    if ref.digest is not None and top.digest != ref.digest:
        raise InvalidArgument(
            f"{ref.familiar}: the registry sent a manifest hashing to {top.digest}"
        )
    doc = _parse(top, "", ref)
    if isinstance(doc, oci.Index):
        entry = oci.select_platform(doc, platform)
        child = client.get_manifest(ref.repository, str(entry.digest))
        if child.digest != entry.digest or len(child.data) != entry.size:
            raise InvalidArgument(
                f"{ref.familiar}: manifest {entry.digest} from the index does not match its"
                f" descriptor (got {child.digest}, {len(child.data)} bytes)"
            )
        doc = _parse(child, entry.media_type, ref)
        if isinstance(doc, oci.Index):
            raise InvalidArgument(f"{ref.familiar}: index entry {entry.digest} is another index")
        return ResolvedManifest(top, child, doc)
    return ResolvedManifest(top, top, doc)


def _parse(
    fetched: FetchedManifest, expected_type: str, ref: Reference
) -> oci.Manifest | oci.Index:
    header_type = fetched.media_type
    if header_type in SCHEMA1_TYPES:
        raise InvalidArgument(
            f"{ref.familiar} is a Docker schema 1 image, which is not supported (deprecated since"
            " 2017): push it again with a current client"
        )
    known = oci.MANIFEST_TYPES | oci.INDEX_TYPES
    hint = expected_type or (header_type if header_type in known else "")
    try:
        return oci.parse_manifest_or_index(fetched.data, hint)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{ref.familiar}: {exc}") from None


def pull(
    store: TenantImages,
    client: RegistryClient,
    reference: Reference,
    *,
    platform: oci.Platform | None = None,
    progress: ProgressCallback | None = None,
    max_concurrent: int = 3,
    attempts: int = 3,
) -> Image:
    """Pull ``reference`` from ``client``'s registry into ``store`` and tag it; the image."""
    resolved = resolve(client, reference, platform)
    manifest = resolved.parsed
    if manifest.config.size > oci.MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{reference.familiar}: the config is over the document limit")
    for layer in manifest.layers:
        if layer.size > MAX_BLOB_BYTES:
            raise InvalidArgument(
                f"{reference.familiar}: layer {layer.digest} claims {layer.size} bytes,"
                f" over the {MAX_BLOB_BYTES} limit"
            )
    with store.lease():
        known = store.reachable()
        downloader = _Downloader(store, client, reference.repository, progress, attempts, known)
        downloader.fetch(manifest.config)
        config = oci.parse_config(
            store.content.read(manifest.config.digest, oci.MAX_DOCUMENT_BYTES)
        )
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"{reference.familiar}: {len(manifest.layers)} layers but"
                f" {len(config.diff_ids)} diff_ids in the config"
            )
        unique = list({layer.digest: layer for layer in manifest.layers}.values())
        for layer in unique:
            downloader.report(layer, "waiting", 0)
        downloader.fetch_all(unique, max_concurrent)
        store.content.put(resolved.manifest.data, resolved.manifest.digest)
        top = resolved.top.digest
        if resolved.top is not resolved.manifest:
            store.content.put(resolved.top.data, top)
            if platform is not None and platform != oci.host_platform():
                top = resolved.manifest.digest  # the store resolves indexes for the host only
        tagged = (
            reference
            if reference.digest is None or top == reference.digest
            else Reference(reference.registry, reference.repository, None, top)
        )
        return store.tag(tagged, top)


class _Downloader:
    def __init__(
        self,
        store: TenantImages,
        client: RegistryClient,
        repository: str,
        progress: ProgressCallback | None,
        attempts: int,
        known: set[Digest],
    ) -> None:
        self.store = store
        self.known = known
        """The blobs the tenant's names reach: the only ones a pull may reuse as they are."""
        self.client = client
        self.repository = repository
        self.progress = progress
        self.attempts = max(1, attempts)
        self.cancelled = threading.Event()

    def report(self, desc: oci.Descriptor, status: str, current: int) -> None:
        if self.progress is not None:
            self.progress(Progress(desc.digest, status, current, desc.size))

    def fetch_all(self, descriptors: list[oci.Descriptor], max_concurrent: int) -> None:
        if not descriptors:
            return
        with ThreadPoolExecutor(
            max_workers=max(1, min(max_concurrent, len(descriptors))), thread_name_prefix="pull"
        ) as pool:
            futures = [pool.submit(self.fetch, desc) for desc in descriptors]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                self.cancelled.set()
                for future in futures:
                    future.cancel()
                wait(futures)
                errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
                first = next(
                    (e for e in errors if e is not None and not isinstance(e, Cancelled)),
                    failed[0].exception(),
                )
                assert first is not None
                raise first

    def fetch(self, desc: oci.Descriptor) -> None:
        content = self.store.content
        if content.exists(desc.digest):
            if desc.digest not in self.known:
                self._prove(desc)
                return
            try:
                if content.size(desc.digest) != desc.size:
                    raise Internal(f"blob {desc.digest} has the wrong size")
                content.verify(desc.digest)
                self.report(desc, "exists", desc.size)
                return
            except Internal as exc:
                log.warning(
                    "blob %s is corrupt in the store (%s): fetching it again", desc.digest, exc
                )
                content.delete(desc.digest)
        partial = content.tmp_dir / f"{desc.digest.hex}.partial"
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "r+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # one download per blob, across pulls
            if not content.exists(desc.digest):
                self._download(desc, file, partial)
                return
            _unlink_if_same(partial, file)  # another pull finished it while we waited
            if desc.digest in self.known:
                self.report(desc, "exists", desc.size)
                return
        self._prove(desc)

    def _prove(self, desc: oci.Descriptor) -> None:
        """Download a blob that another tenant's pull stored into a file of our own, and check
        it: the copy in the store is kept, ours dropped (the store has it once)."""
        fd, name = tempfile.mkstemp(
            prefix=f"{desc.digest.hex}.", suffix=".proof", dir=self.store.content.tmp_dir
        )
        path = Path(name)
        try:
            with os.fdopen(fd, "w+b") as file:
                self._download(desc, file, path)
        finally:
            path.unlink(missing_ok=True)

    def _download(self, desc: oci.Descriptor, file: BinaryIO, partial: Path) -> None:
        what = f"blob {desc.digest} of {self.repository}"
        last: HyperError | None = None
        for attempt in range(self.attempts):
            if self.cancelled.is_set():
                raise Cancelled(f"{what}: cancelled")
            have = file.seek(0, os.SEEK_END)
            if have > desc.size:
                file.truncate(0)
                have = 0
            hasher = _hash_prefix(file, have)
            if attempt:
                self.report(desc, "retrying", have)
            try:
                with self.client.fetch_blob(self.repository, desc.digest, have) as body:
                    if body.start == 0 and have:
                        file.truncate(0)
                        hasher, have = hashlib.sha256(), 0
                    file.seek(have)
                    self.report(desc, "downloading", have)
                    for chunk in body.chunks():
                        if self.cancelled.is_set():
                            raise Cancelled(f"{what}: cancelled")
                        if have + len(chunk) > desc.size:
                            raise _Mismatch(
                                f"{what}: the registry sent more than {desc.size} bytes"
                            )
                        file.write(chunk)
                        hasher.update(chunk)
                        have += len(chunk)
                        self.report(desc, "downloading", have)
            except RangeRefused:
                file.truncate(0)
                last = Unavailable(f"{what}: the registry refused to resume")
                continue
            except _Mismatch as exc:
                file.truncate(0)
                last = InvalidArgument(str(exc))
                continue
            except Unavailable as exc:
                file.flush()
                log.info("%s: %s (attempt %d/%d)", what, exc, attempt + 1, self.attempts)
                last = exc
                continue
            file.flush()
            if have < desc.size:
                last = Unavailable(f"{what}: the body stopped at {have} of {desc.size} bytes")
                continue
            self.report(desc, "verifying", have)
            actual = Digest(hasher.hexdigest())
            if actual != desc.digest:
                file.truncate(0)
                last = InvalidArgument(f"{what}: the content hashes to {actual}")
                log.warning("%s (attempt %d/%d)", last, attempt + 1, self.attempts)
                continue
            os.fsync(file.fileno())
            self.store.content.install(partial, desc.digest)
            self.report(desc, "done", have)
            return
        assert last is not None
        raise type(last)(f"{last} (after {self.attempts} attempts)") from last


class _Mismatch(Exception):
    pass


def _hash_prefix(file: BinaryIO, size: int) -> hashlib._Hash:
    hasher = hashlib.sha256()
    file.seek(0)
    left = size
    while left:
        chunk = file.read(min(left, _CHUNK))
        if not chunk:
            break
        hasher.update(chunk)
        left -= len(chunk)
    return hasher


def _unlink_if_same(path: Path, file: BinaryIO) -> None:
    """Remove the partial file we created after all (if it is still ours and still there)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    mine = os.fstat(file.fileno())
    if (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev) and mine.st_size == 0:
        path.unlink(missing_ok=True)
