"""A stored image, resolved: what other parts of hyper get from the image store."""

from __future__ import annotations

from dataclasses import dataclass

from hyper.images.digest import Digest
from hyper.images.oci import Descriptor, ImageConfig
from hyper.images.reference import Reference


@dataclass(frozen=True)
class Image:
    """An image in the store: its name, its manifest, how to run it and its layers."""

    reference: Reference
    """The reference the image was resolved by."""
    digest: Digest
    """The digest of the image manifest (for one platform)."""
    media_type: str
    """The manifest's media type (OCI or Docker schema 2)."""
    config_digest: Digest
    config: ImageConfig
    layers: tuple[Descriptor, ...]
    """Layer blobs, lowest first, as the manifest lists them (compressed digest and size)."""
    diff_ids: tuple[Digest, ...]
    """The digests of the layers uncompressed, in the same order."""
    architecture: str = ""
    os: str = ""

    @property
    def id(self) -> str:
        """Docker's image id: the config digest."""
        return str(self.config_digest)

    @property
    def size(self) -> int:
        """The layers' stored (compressed) size in bytes."""
        return sum(layer.size for layer in self.layers)
