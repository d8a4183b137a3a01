"""TCP throughput to and between pods with iperf3, beside the host's loopback in the same run.

Usage: ``.venv/bin/python bench/network.py [--runs N] [--config FILE] [--seconds S]``

Two busybox pods on one network (the default one of the private hyperd that bench/startup.py's
harness starts). iperf3 is Debian's (``apt-get install iperf3``); the busybox image has none, so
this script *copies it in*: a tar of ``/usr/bin/iperf3``, the shared libraries ``ldd`` lists and
the dynamic loader goes to ``/opt/iperf`` of each pod through ``hyper exec -i ... tar x``, and
iperf3 runs there as ``ld-linux-x86-64.so.2 --library-path /opt/iperf/lib iperf3``. Measured:
pod to pod (client in one pod, server in the other), host to pod (client on the host), and
host loopback (both on the host). One JSON object on stdout (Gbit/s, medians of ``--runs``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyper.config.settings import Settings

# bench/ is not a package: run as a script, its directory is sys.path[0], so this finds the
# sibling module.
from startup import BenchError, Hyper, check, log, run_bench, summary

PODS = ("iperfa", "iperfb")
IPERF = "/opt/iperf/iperf3"
SECONDS = 3


def iperf_tar() -> bytes:
    """Debian's iperf3 with its libraries and loader, plus a wrapper script that runs it."""
    binary = shutil.which("iperf3")
    if binary is None:
        raise BenchError("iperf3 is not installed (apt-get install iperf3)")
    libs = []
    for line in check(["ldd", binary], "ldd iperf3").splitlines():
        parts = line.split()
        path = next((p for p in parts if p.startswith("/")), None)
        if path:
            libs.append(Path(path))
    loader = next(p for p in libs if "ld-linux" in p.name)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(binary, "iperf3.bin")
        for lib in libs:
            tar.add(str(lib.resolve()), f"lib/{lib.name}")
        script = (
            f"#!/bin/sh\nexec /opt/iperf/lib/{loader.name} --library-path /opt/iperf/lib "
            '/opt/iperf/iperf3.bin "$@"\n'
        ).encode()
        info = tarfile.TarInfo("iperf3")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


def copy_in(hyper: Hyper, pod: str, data: bytes) -> None:
    done = subprocess.run(
        hyper.argv("exec", "-i", pod, "sh", "-c", "mkdir -p /opt/iperf && tar -xf - -C /opt/iperf"),
        input=data,
        capture_output=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise BenchError(f"copying iperf3 into {pod}: {done.stderr.decode()[-1000:]}")


def gbits(report: str) -> float:
    data = json.loads(report)
    if "error" in data:
        raise BenchError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def client_run(argv: list[str], what: str) -> str:
    """An iperf3 client's JSON report; retried while the server is not listening yet (``-D``
    returns before the daemon binds its port)."""
    for _ in range(100):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 120)
        if done.returncode == 0 and '"error"' not in done.stdout:
            return done.stdout
        if "Connection refused" not in done.stdout + done.stderr:
            raise BenchError(f"{what}: {done.stdout[-500:]}{done.stderr[-500:]}")
        time.sleep(0.2)  # the server resets between tests
    raise BenchError(f"{what}: the iperf3 server never answered")


def host_loopback(seconds: int) -> float:
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5299"], stdout=subprocess.DEVNULL)
    try:
        argv = ["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", str(seconds), "-J"]
        return gbits(client_run(argv, "iperf3 on loopback"))
    finally:
        server.kill()
        server.wait(timeout=30)


def bench(hyper: Hyper, settings: Settings, runs: int, tmp: Path) -> dict[str, Any]:
    for pod in PODS:
        check(hyper.argv("run", "-d", "--name", pod, "busybox", "sleep", "3600"), f"run {pod}")
    try:
        data = iperf_tar()
        for pod in PODS:
            copy_in(hyper, pod, data)
        network = json.loads(check(hyper.argv("network", "inspect", "default"), "inspect"))[0]
        server = {e["pod"]: e["address"] for e in network["endpoints"]}[PODS[1]]
        check(hyper.argv("exec", PODS[1], IPERF, "-s", "-D"), "iperf3 server in the pod")
        results: dict[str, list[float]] = {"pod_to_pod": [], "host_to_pod": [], "loopback": []}
        client = ["-c", server, "-t", str(SECONDS), "-J"]
        for i in range(runs):
            pod_to_pod = hyper.argv("exec", PODS[0], IPERF, *client)
            results["pod_to_pod"].append(gbits(client_run(pod_to_pod, "pod to pod")))
            results["host_to_pod"].append(gbits(client_run(["iperf3", *client], "host to pod")))
            results["loopback"].append(host_loopback(SECONDS))
            log(f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items()))
    finally:
        for pod in PODS:
            hyper.remove(pod)
    return {
        "unit": "Gbit/s",
        "seconds_per_run": SECONDS,
        "iperf3": "Debian's, copied into each pod (see the docstring)",
        **{name: summary(samples) for name, samples in results.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench("bench/network.py", __doc__, bench, 3, argv)


if __name__ == "__main__":
    sys.exit(main())
