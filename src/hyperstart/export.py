"""``export``: a container's changes (its overlay upper directory) as an OCI layer tar, streamed.

The export runs as a child process of the agent (a fork, no exec), so the agent's process
machinery carries it: the tar goes through a pipe and an :class:`~hyperstart.stdio.OutputPump`
onto the host's DATA stream within its credit (a host that reads slowly stalls the writer on a
full pipe: nothing is built in memory), an error message goes to the stderr stream, and the
``exit`` event says whether the tar is complete (0) or not (1). The child stays in the agent's
cgroup, so it is not one of the container's processes.

The tar (POSIX pax; numeric owners; mtimes in whole seconds, as docker writes layers) follows the
OCI layer conventions:

- an overlay whiteout (a 0/0 character device) becomes an empty regular file ``.wh.<name>``;
- an opaque directory (xattr ``trusted.overlay.opaque=y``) gets a ``.wh..wh..opq`` entry inside;
- modes, uid/gid, symlinks, devices and FIFOs are kept; sockets are skipped; a file with several
  links inside the upper directory is written once, then as hard links to that first path;
- xattrs are kept (pax ``SCHILY.xattr.*``), except overlayfs's own (``trusted.overlay.*``,
  ``user.overlay.*``);
- the files the agent itself wrote (``Container.excluded``: /etc/hostname, /etc/hosts) are left
  out, like the bind mounts docker leaves out of a commit.

On a running container the result is crash-consistent per file, not a snapshot: each directory
is listed once, each file is read once with the size it had when opened (a file that shrinks
meanwhile is padded with zeros, one that grows is cut), and an entry that vanishes between the
listing and the read is left out. Directories are walked from the upper directory's file
descriptor with ``O_NOFOLLOW``, so a container that swaps a directory for a symlink cannot make
the export read outside its upper directory. Entries are sorted by name: the same changes give
the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat

from hyper import errors
from hyper.proto.messages import Export
from hyperstart.containers import Container
from hyperstart.processes import Process
from hyperstart.stdio import OutputPump

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_BLOCK = 512
_CHUNK = 256 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RESET_SIGNALS = ("SIGCHLD", "SIGPIPE", "SIGIO", "SIGINT", "SIGTERM", "SIGHUP")
_MAX_FD = 1 << 20

REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0123456"
PAXTYPE = ord("x")


# ---------------------------------------------------------------- the agent's side


def spawn(spec: Export, container: Container, window: int) -> Process:
    """Fork the exporter of ``container``'s changes; raises if there is nothing to export."""
    if container.upper is None:
        raise errors.FailedPrecondition(
            f"container {container.id!r} has no writable layer to export"
        )
    if not os.path.isdir(container.upper):
        raise errors.NotFound(f"the writable layer of container {container.id!r} is gone")
    mine: list[int] = []
    theirs: list[int] = []
    try:
        for stream in (spec.stdout, spec.stderr):
            if stream:
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                mine.append(read_fd)
                theirs.append(write_fd)
        pid = os.fork()
        if pid == 0:
            _child(container, theirs[0], theirs[1] if len(theirs) > 1 else -1)  # never returns
    except BaseException:
        for fd in mine + theirs:
            os.close(fd)
        raise
    for fd in theirs:
        os.close(fd)
    process = Process(spec, pid)
    process.helper = True
    for fd, stream in zip(mine, [s for s in (spec.stdout, spec.stderr) if s], strict=True):
        os.set_blocking(fd, False)
        process.outputs.append(OutputPump(fd, stream, window))
    return process


def _child(container: Container, out: int, err: int) -> None:
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        for name in _RESET_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a gone reader is an error, not a kill
        _close_all_but({out, err})
        assert container.upper is not None
        try:
            write_changes(container.upper, out, container.excluded)
            status = 0
        except Exception as exc:
            if err >= 0:
                message = f"export of {container.id}: {_describe(exc)}\n"
                with contextlib.suppress(OSError):
                    os.write(err, message.encode(errors="replace"))
    finally:
        os._exit(status)


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- the tar


def write_changes(upper: str, fd: int, excluded: tuple[str, ...] = ()) -> None:
    """Write the tar of ``upper`` to ``fd`` (blocking writes), ending with the end blocks."""
    writer = TarWriter(fd)
    root = os.open(upper, _DIR_FLAGS)
    # A stack of (directory fd, its path in the archive + "/", names left, sorted in reverse).
    stack: list[tuple[int, str, list[str]]] = [(root, "", _names(root))]
    links: dict[tuple[int, int], str] = {}
    skip = set(excluded)
    try:
        while stack:
            dir_fd, prefix, names = stack[-1]
            if not names:
                os.close(dir_fd)
                stack.pop()
                continue
            name = names.pop()
            path = prefix + name
            if path in skip:
                continue
            child = _entry(writer, dir_fd, name, path, links)
            if child is not None:
                stack.append((child, path + "/", _names(child)))
        writer.finish()
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted((entry.name for entry in entries), reverse=True)


def _entry(
    writer: TarWriter, dir_fd: int, name: str, path: str, links: dict[tuple[int, int], str]
) -> int | None:
    """Write one entry; returns the fd of a directory to descend into."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed since the listing
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:  # an overlay whiteout (often a shared inode)
        head, _, base = path.rpartition("/")
        whiteout = f"{head}/{WHITEOUT_PREFIX}{base}" if head else WHITEOUT_PREFIX + base
        writer.add(whiteout, REGTYPE, st, mode=0o600)
        return None
    if stat.S_ISSOCK(mode):
        return None
    inode = (st.st_dev, st.st_ino)
    if not stat.S_ISDIR(mode) and st.st_nlink > 1 and inode in links:
        writer.add(path, LNKTYPE, st, linkname=links[inode])
        return None
    if stat.S_ISDIR(mode):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None  # replaced since the listing
            raise
        xattrs = _xattrs(fd)
        opaque = any(xattrs.pop(key, None) == b"y" for key in _OPAQUE_XATTRS)
        xattrs = _kept(xattrs)
        writer.add(path + "/", DIRTYPE, st, xattrs=xattrs)
        if opaque:
            writer.add(f"{path}/{OPAQUE_MARKER}", REGTYPE, st, mode=stat.S_IMODE(mode) & 0o777)
        return fd
    written = False
    if stat.S_ISREG(mode):
        written = _regular(writer, dir_fd, name, path)
    elif stat.S_ISLNK(mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return None
        writer.add(path, SYMTYPE, st, linkname=target, xattrs=_kept(_xattrs_at(dir_fd, name)))
        written = True
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        kind = CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE if stat.S_ISBLK(mode) else FIFOTYPE
        writer.add(path, kind, st, xattrs=_kept(_xattrs_at(dir_fd, name)))
        written = True
    if written and st.st_nlink > 1:
        links[inode] = path  # the later names of this inode become hard links to this one
    return None


def _regular(writer: TarWriter, dir_fd: int, name: str, path: str) -> bool:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return False  # removed or replaced since the listing
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        writer.add(path, REGTYPE, st, xattrs=_kept(_xattrs(fd)), data_fd=fd)
        return True
    finally:
        os.close(fd)


def _xattrs(target: int | str) -> dict[str, bytes]:
    try:
        keys = (
            os.listxattr(target, follow_symlinks=False)
            if isinstance(target, str)
            else (os.listxattr(target))
        )
    except OSError:
        return {}
    values: dict[str, bytes] = {}
    for key in sorted(keys):
        try:
            if isinstance(target, str):
                values[key] = os.getxattr(target, key, follow_symlinks=False)
            else:
                values[key] = os.getxattr(target, key)
        except OSError:
            continue
    return values


def _xattrs_at(dir_fd: int, name: str) -> dict[str, bytes]:
    """The xattrs of an entry that cannot be opened (a symlink, a device): through /proc."""
    return _xattrs(f"/proc/self/fd/{dir_fd}/{name}")


def _kept(xattrs: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in xattrs.items() if not k.startswith(_OVERLAY_XATTRS)}


class TarWriter:
    """A POSIX (pax) tar written straight to a file descriptor, in chunks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def add(
        self,
        name: str,
        kind: int,
        st: os.stat_result,
        *,
        mode: int | None = None,
        linkname: str = "",
        xattrs: dict[str, bytes] | None = None,
        data_fd: int = -1,
    ) -> None:
        size = st.st_size if kind == REGTYPE and data_fd >= 0 else 0
        pax: dict[str, bytes] = {}
        raw_name = os.fsencode(name)
        raw_link = os.fsencode(linkname)
        if len(raw_name) > 100 or not raw_name.isascii():
            pax["path"] = raw_name
        if len(raw_link) > 100 or not raw_link.isascii():
            pax["linkpath"] = raw_link
        for key, value in (xattrs or {}).items():
            pax[f"SCHILY.xattr.{key}"] = value
        for field, number in (("uid", st.st_uid), ("gid", st.st_gid)):
            if number >= 8**7:
                pax[field] = str(number).encode()
        if size >= 8**11:
            pax["size"] = str(size).encode()
        mtime = max(int(st.st_mtime), 0)
        if mtime >= 8**11:
            pax["mtime"] = str(mtime).encode()
        if pax:
            records = b"".join(_pax_record(key, value) for key, value in pax.items())
            pax_name = f"PaxHeaders/{os.path.basename(name.rstrip('/'))}"
            self._write(_header(pax_name.encode()[:100], PAXTYPE, 0o644, 0, 0, len(records), mtime))
            self._write(records)
            self._pad(len(records))
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
        major = minor = 0
        if kind in (CHRTYPE, BLKTYPE):
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self._write(
            _header(
                raw_name[:100],
                kind,
                mode,
                st.st_uid,
                st.st_gid,
                size,
                mtime,
                raw_link[:100],
                major,
                minor,
            )
        )
        if size:
            self._copy(data_fd, size)

    def finish(self) -> None:
        self._write(b"\0" * (2 * _BLOCK))
        self._flush()

    def _copy(self, fd: int, size: int) -> None:
        left = size
        while left:
            try:
                chunk = os.read(fd, min(left, _CHUNK))
            except BlockingIOError:
                chunk = b""
            if not chunk:  # the file shrank since it was opened: keep the header's promise
                self._write(b"\0" * left)
                break
            self._write(chunk)
            left -= len(chunk)
        self._pad(size)

    def _pad(self, size: int) -> None:
        self._write(b"\0" * (-size % _BLOCK))

    def _write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self._buffer)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        finally:
            view.release()
        self._buffer.clear()


def _pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _header(
    name: bytes,
    kind: int,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    linkname: bytes = b"",
    major: int = 0,
    minor: int = 0,
) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        _octal(mode, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
        b" " * 8,  # the checksum, counted as spaces
        bytes([kind]),
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,  # uname: numeric owners only
        b"\0" * 32,  # gname
        _octal(major, 8),
        _octal(minor, 8),
        b"\0" * 155,  # prefix: long names go in the pax header
    ]
    header = b"".join(fields).ljust(_BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


def _octal(value: int, width: int) -> bytes:
    """``width - 1`` octal digits and a NUL; a value too large is in the pax header instead."""
    digits = width - 1
    value = min(value, 8**digits - 1)
    return b"%0*o\0" % (digits, value)
