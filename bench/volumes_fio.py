"""Block I/O of a volume inside a pod, beside the same fio on the same host disk, in one run.

Usage: ``.venv/bin/python bench/volumes_fio.py [--runs N] [--config FILE] [--seconds S]``

fio reaches the guest in an image, ``fio-bench:local``, built here into hyperd's image store
from the host's own ``/usr/bin/fio`` and every library ``ldd`` names (Debian's fio links ~80 MB
of them: rbd, gluster, ...), with the host's dynamic loader at its usual path: the guest kernel
runs the host's binary unchanged. The pod mounts a fresh qcow2 volume (``hyper volume
create``) at /data; the host run uses a file in a directory next to hyperd's volumes, so both
sit on the same host disk. Both run the same four jobs one after the other (``stonewall``):
sequential write and read (1 MiB blocks, depth 8), random write and read (4 KiB, depth 16),
libaio with O_DIRECT, over the same file size and time. ``runs`` repeats each side and keeps
the median per job. One JSON object on stdout, progress on stderr; every pod and volume made
is removed. See docs/benchmarks.md and docs/volumes.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper.config.settings import Settings
from hyper.images.builder import File, Symlink, build_image
from hyper.images.oci import ImageConfig
from hyper.images.store import ImageStore

# bench/ is not a package: run as a script, its directory is sys.path[0].
from startup import (
    BenchError,
    Hyper,
    check,
    cleaning_up,
    log,
    machine,
    run_bench,
    summary,
    timed,
)

IMAGE = "fio-bench:local"
VOLUME = "fio-bench"
SIZE = "256M"
JOBS = (
    ("seq_write", "write", "1M", 8),
    ("seq_read", "read", "1M", 8),
    ("rand_write", "randwrite", "4k", 16),
    ("rand_read", "randread", "4k", 16),
)
SECONDS = 10


def fio_argv(directory: str, seconds: int, direct: bool = True) -> list[str]:
    argv = [
        "fio",
        "--output-format=json",
        f"--directory={directory}",
        "--filename=fio.dat",
        f"--size={SIZE}",
        f"--runtime={seconds}",
        "--time_based",
        "--ioengine=libaio",
        f"--direct={int(direct)}",
        "--group_reporting",
    ]
    for name, rw, bs, depth in JOBS:
        argv += [f"--name={name}", f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}", "--stonewall"]
    return argv


def fio_image(settings: Settings) -> None:
    """``fio-bench:local``: the host's fio, its libraries and loader, and busybox's shell."""
    fio = shutil.which("fio")
    if fio is None:
        raise BenchError("fio is not installed (scripts/setup.sh)")
    out = subprocess.run(["ldd", fio], capture_output=True, text=True, check=True).stdout
    paths = {fio}
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and parts[parts.index("=>") + 1].startswith("/"):
            paths.add(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            paths.add(parts[0])  # the loader
    layer: dict[str, Any] = {}
    for path in sorted(paths):
        real = os.path.realpath(path)
        layer[real.lstrip("/")] = File(Path(real).read_bytes(), mode=0o755)
        if real != path:
            layer[path.lstrip("/")] = Symlink(real)
    layer["bin/busybox"] = File(Path("/bin/busybox").read_bytes(), mode=0o755)
    layer["bin/sh"] = Symlink("/bin/busybox")
    layer.setdefault(
        "lib64/ld-linux-x86-64.so.2", Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    )
    config = ImageConfig(cmd=("fio", "--version"), env=("PATH=/usr/bin:/bin",))
    build_image(ImageStore(settings.paths.images), IMAGE, [layer], config)


def summarise(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per job: MB/s, IOPS and the 99th percentile of completion latency (µs)."""
    found = {}
    for job in document["jobs"]:
        side = job["write"] if job["write"]["io_bytes"] else job["read"]
        p99 = side.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0)
        found[job["jobname"]] = {
            "mb_s": round(side["bw_bytes"] / 1e6, 1),
            "iops": round(side["iops"], 0),
            "p99_us": round(p99 / 1000, 0),
        }
    return found


def median(samples: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        job: {key: statistics.median(s[job][key] for s in samples) for key in samples[0][job]}
        for job in samples[0]
    }


def in_pod(hyper: Hyper, seconds: int) -> dict[str, dict[str, float]]:
    """Detached, then its logs: fio prints its ~25 KB of JSON at once as it exits, which an
    attached ``hyper run`` sometimes loses (see docs/volumes.md, "Known problems")."""
    name = "fio-bench"
    check(
        hyper.argv("run", "-d", "--name", name, "-v", f"{VOLUME}:/data", IMAGE,
                   *fio_argv("/data", seconds)),
        "fio in a pod",
    )  # fmt: skip
    try:
        status = check(hyper.argv("wait", name), "hyper wait", timeout=600).strip()
        output = check(hyper.argv("logs", name), "hyper logs")
    finally:
        hyper.remove(name)
    if status != "0":
        raise BenchError(f"fio in a pod exited {status}: {output[-2000:]}")
    return summarise(json.loads(output))


def on_host(directory: Path, seconds: int, direct: bool) -> dict[str, dict[str, float]]:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        argv = fio_argv(str(directory), seconds, direct)
        return summarise(json.loads(check(argv, "fio on the host")))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def lifecycle(hyper: Hyper, runs: int) -> dict[str, Any]:
    """Wall times of the CLI verbs (Python start-up of the CLI included, as for a user): a
    1 GiB volume, an offline snapshot, a live one (a pod has the volume attached read-write),
    a volume from that snapshot."""
    samples: dict[str, list[float]] = {
        "volume_create_1g_s": [],
        "snapshot_offline_s": [],
        "snapshot_live_s": [],
        "volume_from_snapshot_s": [],
    }
    for i in range(runs):
        vol, copy, holder = f"lc-{i}", f"lc-{i}-copy", f"lc-holder-{i}"
        samples["volume_create_1g_s"].append(
            timed(hyper.argv("volume", "create", "--name", vol, "--size", "1G"), "volume create")
        )
        try:
            samples["snapshot_offline_s"].append(
                timed(hyper.argv("snapshot", "create", "--name", f"{vol}-off", vol), "snapshot")
            )
            check(
                hyper.argv("run", "-d", "--name", holder, "-v", f"{vol}:/data", "busybox",
                           "sh", "-c", "echo x > /data/f; sleep 600"),
                "a pod holding the volume",
            )  # fmt: skip
            samples["snapshot_live_s"].append(
                timed(hyper.argv("snapshot", "create", "--name", f"{vol}-live", vol), "live")
            )
            shown = json.loads(check(hyper.argv("snapshot", "inspect", f"{vol}-live"), "inspect"))
            if shown[0]["consistency"] != "application":
                raise BenchError(f"a live snapshot was {shown[0]['consistency']}")
            samples["volume_from_snapshot_s"].append(
                timed(
                    hyper.argv(
                        "volume", "create", "--name", copy, "--from-snapshot", f"{vol}-live"
                    ),
                    "volume from a snapshot",
                )
            )
        finally:
            with cleaning_up():
                hyper.remove(holder)
                for argv in (
                    ("snapshot", "rm", f"{vol}-off", f"{vol}-live"),
                    ("volume", "rm", copy),
                    ("volume", "rm", vol),
                ):
                    subprocess.run(hyper.argv(*argv), capture_output=True, timeout=120)
    return {key: summary(values) for key, values in samples.items()}


def bench(hyper: Hyper, settings: Settings, runs: int, tmp: Path) -> dict[str, Any]:
    about = machine(hyper, settings)
    seconds = int(os.environ.get("FIO_SECONDS", SECONDS))
    log(f"building {IMAGE} from the host's fio")
    fio_image(settings)
    known = hyper.container_ids()
    check(hyper.argv("volume", "create", "--name", VOLUME, "--size", "1G"), "volume create")
    try:
        guest, host, cached = [], [], []
        for run in range(runs):
            log(f"run {run + 1}/{runs}: fio in a pod on a qcow2 volume ({seconds} s per job)")
            guest.append(in_pod(hyper, seconds))
            log(f"run {run + 1}/{runs}: fio on the host disk")
            host.append(on_host(settings.paths.state_dir / "fio-host", seconds, True))
            log(f"run {run + 1}/{runs}: fio on the host disk through the page cache")
            cached.append(on_host(settings.paths.state_dir / "fio-host", seconds, False))
    finally:
        with cleaning_up():
            for ref in sorted(hyper.container_ids() - known):  # a pod a failure left
                hyper.remove(ref)
            try:
                check(hyper.argv("volume", "rm", VOLUME), "volume rm")
            except BenchError as exc:
                log(f"cannot remove the volume: {exc}")
    log("volume and snapshot verbs")
    verbs = lifecycle(hyper, runs)
    pod, bare, page_cache = median(guest), median(host), median(cached)
    return {
        "benchmark": "volumes_fio",
        "machine": about,
        "setup": {
            "file_size": SIZE,
            "seconds_per_job": seconds,
            "runs": runs,
            "engine": "libaio, O_DIRECT",
            "volume": "qcow2 on the host's page cache (QEMU cache=writeback), ext4 in the guest",
            "host": "a file in hyperd's state dir, same disk, ext4 on the host, O_DIRECT",
            "host_page_cache": "the same without O_DIRECT: what QEMU's cache=writeback gives",
            "jobs": [{"name": n, "rw": rw, "bs": bs, "iodepth": d} for n, rw, bs, d in JOBS],
        },
        "pod": pod,
        "host": bare,
        "host_page_cache": page_cache,
        "verbs": verbs,
        "pod_vs_host": {
            job: round(pod[job]["mb_s"] / bare[job]["mb_s"], 3) if bare[job]["mb_s"] else None
            for job in pod
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench("volumes_fio.py", __doc__, bench, 1, argv)


if __name__ == "__main__":
    sys.exit(main())
