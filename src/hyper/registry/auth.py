"""Registry credentials and authentication: docker's config.json, Basic, and the bearer-token flow.

The credentials file has docker's ``~/.docker/config.json`` format, so one written by
``docker login`` can be used as it is (``registry.auth_file``) and ours can be read by docker::

    {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 of user:password>"},
               "127.0.0.1:5000": {"auth": "..."}}}

Keys are matched the way docker does it: with or without ``https://``/``http://`` and a path,
and Docker Hub's many names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``) are
one. Other top-level keys (``credsStore``, ``credHelpers``, ``HttpHeaders``...) are kept as they
are when the file is rewritten; credential helpers themselves are not run. The file is replaced
atomically and is always 0600.

Authentication follows the distribution spec: a request goes out as it is; a 401 carries
``WWW-Authenticate`` challenges; for ``Basic`` the request is repeated with the credentials, for
``Bearer realm=...,service=...,scope=...`` a token is fetched from the realm (with the
credentials if there are any, anonymously otherwise) for the scopes needed and the request is
repeated with it. Tokens are cached per scope set until they expire.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyper.errors import Internal, InvalidArgument

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
MAX_AUTH_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password in a traceback or a log
        return f"Credentials(username={self.username!r}, password=***)"

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def normalize_registry(name: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://host:5000/x`` -> ``host:5000``."""
    text = name.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.split("/", 1)[0].lower()
    return "docker.io" if text in _HUB_NAMES else text


def _key_for(registry: str) -> str:
    host = normalize_registry(registry)
    return DOCKER_HUB_KEY if host == "docker.io" else host


class AuthFile:
    """The credentials file (docker config.json format)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(self, registry: str) -> Credentials | None:
        wanted = normalize_registry(registry)
        for key, entry in self._auths(self._read()).items():
            if normalize_registry(key) == wanted:
                return _decode_entry(key, entry, self.path)
        return None

    def registries(self) -> list[str]:
        return sorted({normalize_registry(k) for k in self._auths(self._read())})

    def store(self, registry: str, credentials: Credentials) -> None:
        if ":" in credentials.username:
            raise InvalidArgument("a username must not contain ':'")
        with self._lock:
            doc = self._read()
            auths = self._auths(doc)
            wanted = normalize_registry(registry)
            for key in [k for k in auths if normalize_registry(k) == wanted]:
                del auths[key]
            raw = f"{credentials.username}:{credentials.password}".encode()
            auths[_key_for(registry)] = {"auth": base64.b64encode(raw).decode()}
            doc["auths"] = auths
            self._write(doc)

    def remove(self, registry: str) -> bool:
        """Forget the credentials of ``registry``; False if there were none."""
        with self._lock:
            doc = self._read()
            auths = self._auths(doc)
            wanted = normalize_registry(registry)
            keys = [k for k in auths if normalize_registry(k) == wanted]
            for key in keys:
                del auths[key]
            if keys:
                doc["auths"] = auths
                self._write(doc)
            return bool(keys)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_AUTH_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        if len(data) > MAX_AUTH_FILE_BYTES:
            raise Internal(f"the credentials file {self.path} is over {MAX_AUTH_FILE_BYTES} bytes")
        if not data.strip():
            return {}
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise Internal(f"the credentials file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Internal(f"the credentials file {self.path} must hold a JSON object")
        return doc

    def _auths(self, doc: dict[str, Any]) -> dict[str, Any]:
        auths = doc.get("auths", {})
        if not isinstance(auths, dict):
            raise Internal(f"the credentials file {self.path}: 'auths' must be an object")
        return dict(auths)

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, indent="\t")
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _decode_entry(key: str, entry: Any, path: Path) -> Credentials | None:
    if not isinstance(entry, dict):
        raise Internal(f"the credentials file {path}: auths[{key!r}] must be an object")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Internal(
                f"the credentials file {path}: auths[{key!r}].auth is not base64"
            ) from None
        if not sep:
            raise Internal(f"the credentials file {path}: auths[{key!r}].auth lacks ':'")
        return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


# -- challenges ---------------------------------------------------------------------------

_TOKEN68 = r"[A-Za-z0-9._~+/-]+=*"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*(,|$)")
_SCHEME = re.compile(rf"\s*,*\s*({_TOKEN})(?:\s+|$)")


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235; quoted strings may hold commas)."""
    found = []
    for header in headers:
        text = header
        while text.strip(" ,"):
            m = _SCHEME.match(text)
            if m is None:
                break
            scheme = m.group(1).lower()
            text = text[m.end() :]
            params: dict[str, str] = {}
            while True:
                p = _PARAM.match(text)
                if p is None:
                    break
                value = p.group(2)
                value = re.sub(r"\\(.)", r"\1", value) if value is not None else p.group(3)
                params[p.group(1).lower()] = value
                text = text[p.end() :]
            if not params:
                t = re.match(rf"\s*{_TOKEN68}\s*(,|$)", text)
                if t is not None:
                    text = text[t.end() :]
            found.append(Challenge(scheme, params))
    return found


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scopes), each kept until shortly before it expires."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires <= time.monotonic():
                return None
            return token.value

    def put(self, key: tuple[str, str, tuple[str, ...]], value: str, expires_in: float) -> None:
        with self._lock:
            # Refresh 10 s early (a token must not expire between two requests of one blob).
            self._tokens[key] = _Token(value, time.monotonic() + max(expires_in - 10, 1))


def parse_token_response(data: bytes) -> tuple[str, float]:
    """The token and its lifetime in seconds, from a token server's JSON answer."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidArgument("the token server's answer is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("the token server's answer is not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise InvalidArgument("the token server's answer holds no token")
    expires_in = doc.get("expires_in")
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = 60  # the spec's default
    return token, float(expires_in)


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"
