"""hyperstart's ``export``: a real overlay-like upper directory (0/0 character-device whiteouts,
trusted.overlay.opaque) streamed as an OCI layer tar through the agent, with flow control.

Needs root (mknod, trusted.* xattrs), like the other hyperstart tests' subreaper agent.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import tarfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hyper.proto import flow, frames, messages
from hyperstart import syscalls
from hyperstart.agent import Agent
from hyperstart.containers import HostDirectoryBackend
from hyperstart.export import write_changes
from tests.unit.test_hyperstart_agent import WINDOW, Host, RecordingPod, SocketPorts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, trusted xattrs")

MTIME = 1_700_000_000
BIG = os.urandom(3 * WINDOW + 123)


class ExportGuest:
    """An agent in a child process whose containers all have ``upper`` as their upper layer."""

    def __init__(self, upper: str | None) -> None:
        host_sock, agent_sock = socket.socketpair()
        self.host = Host(host_sock)
        agent_fd = agent_sock.detach()
        self.pid = os.fork()
        if self.pid == 0:
            status = 1
            try:
                host_sock.close()
                syscalls.set_child_subreaper()
                backend = HostDirectoryBackend(upper=upper)
                Agent(SocketPorts([agent_fd]), backend, RecordingPod()).run()
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(agent_fd)
        self.host.hello()
        self.host.ok("add_container", messages.AddContainer("c1", "d", "erofs", 8).to_wire())

    def stop(self) -> None:
        self.host.sock.close()
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    """What overlayfs leaves in an upper directory after some changes in a container."""
    root = tmp_path / "upper"
    root.mkdir()
    (root / "new").write_bytes(b"hi\n")
    os.chmod(root / "new", 0o640)
    os.chown(root / "new", 1000, 1001)
    os.setxattr(root / "new", "user.note", b"kept")
    os.link(root / "new", root / "new-link")
    (root / "bin").mkdir()
    os.setxattr(root / "bin", "trusted.overlay.origin", b"\x00overlay-metadata")
    os.mknod(root / "bin" / "vi", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.link(root / "bin" / "vi", root / "bin" / "less")  # overlayfs shares one whiteout inode
    os.symlink("/bin/busybox", root / "bin" / "sh")
    (root / "d").mkdir(mode=0o750)
    os.chmod(root / "d", 0o750)
    os.setxattr(root / "d", "trusted.overlay.opaque", b"y")
    (root / "d" / "f").write_bytes(b"")
    (root / "big").write_bytes(BIG)
    os.mkfifo(root / "fifo")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


EXPECTED = {
    # name: (type, mode, uid, gid, linkname, data)
    "big": (tarfile.REGTYPE, 0o644, 0, 0, "", BIG),
    "bin": (tarfile.DIRTYPE, 0o755, 0, 0, "", b""),
    "bin/.wh.less": (tarfile.REGTYPE, 0o600, 0, 0, "", b""),
    "bin/sh": (tarfile.SYMTYPE, 0o777, 0, 0, "/bin/busybox", b""),
    "bin/.wh.vi": (tarfile.REGTYPE, 0o600, 0, 0, "", b""),
    "d": (tarfile.DIRTYPE, 0o750, 0, 0, "", b""),
    "d/.wh..wh..opq": (tarfile.REGTYPE, 0o750, 0, 0, "", b""),
    "d/f": (tarfile.REGTYPE, 0o644, 0, 0, "", b""),
    "fifo": (tarfile.FIFOTYPE, 0o644, 0, 0, "", b""),
    "new": (tarfile.REGTYPE, 0o640, 1000, 1001, "", b"hi\n"),
    "new-link": (tarfile.LNKTYPE, 0o640, 1000, 1001, "new", b""),
}


def members(data: bytes) -> dict[str, tuple[Any, ...]]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            assert member.mtime == MTIME, member.name
            content = archive.extractfile(member) if member.isreg() else None
            found[member.name] = (
                member.type,
                member.mode,
                member.uid,
                member.gid,
                member.linkname,
                content.read() if content else b"",
            )
    return found


def xattrs_of(data: bytes) -> dict[str, dict[str, str]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return {
            m.name: {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            for m in archive
        }


@pytest.fixture
def guest(upper: Path) -> Iterator[ExportGuest]:
    running = ExportGuest(str(upper))
    yield running
    running.stop()


def test_export_streams_the_upper_layer_as_an_oci_layer(guest: ExportGuest) -> None:
    host = guest.host
    result = host.ok("export", {"container": "c1", "process": "e1", "stdout": 1, "stderr": 2})
    assert messages.ExecResult.from_wire(result).pid > 0
    exit_event = host.exit_of("e1")
    assert bytes(host.streams.get(2, b"")) == b""
    assert exit_event == messages.Exit("e1", 0, 0)
    assert {1, 2} <= host.ended  # both streams ended before the exit event
    data = bytes(host.streams[1])
    assert len(data) > WINDOW  # the host's credit was used and renewed (Host checks each frame)
    assert members(data) == EXPECTED
    xattrs = xattrs_of(data)
    assert xattrs["new"] == {"SCHILY.xattr.user.note": "kept"}
    assert xattrs["bin"] == {}  # overlayfs's own xattrs are not the container's
    assert xattrs["d"] == {}


def test_export_is_deterministic_and_leaves_out_injected_files(upper: Path, tmp_path: Path) -> None:
    (upper / "etc").mkdir()
    (upper / "etc" / "hostname").write_text("pod\n")
    (upper / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (upper / "etc" / "motd").write_text("mine\n")
    for path in (upper / "etc", *(upper / "etc").iterdir()):
        os.utime(path, (MTIME, MTIME))
    outputs = []
    for name in ("a.tar", "b.tar"):
        path = tmp_path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_changes(str(upper), fd, ("etc/hostname", "etc/hosts"))
        finally:
            os.close(fd)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    names = set(members(outputs[0]))
    assert {"etc", "etc/motd"} <= names
    assert not {"etc/hostname", "etc/hosts"} & names
    assert len(outputs[0]) % 512 == 0
    assert outputs[0].endswith(b"\0" * 1024)


def test_long_names_and_links_go_in_pax_headers(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    deep = upper / ("d" * 120)
    deep.mkdir(parents=True)
    long_name = "é" + "f" * 150
    (deep / long_name).write_bytes(b"x")
    os.symlink("t" * 200, deep / "link")
    path = tmp_path / "out.tar"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_changes(str(upper), fd)
    finally:
        os.close(fd)
    with tarfile.open(path) as archive:
        found = {m.name: m for m in archive}
    assert set(found) == {"d" * 120, f"{'d' * 120}/{long_name}", f"{'d' * 120}/link"}
    assert found[f"{'d' * 120}/link"].linkname == "t" * 200


def test_a_failed_export_exits_non_zero_with_the_error(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "upper"
    link.symlink_to(real)  # the exporter opens the upper directory without following links
    guest = ExportGuest(str(link))
    try:
        host = guest.host
        host.ok("export", {"container": "c1", "process": "e1", "stdout": 1, "stderr": 2})
        exit_event = host.exit_of("e1")
        assert exit_event.status == 1
        assert b"export of c1: " in bytes(host.streams[2])
        assert b"Not a directory" in bytes(host.streams[2])
    finally:
        guest.stop()


def test_export_errors_before_starting(tmp_path: Path) -> None:
    guest = ExportGuest(None)
    try:
        host = guest.host
        args = {"container": "c1", "process": "e1", "stdout": 1}
        assert host.call("export", args).error_kind == "FailedPrecondition"
        assert host.call("export", {**args, "container": "nope"}).error_kind == "NotFound"
        assert host.call("export", {**args, "stdout": 0}).error_kind == "InvalidArgument"
        assert host.ok("ping") == {}
    finally:
        guest.stop()
    gone = ExportGuest(str(tmp_path / "missing"))
    try:
        args = {"container": "c1", "process": "e1", "stdout": 1}
        assert gone.host.call("export", args).error_kind == "NotFound"
    finally:
        gone.stop()


def _hold_credit(host: Host, stream: int) -> Any:
    """Make the host keep stream's data without granting more credit; returns the restorer."""
    host.receive_windows[stream] = flow.ReceiveWindow(WINDOW)
    original = host._handle

    def hold(frame: frames.Frame) -> None:
        if frame.kind == frames.DATA and frame.stream == stream and frame.payload:
            host.receive_windows[stream].received(len(frame.payload))
            host.streams.setdefault(stream, bytearray()).extend(frame.payload)
        else:
            original(frame)

    host._handle = hold  # type: ignore[method-assign]

    def release() -> None:
        host._handle = original  # type: ignore[method-assign]
        host.send(frames.encode_window(stream, host.receive_windows[stream].consumed(WINDOW)))

    return release


def test_export_survives_the_main_process_and_dies_with_the_container(
    guest: ExportGuest,
) -> None:
    host = guest.host
    release = _hold_credit(host, 1)
    host.ok("export", {"container": "c1", "process": "e1", "stdout": 1, "stderr": 2})
    host.wait(lambda: len(host.streams.get(1, b"")) == WINDOW)  # stalled on credit
    host.ok("exec", {"container": "c1", "process": "c1", "argv": ["true"]})
    assert host.exit_of("c1").status == 0  # the container's end kills its processes ...
    release()
    assert host.exit_of("e1").status == 0  # ... but not an export: it completes
    assert members(bytes(host.streams[1])) == EXPECTED

    release = _hold_credit(host, 3)
    host.ok("export", {"container": "c1", "process": "e2", "stdout": 3})
    host.wait(lambda: len(host.streams.get(3, b"")) == WINDOW)
    host.ok("remove_container", {"container": "c1"})
    release()  # the exit event follows the end of the stream, which needs credit
    assert host.exit_of("e2") == messages.Exit("e2", 137, 9)
