"""The local image store: content-addressed blobs, tags, safe layer unpacking, erofs root
filesystems. See docs/images.md.

Modules, one concept each: ``digest`` (sha256 digests), ``reference`` (docker-style names),
``oci`` (the image format), ``content`` (blobs), ``refs`` (tags), ``store`` (images),
``layout`` (OCI layout import), ``compression``, ``tree`` (no-follow writes), ``unpack``
(hostile layers), ``rootfs`` (erofs images), ``builder`` (images from Python values) and
``busybox`` (the built-in image).
"""

from hyper.images.builder import build_image
from hyper.images.busybox import ensure_busybox
from hyper.images.digest import Digest
from hyper.images.image import Image
from hyper.images.layout import import_layout
from hyper.images.oci import Descriptor, ImageConfig
from hyper.images.reference import Reference
from hyper.images.reference import parse as parse_reference
from hyper.images.rootfs import erofs_image
from hyper.images.store import ImageStore
from hyper.images.unpack import UnpackLimits

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
