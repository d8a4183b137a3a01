"""Typed settings of the host side: loaded once, validated at load, unknown keys rejected."""

from hyper.config.settings import (
    ContainerSettings,
    GuestSettings,
    Paths,
    Settings,
    VmSettings,
    load,
)

__all__ = ["ContainerSettings", "GuestSettings", "Paths", "Settings", "VmSettings", "load"]
