"""The local image store: content-addressed blobs, tags, safe layer unpacking, erofs root
filesystems. See docs/images.md.

Modules, one concept each: ``digest`` (sha256 digests), ``reference`` (docker-style names),
``oci`` (the image format), ``content`` (blobs), ``refs`` (tags), ``store`` (images),
``layout`` (OCI layout import), ``compression``, ``tree`` (no-follow writes), ``unpack``
(hostile layers), ``rootfs`` (erofs images), ``builder`` (images from Python values) and
``busybox`` (the built-in image).
"""

from typing import TYPE_CHECKING, Any

from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.oci import Descriptor, ImageConfig
from hyper.images.reference import Reference
from hyper.images.reference import parse as parse_reference
from hyper.images.rootfs import erofs_image
from hyper.images.store import ImageStore
from hyper.images.unpack import UnpackLimits

if TYPE_CHECKING:
    from hyper.images.builder import build_image
    from hyper.images.busybox import ensure_busybox
    from hyper.images.layout import import_layout

_LAZY = {
    "build_image": "hyper.images.builder",
    "ensure_busybox": "hyper.images.busybox",
    "import_layout": "hyper.images.layout",
}


def __getattr__(name: str) -> Any:
    """Builders are imported on first use: `hyper run` never needs them (start-up time)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Descriptor",
    "Digest",
    "Image",
    "ImageConfig",
    "ImageStore",
    "Reference",
    "UnpackLimits",
    "build_image",
    "ensure_busybox",
    "erofs_image",
    "import_layout",
    "parse_reference",
]
