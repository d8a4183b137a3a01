"""``spec.json``: what hyperd asks a shim to run, read by the shim from its pod state directory.

A file rather than arguments, so a shim started by one hyperd and adopted by the next is
described by its directory alone::

    {"id": "<64 hex>", "pod": <pod file format>, "restart": {"policy": "no", "max_retries": 0},
     "console": {"rows": 24, "cols": 80}, "log": {"max_bytes": 10485760, "max_files": 3},
     "volumes": [<hyper.volumes.Attachment as a dict>, ...],
     "network": {"tap": "hyt0123456789ab", <SetupNetwork.to_wire()>} | absent: no NIC}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyper.errors import InvalidArgument
from hyper.images.digest import Digest
from hyper.model.pod import PodSpec, check_name, pod_from_dict
from hyper.model.restart import RestartPolicy
from hyper.sandbox.nic import NetworkAttachment
from hyper.volumes.attachment import Attachment

SPEC_NAME = "spec.json"
_POD_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LogOptions:
    max_bytes: int = 10 * 1024 * 1024
    max_files: int = 3


@dataclass(frozen=True)
class ShimSpec:
    id: str
    pod: PodSpec
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    rows: int = 24
    cols: int = 80
    log: LogOptions = field(default_factory=LogOptions)
    volumes: tuple[Attachment, ...] = ()
    network: NetworkAttachment | None = None
    tenant: str = ""
    """The pod's tenant: it clones only its own tenant's templates when they are not shared."""
    images: dict[str, Digest] = field(default_factory=dict)
    """Container name -> the manifest digest its image had when the pod was created: the pod
    runs exactly those (an image name means something only within the pod's tenant)."""

    def to_dict(self) -> dict[str, Any]:
        network = {"network": self.network.to_dict()} if self.network else {}
        return {
            **network,
            "id": self.id,
            "pod": self.pod.to_dict(),
            "restart": self.restart.to_dict(),
            "console": {"rows": self.rows, "cols": self.cols},
            "log": {"max_bytes": self.log.max_bytes, "max_files": self.log.max_files},
            "volumes": [v.to_dict() for v in self.volumes],
            "images": {name: str(digest) for name, digest in self.images.items()},
            "tenant": self.tenant,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShimSpec:
        if not isinstance(data, dict):
            raise InvalidArgument(f"{SPEC_NAME} must hold an object")
        pod_id = data.get("id")
        if not isinstance(pod_id, str) or not _POD_ID.fullmatch(pod_id):
            raise InvalidArgument(f"{SPEC_NAME}: id must be 64 lowercase hex digits")
        pod = pod_from_dict(data.get("pod"), default_name=f"pod-{pod_id[:12]}")
        restart = RestartPolicy.from_dict(data.get("restart", {}))
        console = data.get("console", {})
        log = data.get("log", {})
        if not isinstance(console, dict) or not isinstance(log, dict):
            raise InvalidArgument(f"{SPEC_NAME}: console and log must be objects")
        return cls(
            id=pod_id,
            pod=pod,
            restart=restart,
            rows=_int(console, "rows", 24, 1, 65535),
            cols=_int(console, "cols", 80, 1, 65535),
            log=LogOptions(
                max_bytes=_int(log, "max_bytes", LogOptions.max_bytes, 4096, 1 << 40),
                max_files=_int(log, "max_files", LogOptions.max_files, 1, 1000),
            ),
            volumes=_volumes(data.get("volumes", [])),
            network=(NetworkAttachment.from_dict(data["network"]) if data.get("network") else None),
            images=_images(data.get("images", {}), pod),
            tenant=_tenant(data.get("tenant", "")),
        )


def _volumes(data: Any) -> tuple[Attachment, ...]:
    if not isinstance(data, list):
        raise InvalidArgument(f"{SPEC_NAME}: volumes must be a list")
    return tuple(Attachment.from_dict(item) for item in data)


def _images(data: Any, pod: PodSpec) -> dict[str, Digest]:
    if not isinstance(data, dict):
        raise InvalidArgument(f"{SPEC_NAME}: images must be an object")
    names = {c.name for c in pod.containers}
    found = {}
    for name, digest in data.items():
        if name not in names or not isinstance(digest, str):
            raise InvalidArgument(f"{SPEC_NAME}: images names a container the pod has not")
        found[name] = Digest.parse(digest)
    return found


def _tenant(data: Any) -> str:
    if not isinstance(data, str):
        raise InvalidArgument(f"{SPEC_NAME}: tenant must be a string")
    return check_name(data, "tenant") if data else ""


def _int(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{SPEC_NAME}: {key} must be a whole number in {low}..{high}")
    return value


def read_spec(pod_state_dir: Path) -> ShimSpec:
    path = pod_state_dir / SPEC_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgument(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from None
    return ShimSpec.from_dict(data)


def write_spec(pod_state_dir: Path, spec: ShimSpec) -> None:
    """For hyperd (and tests): write ``spec.json`` into an existing pod state directory."""
    path = pod_state_dir / SPEC_NAME
    tmp = path.with_name(f".{SPEC_NAME}.tmp")
    tmp.write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
    tmp.chmod(0o600)
    tmp.rename(path)
