"""Fixtures for integration tests that boot real QEMU.

`debian_kernel` finds a guest kernel (the project's cache, else Debian's cloud kernel fetched
with apt into /var/cache/hyper-test); `busybox_initrd` is a tiny initramfs whose /init prints a
marker and then idles, or powers off when the kernel command line says ``hypertest=poweroff``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

GUEST_CACHE = Path("/var/cache/hyper/guest")
TEST_CACHE = Path("/var/cache/hyper-test")
BUSYBOX = Path("/bin/busybox")
INIT_MARKER = "hyper-test: init running"

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "{INIT_MARKER}"
case " $(/bin/busybox cat /proc/cmdline) " in
  *" hypertest=poweroff "*) /bin/busybox poweroff -f ;;
esac
while :; do /bin/busybox sleep 3600; done
"""


def _newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A cpio archive in the kernel's "newc" format: (name, mode, data, rdev) entries."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name) + 1, 0]
        out += b"070701" + b"".join(b"%08x" % value for value in fields)
        out += name.encode() + b"\0"
        pad()
        out += data
        pad()
    return bytes(out)


def _find_kernel() -> Path | None:
    for directory in (GUEST_CACHE, TEST_CACHE):
        found = sorted(directory.glob("vmlinuz-*")) if directory.is_dir() else []
        if found:
            return found[-1]
    return None


def _fetch_debian_kernel() -> Path:
    """apt-get download Debian's cloud kernel and extract its vmlinuz (nothing is installed)."""
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    package = next(
        line.split()[1]
        for line in depends.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    )
    subprocess.run(["apt-get", "download", package], cwd=TEST_CACHE, check=True, timeout=300)
    deb = next(TEST_CACHE.glob(f"{package}_*.deb"))
    staging = TEST_CACHE / "extract"
    staging.mkdir(exist_ok=True)
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(staging), "--wildcards", "./boot/vmlinuz-*"],
                   stdin=tar.stdout, check=True)  # fmt: skip
    tar.wait()
    for kernel in (staging / "boot").glob("vmlinuz-*"):
        shutil.move(kernel, TEST_CACHE / kernel.name)
    shutil.rmtree(staging)
    deb.unlink()
    found = _find_kernel()
    assert found is not None
    return found


@pytest.fixture(scope="session")
def debian_kernel() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    kernel = _find_kernel()
    if kernel is None:
        try:
            kernel = _fetch_debian_kernel()
        except (OSError, subprocess.SubprocessError, StopIteration) as exc:
            pytest.skip(f"no guest kernel and cannot fetch Debian's: {exc}")
    return kernel


@pytest.fixture(scope="session")
def busybox_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        pytest.skip("needs a static /bin/busybox (Debian's busybox-static)")
    path = tmp_path_factory.mktemp("initrd") / "initrd.cpio"
    path.write_bytes(
        _newc(
            [
                ("bin", 0o40755, b"", 0),
                ("dev", 0o40755, b"", 0),
                ("dev/console", 0o20600, b"", (5 << 8) | 1),
                ("proc", 0o40755, b"", 0),
                ("bin/busybox", 0o100755, BUSYBOX.read_bytes(), 0),
                ("init", 0o100755, INIT_SCRIPT.encode(), 0),
            ]
        )
    )
    return path


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (a test's unique run_dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Until the process `pid` has exited (a pidfd becomes readable), at most `timeout` s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture
def vm_dir(tmp_path: Path) -> Iterator[Path]:
    """A unique directory for one test's VMs; any QEMU still using it at teardown is killed."""
    directory = tmp_path / "vm"
    directory.mkdir()
    yield directory
    leftovers = [pid for pid in pids_mentioning(str(directory)) if _is_qemu(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"QEMU processes left behind: {leftovers}"


def _is_qemu(pid: int) -> bool:
    try:
        return b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
