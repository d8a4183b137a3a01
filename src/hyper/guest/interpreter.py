"""Debian's ``python3.11`` as the guest runs it: the interpreter and its import closure.

The guest runs Debian's own interpreter (``/usr/bin/python3.11 -ISB``), never the host's
virtualenv, so the bytecode magic and the extension modules' ABI match whatever Debian ships.
To know which stdlib files the agent needs, that interpreter imports the agent's modules (from a
staging copy holding only the files the initramfs will carry) and reports the ``__file__`` of
every module it loaded. The same run compiles each Python file into a sourceless ``.pyc`` where
its ``.py`` would be in the guest (``/usr/lib/python3.11/json/decoder.pyc``), with unchecked-hash
invalidation: the guest never compiles, and the same sources give the same bytes. The shared
libraries come from ``ldd`` of the interpreter and of each extension module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hyper.errors import Internal, Unavailable
from hyper.guest.agent import AgentSources

PYTHON = Path("/usr/bin/python3.11")
LOADER = Path("/lib64/ld-linux-x86-64.so.2")
EXTRA_MODULES: tuple[str, ...] = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "ctypes",
    "ctypes._endian",
    "termios",
    "selectors",
    "json",
    "json.decoder",
    "json.encoder",
)
"""Imported whether or not the agent does: the codecs Python needs at start-up and what an agent
(or someone debugging one) reaches for. ``_json`` comes with ``json`` when it exists."""
_TIMEOUT = 300.0

# Runs under Debian's interpreter with -ISB; reads its job as JSON on stdin.
_SCRIPT = r"""
import json, os, sys
job = json.load(sys.stdin)
stage = job["stage"]
sys.path.insert(0, stage)
for name in job["modules"]:
    __import__(name)
try:
    __import__("_json")
except ImportError:
    pass
files = sorted({
    os.path.abspath(m.__file__) for m in list(sys.modules.values())
    if isinstance(getattr(m, "__file__", None), str)
})
import py_compile  # only now: what it imports is not the agent's
stdlib = os.path.dirname(os.__file__)
for root, _dirs, names in os.walk(stage):
    files += [os.path.join(root, n) for n in names if n.endswith(".py")]
compiled, extensions = {}, []
for path in sorted(set(files)):
    if path.startswith(stage + "/"):
        guest = os.path.join(stdlib, os.path.relpath(path, stage))
    elif path.startswith(stdlib + "/"):
        guest = path
    else:
        raise SystemExit(f"module file outside the stdlib and the agent: {path}")
    if path.endswith(".py"):
        cfile = os.path.join(job["out"], os.path.relpath(guest, "/")) + "c"
        py_compile.compile(
            path, cfile=cfile, dfile=guest, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        compiled[guest + "c"] = cfile
    elif path.endswith(".so"):
        extensions.append(path)
    else:
        raise SystemExit(f"module file of an unknown kind: {path}")
with open(job["result"], "w") as handle:
    json.dump({
        "version": sys.version.split()[0], "stdlib": stdlib, "compiled": compiled,
        "extensions": extensions,
    }, handle)
"""


@dataclass(frozen=True)
class Closure:
    """What the guest needs to run the agent with Debian's interpreter."""

    python: Path
    version: str
    """The interpreter's version, e.g. ``3.11.2``."""
    stdlib: str
    """Its stdlib directory (``/usr/lib/python3.11``), where the agent's packages go too."""
    compiled: dict[str, Path]
    """Guest path of each ``.pyc`` -> the compiled file on the host (in a scratch dir)."""
    extensions: tuple[Path, ...]
    """Extension modules (``lib-dynload/*.so``), at the same path in the guest."""
    libraries: tuple[Path, ...]
    """Shared libraries of the interpreter and the extensions, the loader included."""


def parse_ldd(text: str) -> list[Path]:
    """The absolute library paths in ``ldd`` output (the vDSO has none)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip()
            if target.startswith("not found"):
                raise Unavailable(f"a shared library is missing on the host: {line}")
            path = target.split(" (", 1)[0].strip()
        else:
            path = line.split(" (", 1)[0].strip()
        if path.startswith("/"):
            found.append(Path(path))
    return found


def libraries(binaries: Iterable[Path]) -> tuple[Path, ...]:
    """The shared libraries that ``binaries`` load, as ``ldd`` resolves them on this host."""
    found: set[Path] = set()
    for binary in binaries:
        done = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise Internal(f"ldd {binary} failed: {done.stderr.strip()}")
        found.update(parse_ldd(done.stdout))
    return tuple(sorted(found))


def closure(
    agent: AgentSources,
    scratch: Path,
    *,
    python: Path = PYTHON,
    entry: str = "hyperstart.main",
) -> Closure:
    """Import ``entry`` and every agent module with ``python``; compile into ``scratch``."""
    if not python.exists():
        raise Unavailable(f"{python} is missing: install Debian's python3.11-minimal")
    scratch = scratch.resolve()
    stage = scratch / "stage"
    out = scratch / "pyc"
    report = scratch / "closure.json"
    for relative, path in agent.files:
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    modules = [*EXTRA_MODULES, entry, *agent.modules]
    job = json.dumps(
        {"stage": str(stage), "out": str(out), "result": str(report), "modules": modules}
    )
    try:
        done = subprocess.run(
            [str(python), "-ISB", "-c", _SCRIPT],
            input=job,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            cwd=scratch,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Internal(f"importing the guest agent with {python} hung") from None
    if done.returncode != 0:
        raise Internal(
            f"the guest agent does not import with {python} (only the stdlib, "
            f"hyper.errors and hyper.proto are available in the guest): {done.stderr.strip()}"
        )
    result = json.loads(report.read_text())
    extensions = tuple(Path(p) for p in result["extensions"])
    libs = libraries([python, *extensions])
    if LOADER not in libs:
        libs = (*libs, LOADER)
    return Closure(
        python=python,
        version=result["version"],
        stdlib=result["stdlib"],
        compiled={guest: Path(cfile) for guest, cfile in result["compiled"].items()},
        extensions=extensions,
        libraries=libs,
    )
