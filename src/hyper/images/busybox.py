"""The built-in ``busybox:latest`` image, made from the host's static busybox.

One layer: ``/bin/busybox`` (Debian's ``busybox-static``), a symlink to it for every applet that
``busybox --list-full`` names, ``/etc/passwd`` and ``/etc/group`` with root and nobody, and the
usual empty directories. The tar is deterministic, so the image's digest only changes when the
host's busybox binary does; ``ensure_busybox`` is idempotent (the blobs are stored once and the tag
is rewritten to the same digest).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hyper.errors import Unavailable
from hyper.images.builder import Dir, File, Layer, Symlink, build_image
from hyper.images.image import Image
from hyper.images.oci import ImageConfig
from hyper.images.store import ImageStore, TenantImages

BUSYBOX = Path("/bin/busybox")
REFERENCE = "busybox:latest"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
DIRECTORIES = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o555,
    "root": 0o700,
    "sbin": 0o755,
    "sys": 0o555,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
}


def busybox_layer(binary: Path = BUSYBOX) -> Layer:
    """The layer's entries: directories, the binary, applet symlinks, passwd and group."""
    try:
        data = binary.read_bytes()
    except FileNotFoundError:
        raise Unavailable(f"{binary} is missing: install busybox-static") from None
    listing = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    layer: dict[str, Dir | File | Symlink] = {name: Dir(mode) for name, mode in DIRECTORIES.items()}
    for line in listing.split():
        applet = line.strip("/")
        if applet and applet != "bin/busybox" and ".." not in applet.split("/"):
            parent = applet.rpartition("/")[0]
            if parent:
                layer.setdefault(parent, Dir())
            layer[applet] = Symlink("/bin/busybox")
    layer["bin/busybox"] = File(data, mode=0o755)
    layer["etc/passwd"] = File(PASSWD)
    layer["etc/group"] = File(GROUP)
    return layer


def ensure_busybox(
    store: ImageStore | TenantImages, *, binary: Path = BUSYBOX, reference: str = REFERENCE
) -> Image:
    """Store and tag the busybox image (blocking: call it in a thread from async code)."""
    config = ImageConfig(env=(PATH,), cmd=("sh",))
    return build_image(store, reference, [busybox_layer(binary)], config)
