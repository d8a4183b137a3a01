"""The client's side of tenancy: where ``hyper`` keeps its endpoint and access key, and which
endpoint and credential one command uses.

``hyper config set`` writes ``client.toml`` (``$HYPER_CLIENT_CONFIG``, else
``$XDG_CONFIG_HOME/hyper/client.toml``, else ``~/.config/hyper/client.toml``), mode 0600 in a
0700 directory::

    endpoint = "https://hyperd.example:8443"
    key = "hk_0123456789abcdef_..."
    ca = "/home/me/.config/hyper/ca.pem"     # optional: the CA of hyperd's certificate

For one command, ``--key`` then ``$HYPER_KEY`` override the stored key, and ``-H`` then
``$HYPER_HOST`` the endpoint. The stored key is sent only to the stored endpoint: naming
another endpoint never leaks it there. A value of ``$HYPER_KEY`` that is a path (it starts with
``/``) is the TLS client key it used to be, not a credential.

Standard library only (no dataclasses: ``inspect`` alone costs ~15 ms), ``tomllib`` imported
only when a file exists: the CLI is on the hot
path of every ``hyper run``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from hyper import errors

FILE_NAME = "client.toml"
MAX_FILE = 64 << 10
MAX_VALUE = 8192
_KEYS = ("endpoint", "key", "ca")


class ClientConfig(NamedTuple):
    endpoint: str = ""
    key: str = ""
    """An access key (``hk_...``) or a Keystone token."""
    ca: str = ""


class Connection(NamedTuple):
    """What one command connects to, and with which credential ("": none)."""

    endpoint: str
    """"" means the local socket of the settings file (the caller resolves it)."""
    key: str = ""
    ca: str = ""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    explicit = env.get("HYPER_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return Path(os.path.expanduser(base)) / "hyper" / FILE_NAME


def load(path: Path) -> ClientConfig:
    """The stored configuration; empty when there is no file. A file that others may read is
    refused while it holds a key (like ssh does with private keys)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ClientConfig()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        data = handle.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise errors.InvalidArgument(f"{path} is larger than {MAX_FILE} bytes")
    import tomllib

    try:
        document = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.InvalidArgument(f"{path}: {exc}") from None
    values: dict[str, str] = {}
    for name, value in document.items():
        if name not in _KEYS:
            raise errors.InvalidArgument(f"{path}: unknown key {name!r} (use {', '.join(_KEYS)})")
        values[name] = _check(name, value, str(path))
    config = ClientConfig(**values)
    if config.key and (not stat.S_ISREG(mode) or mode & 0o077):
        raise errors.InvalidArgument(f"{path} holds a key but others may read it: chmod 600 {path}")
    return config


def save(path: Path, config: ClientConfig) -> None:
    """Write ``config`` whole (a temporary file renamed over the old one), mode 0600."""
    import json

    from hyper.images.files import atomic_write  # not on the hot path of every command

    lines = []
    for name in _KEYS:
        value = _check(name, getattr(config, name), "the configuration")
        if value:
            lines.append(f"{name} = {json.dumps(value)}")  # ASCII-only: JSON's escapes are TOML's
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_write(path, mode=0o600) as handle:
        handle.write(("\n".join(lines) + "\n").encode())


def resolve(
    *,
    host: str | None,
    key: str | None,
    env: Mapping[str, str] | None = None,
    stored: ClientConfig | None = None,
) -> Connection:
    """The endpoint and credential of one command, from its ``-H``/``--key`` options, the
    environment and the stored configuration (in that order of precedence)."""
    env = os.environ if env is None else env
    stored = stored or ClientConfig()
    endpoint = host or env.get("HYPER_HOST") or ""
    ca = env.get("HYPER_CA") or ""
    from_file = not endpoint or endpoint == stored.endpoint
    if not endpoint:
        endpoint = stored.endpoint
    if from_file:
        ca = ca or stored.ca
    credential = key or _env_key(env)
    if not credential and from_file:
        credential = stored.key
    if credential:
        _check("key", credential, "--key/$HYPER_KEY")
    return Connection(endpoint=endpoint, key=credential, ca=ca)


def authorization(connection: Connection) -> dict[str, str]:
    """The header that carries the credential ({} when there is none)."""
    return {"Authorization": f"Bearer {connection.key}"} if connection.key else {}


def mask(key: str) -> str:
    """A key as ``hyper config show`` prints it: an access key's id (not secret) and no more
    of its secret than its first 4 characters; 4 characters of any other token."""
    if not key:
        return ""
    if key.startswith("hk_") and key.count("_") == 2:
        prefix, key_id, secret = key.split("_")
        return f"{prefix}_{key_id}_{secret[:4]}…"
    return f"{key[:4]}…"


def _env_key(env: Mapping[str, str]) -> str:
    value = env.get("HYPER_KEY", "")
    return "" if value.startswith("/") else value


def _check(name: str, value: object, where: str) -> str:
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"{where}: {name} must be a string")
    if len(value) > MAX_VALUE or not (value.isascii() and value.isprintable()):
        raise errors.InvalidArgument(f"{where}: {name} must be printable ASCII, at most 8 KiB")
    if name == "key" and " " in value:
        raise errors.InvalidArgument(f"{where}: a key has no spaces")
    if name == "ca" and value and not value.startswith("/"):
        raise errors.InvalidArgument(f"{where}: ca must be an absolute path")
    return value
