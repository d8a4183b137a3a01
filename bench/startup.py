"""Start-up time and idle memory of a hyper pod, against runc on the same root filesystem.

Usage: ``.venv/bin/python bench/startup.py [--runs N] [--config FILE]``

Without ``--config`` a throw-away config (state and run dirs in a temporary directory; the shared
guest cache stays at its default) is written and ``hyper setup`` runs first. Prints one JSON object
on stdout; progress goes to stderr. Exits non-zero, with the reason, when any step fails. No QEMU
and no runc container outlives the script. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper.config import load
from hyper.config.settings import Settings
from hyper.errors import HyperError
from hyper.images import ImageStore, ensure_busybox
from hyper.images.rootfs import unpack_image

HYPER = Path(sys.executable).with_name("hyper")
IDLE_NAME = "benchidle"
READY_TIMEOUT = 120.0
EXIT_TIMEOUT = 30.0
RUN_TIMEOUT = 120.0


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
        "runs": [round(s, 4) for s in samples],
    }


def check(argv: Sequence[str], what: str, timeout: float = RUN_TIMEOUT) -> str:
    """Run ``argv`` to completion; its stdout, or a BenchError naming ``what``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no exit within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise BenchError(f"{what}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def timed(argv: Sequence[str], what: str) -> float:
    started = time.perf_counter()
    check(argv, what)
    return time.perf_counter() - started


class Hyper:
    def __init__(self, config: Path) -> None:
        self.config = config

    def argv(self, *args: str) -> list[str]:
        return [str(HYPER), "--config", str(self.config), *args]


def hyper_start(hyper: Hyper, runs: int) -> list[float]:
    argv = hyper.argv("run", "--rm", "busybox", "true")
    log("hyper: warm-up run (builds the erofs rootfs)")
    timed(argv, "hyper warm-up run")
    samples = []
    for i in range(runs):
        samples.append(timed(argv, f"hyper run {i + 1}"))
        log(f"hyper run {i + 1}/{runs}: {samples[-1]:.3f}s")
    return samples


def make_bundle(settings: Settings, bundle: Path) -> None:
    store = ImageStore(settings.paths.images)
    image = ensure_busybox(store)
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    unpack_image(store, image, rootfs)
    check(["runc", "spec", "--bundle", str(bundle)], "runc spec")
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    spec["process"]["args"] = ["true"]
    spec["process"]["terminal"] = False
    spec["root"] = {"path": "rootfs", "readonly": False}
    path.write_text(json.dumps(spec, indent=2))


def runc_start(bundle: Path, root: Path, runs: int) -> list[float]:
    def once(what: str) -> float:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        return timed(["runc", "--root", str(root), "run", "--bundle", str(bundle), name], what)

    log("runc: warm-up run")
    once("runc warm-up run")
    samples = []
    for i in range(runs):
        samples.append(once(f"runc run {i + 1}"))
        log(f"runc run {i + 1}/{runs}: {samples[-1] * 1000:.1f}ms")
    return samples


def runc_cleanup(root: Path) -> None:
    """Force-delete every container under our private runc root (normally there is none)."""
    if not root.exists():
        return
    listing = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=False
    )
    for name in listing.stdout.split():
        log(f"runc: deleting leftover container {name}")
        subprocess.run(["runc", "--root", str(root), "delete", "-f", name], check=False)


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no Pss in /proc/{pid}/smaps_rollup")


def wait_for_line(proc: subprocess.Popen[bytes], wanted: bytes, timeout: float) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while wanted not in buffer.split(b"\n")[:-1]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"idle pod: no {wanted!r} line within {timeout:.0f}s")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise BenchError(f"idle pod: client exited ({proc.wait()}) before {wanted!r}")
            buffer += chunk


def pod_dirs(settings: Settings) -> set[Path]:
    pods = settings.paths.pods
    return set(pods.iterdir()) if pods.exists() else set()


def idle_pod(hyper: Hyper, settings: Settings) -> tuple[float, float]:
    """PSS (MiB) of an idle pod's QEMU and of the `hyper run` process that owns it."""
    before = pod_dirs(settings)
    argv = hyper.argv("run", "--name", IDLE_NAME, "busybox", "sh", "-c", "echo ready; sleep 600")
    log("idle pod: starting")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pod: Path | None = None
    qemu_pid: int | None = None
    try:
        wait_for_line(proc, b"ready", READY_TIMEOUT)
        new = pod_dirs(settings) - before
        if len(new) != 1:
            raise BenchError(f"idle pod: expected one new pod dir, found {sorted(map(str, new))}")
        pod = new.pop()
        qemu_pid = int((pod / "vm" / "qemu.pid").read_text().strip())
        qemu, owner = pss_mib(qemu_pid), pss_mib(proc.pid)
        log(f"idle pod: qemu pid {qemu_pid} PSS {qemu} MiB, owner PSS {owner} MiB")
    finally:
        stop_client(proc, pod, qemu_pid)
    left = pod_dirs(settings) - before
    if left:
        raise BenchError(f"idle pod: pod dirs left behind: {sorted(map(str, left))}")
    return qemu, owner


def stop_client(proc: subprocess.Popen[bytes], pod: Path | None, qemu_pid: int | None) -> None:
    """SIGTERM the client and wait; kill it (and its QEMU) only if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        if pod is not None and qemu_pid is not None and _is_qemu_of(pod, qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)
        raise BenchError(
            f"idle pod: client did not exit within {EXIT_TIMEOUT:.0f}s of SIGTERM"
        ) from exc
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if pod is not None and qemu_pid is not None and _is_qemu_of(pod, qemu_pid):
        os.kill(qemu_pid, signal.SIGKILL)
        raise BenchError(f"idle pod: QEMU {qemu_pid} outlived its client (killed)")


def _is_qemu_of(pod: Path, pid: int) -> bool:
    """Whether ``pid`` is still the QEMU of ``pod`` (its command line names the pod's dir)."""
    try:
        return os.fsencode(str(pod)) in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def machine(hyper: Hyper, settings: Settings) -> dict[str, Any]:
    info: dict[str, str] = {}
    for line in check(hyper.argv("info"), "hyper info").splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            info[parts[0]] = parts[1]
    accelerator = info.get("accelerator", "")
    kernel = info.get("guest kernel", "")
    if not accelerator or not kernel:
        raise BenchError(f"hyper info: no accelerator or guest kernel line in {info}")
    qemu = check([settings.vm.qemu, "--version"], "qemu --version").splitlines()[0]
    runc = check(["runc", "--version"], "runc --version").splitlines()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "accelerator": accelerator.split()[0],
        "accelerator_detail": accelerator,
        "qemu": qemu,
        "runc": runc,
        "guest_kernel": kernel.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }


def bench(runs: int, config: Path | None, tmp: Path) -> dict[str, Any]:
    own_config = config is None
    if config is None:
        config = tmp / "config.toml"
        config.write_text(
            f'[paths]\nstate_dir = "{tmp}/state"\nrun_dir = "{tmp}/run"\n', encoding="utf-8"
        )
    hyper = Hyper(config)
    if own_config:
        log(f"hyper setup with {config}")
        check(hyper.argv("setup"), "hyper setup", timeout=900)
    settings = load(config)

    about = machine(hyper, settings)
    hyper_samples = hyper_start(hyper, runs)

    bundle, runc_root = tmp / "bundle", tmp / "runc"
    try:
        log(f"runc: bundle in {bundle}")
        make_bundle(settings, bundle)
        runc_samples = runc_start(bundle, runc_root, runs)
    finally:
        runc_cleanup(runc_root)

    idle, owner = idle_pod(hyper, settings)
    return {
        "hyper_cold_start_s": summary(hyper_samples),
        "runc_start_s": summary(runc_samples),
        "ratio_median": round(
            statistics.median(hyper_samples) / statistics.median(runc_samples), 1
        ),
        "idle_pod_pss_mib": idle,
        "idle_pod_owner_pss_mib": owner,
        "machine": about,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--config", type=Path, help="hyper settings file (else a temporary one)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        with tempfile.TemporaryDirectory(prefix="hyper-bench-") as tmp:
            result = bench(args.runs, args.config, Path(tmp))
    except (BenchError, HyperError, OSError) as exc:
        print(f"bench/startup.py: FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
