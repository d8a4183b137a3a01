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

    [daemon]
    socket = "/run/hyper/hyperd.sock"
    tcp = "0.0.0.0:8443"          # optional; TLS only
    tls_cert = "/etc/hyper/tls/cert.pem"
    tls_key = "/etc/hyper/tls/key.pem"

    [template]
    boot = "template"             # clone VM templates ("cold": boot every VM)
    memory_dir = "/dev/shm/hyper" # templates' RAM files (tmpfs)

    [registry]
    insecure = ["localhost:5000"]  # plain HTTP for these registries only
    ca_dir = "/etc/hyper/certs.d"  # <ca_dir>/<host:port>/ca.crt, like docker's certs.d
    max_concurrent_downloads = 3

    [network]
    prefix = "hy"                 # our bridges and taps start with this (default: from state_dir)
    table = "hyper"               # the nftables tables hyperd owns (default: from state_dir)
    subnet_pool = "10.88.0.0/16"  # automatic subnets are carved from here
    uplink = "eth0"               # NAT and floating IPs leave here; empty: the default route's
    fip_pool = ["203.0.113.16/28"]

    [tenancy]
    default_tenant = "default"    # the unix socket's tenant; created at start
    quota_pods = 100              # limits of tenants without their own (hyper quota set); -1: none
    quota_vcpus = 200
    quota_memory_mb = 409600
    quota_volume_bytes = 1099511627776
    quota_snapshots = 100
    quota_fips = 10
    quota_networks = 20

    [keystone]
    url = "https://keystone.example:5000/v3"   # empty: Keystone tokens are not accepted
    username = "hyperd"
    password_file = "/etc/hyper/keystone.password"
    project = "service"
    role_map = ["admin=admin", "member=member", "reader=member"]
    tenant_from = "id"            # or "name"
    cache_ttl = 30.0              # how long a revoked token may still be accepted

Every key is documented on its dataclass field below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import tomllib
import urllib.parse
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
class TemplateSettings:
    boot: str = "template"
    """How pods start: "template" clones a VM template of the pod's shape (built on first need;
    a cold boot when no template can be used, with the reason logged), "cold" boots every VM.
    A pod labelled ``hyper.boot=cold`` boots cold whatever this says."""
    memory_dir: str = ""
    """Where templates' RAM files live (a tmpfs, e.g. /dev/shm/hyper); empty: in the template's
    directory under ``paths.run_dir`` (a tmpfs when that is /run)."""
    share_across_tenants: bool = True
    """False: pods of different tenants never clone the same template, so no guest memory is
    shared between tenants (docs/templates.md)."""


@dataclass(frozen=True)
class DaemonSettings:
    socket: Path = Path("/run/hyper/hyperd.sock")
    """hyperd's unix socket (mode 0600: the local operator). Clients: ``-H`` or $HYPER_HOST."""
    tcp: str = ""
    """``host:port`` to also serve the API on TCP; needs ``tls_cert`` and ``tls_key``."""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    """When set, TCP clients must present a certificate signed by this CA."""
    log_max_bytes: int = 10 << 20
    """Size at which a container's log file is rotated."""
    log_max_files: int = 3
    """Rotated log files kept per container, the current one included."""
    start_timeout: float = 120.0
    """Seconds a pod's supervisor may take to boot the VM and start the containers."""


@dataclass(frozen=True)
class RegistrySettings:
    insecure: tuple[str, ...] = ()
    """Registries (``host[:port]``, as in image references) reached over plain HTTP."""
    ca_dir: Path = Path("/etc/hyper/certs.d")
    """Extra trust per registry, like docker's certs.d: ``<ca_dir>/<host[:port]>/*.crt`` are CA
    certificates, ``client.cert`` + ``client.key`` a client certificate."""
    auth_file: str = ""
    """Credentials, in docker's config.json format (0600); empty: ``<state_dir>/auth.json``."""
    max_concurrent_downloads: int = 3
    """Layers fetched at once by one pull."""


@dataclass(frozen=True)
class NetworkSettings:
    """Pod networking (docs/network.md). Every host object hyperd makes carries ``prefix`` or
    lives in ``table``, so several hyperds (tests) share a host without touching each other."""

    enabled: bool = True
    """False: pods get no NIC unless a network is named (and none can be created)."""
    prefix: str = ""
    """Start of the names of our links (``<prefix>b<id>`` bridges, ``<prefix>t<id>`` taps):
    1-5 of [a-z0-9], so a name fits the kernel's 15 characters. Empty: ``h`` and 4 hex digits
    of a hash of ``paths.state_dir`` (stable across restarts; two hyperds with different state
    never share a name). Use `network_settings` to read it."""
    table: str = ""
    """The nftables tables (families inet and bridge) that hyperd owns and rewrites whole.
    Empty: ``hyper_`` and 8 hex digits of the same hash."""
    subnet_pool: str = "10.88.0.0/16"
    """IPv4 range from which networks created without a subnet get theirs."""
    subnet_prefix: int = 24
    """Prefix length of automatic subnets."""
    uplink: str = ""
    """Interface that NATed and floating-IP traffic leaves by; empty: the default route's."""
    fip_pool: tuple[str, ...] = ()
    """Public addresses tenants may allocate as floating IPs: CIDRs or ``first-last`` ranges."""
    dns: bool = True
    """Run a dnsmasq per network (on its gateway address) so containers resolve each other."""
    dnsmasq: str = "dnsmasq"
    upstream_dns: tuple[str, ...] = ()
    """Servers dnsmasq forwards other names to; empty: the host's /etc/resolv.conf."""


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
    refused_credentials: int = 20
    """Refused credentials (keys, Keystone tokens) one address may present over TCP per
    ``refused_credentials_window`` seconds; then it is answered 429 until it may retry. 0: no
    limit."""
    refused_credentials_window: float = 60.0

    def quota_defaults(self) -> dict[str, int]:
        return {name: getattr(self, f"quota_{name}") for name in _QUOTAS}

    def validate(self) -> TenancySettings:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", self.default_tenant):
            raise InvalidArgument("tenancy.default_tenant must be a valid tenant name")
        for name, value in self.quota_defaults().items():
            if not -1 <= value <= 1 << 62:
                raise InvalidArgument(f"tenancy.quota_{name} must be -1 (unlimited) or more")
        if not 0 <= self.refused_credentials <= 1 << 20:
            raise InvalidArgument("tenancy.refused_credentials must be 0 (no limit) or more")
        if not 1 <= self.refused_credentials_window <= 86400:
            raise InvalidArgument("tenancy.refused_credentials_window must be 1..86400 seconds")
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


@dataclass(frozen=True)
class Settings:
    paths: Paths = field(default_factory=Paths)
    vm: VmSettings = field(default_factory=VmSettings)
    guest: GuestSettings = field(default_factory=GuestSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)
    template: TemplateSettings = field(default_factory=TemplateSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    tenancy: TenancySettings = field(default_factory=TenancySettings)
    keystone: KeystoneSettings = field(default_factory=KeystoneSettings)

    @property
    def auth_file(self) -> Path:
        """Where registry credentials are kept."""
        return Path(self.registry.auth_file or self.paths.state_dir / "auth.json")

    def validate(self) -> Settings:
        if self.vm.accelerator not in ("auto", "kvm", "tcg"):
            raise InvalidArgument(
                f"vm.accelerator must be auto, kvm or tcg, not {self.vm.accelerator!r}"
            )
        if not 64 <= self.vm.memory_mb <= 1 << 20:
            raise InvalidArgument("vm.memory_mb must be between 64 and 1048576")
        if not 1 <= self.vm.cpus <= 255:
            raise InvalidArgument("vm.cpus must be between 1 and 255")
        if self.daemon.tcp and not (self.daemon.tls_cert and self.daemon.tls_key):
            raise InvalidArgument("daemon.tcp needs daemon.tls_cert and daemon.tls_key")
        if self.daemon.log_max_bytes < 4096 or not 1 <= self.daemon.log_max_files <= 100:
            raise InvalidArgument("daemon.log_max_bytes >= 4096, daemon.log_max_files 1..100")
        if self.template.boot not in ("template", "cold"):
            raise InvalidArgument(
                f"template.boot must be template or cold, not {self.template.boot!r}"
            )
        if self.template.memory_dir and not self.template.memory_dir.startswith("/"):
            raise InvalidArgument("template.memory_dir must be an absolute path")
        if bool(self.guest.kernel) != bool(self.guest.initrd):
            raise InvalidArgument("guest.kernel and guest.initrd are configured together")
        if not 1 <= self.registry.max_concurrent_downloads <= 32:
            raise InvalidArgument("registry.max_concurrent_downloads must be between 1 and 32")
        if self.registry.auth_file and not self.registry.auth_file.startswith("/"):
            raise InvalidArgument("registry.auth_file must be an absolute path")
        _validate_network(self.network)
        self.tenancy.validate()
        self.keystone.validate()
        return self


def network_settings(settings: Settings) -> NetworkSettings:
    """``settings.network`` with the names derived from the state directory filled in."""
    net = settings.network
    digest = hashlib.sha256(str(settings.paths.state_dir).encode()).hexdigest()
    return dataclasses.replace(
        net, prefix=net.prefix or f"h{digest[:4]}", table=net.table or f"hyper_{digest[:8]}"
    )


def _validate_network(net: NetworkSettings) -> None:
    if net.prefix and not re.fullmatch(r"[a-z][a-z0-9]{0,4}", net.prefix):
        raise InvalidArgument("network.prefix must be 1-5 of [a-z0-9], starting with a letter")
    if net.table and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", net.table):
        raise InvalidArgument("network.table must be 1-32 of [A-Za-z0-9_], starting with a letter")
    if net.uplink and not re.fullmatch(r"[A-Za-z0-9_.@-]{1,15}", net.uplink):
        raise InvalidArgument("network.uplink must be an interface name")
    try:
        pool = ipaddress.IPv4Network(net.subnet_pool)
    except ValueError as exc:
        raise InvalidArgument(f"network.subnet_pool: {exc}") from None
    if not pool.prefixlen <= net.subnet_prefix <= 29:
        raise InvalidArgument(f"network.subnet_prefix must be in {pool.prefixlen}..29")
    for entry in (*net.fip_pool, *net.upstream_dns):
        try:
            if "-" in entry:
                first, last = (ipaddress.IPv4Address(a.strip()) for a in entry.split("-", 1))
                if last < first:
                    raise ValueError("the range ends before it starts")
            elif entry in net.upstream_dns:
                ipaddress.IPv4Address(entry)
            else:
                ipaddress.IPv4Network(entry)
        except ValueError as exc:
            raise InvalidArgument(
                f"network: {entry!r} is not an IPv4 address or range: {exc}"
            ) from None


_SECTIONS: dict[str, type[Any]] = {
    "paths": Paths,
    "vm": VmSettings,
    "guest": GuestSettings,
    "container": ContainerSettings,
    "template": TemplateSettings,
    "daemon": DaemonSettings,
    "registry": RegistrySettings,
    "network": NetworkSettings,
    "tenancy": TenancySettings,
    "keystone": KeystoneSettings,
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
        elif expected is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"{name}.{key} must be a list of strings")
            value = tuple(value)
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
