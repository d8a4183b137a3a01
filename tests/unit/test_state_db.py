"""hyperd's SQLite records: a pod and its containers are written and read whole."""

from __future__ import annotations

import pytest

from hyper import errors
from hyper.state.db import ContainerRecord, Database, PodRecord


def _pod(pod_id: str, name: str) -> PodRecord:
    pod = PodRecord(
        id=pod_id,
        name=name,
        spec={"name": name},
        restart={"policy": "no"},
        labels={"a": "b"},
        auto_remove=False,
        created_at=1.0,
    )
    pod.containers.append(
        ContainerRecord(
            id=f"c-{pod_id}",
            pod_id=pod_id,
            name=name,
            local_name=name,
            image="busybox",
            created_at=1.0,
        )
    )
    return pod


def test_round_trip_update_and_lookup_by_container(tmp_path):
    db = Database(tmp_path / "hyperd.db")
    db.insert_pod(_pod("p1", "web"))
    db.insert_pod(_pod("p2", "db"))
    pod = db.pod("p1")
    assert pod is not None and pod.labels == {"a": "b"} and not pod.auto_remove
    pod.state, pod.containers[0].exit_code = "exited", 3
    db.update_pod(pod)
    found = db.pod_of_container("c-p1")
    assert found is not None and found.state == "exited"
    assert found.containers[0].exit_code == 3
    assert db.pod_of_container("c-nope") is None
    db.delete_pod("p1")
    assert [p.name for p in db.pods()] == ["db"]
    assert db.pod_of_container("c-p1") is None  # containers go with their pod


def test_a_name_taken_refuses_the_whole_pod(tmp_path):
    db = Database(tmp_path / "hyperd.db")
    db.insert_pod(_pod("p1", "web"))
    with pytest.raises(errors.AlreadyExists, match="web"):
        db.insert_pod(_pod("p2", "web"))
    assert [p.id for p in db.pods()] == ["p1"]
    db.close()
    reopened = Database(tmp_path / "hyperd.db")
    assert [p.id for p in reopened.pods()] == ["p1"]
