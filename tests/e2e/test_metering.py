"""Per-second metering on real VMs: a pod is billed for exactly the time its VM ran, as its
supervisor saw it, also across a kill -9 of hyperd, and for a pod that ended while hyperd was
down."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.vm

RUN_SECONDS = 60.0


def _ok(result):
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode()


def _pod(hyper, name: str) -> dict[str, Any]:
    [view] = json.loads(_ok(hyper("pod", "inspect", name)))
    return dict(view)


def _usage(hyper) -> dict[str, dict[str, Any]]:
    report = json.loads(_ok(hyper("usage", "--since", "1h", "--format", "json")))
    return {item["id"]: item for item in report["objects"]}


def _metric(hyperd, name: str, tenant: str) -> float:
    """One counter of hyperd's ``/metrics`` (over the unix socket: the operator)."""
    transport = httpx.HTTPTransport(uds=str(hyperd.socket))
    with httpx.Client(transport=transport, base_url="http://hyperd", timeout=60) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    wanted = f'{name}{{tenant="{tenant}"}} '
    [line] = [line for line in answer.text.splitlines() if line.startswith(wanted)]
    return float(line.removeprefix(wanted))


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_pod_is_billed_for_the_seconds_it_ran_across_a_hyperd_crash(hyper, hyperd):
    """``long`` runs 60 s while hyperd is killed and restarted in the middle; ``short`` ends
    while hyperd is down. Each is billed ``finished_at - started_at`` (± 1 s), times its vCPUs
    and its memory."""
    _ok(
        hyper("run", "-d", "--name", "long", "--cpus", "2", "-m", "192M", "busybox", "sleep", "600")
    )
    _ok(hyper("run", "-d", "--name", "short", "busybox", "sleep", "20"))
    long, short = _pod(hyper, "long"), _pod(hyper, "short")
    assert long["state"] == short["state"] == "running"
    assert long["tenant"] == "default"

    hyperd.kill9()
    wait_for(lambda: _gone(short["supervisor_pid"]), 120, "short to end while hyperd is down")
    hyperd.start()

    ended = _pod(hyper, "short")
    assert ended["state"] == "exited" and ended["finished_at"] > ended["started_at"]
    wait_for(lambda: time.time() >= long["started_at"] + RUN_SECONDS, 120, "a minute of long")
    _ok(hyper("pod", "stop", "-t", "1", "long"))
    stopped = _pod(hyper, "long")
    ran = stopped["finished_at"] - stopped["started_at"]
    assert RUN_SECONDS <= ran < RUN_SECONDS + 30, ran

    usage = _usage(hyper)
    billed = usage[stopped["id"]]
    print(json.dumps({"ran": ran, "billed": billed}))  # the figures, with pytest -s
    assert billed["kind"] == "pod" and billed["name"] == "long" and billed["tenant"] == "default"
    assert billed["seconds"] == pytest.approx(ran, abs=1.0)
    assert billed["vcpu_seconds"] == pytest.approx(2 * ran, abs=2.0)
    assert billed["memory_gib_seconds"] == pytest.approx(192 / 1024 * ran, abs=0.2)
    short_ran = ended["finished_at"] - ended["started_at"]
    assert 20 <= short_ran < 50
    assert usage[ended["id"]]["seconds"] == pytest.approx(short_ran, abs=1.0)

    # Prometheus' counter (summaries kept with the events) is the whole history's report
    history = json.loads(_ok(hyper("usage", "--since", "0", "--format", "json")))["total"]
    counter = _metric(hyperd, "hyper_usage_vcpu_seconds_total", "default")
    assert counter == pytest.approx(history["vcpu_seconds"], abs=0.01)
    assert counter >= billed["vcpu_seconds"]

    time.sleep(2)  # a stopped pod costs nothing more, and its record outlives the pod
    assert _usage(hyper)[stopped["id"]]["seconds"] == billed["seconds"]
    _ok(hyper("pod", "rm", "long", "short"))
    assert _usage(hyper)[stopped["id"]]["seconds"] == billed["seconds"]
