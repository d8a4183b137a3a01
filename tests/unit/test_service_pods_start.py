"""PodService.start over a stand-in supervisor: what hyperd records when a pod's start returns."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from hyper.service.core import Services
from hyper.shim import launch
from hyper.state.db import ContainerRecord, PodRecord


def _created_pod(services: Services) -> PodRecord:
    pod_id = secrets.token_hex(32)
    pod = PodRecord(
        id=pod_id,
        name="web",
        spec={"name": "web", "containers": [{"name": "c", "image": "busybox"}]},
        restart={"policy": "no"},
        labels={},
        auto_remove=False,
        created_at=1.0,
        containers=[
            ContainerRecord(
                id=secrets.token_hex(32), pod_id=pod_id, name="web", local_name="c", image="busybox"
            )
        ],
    )
    services.db.insert_pod(pod)
    return pod


def _start_over(services: Services, monkeypatch, status: dict[str, Any]) -> PodRecord:
    """Start a new pod under a stand-in supervisor (a ``sleep``) that has written ``status``
    before its ready line, as the real one does; the pod as recorded when start returned."""
    services.pods.network = None  # no host network in a unit test
    pod = _created_pod(services)

    async def scenario() -> PodRecord:
        child = await asyncio.create_subprocess_exec("sleep", "60")

        async def spawn(directory: Path, **_: Any) -> tuple[Any, dict[str, Any]]:
            (directory / "status.json").write_text(json.dumps(status))
            return child, {"ok": True, "pid": child.pid, "vm_pid": None}

        monkeypatch.setattr(launch, "spawn", spawn)
        watcher = None
        try:
            await services.pods.start(pod.id)
            watcher = services.pods._live[pod.id].watcher
            recorded = services.db.pod(pod.id, None)
            assert recorded is not None
            return recorded
        finally:
            child.kill()
            await child.wait()
            if watcher is not None:  # it settles the pod once its supervisor is gone
                await asyncio.wait_for(watcher, 30)

    return asyncio.run(scenario())


def test_a_started_container_reports_when_the_guest_started_it_not_when_the_vm_booted(
    services: Services, monkeypatch
):
    """A container's ``started_at`` is known when start returns and does not change later,
    when hyperd follows the supervisor's status."""
    guest_start = 4_000_000_000.5
    status = {
        "version": 1,
        "pod": {"state": "running"},
        "containers": {"c": {"state": "running", "pid": 7, "started_at": guest_start}},
    }
    recorded = _start_over(services, monkeypatch, status)
    (container,) = recorded.containers
    assert recorded.state == "running" and container.state == "running"
    assert container.started_at == guest_start
    assert recorded.started_at is not None and recorded.started_at < guest_start


def test_a_hostile_status_falls_back_to_the_pods_start(services: Services, monkeypatch):
    recorded = _start_over(services, monkeypatch, {"containers": {"c": ["x"]}})
    assert recorded.containers[0].started_at == recorded.started_at
