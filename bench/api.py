"""API latency of hyper (`hyper ps`, `hyper exec`), beside `runc exec` on the same root filesystem.

Usage: ``.venv/bin/python bench/api.py [--runs N] [--config FILE]``

Like bench/startup.py (whose helpers it imports), it starts a private hyperd (a throw-away config
and ``hyper setup`` without ``--config``), prints one JSON object on stdout, progress on stderr,
and exits non-zero with the reason when a step fails. Every container it made is removed, and no
QEMU, pod supervisor, runc container or hyperd outlives it. See docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper.config.settings import Settings

# bench/ is not a package: run as a script, its directory is sys.path[0], so this finds the
# sibling module.
from startup import (
    RUN_TIMEOUT,
    BenchError,
    Hyper,
    check,
    cleaning_up,
    log,
    machine,
    make_bundle,
    repeat,
    run_bench,
    runc_cleanup,
    summary,
)

TARGET = "benchapi"


def hyper_latency(hyper: Hyper, runs: int) -> tuple[list[float], list[float]]:
    """`hyper ps` and `hyper exec TARGET true`, with TARGET a running busybox `sleep 600`."""
    log(f"hyper: starting {TARGET}")
    check(hyper.argv("run", "-d", "--name", TARGET, "busybox", "sleep", "600"), "hyper run -d")
    try:
        ps = repeat(hyper.argv("ps"), "hyper ps", runs, ms=True)
        exec_ = repeat(hyper.argv("exec", TARGET, "true"), "hyper exec", runs, ms=True)
    finally:
        with cleaning_up():
            hyper.remove(TARGET)
    return ps, exec_


def runc_latency(settings: Settings, tmp: Path, runs: int) -> list[float]:
    """`runc exec NAME true`, NAME a `runc run -d` of the same busybox rootfs running sleep."""
    bundle, root = tmp / "bundle", tmp / "runc"
    log(f"runc: bundle in {bundle}")
    make_bundle(settings, bundle, ["sleep", "600"])
    name = f"benchapi-{uuid.uuid4().hex[:12]}"
    base = ["runc", "--root", str(root)]
    try:
        # Detached without a terminal, the container inherits runc's stdio: no pipes here, or
        # waiting for their end would wait for the container.
        with open(tmp / "runc-run.log", "wb") as out:
            status = subprocess.run(
                [*base, "run", "-d", "--bundle", str(bundle), name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=RUN_TIMEOUT,
                check=False,
            ).returncode
        if status != 0:
            text = (tmp / "runc-run.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"runc run -d: exit {status}: {text}")
        return repeat([*base, "exec", name, "true"], "runc exec", runs, ms=True)
    finally:
        with cleaning_up():
            subprocess.run([*base, "delete", "-f", name], capture_output=True, check=False)
            runc_cleanup(root)


def bench(hyper: Hyper, settings: Settings, runs: int, tmp: Path) -> dict[str, Any]:
    about = machine(hyper, settings)
    ps, exec_ = hyper_latency(hyper, runs)
    runc = runc_latency(settings, tmp, runs)
    return {
        "hyper_ps_s": summary(ps),
        "hyper_exec_s": summary(exec_),
        "runc_exec_s": summary(runc),
        "exec_ratio_median": round(statistics.median(exec_) / statistics.median(runc), 1),
        "machine": about,
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench("bench/api.py", __doc__, bench, 10, argv)


if __name__ == "__main__":
    sys.exit(main())
