"""The interpreter closure: Debian's python3.11 finds what the agent imports, and the initramfs
content built from it runs that interpreter without any file of the host."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from hyper.errors import Internal
from hyper.guest import agent, cpio, initramfs, interpreter, kernel

pytestmark = pytest.mark.skipif(
    not interpreter.PYTHON.exists(), reason="Debian's python3.11 is not installed"
)

MAIN = """\
import ctypes
import json
import os

import hyper.proto.frames


def main() -> None:
    print("agent", json.dumps({"msg": hyper.proto.frames.MSG}), flush=True)
"""


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "hyperstart"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "9.8.7"\n')
    (package / "main.py").write_text(MAIN)
    (package / "__main__.py").write_text("raise SystemExit('must not be imported')\n")
    return package


def test_sources_hold_the_agent_and_the_shared_host_modules(agent_dir: Path) -> None:
    sources = agent.sources(agent_dir)

    relative = [r for r, _ in sources.files]
    assert "hyperstart/main.py" in relative and "hyper/errors.py" in relative
    assert "hyper/proto/frames.py" in relative
    assert not any(r.startswith(("hyper/guest", "hyper/config")) for r in relative)
    assert sources.version == "9.8.7"
    assert "hyperstart.__main__" not in sources.modules


def test_digest_changes_with_the_agent(agent_dir: Path) -> None:
    before = agent.sources(agent_dir).digest()
    (agent_dir / "main.py").write_text(MAIN + "# edited\n")
    assert agent.sources(agent_dir).digest() != before


def test_closure_follows_imports(agent_dir: Path, tmp_path: Path) -> None:
    closure = interpreter.closure(agent.sources(agent_dir), tmp_path / "scratch")

    stdlib = closure.stdlib
    for name in ("os", "json/decoder", "ctypes/_endian", "encodings/utf_8", "encodings/latin_1"):
        assert f"{stdlib}/{name}.pyc" in closure.compiled
    assert f"{stdlib}/hyperstart/main.pyc" in closure.compiled
    assert f"{stdlib}/hyper/proto/messages.pyc" in closure.compiled
    assert not any("/hyper/guest/" in path for path in closure.compiled)
    assert not any(path.endswith(".py") for path in closure.compiled)
    assert f"{stdlib}/py_compile.pyc" not in closure.compiled  # the builder's, not the agent's
    names = {p.name.split(".")[0] for p in closure.extensions}
    assert {"_ctypes", "termios"} <= names
    libraries = {p.name for p in closure.libraries}
    assert {"libc.so.6", "libffi.so.8", "ld-linux-x86-64.so.2"} <= libraries


def test_an_agent_importing_host_only_modules_is_refused(agent_dir: Path, tmp_path: Path) -> None:
    (agent_dir / "main.py").write_text("import hyper.config.settings\n")
    with pytest.raises(Internal, match="does not import"):
        interpreter.closure(agent.sources(agent_dir), tmp_path / "scratch")


def test_parse_ldd() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibffi.so.8 => /lib/x86_64-linux-gnu/libffi.so.8 (0x00007f)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
    )
    assert interpreter.parse_ldd(text) == [
        Path("/lib/x86_64-linux-gnu/libffi.so.8"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]


def fake_kernel(tmp_path: Path) -> kernel.PreparedKernel:
    modules = tmp_path / "modules"
    modules.mkdir()
    for name in ("virtio_ring", "virtio"):
        (modules / f"{name}.ko").write_bytes(b"\x7fELF " + name.encode())
    return kernel.PreparedKernel(
        directory=tmp_path,
        package=kernel.Package("linux-image-test", "1"),
        release="6.1.0-test",
        kernel=tmp_path / "vmlinux",
        kernel_format="vmlinux",
        modules=tuple((n, modules / f"{n}.ko") for n in ("virtio_ring", "virtio")),
        initrd_compressions=frozenset({"none"}),
    )


def unpack(archive: cpio.Archive, root: Path) -> None:
    for entry in cpio.read(archive.to_bytes()):
        target = root / entry.path
        if stat.S_ISDIR(entry.mode):
            target.mkdir(exist_ok=True)
        elif stat.S_ISREG(entry.mode):
            target.write_bytes(entry.data)
            target.chmod(stat.S_IMODE(entry.mode))


def test_initramfs_content(agent_dir: Path, tmp_path: Path) -> None:
    closure = interpreter.closure(agent.sources(agent_dir), tmp_path / "scratch")
    archive = initramfs.assemble(fake_kernel(tmp_path), closure, "9.8.7")
    entries = {e.path: e for e in cpio.read(archive.to_bytes())}

    init = entries["init"]
    assert init.data.startswith(b"#!/usr/bin/python3.11 -ISB\n")
    assert b"hyperstart.main.main()" in init.data and init.mode & 0o111
    assert entries["dev/console"].rdev == (5, 1) and stat.S_ISCHR(entries["dev/console"].mode)
    assert entries["dev/null"].rdev == (1, 3)
    assert "bin/busybox" in entries and "usr/bin/python3.11" in entries
    assert "lib64/ld-linux-x86-64.so.2" in entries
    assert entries[initramfs.MODULE_LIST].data.decode().splitlines() == [
        "/lib/modules/6.1.0-test/hyper/virtio_ring.ko",
        "/lib/modules/6.1.0-test/hyper/virtio.ko",
    ]
    info = json.loads(entries[initramfs.GUEST_INFO].data)
    assert info["agent_version"] == "9.8.7" and info["kernel_release"] == "6.1.0-test"
    assert not any(path.endswith(".py") for path in entries)
    for name in ("proc", "sys", "run", "tmp", "mnt"):
        assert stat.S_ISDIR(entries[name].mode)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None, reason="chroot needs root")
def test_the_interpreter_runs_from_the_initramfs_alone(agent_dir: Path, tmp_path: Path) -> None:
    closure = interpreter.closure(agent.sources(agent_dir), tmp_path / "scratch")
    archive = initramfs.assemble(fake_kernel(tmp_path), closure, "9.8.7")
    root = tmp_path / "root"
    root.mkdir()
    unpack(archive, root)
    (root / "dev" / "urandom").write_bytes(os.urandom(4096))  # a stand-in for the device

    done = subprocess.run(
        ["chroot", str(root), "/usr/bin/python3.11", "-ISB", "/init"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == 'agent {"msg": 1}\n'
    assert "Could not find platform" not in done.stderr
