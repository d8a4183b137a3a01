"""Build the real guest from Debian's packages and boot it with plain QEMU (TCG).

The build goes into a temporary cache (downloading the kernel package once for the module). A
test copy of the initramfs gets one more cpio archive appended (the kernel unpacks concatenated
archives) holding ``/test-init``, a Python script booted with ``rdinit=``; it prints what it
finds and exits, which panics the kernel, which (with ``panic=-1`` and ``-no-reboot``) ends QEMU.
Every boot is bounded by a timeout and retried once, as platform.md advises under TCG.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hyper.config.settings import Paths, Settings
from hyper.guest import GuestArtifacts, agent, artifacts, cache, cpio, describe, resolve

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 90.0
STANDIN_MAIN = """\
import json
import os

import hyper.proto.frames


def main() -> None:
    print("STANDIN-AGENT", json.dumps({"pid": os.getpid(), "msg": hyper.proto.frames.MSG}),
          flush=True)
"""
TEST_INIT = b"""#!/usr/bin/python3.11 -ISB
import os, sys, time
print("PYTHON-UP", flush=True)
import ctypes, json
started = time.monotonic()
import hyperstart.main
imported = time.monotonic() - started
libc = ctypes.CDLL(None, use_errno=True)
failed = []
paths = open("/etc/hyperstart/modules").read().split()
for path in paths:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if libc.syscall(313, fd, b"", 0) != 0:  # finit_module
        failed.append([path, os.strerror(ctypes.get_errno())])
    os.close(fd)
libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None)
loaded = sorted(os.listdir("/sys/module"))
result = {
    "failed": failed, "loaded": loaded, "import_s": round(imported, 3),
    "info": json.load(open("/etc/hyperstart/guest.json")),
    "virtio_devices": sorted(os.listdir("/sys/bus/virtio/devices")),
    "executable": sys.executable, "prefix": sys.prefix,
}
print("RESULT " + json.dumps(result), flush=True)
"""


def host_khz() -> int:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 0


APPEND = (
    f"console=ttyS0 quiet panic=-1 tsc_early_khz={host_khz()} cryptomgr.notests tsc=reliable "
    "no_timer_check nokaslr mitigations=off audit=0 8250.nr_uarts=1 random.trust_cpu=on"
)


@dataclass
class Boot:
    lines: list[str] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    """Seconds from QEMU's start to the first line holding each marker."""
    timed_out: bool = False

    def line_with(self, marker: str) -> str:
        return next(line for line in self.lines if marker in line)


def boot_once(kernel: Path, initrd: Path, append: str, markers: tuple[str, ...]) -> Boot:
    argv = [
        "qemu-system-x86_64",
        "-M",
        "microvm",
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "virtio-serial-device",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        f"{APPEND} {append}",
    ]
    result = Boot()
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def kill() -> None:
        result.timed_out = True
        process.kill()

    watchdog = threading.Timer(BOOT_TIMEOUT, kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            result.lines.append(line)
            for marker in markers:
                if marker in line and marker not in result.first:
                    result.first[marker] = time.monotonic() - started
        process.wait(BOOT_TIMEOUT)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return result


def boot(kernel: Path, initrd: Path, append: str, markers: tuple[str, ...]) -> Boot:
    """Boot until QEMU exits; one retry if the first attempt hangs."""
    result = boot_once(kernel, initrd, append, markers)
    if result.timed_out:
        result = boot_once(kernel, initrd, append, markers)
    assert not result.timed_out, "\n".join(result.lines[-30:])
    return result


def with_test_init(initrd: Path, target: Path) -> Path:
    extra = cpio.Archive()
    extra.add_file("test-init", TEST_INIT, 0o755)
    data = initrd.read_bytes()
    target.write_bytes(data + b"\0" * (-len(data) % 4) + extra.to_bytes())
    return target


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(paths=Paths(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    package = tmp_path_factory.mktemp("agent") / "hyperstart"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "0.0.0-standin"\n')
    (package / "main.py").write_text(STANDIN_MAIN)
    return package


@pytest.fixture(scope="module")
def built(settings: Settings, standin: Path) -> GuestArtifacts:
    started = time.monotonic()
    found = artifacts.build_with(settings, agent.sources(standin), None, force=False)
    print(f"\nfresh build (download included): {time.monotonic() - started:.1f} s")
    return found


def test_the_build_is_described(settings: Settings, built: GuestArtifacts) -> None:
    manifest = cache.read_manifest(settings.paths.guest)
    assert manifest is not None
    assert built.release == manifest["kernel"]["release"] and built.release.endswith("-cloud-amd64")
    assert built.source.startswith("debian linux-image-")
    assert built.agent_version == "0.0.0-standin"
    assert built.kernel.read_bytes()[:4] == b"\x7fELF"  # the PVH-bootable vmlinux
    assert manifest["kernel"]["format"] == "vmlinux"
    for name in ("virtio_ring", "virtio", "virtio_mmio", "virtio_console", "erofs", "overlay"):
        assert name in manifest["modules"]
    assert manifest["modules"].index("virtio_ring") < manifest["modules"].index("virtio_mmio")
    info = describe(settings)
    print(json.dumps(info, indent=2))
    assert info["initrd_size"] < info["initrd_raw_size"] or info["initrd_compression"] == "none"


def test_the_init_runs_the_agent(built: GuestArtifacts) -> None:
    result = boot(built.kernel, built.initrd, "", ("STANDIN-AGENT",))

    assert "STANDIN-AGENT" in result.first, "\n".join(result.lines[-30:])
    assert '"pid": 1' in result.line_with("STANDIN-AGENT")
    print(f"\nQEMU start to the agent's first line: {result.first['STANDIN-AGENT']:.2f} s")


def test_python_starts_and_modules_load(built: GuestArtifacts, tmp_path: Path) -> None:
    initrd = with_test_init(built.initrd, tmp_path / "test.img")

    result = boot(built.kernel, initrd, "rdinit=/test-init", ("PYTHON-UP", "RESULT"))

    assert "RESULT" in result.first, "\n".join(result.lines[-30:])
    report = json.loads(result.line_with("RESULT ").split("RESULT ", 1)[1])
    assert report["failed"] == []
    assert {"virtio_mmio", "virtio_console", "erofs", "overlay", "virtio_net"} <= set(
        report["loaded"]
    )
    assert report["virtio_devices"], "virtio_mmio found no device through ACPI"
    assert report["info"]["kernel_release"] == built.release
    assert report["prefix"] == "/usr"
    assert not any("Could not find platform" in line for line in result.lines)
    print(
        f"\nQEMU start to python's first line: {result.first['PYTHON-UP']:.2f} s; "
        f"to modules loaded: {result.first['RESULT']:.2f} s"
    )


def test_editing_the_agent_rebuilds_only_the_initrd(
    settings: Settings, built: GuestArtifacts, standin: Path
) -> None:
    kernel_inode = built.kernel.stat().st_ino
    (standin / "main.py").write_text(STANDIN_MAIN + "\n# edited\n")
    try:
        started = time.monotonic()
        rebuilt = artifacts.build_with(settings, agent.sources(standin), None, force=False)
        print(f"\ninitramfs-only rebuild: {time.monotonic() - started:.1f} s")
    finally:
        (standin / "main.py").write_text(STANDIN_MAIN)

    assert rebuilt.kernel == built.kernel and rebuilt.kernel.stat().st_ino == kernel_inode
    # The previous initrd stays (a restarting pod or a template may still boot from it).
    assert rebuilt.initrd != built.initrd and built.initrd.exists()
    assert rebuilt.fingerprint != built.fingerprint


@pytest.mark.skipif(
    importlib.util.find_spec("hyperstart.main") is None, reason="hyperstart is not written yet"
)
def test_the_real_agent_imports_in_the_guest(settings: Settings, tmp_path: Path) -> None:
    real = resolve(settings)  # the cached kernel, an initramfs of the real sources
    assert real.agent_version == agent.AGENT_VERSION

    result = boot(
        real.kernel,
        with_test_init(real.initrd, tmp_path / "test.img"),
        "rdinit=/test-init",
        ("PYTHON-UP", "RESULT"),
    )

    assert "RESULT" in result.first, "\n".join(result.lines[-30:])
    report = json.loads(result.line_with("RESULT ").split("RESULT ", 1)[1])
    print(f"\nimport hyperstart.main in the guest: {report['import_s']:.2f} s")
