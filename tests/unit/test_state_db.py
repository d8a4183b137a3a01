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
    pod = db.pod("p1", None)
    assert pod is not None and pod.labels == {"a": "b"} and not pod.auto_remove
    pod.state, pod.containers[0].exit_code = "exited", 3
    db.update_pod(pod)
    found = db.pod_of_container("c-p1", None)
    assert found is not None and found.state == "exited"
    assert found.containers[0].exit_code == 3
    assert db.pod_of_container("c-nope", None) is None
    db.delete_pod("p1")
    assert [p.name for p in db.pods(None)] == ["db"]
    assert db.pod_of_container("c-p1", None) is None  # containers go with their pod


def test_a_name_taken_refuses_the_whole_pod(tmp_path):
    db = Database(tmp_path / "hyperd.db")
    db.insert_pod(_pod("p1", "web"))
    with pytest.raises(errors.AlreadyExists, match="web"):
        db.insert_pod(_pod("p2", "web"))
    assert [p.id for p in db.pods(None)] == ["p1"]
    db.close()
    reopened = Database(tmp_path / "hyperd.db")
    assert [p.id for p in reopened.pods(None)] == ["p1"]


def _tenant_pod(pod_id: str, name: str, tenant: str) -> PodRecord:
    pod = _pod(pod_id, name)
    pod.tenant = tenant
    return pod


def test_names_are_unique_within_a_tenant_and_lookups_are_scoped(tmp_path):
    db = Database(tmp_path / "hyperd.db")
    db.insert_pod(_tenant_pod("p1", "web", "alice"))
    db.insert_pod(_tenant_pod("p2", "web", "bob"))  # the same name in another tenant
    with pytest.raises(errors.AlreadyExists, match="web"):
        db.insert_pod(_tenant_pod("p3", "web", "alice"))
    assert [p.id for p in db.pods("alice")] == ["p1"]
    assert [c.tenant for p in db.pods("bob") for c in p.containers] == ["bob"]
    assert {p.id for p in db.pods(None)} == {"p1", "p2"}
    assert db.pod("p2", "alice") is None and db.pod("p2", "bob") is not None
    assert db.pod_of_container("c-p2", "alice") is None
    pod = db.pod("p1", None)
    assert pod is not None
    pod.tenant = "bob"  # an update never moves a pod to another tenant
    db.update_pod(pod)
    assert [p.id for p in db.pods("alice")] == ["p1"]


_SCHEMA_3_POD = """
INSERT INTO pods (id, name, spec, restart, labels, auto_remove, state, created_at)
    VALUES ('p1', 'web', '{}', '{}', '{}', 0, 'running', 1.0);
INSERT INTO containers (id, pod_id, name, local_name, image, state, created_at)
    VALUES ('c1', 'p1', 'web', 'web', 'busybox', 'running', 1.0);
INSERT INTO networks (id, tenant, name, subnet, nat, created_at)
    VALUES ('n1', 'default', 'default', '10.88.0.0/24', 1, 1.0);
INSERT INTO endpoints (pod_id, network_id, address, aliases, ports)
    VALUES ('p1', 'n1', '10.88.0.2', '[]', '[]');
"""


def test_a_schema_3_file_is_migrated_with_its_pods_in_the_default_tenant(tmp_path, monkeypatch):
    import hyper.state.db as state

    path = tmp_path / "hyperd.db"
    monkeypatch.setattr(state, "SCHEMA_VERSION", 3)
    old = Database(path)
    old.connection.executescript(_SCHEMA_3_POD)
    old.close()
    monkeypatch.undo()
    db = Database(path)
    assert db.connection.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    (pod,) = db.pods("default")
    assert pod.name == "web" and pod.state == "running" and pod.containers[0].tenant == "default"
    # the rebuilt tables still carry the references of the others (endpoints go with the pod)
    assert db.query("SELECT address FROM endpoints")[0]["address"] == "10.88.0.2"
    db.delete_pod("p1")
    assert db.query("SELECT * FROM endpoints") == []
    assert db.query("PRAGMA foreign_keys")[0][0] == 1
