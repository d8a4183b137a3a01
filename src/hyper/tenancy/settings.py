"""The ``[tenancy]`` and ``[keystone]`` settings sections.

Written to move verbatim into :mod:`hyper.config.settings` (only the standard library and
:mod:`hyper.errors` are imported, the field types are those its loader knows: str, int, float,
bool, tuple of str); docs/tenancy.md lists the exact edits. Until then the tenancy code takes
these dataclasses as arguments and never reads a file.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from hyper.errors import InvalidArgument

_ROLES = ("member", "admin", "operator")
_QUOTAS = ("pods", "vcpus", "memory_mb", "volume_bytes", "snapshots", "fips", "networks")


@dataclass(frozen=True)
class TenancySettings:
    default_tenant: str = "default"
    """The tenant of the unix socket's operator when no ``--tenant`` is named; created at start."""
    quota_pods: int = 100
    """Default limits of every tenant without its own (``hyper quota set``); -1: unlimited."""
    quota_vcpus: int = 200
    quota_memory_mb: int = 400 * 1024
    quota_volume_bytes: int = 1 << 40
    quota_snapshots: int = 100
    quota_fips: int = 10
    quota_networks: int = 20

    def quota_defaults(self) -> dict[str, int]:
        return {name: getattr(self, f"quota_{name}") for name in _QUOTAS}

    def validate(self) -> TenancySettings:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", self.default_tenant):
            raise InvalidArgument("tenancy.default_tenant must be a valid tenant name")
        for name, value in self.quota_defaults().items():
            if not -1 <= value <= 1 << 62:
                raise InvalidArgument(f"tenancy.quota_{name} must be -1 (unlimited) or more")
        return self


@dataclass(frozen=True)
class KeystoneSettings:
    url: str = ""
    """Keystone's v3 endpoint, e.g. ``https://keystone.example:5000/v3``; empty: Keystone
    tokens are not accepted (only hyper access keys)."""
    username: str = ""
    """hyperd's service user, which validates the tokens callers present."""
    password: str = ""
    password_file: str = ""
    """A file holding the password (first line), instead of ``password`` in this file."""
    user_domain: str = "Default"
    project: str = "service"
    """The project the service token is scoped to."""
    project_domain: str = "Default"
    ca_file: str = ""
    """CA bundle to verify an https Keystone with; empty: the system's."""
    role_map: tuple[str, ...] = ("admin=admin", "member=member", "reader=member")
    """``keystone_role=our_role`` pairs; the highest role a token maps to wins. A token with no
    role that maps is refused (PermissionDenied)."""
    tenant_from: str = "id"
    """Which of the token's project becomes the tenant: "id" (stable) or "name"."""
    tenant_prefix: str = ""
    """Prepended to the project's id or name, e.g. ``ks-``, to keep local tenants apart."""
    cache_ttl: float = 30.0
    """Seconds a validated token is trusted without asking Keystone again (never beyond its
    expiry): also how long a revoked token may still be accepted. 0: ask every time."""
    cache_size: int = 4096
    timeout: float = 5.0
    """Seconds to wait for Keystone's answer."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def roles(self) -> dict[str, str]:
        """``role_map`` as a mapping (validated by :meth:`validate`)."""
        return dict(pair.split("=", 1) for pair in self.role_map)

    def validate(self) -> KeystoneSettings:
        if not self.url:
            return self
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidArgument("keystone.url must be an http(s) URL")
        if not self.username or not (self.password or self.password_file):
            raise InvalidArgument("keystone needs username and password (or password_file)")
        if self.password_file and not self.password_file.startswith("/"):
            raise InvalidArgument("keystone.password_file must be an absolute path")
        for pair in self.role_map:
            theirs, _, ours = pair.partition("=")
            if not theirs or ours not in _ROLES:
                raise InvalidArgument(
                    f"keystone.role_map: {pair!r} is not role=member|admin|operator"
                )
        if self.tenant_from not in ("id", "name"):
            raise InvalidArgument("keystone.tenant_from must be id or name")
        if not 0 <= self.cache_ttl <= 3600 or not 0 <= self.cache_size <= 1 << 20:
            raise InvalidArgument("keystone.cache_ttl must be in 0..3600, cache_size 0..1048576")
        if not 0 < self.timeout <= 120:
            raise InvalidArgument("keystone.timeout must be in (0, 120]")
        return self
