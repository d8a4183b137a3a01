"""The guest agent's sources: the ``hyperstart`` package and the host modules it shares.

hyperstart imports only the protocol from the host side (``hyper.errors``, ``hyper.proto``; an
import-linter contract enforces it), so those files and the whole ``hyperstart`` package are
what the initramfs carries. Their digest is part of the cache key: editing hyperstart rebuilds
the initramfs and nothing else.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hyper.errors import Unavailable

DEFAULT_VERSION = "0.1.0"


def _installed_version() -> str:
    try:
        module = importlib.import_module("hyperstart")
    except ImportError:
        return DEFAULT_VERSION
    version = getattr(module, "__version__", DEFAULT_VERSION)
    return version if isinstance(version, str) else DEFAULT_VERSION


AGENT_VERSION = _installed_version()
"""hyperstart's version (``hyperstart.__version__``), or 0.1.0 if it says none."""

_HOST_FILES = ("hyper/__init__.py", "hyper/errors.py")
_HOST_PACKAGES = ("hyper/proto",)


@dataclass(frozen=True)
class AgentSources:
    files: tuple[tuple[str, Path], ...]
    """(path relative to a sys.path entry, e.g. ``hyperstart/main.py``; file on the host)."""
    version: str

    @property
    def modules(self) -> tuple[str, ...]:
        """Dotted names of every module, ``__main__`` excepted (importing it would run it)."""
        names = []
        for relative, _ in self.files:
            dotted = relative.removesuffix(".py").replace("/", ".")
            dotted = dotted.removesuffix(".__init__")
            if not dotted.endswith("__main__"):
                names.append(dotted)
        return tuple(names)

    def digest(self) -> str:
        h = hashlib.sha256()
        for relative, path in self.files:
            data = path.read_bytes()
            h.update(b"%s\0%d\0" % (relative.encode(), len(data)))
            h.update(data)
        return h.hexdigest()


def _version_in(init: Path) -> str:
    """``__version__ = "..."`` of a package's __init__, read without importing it."""
    try:
        tree = ast.parse(init.read_text())
    except (OSError, SyntaxError):
        return DEFAULT_VERSION
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return DEFAULT_VERSION


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _python_files(package: Path, prefix: str) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if "__pycache__" in relative.parts:
            continue
        found.append((f"{prefix}/{relative.as_posix()}", path))
    return found


def sources(agent_dir: Path | None = None, host_dir: Path | None = None) -> AgentSources:
    """The files to pack: ``agent_dir`` (default: the installed ``hyperstart`` package) and
    the shared host modules under ``host_dir`` (default: the installed ``hyper`` package)."""
    agent = agent_dir or _package_dir("hyperstart")
    if agent is None or not (agent / "main.py").is_file():
        raise Unavailable(
            "the guest agent (package hyperstart with hyperstart/main.py) is not installed"
        )
    host = host_dir or _package_dir("hyper")
    if host is None:
        raise Unavailable("the hyper package has no directory on disk")
    files = _python_files(agent, "hyperstart")
    for relative in _HOST_FILES:
        files.append((relative, host / relative.removeprefix("hyper/")))
    for relative in _HOST_PACKAGES:
        files += _python_files(host / relative.removeprefix("hyper/"), relative)
    return AgentSources(tuple(sorted(files)), _version_in(agent / "__init__.py"))
