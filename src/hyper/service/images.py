"""The image use cases every front end exposes: pull, push, tag, rmi, images, inspect,
history, save, load, login and logout.

All blocking (registry I/O, hashing, tar files): the daemon calls them in a thread. Progress of
a pull or a push is reported through a callback, from download threads (see
``hyper.registry.pull.Progress``).

"In use" is the caller's knowledge (the daemon knows its pods): ``ImageService(settings,
in_use=...)`` takes a callback that says whether an image, given by its manifest digest, is used
by a pod; ``remove`` then refuses to drop its last reference unless forced.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from hyper.config.settings import Settings
from hyper.errors import FailedPrecondition, InvalidArgument, NotFound
from hyper.images import archive
from hyper.images import inspect as describe
from hyper.images.commit import ConfigChanges
from hyper.images.commit import commit as commit_image
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.reference import Reference, check_registry, parse
from hyper.images.store import ImageStore
from hyper.registry.auth import AuthFile, Credentials, normalize_registry
from hyper.registry.client import RegistryClient
from hyper.registry.pull import ProgressCallback
from hyper.registry.pull import pull as pull_image
from hyper.registry.push import PushResult
from hyper.registry.push import push as push_image

log = logging.getLogger(__name__)

InUse = Callable[[Digest], bool]


class ImageService:
    def __init__(
        self,
        settings: Settings,
        *,
        in_use: InUse | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests inject faults through it)."""
        self.settings = settings
        self.store = ImageStore(settings.paths.images)
        self.auth = AuthFile(settings.auth_file)
        self._in_use = in_use
        self._transport = transport

    # -- registries ------------------------------------------------------------------------

    def client(self, registry: str, credentials: Credentials | None = None) -> RegistryClient:
        """A client of ``registry`` configured by the settings (TLS, insecure, credentials)."""
        host = normalize_registry(registry)
        return RegistryClient(
            host,
            credentials=credentials if credentials is not None else self.auth.get(host),
            insecure=host in {normalize_registry(r) for r in self.settings.registry.insecure},
            ca_dir=self.settings.registry.ca_dir,
            transport=self._transport,
        )

    def pull(self, reference: str, progress: ProgressCallback | None = None) -> Image:
        ref = parse(reference)
        with self.client(ref.registry) as client:
            return pull_image(
                self.store,
                client,
                ref,
                progress=progress,
                max_concurrent=self.settings.registry.max_concurrent_downloads,
            )

    def push(self, reference: str, progress: ProgressCallback | None = None) -> PushResult:
        ref = parse(reference)
        with self.client(ref.registry) as client:
            return push_image(
                self.store,
                client,
                ref,
                progress=progress,
                max_concurrent=self.settings.registry.max_concurrent_downloads,
            )

    def login(self, registry: str, username: str, password: str) -> str:
        """Check the credentials against the registry, then keep them; a message for the user."""
        if not username or not password:
            raise InvalidArgument("login needs a username and a password")
        host = check_registry(normalize_registry(registry) or "docker.io")
        credentials = Credentials(username, password)
        with self.client(host, credentials) as client:
            client.check_login()
        self.auth.store(host, credentials)
        return "Login Succeeded"

    def logout(self, registry: str) -> bool:
        """Forget the credentials of ``registry``; False if there were none."""
        return self.auth.remove(check_registry(normalize_registry(registry) or "docker.io"))

    # -- the local store -------------------------------------------------------------------

    def tag(self, source: str, target: str) -> Image:
        image = self.store.resolve(source)
        target_ref = parse(target)
        if target_ref.digest is not None:
            raise InvalidArgument(f"cannot tag with a digest: {target}")
        top = self._target_of(parse(source))
        return self.store.tag(target_ref, top if top is not None else image.digest)

    def remove(self, reference: str, force: bool = False) -> list[dict[str, str]]:
        """``docker rmi``: untag; once no reference is left, the image's blobs are freed.

        Refused (FailedPrecondition) for the last reference of an image a pod uses, unless
        ``force``. Returns docker's list of ``{"Untagged": ...}`` and ``{"Deleted": ...}``.
        """
        ref = self._resolve_name(reference)
        image = self.store.resolve(ref)
        others = [
            e
            for e in describe.entries(self.store)
            if e.image.digest == image.digest and e.reference.canonical != ref.canonical
        ]
        last = not others or (
            ref.digest is not None and all(e.reference.name == ref.name for e in others)
        )
        if last and not force and self._in_use is not None and self._in_use(image.digest):
            raise FailedPrecondition(
                f"unable to remove {ref.familiar}: a pod is using image {image.id[7:19]}"
                " (use force to remove it anyway)"
            )
        self.store.remove(ref)
        result = [{"Untagged": ref.familiar}]
        remaining = [e for e in describe.entries(self.store) if e.image.digest == image.digest]
        if not remaining:
            result.append({"Deleted": image.id})
            self.store.try_gc()
        return result

    def list(self) -> builtins.list[dict[str, Any]]:
        return describe.summaries(self.store)

    def inspect(self, reference: str) -> dict[str, Any]:
        return describe.inspect(self.store, self.store.resolve(self._resolve_name(reference)))

    def history(self, reference: str) -> builtins.list[dict[str, Any]]:
        return describe.history(self.store, self.store.resolve(self._resolve_name(reference)))

    def save(self, references: builtins.list[str], path: Path, format: str = "docker") -> None:
        archive.save(self.store, [self._resolve_name(r) for r in references], path, format)

    def load(self, path: Path) -> builtins.list[str]:
        """Load an archive (docker or OCI, detected); the references loaded."""
        images = archive.load(self.store, path)
        return [image.reference.familiar for image in images]

    def commit(
        self,
        base: Digest,
        layer_tar: Path,
        *,
        reference: str | None,
        comment: str = "",
        author: str = "",
        changes: ConfigChanges | None = None,
        created_by: str = "",
    ) -> Image:
        """``base`` (a manifest digest, as pods record their images) plus the layer
        ``layer_tar`` as a new image, tagged ``reference`` if given."""
        matches = [e.image for e in describe.entries(self.store) if e.image.digest == base]
        if not matches:
            raise NotFound(f"the image {base} the container was made from is no longer stored")
        return commit_image(
            self.store,
            matches[0],
            layer_tar,
            reference=reference,
            comment=comment,
            author=author,
            changes=changes,
            created_by=created_by,
        )

    def gc(self) -> dict[str, int]:
        result = self.store.gc()
        return {
            "BlobsRemoved": result.blobs_removed,
            "BytesFreed": result.bytes_freed,
            "RootfsRemoved": result.rootfs_removed,
        }

    # -- helpers ---------------------------------------------------------------------------

    def _resolve_name(self, reference: str) -> Reference:
        """A reference, or an image id (``sha256:<hex>`` or a unique prefix of the hex)."""
        text = reference.removeprefix("sha256:")
        if 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
            matches = {
                e.image.id: e.reference
                for e in describe.entries(self.store)
                if e.image.config_digest.hex.startswith(text)
            }
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise InvalidArgument(f"{reference} names more than one image")
            if reference.startswith("sha256:"):
                raise NotFound(f"no such image: {reference}")
        return parse(reference)

    def _target_of(self, ref: Reference) -> Digest | None:
        if ref.digest is not None:
            return ref.digest
        return self.store.refs.get(f"{ref.name}:{ref.tag}")
