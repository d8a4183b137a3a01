"""VM templates: clone start, idle memory and a burst of pods, each beside its baseline.

Usage: ``.venv/bin/python bench/templates.py [--runs 20] [--idle 20] [--burst 100]
[--cold-runs 5] [--cold-idle 5] [--config FILE]``

In one run, with a private hyperd (see bench/startup.py, whose helpers this reuses):

- start: wall time from launching ``hyper run --rm busybox echo hi`` to its first line of
  output, for clones (median of ``--runs``), cold boots (``-l hyper.boot=cold``, median of
  ``--cold-runs``) and ``runc run`` of the same busybox rootfs (median of ``--runs``); plus the
  pod start measured inside this process (`Pod.start`, clone and cold), phase by phase, which is
  where the time goes without the CLI, hyperd and the pod supervisor's start-up;
- template: the time ``hyper template build`` takes (once, ahead of the start runs);
- memory: the sum of the PSS of every QEMU process with ``--idle`` idle clones
  (``hyper run -d busybox sleep 600``), divided by their count, and the same with
  ``--cold-idle`` cold-booted pods;
- burst: ``--burst`` pods started at once (``hyper run -d``, one client each) until all run,
  then the time to remove them all (one ``hyper rm -f`` each, at once), and the same for as
  many ``runc run -d`` containers; within ``--burst-timeout`` each, failures are reported.

Prints one JSON object on stdout (progress on stderr); exits non-zero with the reason when a
step fails. Everything it made is removed before hyperd stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper.config.settings import Settings
from hyper.errors import HyperError
from hyper.model.pod import ContainerSpec, PodSpec
from startup import (
    EXIT_TIMEOUT,
    BenchError,
    Hyper,
    check,
    cleaning_up,
    hyperd_session,
    log,
    machine,
    make_bundle,
    on_sigterm,
    pod_dirs,
    pod_pids,
    pss_mib,
    runc_cleanup,
    summary,
    wait_gone,
)


def first_output(argv: Sequence[str], what: str, timeout: float = 180.0) -> float:
    """Seconds from launching ``argv`` to its first line on stdout; then waits for its exit."""
    started = time.perf_counter()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert child.stdout is not None
    try:
        line = b""
        deadline = started + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([child.stdout], [], [], left)[0]:
                raise BenchError(f"{what}: no output within {timeout:.0f}s")
            chunk = os.read(child.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
        elapsed = time.perf_counter() - started
        _, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0 or line.strip() != b"hi":
        raise BenchError(f"{what}: exit {child.returncode}, output {line!r}: {err[-500:]!r}")
    return elapsed


def samples(argv: Sequence[str], what: str, runs: int) -> list[float]:
    log(f"{what}: warm-up run")
    first_output(argv, f"{what} warm-up")
    out = []
    for i in range(runs):
        out.append(first_output(argv, f"{what} {i + 1}"))
        log(f"{what} {i + 1}/{runs}: {out[-1] * 1000:.0f} ms")
    return out


def runc_samples(bundle: Path, root: Path, runs: int) -> list[float]:
    def argv() -> list[str]:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        return ["runc", "--root", str(root), "run", "--bundle", str(bundle), name]

    first_output(argv(), "runc warm-up")
    out = []
    for i in range(runs):
        out.append(first_output(argv(), f"runc run {i + 1}"))
        log(f"runc run {i + 1}/{runs}: {out[-1] * 1000:.1f} ms")
    return out


def in_process(settings: Settings, runs: int, cold: bool) -> dict[str, Any]:
    """``Pod.start`` in this process (no CLI, hyperd or supervisor), phase by phase (ms)."""
    from hyper.sandbox.runtime import open_runtime

    async def main() -> list[dict[str, float]]:
        runtime = await open_runtime(settings, sweep=False)
        found = []
        for i in range(runs + 1):
            labels = {"hyper.boot": "cold"} if cold else {}
            spec = PodSpec(
                name=f"inproc{i}",
                containers=(ContainerSpec(name="c", image="busybox", command=("true",)),),
                labels=labels,
            )
            pod = runtime.new_pod(spec)
            started = time.perf_counter()
            try:
                await pod.start()
                total = time.perf_counter() - started
                if not cold and not pod.boot.startswith("clone"):
                    raise BenchError(f"in-process pod did not clone: {pod.boot}")
            finally:
                await pod.destroy()
            if i:  # the first one is a warm-up
                found.append({"total": total, **pod.timings})
        return found

    runs_data = asyncio.run(main())
    phases = runs_data[0].keys()
    return {
        phase: round(statistics.median(r.get(phase, 0.0) for r in runs_data) * 1000, 1)
        for phase in phases
    }


def qemu_pss(settings: Settings, dirs: set[Path]) -> tuple[float, float]:
    """Sum of PSS (MiB) of the QEMUs and of the supervisors of the pods in ``dirs``."""
    qemu = supervisor = 0.0
    for pod in dirs:
        qemu_pid, supervisor_pid = pod_pids(pod)
        qemu += pss_mib(qemu_pid)
        supervisor += pss_mib(supervisor_pid)
    return qemu, supervisor


def idle_memory(hyper: Hyper, settings: Settings, count: int, cold: bool) -> dict[str, Any]:
    what = "cold" if cold else "clone"
    names = [f"idle{what}{i}" for i in range(count)]
    before = pod_dirs(settings)
    new: set[Path] = set()
    try:
        for name in names:
            argv = hyper.argv("run", "-d", "--name", name)
            if cold:
                argv += ["-l", "hyper.boot=cold"]
            check([*argv, "busybox", "sleep", "600"], f"hyper run -d {name}", timeout=300)
            log(f"idle {what} pods: {name} running")
        new = pod_dirs(settings) - before
        if len(new) != count:
            raise BenchError(f"idle {what}: {count} pods started, {len(new)} pod dirs")
        qemu, supervisor = qemu_pss(settings, new)
        meminfo = Path("/proc/meminfo").read_text()
        log(f"idle {what}: QEMU PSS total {qemu:.0f} MiB for {count} pods")
    finally:
        with cleaning_up():
            subprocess.run(hyper.argv("rm", "-f", *names), capture_output=True, timeout=600)
    left = wait_gone(new, EXIT_TIMEOUT)
    if left:
        raise BenchError(f"idle {what}: pod dirs left: {sorted(map(str, left))}")
    shmem = next((line for line in meminfo.splitlines() if line.startswith("Shmem:")), "")
    return {
        "pods": count,
        "qemu_pss_mib_per_pod": round(qemu / count, 1),
        "supervisor_pss_mib_per_pod": round(supervisor / count, 1),
        "host_shmem": shmem.split(":", 1)[-1].strip(),
    }


def all_at_once(argvs: list[list[str]], deadline: float) -> tuple[float, list[str]]:
    """Run every argv at once; the seconds until the last one ended, and the failures (a child
    still running at ``deadline`` (monotonic) is killed and counts as one). stderr goes to a
    file, not a pipe: a detached container (``runc run -d``) keeps its runtime's stdio open."""
    started = time.perf_counter()
    failures = []
    with tempfile.TemporaryDirectory(prefix="hyper-burst-") as scratch:
        children = []
        for i, argv in enumerate(argvs):
            with open(Path(scratch) / str(i), "wb") as err:
                child = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
                )
            children.append(child)
        try:
            for i, child in enumerate(children):
                try:
                    child.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    failures.append("still running at the deadline")
                    continue
                if child.returncode != 0:
                    text = (Path(scratch) / str(i)).read_text(errors="replace")
                    failures.append(text.strip()[-300:])
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return time.perf_counter() - started, failures


def burst_hyper(hyper: Hyper, count: int, timeout: float) -> dict[str, Any]:
    """``count`` pods started at once until all run, then removed at once; failures are
    reported, not raised (the figures say how far it got)."""
    names = [f"burst{i}" for i in range(count)]
    runs = [hyper.argv("run", "-d", "--name", n, "busybox", "sleep", "600") for n in names]
    start_s, start_failures = all_at_once(runs, time.monotonic() + timeout)
    log(f"burst: {count - len(start_failures)}/{count} pods running after {start_s:.1f} s")
    with cleaning_up():
        removes = [hyper.argv("rm", "-f", n) for n in names]
        remove_s, remove_failures = all_at_once(removes, time.monotonic() + timeout)
    log(f"burst: removed in {remove_s:.1f} s ({len(remove_failures)} removals failed)")
    return {
        "pods": count,
        "started": count - len(start_failures),
        "start_all_s": round(start_s, 2),
        "remove_all_s": round(remove_s, 2),
        "start_failures": sorted(set(start_failures))[:5],
        "remove_failures": len(remove_failures),
    }


def burst_runc(bundle: Path, root: Path, count: int, timeout: float) -> dict[str, Any]:
    names = [f"burst-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    base = ["runc", "--root", str(root)]
    runs = [[*base, "run", "-d", "--bundle", str(bundle), n] for n in names]
    start_s, start_failures = all_at_once(runs, time.monotonic() + timeout)
    removes = [[*base, "delete", "-f", n] for n in names]
    remove_s, remove_failures = all_at_once(removes, time.monotonic() + timeout)
    return {
        "containers": count,
        "started": count - len(start_failures),
        "start_all_s": round(start_s, 2),
        "remove_all_s": round(remove_s, 2),
        "remove_failures": len(remove_failures),
    }


def bench(hyper: Hyper, settings: Settings, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    about = machine(hyper, settings)
    started = time.perf_counter()
    built = subprocess.run(
        hyper.argv("template", "build", "--force"), capture_output=True, timeout=600
    )
    if built.returncode != 0:
        raise BenchError(f"hyper template build: {built.stderr.decode()[-500:]}")
    template_s = time.perf_counter() - started
    log(f"template built in {template_s:.1f} s")
    listed = json.loads(subprocess.check_output(hyper.argv("template", "ls", "--format", "json")))

    echo = ("busybox", "echo", "hi")
    clone = samples(hyper.argv("run", "--rm", *echo), "clone: hyper run --rm", args.runs)
    cold = samples(
        hyper.argv("run", "--rm", "-l", "hyper.boot=cold", *echo), "cold: hyper run", args.cold_runs
    )
    bundle, runc_root = tmp / "bundle", tmp / "runc"
    burst_bundle = tmp / "burst-bundle"
    try:
        make_bundle(settings, bundle, ("echo", "hi"))
        runc = runc_samples(bundle, runc_root, args.runs)
        make_bundle(settings, burst_bundle, ("sleep", "600"))
        runc_burst = burst_runc(burst_bundle, runc_root, args.burst, args.burst_timeout)
    finally:
        with cleaning_up():
            runc_cleanup(runc_root)

    log("in-process pod starts (clone, then cold)")
    clone_phases = in_process(settings, min(args.runs, 10), cold=False)
    cold_phases = in_process(settings, min(args.cold_runs, 3), cold=True)

    memory_clone = idle_memory(hyper, settings, args.idle, cold=False)
    memory_cold = idle_memory(hyper, settings, args.cold_idle, cold=True)
    hyper_burst = burst_hyper(hyper, args.burst, args.burst_timeout)
    return {
        "template": {"build_s": round(template_s, 2), "templates": listed},
        "start_to_first_output_s": {
            "clone": summary(clone),
            "cold": summary(cold),
            "runc": summary(runc),
        },
        "pod_start_in_process_ms": {"clone": clone_phases, "cold": cold_phases},
        "idle_memory": {"clone": memory_clone, "cold": memory_cold},
        "burst": {"hyper": hyper_burst, "runc": runc_burst},
        "goals": {
            "clone_start_ms": 100,
            "idle_pss_mib_per_pod": 20,
            "burst_100_pods_s": 2,
        },
        "machine": about,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed clone and runc starts")
    parser.add_argument("--cold-runs", type=int, default=5, help="timed cold boots")
    parser.add_argument("--idle", type=int, default=20, help="idle clones for the memory figure")
    parser.add_argument("--cold-idle", type=int, default=5, help="idle cold-booted pods")
    parser.add_argument("--burst", type=int, default=100, help="pods (and runc containers)")
    parser.add_argument(
        "--burst-timeout",
        type=float,
        default=900.0,
        help="seconds for the burst's starts (and again for its removals) before giving up",
    )
    parser.add_argument("--config", type=Path, help="hyper settings file (else a temporary one)")
    args = parser.parse_args(argv)
    if min(args.runs, args.cold_runs, args.idle, args.cold_idle, args.burst) < 1:
        parser.error("every count must be at least 1")
    on_sigterm()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="hyper-bench-") as tmp,
            hyperd_session(args.config, Path(tmp)) as (hyper, settings),
        ):
            result = bench(hyper, settings, args, Path(tmp))
    except (BenchError, HyperError, OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"bench/templates.py: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/templates.py: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
