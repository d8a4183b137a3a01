"""The image use cases every front end exposes: pull, push, tag, rmi, images, inspect,
history, save, load, commit, prune, login and logout, each for a :class:`Caller`.

Images belong to a tenant by their names (see :mod:`hyper.images.store`): every method takes the
caller and works on its tenant's names only, ``caller.reads()`` for what looks (images,
inspect, history, save, resolve) and ``caller.writes()`` for what changes (pull, push, tag, rmi,
load, commit, prune, login, logout), so a member only looks, and another tenant's image answers
"no such image" exactly like a missing one. Blobs stay shared: ``rmi`` and ``prune`` drop the
caller's names, then the store's ``gc`` frees what no tenant's name reaches. An operator's
every-tenant listing (``hyper --tenant '*' images``) lists every tenant's names, each row with
its ``Tenant``.

Registry credentials belong to a tenant too: the tenant "default" keeps ``registry.auth_file``
(``<state_dir>/auth.json``, docker's format), every other tenant ``<state_dir>/auth/<tenant>.json``
(0600 in a 0700 directory). A pull or a push uses only its caller's tenant's credentials.

All blocking (registry I/O, hashing, tar files): the daemon calls them in a thread. Progress of
a pull or a push is reported through a callback, from download threads (see
``hyper.registry.pull.Progress``).

"In use" is the caller's knowledge (the daemon knows its pods): ``ImageService(settings,
in_use=...)`` takes a callback that says whether a container of a tenant was created from an
image, given by its manifest digest; ``remove`` then refuses to drop that tenant's last name of
it unless forced, and ``prune`` keeps it.
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
from hyper.images.store import DEFAULT_TENANT, ImageStore, TenantImages
from hyper.registry.auth import AuthFile, Credentials, normalize_registry
from hyper.registry.client import RegistryClient
from hyper.registry.pull import ProgressCallback
from hyper.registry.pull import pull as pull_image
from hyper.registry.push import PushResult
from hyper.registry.push import push as push_image
from hyper.service.caller import Caller
from hyper.tenancy.principal import Scope
from hyper.tenancy.tenants import check_tenant

log = logging.getLogger(__name__)

InUse = Callable[[Digest, str], bool]
"""``in_use(manifest digest, tenant)``: whether a container of ``tenant`` was made from it."""


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
        self._in_use = in_use
        self._transport = transport

    # -- registries ------------------------------------------------------------------------

    def auth(self, tenant: str) -> AuthFile:
        """``tenant``'s registry credentials file."""
        if check_tenant(tenant) == DEFAULT_TENANT:
            return AuthFile(self.settings.auth_file)
        directory = self.settings.paths.state_dir / "auth"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return AuthFile(directory / f"{tenant}.json")

    def forget_tenant(self, tenant: str) -> None:
        """A tenant is removed: its image names and its registry credentials go with it, so a
        tenant made later under the same name starts with none of them."""
        self.store.tenant(tenant).forget()  # refuses the default tenant, which stays
        self.auth(tenant).path.unlink(missing_ok=True)

    def client(
        self, registry: str, tenant: str, credentials: Credentials | None = None
    ) -> RegistryClient:
        """A client of ``registry`` configured by the settings (TLS, insecure), with
        ``credentials``, else ``tenant``'s stored ones for that registry."""
        host = normalize_registry(registry)
        return RegistryClient(
            host,
            credentials=credentials if credentials is not None else self.auth(tenant).get(host),
            insecure=host in {normalize_registry(r) for r in self.settings.registry.insecure},
            ca_dir=self.settings.registry.ca_dir,
            transport=self._transport,
        )

    def pull(
        self, caller: Caller, reference: str, progress: ProgressCallback | None = None
    ) -> Image:
        ref = parse(reference)
        names = self._writes(caller)
        with self.client(ref.registry, names.tenant) as client:
            return pull_image(
                names,
                client,
                ref,
                progress=progress,
                max_concurrent=self.settings.registry.max_concurrent_downloads,
            )

    def push(
        self, caller: Caller, reference: str, progress: ProgressCallback | None = None
    ) -> PushResult:
        ref = parse(reference)
        names = self._writes(caller)
        with self.client(ref.registry, names.tenant) as client:
            return push_image(
                names,
                client,
                ref,
                progress=progress,
                max_concurrent=self.settings.registry.max_concurrent_downloads,
            )

    def login(self, caller: Caller, registry: str, username: str, password: str) -> str:
        """Check the credentials against the registry, then keep them for the caller's tenant;
        a message for the user."""
        tenant = caller.writes().single()
        if not username or not password:
            raise InvalidArgument("login needs a username and a password")
        host = check_registry(normalize_registry(registry) or "docker.io")
        credentials = Credentials(username, password)
        with self.client(host, tenant, credentials) as client:
            client.check_login()
        self.auth(tenant).store(host, credentials)
        return "Login Succeeded"

    def logout(self, caller: Caller, registry: str) -> bool:
        """Forget the caller's tenant's credentials of ``registry``; False if there were none."""
        tenant = caller.writes().single()
        return self.auth(tenant).remove(check_registry(normalize_registry(registry) or "docker.io"))

    # -- the local store -------------------------------------------------------------------

    def resolve(self, caller: Caller, reference: str) -> Image:
        """The image ``reference`` (or an image id) names in the caller's tenant."""
        names = self._reads(caller)
        return names.resolve(self._resolve_name(names, reference))

    def tag(self, caller: Caller, source: str, target: str) -> Image:
        names = self._writes(caller)
        source_ref = self._resolve_name(names, source)
        image = names.resolve(source_ref)
        target_ref = parse(target)
        if target_ref.digest is not None:
            raise InvalidArgument(f"cannot tag with a digest: {target}")
        top = self._target_of(names, source_ref)
        return names.tag(target_ref, top if top is not None else image.digest)

    def remove(self, caller: Caller, reference: str, force: bool = False) -> list[dict[str, str]]:
        """``docker rmi``: untag in the caller's tenant; once no name of the tenant is left, the
        image is gone for it (its blobs are freed when no tenant's name reaches them).

        Refused (FailedPrecondition) for the tenant's last name of an image a container of the
        tenant was made from, unless ``force``. Returns docker's list of ``{"Untagged": ...}``
        and ``{"Deleted": ...}``.
        """
        names = self._writes(caller)
        ref = self._resolve_name(names, reference)
        image = names.resolve(ref)
        others = [
            e
            for e in describe.entries(names)
            if e.image.digest == image.digest and e.reference.canonical != ref.canonical
        ]
        last = not others or (
            ref.digest is not None and all(e.reference.name == ref.name for e in others)
        )
        if last and not force and self._used(image.digest, names.tenant):
            raise FailedPrecondition(
                f"unable to remove {ref.familiar}: a pod is using image {image.id[7:19]}"
                " (use force to remove it anyway)"
            )
        names.remove(ref)
        result = [{"Untagged": ref.familiar}]
        remaining = [e for e in describe.entries(names) if e.image.digest == image.digest]
        if not remaining:
            result.append({"Deleted": image.id})
            self.store.try_gc()
        return result

    def list(self, caller: Caller) -> builtins.list[dict[str, Any]]:
        """``docker images``: the caller's tenant's names; every tenant's for an operator's
        every-tenant scope, each row with its ``Tenant``."""
        rows: builtins.list[dict[str, Any]] = []
        for tenant in self._tenants(caller.reads()):
            rows.extend(
                {**row, "Tenant": tenant} for row in describe.summaries(self._names(tenant))
            )
        rows.sort(key=lambda r: (r["Created"], r["Reference"], r["Tenant"]), reverse=True)
        return rows

    def count(self, scope: Scope) -> int:
        """How many names ``scope`` sees (``hyper info``, whose caller has the scope already)."""
        return sum(len(self._names(t).refs.read()) for t in self._tenants(scope))

    def inspect(self, caller: Caller, reference: str) -> dict[str, Any]:
        names = self._reads(caller)
        return describe.inspect(names, names.resolve(self._resolve_name(names, reference)))

    def history(self, caller: Caller, reference: str) -> builtins.list[dict[str, Any]]:
        names = self._reads(caller)
        return describe.history(names, names.resolve(self._resolve_name(names, reference)))

    def save(
        self,
        caller: Caller,
        references: builtins.list[str],
        path: Path,
        format: str = "docker",
    ) -> None:
        names = self._reads(caller)
        archive.save(names, [self._resolve_name(names, r) for r in references], path, format)

    def load(self, caller: Caller, path: Path) -> builtins.list[str]:
        """Load an archive (docker or OCI, detected) into the caller's tenant; the references
        loaded."""
        images = archive.load(self._writes(caller), path)
        return [image.reference.familiar for image in images]

    def commit(
        self,
        caller: Caller,
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
        ``layer_tar`` as a new image of the caller's tenant, tagged ``reference`` if given.
        The base must still have a name in that tenant."""
        names = self._writes(caller)
        matches = [e.image for e in describe.entries(names) if e.image.digest == base]
        if not matches:
            raise NotFound(f"the image {base} the container was made from is no longer stored")
        return commit_image(
            names,
            matches[0],
            layer_tar,
            reference=reference,
            comment=comment,
            author=author,
            changes=changes,
            created_by=created_by,
        )

    def prune(self, caller: Caller) -> dict[str, int]:
        """``docker image prune``: drop the caller's tenant's dangling names (a digest
        reference whose image has no tag in the tenant), but not those of an image a container
        of the tenant was made from; then collect the blobs no tenant's name reaches."""
        names = self._writes(caller)
        entries = describe.entries(names)
        tagged = {e.image.digest for e in entries if e.reference.tag is not None}
        removed = 0
        for entry in entries:
            digest = entry.image.digest
            if entry.reference.tag is None and digest not in tagged:
                if self._used(digest, names.tenant):
                    continue
                try:
                    names.remove(entry.reference)
                    removed += 1
                except NotFound:
                    continue  # removed meanwhile (or with another digest reference of its repo)
        result = self.store.gc()
        return {
            "NamesRemoved": removed,
            "BlobsRemoved": result.blobs_removed,
            "BytesFreed": result.bytes_freed,
            "RootfsRemoved": result.rootfs_removed,
        }

    # -- helpers ---------------------------------------------------------------------------

    def _names(self, tenant: str) -> TenantImages:
        return self.store.tenant(tenant)

    def _reads(self, caller: Caller) -> TenantImages:
        return self._names(caller.reads().single())

    def _writes(self, caller: Caller) -> TenantImages:
        return self._names(caller.writes().single())

    def _tenants(self, scope: Scope) -> builtins.list[str]:
        return self.store.tenants() if scope.tenant is None else [scope.tenant]

    def _used(self, digest: Digest, tenant: str) -> bool:
        return self._in_use is not None and self._in_use(digest, tenant)

    def _resolve_name(self, names: TenantImages, reference: str) -> Reference:
        """A reference, or an image id (``sha256:<hex>`` or a unique prefix of the hex), among
        the tenant's names."""
        text = reference.removeprefix("sha256:")
        if 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
            matches = {
                e.image.id: e.reference
                for e in describe.entries(names)
                if e.image.config_digest.hex.startswith(text)
            }
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise InvalidArgument(f"{reference} names more than one image")
            if reference.startswith("sha256:"):
                raise NotFound(f"no such image: {reference}")
        return parse(reference)

    def _target_of(self, names: TenantImages, ref: Reference) -> Digest | None:
        if ref.digest is not None:
            return ref.digest
        return names.refs.get(f"{ref.name}:{ref.tag}")
