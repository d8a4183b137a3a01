"""The settings of hyper, one typed dataclass per subsystem.

The file is TOML (``/etc/hyper/config.toml`` unless the front end names another). Every key is
checked at load: an unknown key or a value of the wrong type is an error that names the key, so a
typo never silently falls back to a default. Nothing below the front ends reads the environment;
the front end decides which file to load and passes the settings down.

Example::

    [paths]
    state_dir = "/var/lib/hyper"

    [vm]
    accelerator = "auto"      # "auto", "kvm" or "tcg"
    memory_mb = 256
    cpus = 1

    [guest]
    kernel = "/boot/my-vmlinux"   # bring your own kernel (and initrd); empty: the built default
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyper.errors import InvalidArgument

DEFAULT_FILE = Path("/etc/hyper/config.toml")


@dataclass(frozen=True)
class Paths:
    state_dir: Path = Path("/var/lib/hyper")
    """Images, pods' persistent files."""
    run_dir: Path = Path("/run/hyper")
    """Sockets and per-pod runtime directories; gone at reboot."""
    cache_dir: Path = Path("/var/cache/hyper")
    """Guest kernel, initramfs, accelerator probe result: rebuilt when missing."""

    @property
    def images(self) -> Path:
        return self.state_dir / "images"

    @property
    def pods(self) -> Path:
        return self.run_dir / "pods"

    @property
    def guest(self) -> Path:
        return self.cache_dir / "guest"


@dataclass(frozen=True)
class VmSettings:
    qemu: str = "qemu-system-x86_64"
    accelerator: str = "auto"
    """"auto" probes KVM with the configured guest and falls back to TCG; "kvm" or "tcg" force."""
    memory_mb: int = 256
    cpus: int = 1
    boot_timeout: float = 60.0
    """Seconds from QEMU's start to the agent's answer before a boot counts as failed."""
    kvm_probe_timeout: float = 8.0


@dataclass(frozen=True)
class GuestSettings:
    kernel: str = ""
    """Path of a guest kernel to use instead of the built default (bring your own kernel)."""
    initrd: str = ""
    """Path of an initramfs holding hyperstart, to use with ``kernel``."""
    append: str = ""
    """Extra kernel command-line arguments."""
    debian_kernel_package: str = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class ContainerSettings:
    stop_timeout: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a container is stopped."""
    scratch_mb: int = 128
    """Size bound of a container's writable layer."""


@dataclass(frozen=True)
class Settings:
    paths: Paths = field(default_factory=Paths)
    vm: VmSettings = field(default_factory=VmSettings)
    guest: GuestSettings = field(default_factory=GuestSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)

    def validate(self) -> Settings:
        if self.vm.accelerator not in ("auto", "kvm", "tcg"):
            raise InvalidArgument(
                f"vm.accelerator must be auto, kvm or tcg, not {self.vm.accelerator!r}"
            )
        if not 64 <= self.vm.memory_mb <= 1 << 20:
            raise InvalidArgument("vm.memory_mb must be between 64 and 1048576")
        if not 1 <= self.vm.cpus <= 255:
            raise InvalidArgument("vm.cpus must be between 1 and 255")
        if bool(self.guest.kernel) != bool(self.guest.initrd):
            raise InvalidArgument("guest.kernel and guest.initrd are configured together")
        return self


_SECTIONS: dict[str, type[Any]] = {
    "paths": Paths,
    "vm": VmSettings,
    "guest": GuestSettings,
    "container": ContainerSettings,
}


def from_dict(data: dict[str, Any]) -> Settings:
    """Build settings from a parsed document (the file, or an API payload)."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise InvalidArgument(f"unknown configuration section [{name}]")
        if not isinstance(value, dict):
            raise InvalidArgument(f"[{name}] must be a table")
        sections[name] = _section(cls, name, value)
    return Settings(**sections).validate()


def _section(cls: type[Any], name: str, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise InvalidArgument(f"unknown configuration key {name}.{key}")
        expected = type(getattr(defaults, key))
        if issubclass(expected, Path):
            if not isinstance(value, str) or not value.startswith("/"):
                raise InvalidArgument(f"{name}.{key} must be an absolute path")
            value = Path(value)
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise InvalidArgument(
                f"{name}.{key} must be of type {expected.__name__}, not {type(value).__name__}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def load(path: Path | None = None) -> Settings:
    """Load the settings file; a missing default file means all defaults."""
    target = path or DEFAULT_FILE
    try:
        with open(target, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if path is not None:
            raise InvalidArgument(f"configuration file {path} does not exist") from None
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{target}: {exc}") from None
    return from_dict(data)
