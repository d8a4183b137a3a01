"""The OCI image format (and Docker's schema 2, its twin): media types, descriptors, manifests,
indexes and image configs, decoded from untrusted JSON and encoded canonically.

Decoding checks types and shapes and raises InvalidArgument naming the offending field; nothing
here touches the disk or the network.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyper.errors import InvalidArgument, NotFound
from hyper.images.digest import Digest

MAX_DOCUMENT_BYTES = 4 << 20
"""Manifests, indexes and configs larger than this are refused before they are parsed."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        DOCKER_LAYER,
    }
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: what it is, its digest and its size."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        return out


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and the layers, lowest first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Index:
    """An image index (a manifest list): one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageConfig:
    """How to run the image: the ``config`` object of an image config document."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigDocument:
    """An image config document: the run config plus the layers' uncompressed digests."""

    config: ImageConfig
    diff_ids: tuple[Digest, ...]
    architecture: str = ""
    os: str = ""
    created: str | None = None


def host_platform() -> Platform:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return Platform("linux", arch)


# -- decoding -------------------------------------------------------------------------------


def load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{what} is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES} limit")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return doc


def parse_descriptor(doc: Any, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} must be an object")
    media_type = _str(doc, "mediaType", what, required=True)
    digest = doc.get("digest")
    if not isinstance(digest, str):
        raise InvalidArgument(f"{what}.digest must be a string")
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}.size must be a non-negative integer")
    plat = doc.get("platform")
    parsed_platform = None
    if plat is not None:
        if not isinstance(plat, dict):
            raise InvalidArgument(f"{what}.platform must be an object")
        parsed_platform = Platform(
            _str(plat, "os", f"{what}.platform"),
            _str(plat, "architecture", f"{what}.platform"),
            _str(plat, "variant", f"{what}.platform"),
        )
    return Descriptor(
        media_type,
        Digest.parse(digest),
        size,
        _str_map(doc.get("annotations"), f"{what}.annotations"),
        parsed_platform,
    )


def parse_manifest_or_index(data: bytes, media_type: str = "") -> Manifest | Index:
    """Decode a manifest or an index; ``media_type`` is what the pointing descriptor said."""
    doc = load_json(data, "manifest")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument("manifest: only schemaVersion 2 is supported")
    declared = _str(doc, "mediaType", "manifest")
    if declared and media_type and declared != media_type:
        raise InvalidArgument(
            f"manifest says it is {declared!r} but was referenced as {media_type!r}"
        )
    kind = declared or media_type or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    annotations = _str_map(doc.get("annotations"), "manifest.annotations")
    if kind in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidArgument("index.manifests must be a list")
        return Index(
            kind,
            tuple(parse_descriptor(d, f"index.manifests[{i}]") for i, d in enumerate(entries)),
            annotations,
        )
    if kind not in MANIFEST_TYPES:
        raise InvalidArgument(f"unsupported manifest media type {kind!r}")
    config = parse_descriptor(doc.get("config"), "manifest.config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidArgument(f"manifest.config: {config.media_type!r} is not an image config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument("manifest.layers must be a list")
    parsed = tuple(parse_descriptor(d, f"manifest.layers[{i}]") for i, d in enumerate(layers))
    for i, layer in enumerate(parsed):
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(
                f"manifest.layers[{i}]: unsupported layer media type {layer.media_type!r}"
            )
    return Manifest(kind, config, parsed, annotations)


def parse_config(data: bytes) -> ConfigDocument:
    doc = load_json(data, "image config")
    run = doc.get("config") or {}
    if not isinstance(run, dict):
        raise InvalidArgument("image config: config must be an object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument("image config: rootfs.type must be 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidArgument("image config: rootfs.diff_ids must be a list of digests")
    created = doc.get("created")
    return ConfigDocument(
        ImageConfig(
            entrypoint=_str_list(run.get("Entrypoint"), "config.Entrypoint"),
            cmd=_str_list(run.get("Cmd"), "config.Cmd"),
            env=_str_list(run.get("Env"), "config.Env"),
            working_dir=_str(run, "WorkingDir", "config"),
            user=_str(run, "User", "config"),
            labels=_str_map(run.get("Labels"), "config.Labels"),
            stop_signal=_str(run, "StopSignal", "config"),
            exposed_ports=_keys(run.get("ExposedPorts"), "config.ExposedPorts"),
            volumes=_keys(run.get("Volumes"), "config.Volumes"),
        ),
        tuple(Digest.parse(d) for d in diff_ids),
        _str(doc, "architecture", "image config"),
        _str(doc, "os", "image config"),
        created if isinstance(created, str) else None,
    )


def select_platform(index: Index, wanted: Platform | None = None) -> Descriptor:
    """The index entry for ``wanted`` (the host by default): os and architecture must match."""
    wanted = wanted or host_platform()
    for entry in index.manifests:
        plat = entry.platform
        if (
            entry.media_type in MANIFEST_TYPES
            and plat is not None
            and (plat.os, plat.architecture) == (wanted.os, wanted.architecture)
        ):
            return entry
    raise NotFound(f"the image index has no manifest for {wanted.os}/{wanted.architecture}")


# -- encoding -------------------------------------------------------------------------------


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def encode_config(document: ConfigDocument) -> bytes:
    config = document.config
    run: dict[str, Any] = {}
    if config.entrypoint:
        run["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        run["Cmd"] = list(config.cmd)
    if config.env:
        run["Env"] = list(config.env)
    if config.working_dir:
        run["WorkingDir"] = config.working_dir
    if config.user:
        run["User"] = config.user
    if config.labels:
        run["Labels"] = dict(config.labels)
    if config.stop_signal:
        run["StopSignal"] = config.stop_signal
    if config.exposed_ports:
        run["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    if config.volumes:
        run["Volumes"] = {volume: {} for volume in config.volumes}
    doc: dict[str, Any] = {
        "architecture": document.architecture,
        "os": document.os,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [str(d) for d in document.diff_ids]},
    }
    if document.created is not None:
        doc["created"] = document.created
    return canonical_json(doc)


def encode_manifest(
    config: Descriptor, layers: Sequence[Descriptor], annotations: Mapping[str, str] | None = None
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


# -- field helpers --------------------------------------------------------------------------


def _str(doc: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}.{key} must be a string")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return tuple(value)


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{what} must be an object of strings")
    return dict(value)


def _keys(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object")
    return tuple(sorted(value))
