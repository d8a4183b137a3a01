"""The guest's initramfs: Debian's python3.11, the agent, busybox and the kernel modules.

Layout (everything else the guest sees comes from mounts that hyperstart makes)::

    /init                               #!/usr/bin/python3.11 -ISB: runs hyperstart.main.main()
    /usr/bin/python3.11                 Debian's interpreter
    /usr/lib/python3.11/**.pyc          the stdlib closure and the hyper / hyperstart packages
    /usr/lib/python3.11/lib-dynload/    the extension modules the closure needs
    /lib/x86_64-linux-gnu/*.so.*        their shared libraries; /lib64/ld-linux-x86-64.so.2
    /bin/busybox                        for debugging (no applet links)
    /lib/modules/<release>/hyper/*.ko   the kernel modules, uncompressed
    /etc/hyperstart/modules             their paths, in load order (hyperstart finit_modules them)
    /etc/hyperstart/guest.json          agent version and kernel release
    /dev/console /dev/null /dev/urandom a console and entropy for PID 1 before devtmpfs
    /proc /sys /dev /run /tmp /mnt      mount points
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

from hyper.errors import Internal, InvalidArgument, Unavailable
from hyper.guest.cpio import Archive
from hyper.guest.interpreter import Closure
from hyper.guest.kernel import PreparedKernel

BUSYBOX = Path("/bin/busybox")
INIT = b"#!/usr/bin/python3.11 -ISB\nimport hyperstart.main\n\nhyperstart.main.main()\n"
MODULE_LIST = "etc/hyperstart/modules"
GUEST_INFO = "etc/hyperstart/guest.json"
MOUNT_POINTS = ("proc", "sys", "dev", "run", "mnt")

COMPRESSIONS = ("none", "gzip", "zstd", "lz4")
_COMMANDS = {
    "zstd": ["zstd", "-q", "-c", "-T0", "-9"],
    # The kernel unpacks only the legacy LZ4 frame format.
    "lz4": ["lz4", "-q", "-c", "-l", "-9"],
}


def module_dir(release: str) -> str:
    return f"lib/modules/{release}/hyper"


def assemble(
    kernel: PreparedKernel,
    closure: Closure,
    agent_version: str,
    *,
    busybox: Path = BUSYBOX,
    init: bytes = INIT,
) -> Archive:
    """The initramfs's content, described in memory."""
    archive = Archive()
    for name in MOUNT_POINTS:
        archive.add_dir(name)
    archive.add_dir("tmp", 0o1777)
    archive.add_char_device("dev/console", 5, 1, 0o600)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    # Python seeds its hash randomization at start-up: when the CRNG is not ready yet (TCG has
    # no RDRAND), getrandom() says EAGAIN and Python falls back to /dev/urandom or dies.
    archive.add_char_device("dev/urandom", 1, 9, 0o666)
    archive.add_file("init", init, 0o755)

    archive.add_file(str(closure.python), closure.python.read_bytes(), 0o755)
    for library in closure.libraries:
        archive.add_file(str(library), library.read_bytes(), 0o755)
    for extension in closure.extensions:
        archive.add_file(str(extension), extension.read_bytes(), 0o644)
    for guest_path, cfile in closure.compiled.items():
        archive.add_file(guest_path, cfile.read_bytes())
    if f"{closure.stdlib}/os.pyc" not in archive:
        raise Internal("the closure lacks os.pyc, the interpreter's prefix landmark")

    if busybox.exists():
        archive.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    else:
        raise Unavailable(f"{busybox} is missing: install Debian's busybox-static")

    listing = []
    for name, path in kernel.modules:
        guest_path = f"/{module_dir(kernel.release)}/{name}.ko"
        archive.add_file(guest_path, path.read_bytes())
        listing.append(guest_path)
    archive.add_file(MODULE_LIST, "".join(f"{p}\n" for p in listing).encode())
    info = {
        "agent_version": agent_version,
        "kernel_release": kernel.release,
        "python": closure.version,
        "modules": [name for name, _ in kernel.modules],
    }
    archive.add_file(GUEST_INFO, (json.dumps(info, indent=2) + "\n").encode())
    return archive


def compress(raw: bytes, method: str) -> bytes:
    """The archive as the kernel will read it, compressed with ``method``."""
    if method == "none":
        return raw
    if method == "gzip":
        return gzip.compress(raw, compresslevel=6, mtime=0)
    command = _COMMANDS.get(method)
    if command is None:
        raise InvalidArgument(f"unknown initramfs compression {method!r}")
    try:
        done = subprocess.run(command, input=raw, capture_output=True, timeout=300, check=False)
    except FileNotFoundError:
        raise Unavailable(f"{command[0]} is not installed") from None
    if done.returncode != 0:
        raise Internal(f"{command[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def choose(preferred: str, supported: frozenset[str]) -> str:
    """``preferred`` if the kernel can unpack it, else no compression."""
    return preferred if preferred in supported else "none"
