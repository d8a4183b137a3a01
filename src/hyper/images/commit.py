"""Commit: a new image made of a base image plus one layer of changes (``hyper commit``).

The layer is the tar a container's ``export`` produced (an OCI layer: ``.wh.`` whiteouts, opaque
markers). :func:`commit` checks it as hostile input, in one streaming pass that also hashes it
(the diff-id) and gzips it into a temporary file (deterministically: mtime 0, no file name), then
stores the blob (its digest: the sha256 of the compressed bytes), a new image config and a new
OCI manifest, content-addressed, and tags the result if asked.

The new config is the base's config document copied as it is (unknown fields kept), with:
``created`` now; ``author`` if given; ``rootfs.diff_ids`` plus the new diff-id; ``history`` plus
one entry (``created``, ``created_by``, ``comment``, ``author``); and the ``--change`` edits of
:class:`ConfigChanges`. A base without history gets one entry per layer first, so that history
and layers stay consistent. A layer with no entries is not stored at all: as docker does for an
empty diff, the history entry says ``empty_layer`` and the layers stay the base's.

The layer checks reuse the unpacker's rules (:mod:`hyper.images.unpack`): path splitting (no
absolute paths, no ``..``, components of at most 255 bytes), the whiteout names, and the
:class:`~hyper.images.unpack.UnpackLimits` bounds on entries, name lengths, file bytes and the
stream; extended headers are bounded to 1 MiB. Stricter than unpacking, as an export allows: a
hard link must point at an earlier non-directory entry of the same layer, and a whiteout must be
a regular file.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import posixpath
import re
import shlex
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from hyper.errors import InvalidArgument
from hyper.images import oci
from hyper.images.compression import decompressed
from hyper.images.digest import Digest, DigestingReader, Readable
from hyper.images.image import Image
from hyper.images.reference import Reference, parse
from hyper.images.store import TenantImages
from hyper.images.tree import Parts, show, split
from hyper.images.unpack import OPAQUE_MARKER, WHITEOUT_PREFIX, BoundedTarInfo, UnpackLimits

_CHUNK = 1 << 20
_GZIP_LEVEL = 6
SUPPORTED_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "WORKDIR")
_MAX_CHANGE = 64 * 1024
_MAX_EXPOSED = 65536


# ---------------------------------------------------------------- config changes


@dataclass(frozen=True)
class ConfigChanges:
    """Edits of the run config, as ``docker commit --change`` makes them.

    ``None`` (or empty) fields leave the base's value; a relative ``workdir`` is joined to the
    base's working directory. ``env`` entries (``KEY=VALUE``) replace
    the same key or are appended, in order; ``labels`` are merged; ``expose`` adds ports
    (``80/tcp``). Setting ``entrypoint`` without ``cmd`` clears the base's command, as a
    Dockerfile's ENTRYPOINT does.
    """

    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    expose: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == ConfigChanges()

    @classmethod
    def parse(cls, instructions: Iterable[str]) -> ConfigChanges:
        """Parse ``--change`` values: Dockerfile instructions, ``CMD ["x"]`` or ``CMD x``.

        No variable substitution is done (``$PATH`` stays as written).
        """
        cmd: tuple[str, ...] | None = None
        entrypoint: tuple[str, ...] | None = None
        env: list[str] = []
        workdir: str | None = None
        user: str | None = None
        labels: dict[str, str] = {}
        expose: list[str] = []
        for line in instructions:
            if len(line) > _MAX_CHANGE:
                raise InvalidArgument(f"a change is longer than {_MAX_CHANGE} characters")
            match = re.fullmatch(r"\s*(\S+)\s*(.*?)\s*", line, re.DOTALL)
            keyword, rest = (match.group(1).upper(), match.group(2)) if match else ("", "")
            if keyword == "CMD":
                cmd = _command(rest, keyword)
            elif keyword == "ENTRYPOINT":
                entrypoint = _command(rest, keyword)
            elif keyword == "ENV":
                env.extend(f"{k}={v}" for k, v in _pairs(rest, keyword, legacy=True))
            elif keyword == "LABEL":
                labels.update(_pairs(rest, keyword, legacy=False))
            elif keyword == "WORKDIR":
                if not rest or "\0" in rest:
                    raise InvalidArgument("WORKDIR needs a path")
                workdir = posixpath.join(workdir, rest) if workdir else rest
            elif keyword == "USER":
                words = _words(rest, keyword)
                if len(words) != 1 or not words[0]:
                    raise InvalidArgument(f"USER takes one user[:group], not {rest!r}")
                user = words[0]
            elif keyword == "EXPOSE":
                expose.extend(_ports(_words(rest, keyword)))
            else:
                raise InvalidArgument(
                    f"{keyword or line!r} is not a change commit supports"
                    f" (supported: {', '.join(SUPPORTED_CHANGES)})"
                )
        return cls(cmd, entrypoint, tuple(env), workdir, user, labels, tuple(expose))

    def apply(self, run: dict[str, Any]) -> dict[str, Any]:
        """The run config (the ``config`` object of an image config) with the changes made."""
        out = copy.deepcopy(run)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
            if self.cmd is None:
                out.pop("Cmd", None)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.env:
            merged = [e for e in out.get("Env") or [] if isinstance(e, str)]
            for entry in self.env:
                key = entry.partition("=")[0]
                index = next((i for i, e in enumerate(merged) if e.partition("=")[0] == key), None)
                if index is None:
                    merged.append(entry)
                else:
                    merged[index] = entry
            out["Env"] = merged
        if self.workdir is not None:  # a relative one is joined to the base's, as docker does
            base = out.get("WorkingDir")
            joined = posixpath.join(base if isinstance(base, str) and base else "/", self.workdir)
            out["WorkingDir"] = posixpath.normpath(joined)
        if self.user is not None:
            out["User"] = self.user
        if self.labels:
            labels = out.get("Labels")
            out["Labels"] = {**(labels if isinstance(labels, dict) else {}), **self.labels}
        if self.expose:
            ports = out.get("ExposedPorts")
            ports = dict(ports) if isinstance(ports, dict) else {}
            for port in self.expose:
                ports.setdefault(port, {})
            out["ExposedPorts"] = ports
        return out


def _command(rest: str, keyword: str) -> tuple[str, ...]:
    """Exec form (a JSON list of strings) or shell form (``/bin/sh -c``), as docker reads it."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    if not rest:
        raise InvalidArgument(f"{keyword} needs a command")
    return ("/bin/sh", "-c", rest)


def _words(rest: str, keyword: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as exc:
        raise InvalidArgument(f"{keyword} {rest!r}: {exc}") from None


def _pairs(rest: str, keyword: str, *, legacy: bool) -> list[tuple[str, str]]:
    """``K=V K2="v 2"``, or (ENV only) the legacy ``KEY value with spaces``."""
    words = _words(rest, keyword)
    if not words:
        raise InvalidArgument(f"{keyword} needs KEY=VALUE")
    if legacy and "=" not in words[0]:
        key, _, value = rest.partition(" ")
        value = value.strip()
        if not value and "\t" in key:
            key, _, value = key.partition("\t")
        if not value.strip():
            raise InvalidArgument(f"{keyword} {key} needs a value")
        return [(_key(key, keyword), value.strip())]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidArgument(f"{keyword}: {word!r} is not KEY=VALUE")
        pairs.append((_key(key, keyword), value))
    return pairs


def _key(key: str, keyword: str) -> str:
    if not key or "\0" in key or (keyword == "ENV" and ("=" in key or key.isspace())):
        raise InvalidArgument(f"{keyword}: {key!r} is not a valid name")
    return key


_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?", re.IGNORECASE)


def _ports(words: list[str]) -> list[str]:
    if not words:
        raise InvalidArgument("EXPOSE needs a port")
    ports: list[str] = []
    for word in words:
        match = _PORT.fullmatch(word)
        if match is None:
            raise InvalidArgument(f"EXPOSE: {word!r} is not PORT[-PORT][/tcp|udp|sctp]")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        proto = (match.group(3) or "tcp").lower()
        if not 0 < low <= high <= 65535:
            raise InvalidArgument(f"EXPOSE: {word!r} is not a valid port or range")
        ports.extend(f"{port}/{proto}" for port in range(low, high + 1))
        if len(ports) > _MAX_EXPOSED:
            raise InvalidArgument(f"EXPOSE: more than {_MAX_EXPOSED} ports")
    return ports


# ---------------------------------------------------------------- commit


@dataclass(frozen=True)
class _Layer:
    diff_id: Digest
    digest: Digest | None  # None: the layer has no entries, nothing stored
    size: int
    entries: int


def commit(
    store: TenantImages,
    base: Image,
    layer_tar: Path,
    *,
    reference: str | None,
    comment: str = "",
    author: str = "",
    changes: ConfigChanges | None = None,
    created_by: str = "",
    limits: UnpackLimits | None = None,
) -> Image:
    """Store ``base`` + the layer ``layer_tar`` (a tar, compressed or not) as a new image.

    Tags ``reference`` if given. Without one, the image's blobs are stored but nothing points
    at them (``gc`` may remove them): the returned image's reference then names the base's
    repository with the new manifest digest, and the caller should tag it under its own
    ``store.lease()``. Blocking: call it in a thread from async code.
    """
    ref = parse(reference) if reference is not None else None
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    with store.lease():
        layer = _store_layer(store, layer_tar, limits or UnpackLimits())
        base_doc = oci.load_json(
            store.content.read(base.config_digest, oci.MAX_DOCUMENT_BYTES), "base image config"
        )
        base_config = oci.parse_config(oci.canonical_json(base_doc))
        if base_config.diff_ids != base.diff_ids:
            raise InvalidArgument(f"the config of {base.reference} does not match its layers")
        doc = _child_config(base_doc, base_config, layer, now, comment, author, created_by)
        if changes is not None:
            doc["config"] = changes.apply(doc.get("config") or {})
        config_blob = oci.canonical_json(doc)
        if len(config_blob) > oci.MAX_DOCUMENT_BYTES:
            raise InvalidArgument("the new image config is over the document size limit")
        parsed = oci.parse_config(config_blob)  # what every reader will see: check it now
        config = oci.Descriptor(oci.OCI_CONFIG, store.content.put(config_blob), len(config_blob))
        layers = [_oci_layer(d) for d in base.layers]
        if layer.digest is not None:
            layers.append(oci.Descriptor(oci.OCI_LAYER_GZIP, layer.digest, layer.size))
        manifest_blob = oci.encode_manifest(config, layers)
        digest = store.content.put(manifest_blob)
        if ref is not None:
            return store.tag(ref, digest)
        return Image(
            reference=Reference(base.reference.registry, base.reference.repository, None, digest),
            digest=digest,
            media_type=oci.OCI_MANIFEST,
            config_digest=config.digest,
            config=parsed.config,
            layers=tuple(layers),
            diff_ids=parsed.diff_ids,
            architecture=parsed.architecture,
            os=parsed.os,
        )


def _child_config(
    base_doc: dict[str, Any],
    base_config: oci.ConfigDocument,
    layer: _Layer,
    now: str,
    comment: str,
    author: str,
    created_by: str,
) -> dict[str, Any]:
    doc = copy.deepcopy(base_doc)
    history = doc.get("history")
    if not isinstance(history, list):
        created = {"created": base_config.created} if base_config.created else {}
        history = [dict(created) for _ in base_config.diff_ids]
    entry: dict[str, Any] = {"created": now}
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = author
        doc["author"] = author
    if layer.digest is None:
        entry["empty_layer"] = True
    doc["history"] = [*history, entry]
    rootfs = dict(doc["rootfs"])
    diff_ids = [str(d) for d in base_config.diff_ids]
    if layer.digest is not None:
        diff_ids.append(str(layer.diff_id))
    rootfs["diff_ids"] = diff_ids
    doc["rootfs"] = rootfs
    doc["created"] = now
    return doc


def _oci_layer(descriptor: oci.Descriptor) -> oci.Descriptor:
    """Docker's gzip layer type in an OCI manifest becomes OCI's (the same bytes)."""
    if descriptor.media_type == oci.DOCKER_LAYER:
        return oci.Descriptor(oci.OCI_LAYER_GZIP, descriptor.digest, descriptor.size)
    return descriptor


def _store_layer(store: TenantImages, path: Path, limits: UnpackLimits) -> _Layer:
    """Check, hash and gzip the layer in one pass; store the blob unless it has no entries."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    source = os.fdopen(fd, "rb")
    with source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        out = tempfile.NamedTemporaryFile(  # noqa: SIM115 (removed in the finally below)
            prefix="commit-", suffix=".tar.gz", dir=store.tmp_dir, delete=False
        )
        tmp = Path(out.name)
        try:
            with out:
                with (
                    decompressed(source) as plain,
                    gzip.GzipFile(
                        filename="", mode="wb", fileobj=out, mtime=0, compresslevel=_GZIP_LEVEL
                    ) as packed,
                ):
                    tee = _Tee(plain, packed, limits.stream_bytes)
                    entries = _check_layer(tee, limits)
                    tee.drain()
                out.flush()
                os.fsync(out.fileno())
            if entries == 0:
                return _Layer(tee.digest, None, 0, 0)
            with open(tmp, "rb") as blob:
                digest = store.content.ingest(blob)
            return _Layer(tee.digest, digest, store.content.size(digest), entries)
        finally:
            tmp.unlink(missing_ok=True)


class _Tee(DigestingReader):
    """Hashes and counts what is read (bounded), and copies every byte to ``sink``."""

    def __init__(self, source: Readable, sink: _Writable, limit: int) -> None:
        super().__init__(
            source,
            limit=limit,
            limit_error=lambda: InvalidArgument(f"the layer is over {limit} bytes uncompressed"),
        )
        self._sink = sink

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = super().readinto(buffer)
        if count:
            self._sink.write(memoryview(buffer).cast("B")[:count])
        return count


class _Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


def _check_layer(tee: _Tee, limits: UnpackLimits) -> int:
    """Read the whole archive through ``tee``, checking every entry; returns the entry count.

    Only the archive's structure stays in memory: the names of its non-directories (for hard
    links), bounded by ``limits.max_entries``."""
    buffered = io.BufferedReader(tee, _CHUNK)
    try:
        archive = tarfile.open(fileobj=buffered, mode="r|", tarinfo=BoundedTarInfo)  # noqa: SIM115
    except tarfile.ReadError as exc:
        if tee.count == 0:
            return 0  # an empty file: an empty layer
        raise InvalidArgument(f"the layer is not a tar archive: {exc}") from None
    entries = 0
    file_bytes = 0
    files: set[Parts] = set()
    try:
        with archive:
            while (member := archive.next()) is not None:
                archive.members.clear()  # type: ignore[attr-defined]
                entries += 1
                if entries > limits.max_entries:
                    raise InvalidArgument(f"the layer has over {limits.max_entries} entries")
                file_bytes += member.size if member.isreg() else 0
                if file_bytes > limits.max_bytes:
                    raise InvalidArgument(f"the layer holds over {limits.max_bytes} bytes")
                _check_member(member, files, limits)
                if member.isreg() and member.size:
                    data = archive.extractfile(member)
                    assert data is not None
                    while data.read(_CHUNK):
                        pass
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"the layer is not a valid tar archive: {exc}") from None
    return entries


def _check_member(member: tarfile.TarInfo, files: set[Parts], limits: UnpackLimits) -> None:
    name = member.name
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
        raise InvalidArgument(f"a path in the layer is over {limits.max_name_bytes} bytes")
    parts = split(name)
    if not parts:
        if not member.isdir():
            raise InvalidArgument(f"the layer's root {name!r} is not a directory")
        return
    last = parts[-1]
    if last.startswith(WHITEOUT_PREFIX):
        if not member.isreg():
            raise InvalidArgument(f"whiteout {show(parts)} is not a regular file")
        victim = last[len(WHITEOUT_PREFIX) :]
        if last != OPAQUE_MARKER and victim in ("", ".", ".."):
            raise InvalidArgument(f"invalid whiteout {show(parts)}")
        return
    if not (
        member.isreg()
        or member.isdir()
        or member.issym()
        or member.islnk()
        or member.ischr()
        or member.isblk()
        or member.isfifo()
    ):
        raise InvalidArgument(f"{show(parts)}: unsupported tar entry type {member.type!r}")
    if member.issym() or member.islnk():
        target = member.linkname
        if not target:
            raise InvalidArgument(f"{show(parts)}: a link with an empty target")
        if len(target.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
            raise InvalidArgument(f"{show(parts)}: a link target over the name limit")
    if member.islnk():
        linked = split(member.linkname)
        if linked not in files:
            raise InvalidArgument(
                f"{show(parts)}: hard link to {member.linkname!r}, which is not an earlier"
                " file of the layer"
            )
    if not member.isdir():
        files.add(parts)
    else:
        files.discard(parts)
