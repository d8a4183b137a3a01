"""The guest artifacts: the kernel and the initramfs (with hyperstart) that every VM boots.

See ``docs/guest.md`` for the theory of operation.
"""

from hyper.guest.artifacts import GuestArtifacts, build, describe, resolve

__all__ = ["GuestArtifacts", "build", "describe", "resolve"]
