"""Image references, parsed and normalized the way docker does it.

Grammar (from the distribution project's reference package, restated)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component { "/" path-component }
    domain     := host [ ":" port ]
    path-component := [a-z0-9]+ { separator [a-z0-9]+ }      separator := "." | "_" | "__" | "-"+
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

Normalization: a first component counts as a registry only when it holds a "." or a ":" or is
``localhost``; otherwise the registry is ``docker.io``, and a one-component name on docker.io gets
``library/`` in front. With neither tag nor digest, the tag is ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hyper.errors import InvalidArgument
from hyper.images.digest import Digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRIES = ("index.docker.io", "registry-1.docker.io")
_MAX_NAME = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*(?:/{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_ID = re.compile(r"[a-f0-9]{64}")


def check_registry(host: str) -> str:
    """``host`` (``name[:port]``, as in a reference) if it is a valid registry address."""
    if not _DOMAIN.fullmatch(host):
        raise InvalidArgument(f"invalid registry address {host!r}: expected host[:port]")
    return host


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The fully qualified name without tag or digest: ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The name as docker prints it: ``busybox``, ``me/app``, ``localhost:5000/a/b``."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        head, sep, rest = self.repository.partition("/")
        if head == "library" and sep and "/" not in rest:
            return rest
        return self.repository

    @property
    def canonical(self) -> str:
        """``docker.io/library/busybox:latest``; the form used as a key in the store."""
        return self.name + self._suffix()

    @property
    def familiar(self) -> str:
        """``busybox:latest``; the short form docker prints."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return parse(f"{self.name}:{tag}")

    def _suffix(self) -> str:
        text = f":{self.tag}" if self.tag is not None else ""
        return text + (f"@{self.digest}" if self.digest is not None else "")

    def __str__(self) -> str:
        return self.familiar


def parse(text: str) -> Reference:
    """Parse and normalize ``text``; raise InvalidArgument saying what is wrong with it."""
    if not text:
        raise InvalidArgument("an image reference must not be empty")
    if any(c.isspace() for c in text):
        raise InvalidArgument(f"invalid reference {text!r}: whitespace is not allowed")
    name, at, digest_text = text.partition("@")
    digest = Digest.parse(digest_text) if at else None
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(
                f"invalid tag {tag!r} in {text!r}: up to 128 of letters, digits, '_', '.', '-',"
                " not starting with '.' or '-'"
            )
    if not name:
        raise InvalidArgument(f"invalid reference {text!r}: the repository name is missing")
    registry, repository = _split_registry(name)
    if not _DOMAIN.fullmatch(registry):
        raise InvalidArgument(f"invalid registry {registry!r} in {text!r}")
    if not _PATH.fullmatch(repository):
        if _PATH.fullmatch(repository.lower()):
            raise InvalidArgument(f"invalid reference {text!r}: repository name must be lowercase")
        raise InvalidArgument(
            f"invalid repository name {repository!r} in {text!r}: lowercase letters, digits and"
            " separators ('.', '_', '__', '-') between components joined by '/'"
        )
    if len(registry) + 1 + len(repository) > _MAX_NAME:
        raise InvalidArgument(f"invalid reference {text!r}: the name is over {_MAX_NAME} chars")
    if registry == DEFAULT_REGISTRY and _ID.fullmatch(name):
        raise InvalidArgument(
            f"invalid repository name {name!r}: 64 hex digits name an image id, not a repository"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)


def _split_registry(name: str) -> tuple[str, str]:
    head, sep, rest = name.partition("/")
    if not sep or ("." not in head and ":" not in head and head != "localhost"):
        registry, repository = DEFAULT_REGISTRY, name
    else:
        registry, repository = head, rest
    if registry in _LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository
