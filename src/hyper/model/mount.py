"""A volume mount of a container, as a user asks for it: ``-v SOURCE:TARGET[:ro|rw]``.

Three kinds, as with docker:

- ``NAME:/data``   a named volume (created with defaults if it does not exist);
- ``/data``        an anonymous volume, made for the pod and removed with it;
- ``/host:/data``  a host directory: for the local operator only (the service checks who asks).

The container path is validated here, before anything runs: absolute, no ``.`` or ``..``
component, not the root and not inside the file systems the agent mounts itself (/proc, /sys,
/dev). The guest agent checks it again and resolves it inside the container's root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from hyper.errors import InvalidArgument

MAX_PATH = 4096
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_RESERVED = ("proc", "sys", "dev")


class MountKind(Enum):
    VOLUME = "volume"
    ANONYMOUS = "anonymous"
    BIND = "bind"


@dataclass(frozen=True)
class Mount:
    source: str
    """A volume name, "" for an anonymous volume, or an absolute host path (a bind)."""
    target: str
    readonly: bool = False

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.kind is MountKind.VOLUME and not _NAME.fullmatch(self.source):
            raise InvalidArgument(
                f"volume name {self.source!r} is invalid: use letters, digits, '_', '.', '-'"
            )
        if self.kind is MountKind.BIND:
            check_host_path(self.source)

    @property
    def kind(self) -> MountKind:
        if not self.source:
            return MountKind.ANONYMOUS
        if self.source.startswith("/"):
            return MountKind.BIND
        return MountKind.VOLUME

    def __str__(self) -> str:
        text = f"{self.source}:{self.target}" if self.source else self.target
        return f"{text}:ro" if self.readonly else text


def parse_mount(text: str) -> Mount:
    """``/data``, ``/data:ro``, ``NAME:/data[:ro|rw]``, ``/host:/data[:ro|rw]``."""
    if not isinstance(text, str) or not text or len(text) > 2 * MAX_PATH:
        raise InvalidArgument(f"volume {text!r} is not SOURCE:TARGET[:ro] or TARGET")
    parts = text.split(":")
    readonly = False
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        readonly = parts.pop() == "ro"
    if len(parts) == 1:
        return Mount("", parts[0], readonly)
    if len(parts) == 2:
        return Mount(parts[0], parts[1], readonly)
    raise InvalidArgument(f"volume {text!r} is not SOURCE:TARGET[:ro] or TARGET")


def parse_mounts(values: object, where: str = "volumes") -> tuple[Mount, ...]:
    """A container's list of mounts; targets must be distinct."""
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"{where} must be a list of strings like NAME:/data[:ro]")
    mounts = tuple(parse_mount(v) for v in values)
    targets = [m.target for m in mounts]
    if len(set(targets)) != len(targets):
        raise InvalidArgument(f"{where}: two volumes on the same container path")
    return mounts


def check_target(path: str) -> str:
    components = _components(path, "container path")
    if not components:
        raise InvalidArgument("a volume cannot be mounted on the container's root")
    if components[0] in _RESERVED:
        raise InvalidArgument(f"a volume cannot be mounted under /{components[0]}")
    return path


def check_host_path(path: str) -> str:
    _components(path, "host path")
    return path


def _components(path: str, what: str) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
        raise InvalidArgument(f"{what} {path!r} must be an absolute path")
    if "\0" in path:
        raise InvalidArgument(f"{what} {path!r} contains a NUL byte")
    components = [c for c in path.split("/") if c]
    if any(c in (".", "..") or len(c.encode()) > 255 for c in components):
        raise InvalidArgument(f"{what} {path!r} must not contain '.' or '..' components")
    return components
