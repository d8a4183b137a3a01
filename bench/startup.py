"""Start-up time and idle memory of a hyper pod, against runc on the same root filesystem.

Usage: ``.venv/bin/python bench/startup.py [--runs N] [--config FILE]``

The `hyper` CLI talks to a private hyperd that this script starts (and stops with SIGTERM at the
end). Without ``--config`` a throw-away config (state dir in a temporary directory, run dir and
socket in a short one under /tmp; the shared guest cache stays at its default) is written and
``hyper setup`` runs first; with ``--config`` that settings file is used as it is (no setup) and no
other hyperd may be answering on its socket. Prints one JSON object on stdout; progress goes to
stderr. Exits non-zero, with the reason, when any step fails. Every container the script made is
removed before hyperd stops, and no QEMU, pod supervisor, runc container or hyperd outlives the
script. See docs/benchmarks.md. bench/api.py imports its helpers from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from hyper.config import load
from hyper.config.settings import Settings
from hyper.errors import HyperError
from hyper.images import ImageStore, ensure_busybox
from hyper.images.rootfs import unpack_image

HYPER = Path(sys.executable).with_name("hyper")
IDLE_NAME = "benchidle"
DAEMON_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0
RUN_TIMEOUT = 180.0


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
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no exit within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise BenchError(f"{what}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def timed(argv: Sequence[str], what: str) -> float:
    started = time.perf_counter()
    check(argv, what)
    return time.perf_counter() - started


def repeat(argv: Sequence[str], what: str, runs: int, *, ms: bool = False) -> list[float]:
    """One warm-up run of ``argv``, then ``runs`` timed ones (seconds each)."""
    log(f"{what}: warm-up run")
    timed(argv, f"{what} warm-up run")
    samples = []
    for i in range(runs):
        samples.append(timed(argv, f"{what} {i + 1}"))
        shown = f"{samples[-1] * 1000:.1f}ms" if ms else f"{samples[-1]:.3f}s"
        log(f"{what} {i + 1}/{runs}: {shown}")
    return samples


class _Sigterm:
    deferred = False  # in a clean-up: hold the BenchError until it is done
    pending = False


def on_sigterm() -> None:
    """Turn a SIGTERM into a BenchError, so that the clean-up in ``finally`` blocks runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        if _Sigterm.deferred:
            _Sigterm.pending = True
            return
        raise BenchError("interrupted by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def cleaning_up() -> Iterator[None]:
    """A clean-up that a SIGTERM may not cut short: its BenchError comes once the body is done
    (unless another exception is already on its way)."""
    outer = _Sigterm.deferred
    _Sigterm.deferred = True
    try:
        yield
    finally:
        _Sigterm.deferred = outer
    if not outer and _Sigterm.pending:
        _Sigterm.pending = False
        raise BenchError("interrupted by SIGTERM")


class Hyper:
    def __init__(self, config: Path) -> None:
        self.config = config

    def argv(self, *args: str) -> list[str]:
        return [str(HYPER), "--config", str(self.config), *args]

    def container_ids(self) -> set[str]:
        return set(check(self.argv("ps", "-a", "-q"), "hyper ps -a -q").split())

    def remove(self, ref: str) -> bool:
        """``hyper rm -f ref``; whether it worked (a failure is logged, not raised)."""
        try:
            check(self.argv("rm", "-f", ref), f"hyper rm -f {ref}")
        except BenchError as exc:
            log(str(exc))
            return False
        return True


class Hyperd:
    """A private hyperd on ``config``: started, then stopped with SIGTERM."""

    def __init__(self, config: Path, settings: Settings, log_path: Path) -> None:
        self.config = config
        self.socket = settings.daemon.socket
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def start(self) -> None:
        if self.answers():
            raise BenchError(f"a hyperd already answers on {self.socket}; stop it first")
        log(f"hyperd: starting on {self.socket} (log {self.log_path})")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hyper.daemon", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None:
                raise BenchError(f"hyperd exited ({self.process.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"hyperd: no answer within {DAEMON_TIMEOUT:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        log("hyperd: stopping (SIGTERM)")
        self.process.terminate()
        try:
            self.process.wait(timeout=DAEMON_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"hyperd: no exit within {DAEMON_TIMEOUT:.0f}s of SIGTERM, killing it")
            self.process.kill()
            self.process.wait()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def pod_processes(settings: Settings) -> dict[int, bytes]:
    """Processes (pid: command line) of pods of these settings: supervisors and QEMUs."""
    marks = [
        os.fsencode(settings.paths.state_dir / "pods") + b"/",
        os.fsencode(settings.paths.pods) + b"/",
    ]
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(mark in cmdline for mark in marks):
            found[int(entry.name)] = cmdline
    return found


def kill_new_pod_processes(settings: Settings, before: dict[int, bytes]) -> list[str]:
    """SIGKILL the pod processes that were not there at ``before``; what was killed."""
    killed = []
    for pid, cmdline in pod_processes(settings).items():
        if before.get(pid) == cmdline:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            shown = cmdline.replace(bytes(1), b" ")[:100].decode(errors="replace")
            killed.append(f"{pid} ({shown})")
    return killed


def write_config(tmp: Path) -> Path:
    """A throw-away settings file: state in ``tmp``, run dir (unix sockets) short, in /tmp."""
    run_dir = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    config = tmp / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp}/state"\nrun_dir = "{run_dir}"\n'
        f'[vm]\nboot_timeout = 120.0\n[daemon]\nsocket = "{run_dir}/hyperd.sock"\n',
        encoding="utf-8",
    )
    return config


@contextlib.contextmanager
def hyperd_session(config: Path | None, tmp: Path) -> Iterator[tuple[Hyper, Settings]]:
    """A private hyperd for the body; afterwards every container made meanwhile is removed,
    hyperd is stopped, and any pod process left (there should be none) is killed: that is an
    error if the body succeeded."""
    own = config is None
    if config is None:
        config = write_config(tmp)
    settings = load(config)
    hyper = Hyper(config)
    killed: list[str] = []
    try:
        if own:
            log(f"hyper setup with {config}")
            check(hyper.argv("setup"), "hyper setup", timeout=900)
        before = pod_processes(settings)
        daemon = Hyperd(config, settings, tmp / "hyperd.log")
        try:
            daemon.start()
            known = hyper.container_ids()
            try:
                yield hyper, settings
            finally:
                with cleaning_up(), contextlib.suppress(BenchError):
                    for ref in sorted(hyper.container_ids() - known):
                        log(f"removing leftover container {ref}")
                        hyper.remove(ref)
        finally:
            with cleaning_up():
                daemon.stop()
                killed = kill_new_pod_processes(settings, before)
                if killed:
                    log(f"killed pod processes left behind: {killed}")
    finally:
        if own:
            shutil.rmtree(settings.paths.run_dir, ignore_errors=True)
    if killed:
        raise BenchError(f"pod processes outlived hyperd (killed): {killed}")


def hyper_start(hyper: Hyper, runs: int) -> list[float]:
    argv = hyper.argv("run", "--rm", "busybox", "true")
    return repeat(argv, "hyper run --rm busybox true", runs)


def make_bundle(settings: Settings, bundle: Path, args: Sequence[str] = ("true",)) -> None:
    """An OCI bundle in ``bundle`` of the busybox rootfs hyper uses, running ``args``."""
    store = ImageStore(settings.paths.images)
    image = ensure_busybox(store)
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    unpack_image(store, image, rootfs)
    check(["runc", "spec", "--bundle", str(bundle)], "runc spec")
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    spec["process"]["args"] = list(args)
    spec["process"]["terminal"] = False
    spec["root"] = {"path": "rootfs", "readonly": False}
    path.write_text(json.dumps(spec, indent=2))


def runc_start(bundle: Path, root: Path, runs: int) -> list[float]:
    def once(what: str) -> float:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        return timed(["runc", "--root", str(root), "run", "--bundle", str(bundle), name], what)

    log("runc run: warm-up run")
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
        subprocess.run(
            ["runc", "--root", str(root), "delete", "-f", name], capture_output=True, check=False
        )


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no Pss in /proc/{pid}/smaps_rollup")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


def pod_dirs(settings: Settings) -> set[Path]:
    pods = settings.paths.pods
    return set(pods.iterdir()) if pods.exists() else set()


def wait_gone(paths: set[Path], timeout: float) -> set[Path]:
    deadline = time.monotonic() + timeout
    while (left := {p for p in paths if p.exists()}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def pod_pids(pod: Path) -> tuple[int, int]:
    """The pids of the QEMU of the pod whose run dir is ``pod`` and of its supervisor."""
    qemu = int((pod / "vm" / "qemu.pid").read_text().strip())
    if os.fsencode(str(pod)) not in Path(f"/proc/{qemu}/cmdline").read_bytes():
        raise BenchError(f"pid {qemu} of {pod}/vm/qemu.pid is not that pod's QEMU")
    supervisor = parent_pid(qemu)
    if b"hyper.shim" not in Path(f"/proc/{supervisor}/cmdline").read_bytes():
        raise BenchError(f"the parent {supervisor} of QEMU {qemu} is not a hyper.shim")
    return qemu, supervisor


def idle_pod(hyper: Hyper, settings: Settings) -> tuple[float, float]:
    """PSS (MiB) of an idle pod's QEMU and of its supervisor (``python -m hyper.shim``)."""
    before = pod_dirs(settings)
    log("idle pod: starting")
    check(hyper.argv("run", "-d", "--name", IDLE_NAME, "busybox", "sleep", "600"), "hyper run -d")
    new: set[Path] = set()
    try:
        new = pod_dirs(settings) - before
        if len(new) != 1:
            raise BenchError(f"idle pod: expected one new pod dir, found {sorted(map(str, new))}")
        qemu_pid, supervisor_pid = pod_pids(next(iter(new)))
        qemu, supervisor = pss_mib(qemu_pid), pss_mib(supervisor_pid)
        log(
            f"idle pod: QEMU {qemu_pid} PSS {qemu} MiB, "
            f"supervisor {supervisor_pid} PSS {supervisor} MiB"
        )
    finally:
        with cleaning_up():
            hyper.remove(IDLE_NAME)
    left = wait_gone(new, EXIT_TIMEOUT)
    if left:
        raise BenchError(f"idle pod: pod dirs left after hyper rm -f: {sorted(map(str, left))}")
    return qemu, supervisor


def machine(hyper: Hyper, settings: Settings) -> dict[str, Any]:
    info = json.loads(check(hyper.argv("info", "--format", "json"), "hyper info"))
    try:
        accelerator = f"{info['accelerator']['name']} ({info['accelerator']['reason']})"
        kernel = str(info["guest"]["release"])
    except (KeyError, TypeError) as exc:
        raise BenchError(f"hyper info: no accelerator or guest release in {info}") from exc
    qemu = check([settings.vm.qemu, "--version"], "qemu --version").splitlines()[0]
    runc = check(["runc", "--version"], "runc --version").splitlines()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "accelerator": str(info["accelerator"]["name"]),
        "accelerator_detail": accelerator,
        "qemu": qemu,
        "runc": runc,
        "guest_kernel": kernel,
        "hyper": str(info.get("version", "")),
        "date": time.strftime("%Y-%m-%d"),
    }


def bench(hyper: Hyper, settings: Settings, runs: int, tmp: Path) -> dict[str, Any]:
    about = machine(hyper, settings)
    hyper_samples = hyper_start(hyper, runs)

    bundle, runc_root = tmp / "bundle", tmp / "runc"
    try:
        log(f"runc: bundle in {bundle}")
        make_bundle(settings, bundle)
        runc_samples = runc_start(bundle, runc_root, runs)
    finally:
        with cleaning_up():
            runc_cleanup(runc_root)

    idle, supervisor = idle_pod(hyper, settings)
    return {
        "hyper_cold_start_s": summary(hyper_samples),
        "runc_start_s": summary(runc_samples),
        "ratio_median": round(
            statistics.median(hyper_samples) / statistics.median(runc_samples), 1
        ),
        "idle_pod_pss_mib": idle,
        "idle_pod_supervisor_pss_mib": supervisor,
        "machine": about,
    }


Bench = Callable[[Hyper, Settings, int, Path], dict[str, Any]]


def run_bench(
    script: str, doc: str | None, bench: Bench, default_runs: int, argv: Sequence[str] | None
) -> int:
    """The command line every benchmark here shares: ``--runs``, ``--config``, a private
    hyperd for the run, one JSON object on stdout, or FAILED and a non-zero status."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--runs",
        type=int,
        default=default_runs,
        help=f"timed runs of each (default {default_runs})",
    )
    parser.add_argument("--config", type=Path, help="hyper settings file (else a temporary one)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    on_sigterm()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="hyper-bench-") as tmp,
            hyperd_session(args.config, Path(tmp)) as (hyper, settings),
        ):
            result = bench(hyper, settings, args.runs, Path(tmp))
    except (BenchError, HyperError, OSError, ValueError) as exc:
        print(f"{script}: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench("bench/startup.py", __doc__, bench, 5, argv)


if __name__ == "__main__":
    sys.exit(main())
