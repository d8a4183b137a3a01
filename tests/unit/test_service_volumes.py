"""The volume service over a real SQLite file and the real local driver (no VM): tenants, who
uses what, exclusive read-write use, anonymous volumes, host directories."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from hyper import errors
from hyper.config.settings import Paths, Settings
from hyper.model.mount import parse_mount
from hyper.model.pod import ContainerSpec, PodSpec
from hyper.service.caller import Caller
from hyper.service.events import EventBus
from hyper.service.volumes import VolumeService
from hyper.state.db import Database, PodRecord

ALICE, BOB = Caller("alice"), Caller("bob")


@pytest.fixture()
def service(tmp_path):
    settings = Settings(paths=Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run"))
    db = Database(settings.paths.state_dir / "hyperd.db")
    yield VolumeService(settings, db, EventBus())
    db.close()


def run(coro):
    return asyncio.run(coro)


def add_pod(service, caller, name, *volumes, state="created"):
    """A pod as PodService records one: prepare, insert, bind."""
    spec = PodSpec(name, (ContainerSpec("c", "busybox", volumes=tuple(map(parse_mount, volumes))),))
    pod = PodRecord(
        id=secrets.token_hex(32),
        name=name,
        spec=spec.to_dict(),
        restart={"policy": "no"},
        labels={},
        auto_remove=False,
        state=state,
        created_at=1.0,
    )
    refs = run(service.prepare(caller, pod.id, spec))
    service.tables._db.insert_pod(pod)
    service.bind(refs)
    return pod


def set_state(service, pod, state):
    pod.state = state
    service.tables._db.update_pod(pod)


def test_another_tenants_volumes_and_snapshots_are_invisible(service):
    run(service.create(ALICE, name="data", size="16M"))
    run(service.create_snapshot(ALICE, "data", name="snap"))
    assert [v.name for v in service.volumes(ALICE)] == ["data"]
    assert service.volumes(BOB) == [] and service.snapshots(BOB) == []
    alice_id = service.volume(ALICE, "data").id
    for ref in ("data", alice_id, alice_id[:8]):
        with pytest.raises(errors.NotFound):
            service.volume(BOB, ref)
    with pytest.raises(errors.NotFound):
        run(service.remove(BOB, "data"))
    with pytest.raises(errors.NotFound):
        run(service.create(BOB, name="x", from_snapshot="snap"))
    # the same name in another tenant is another volume
    run(service.create(BOB, name="data", size="16M"))
    assert service.volume(BOB, "data").id != alice_id
    run(service.remove_snapshot(ALICE, "snap"))
    for caller in (ALICE, BOB):
        run(service.remove(caller, "data"))
    assert service.driver.volume_ids() == []


def test_a_referenced_volume_cannot_be_removed_and_rw_use_is_exclusive(service):
    run(service.create(ALICE, name="db", size="16M"))
    writer = add_pod(service, ALICE, "writer", "db:/data")
    reader = add_pod(service, ALICE, "reader", "db:/data:ro")
    with pytest.raises(errors.FailedPrecondition, match="in use by pod reader, writer"):
        run(service.remove(ALICE, "db"))
    set_state(service, writer, "running")
    with pytest.raises(errors.FailedPrecondition, match="writer uses it read-write"):
        service.attachments(reader.id, "reader")
    [attachment] = service.attachments(writer.id, "writer")  # its own use is no conflict
    assert attachment.target == "/data" and not attachment.readonly
    assert attachment.format == "qcow2" and attachment.disk.startswith("vol-")
    set_state(service, writer, "exited")
    set_state(service, reader, "running")
    assert service.attachments(add_pod(service, ALICE, "r2", "db:/d:ro").id, "r2")[0].readonly
    with pytest.raises(errors.FailedPrecondition, match="reader uses it read-only"):
        service.attachments(writer.id, "writer")


def test_offline_snapshots_are_clean_and_volumes_with_snapshots_stay(service):
    run(service.create(ALICE, name="v", size="16M"))
    snap = run(service.create_snapshot(ALICE, "v", name="s"))
    assert snap.consistency == "clean" and snap.size == 16 << 20
    with pytest.raises(errors.AlreadyExists):
        run(service.create_snapshot(ALICE, "v", name="s"))
    with pytest.raises(errors.FailedPrecondition, match="snapshot"):
        run(service.remove(ALICE, "v"))
    copy = run(service.create(ALICE, name="copy", from_snapshot="s"))
    assert copy.size == 16 << 20 and copy.source_snapshot == snap.id
    with pytest.raises(errors.InvalidArgument):
        run(service.create(ALICE, name="c2", from_snapshot="s", size="32M"))
    run(service.remove_snapshot(ALICE, "s"))
    for name in ("v", "copy"):
        run(service.remove(ALICE, name))


def test_anonymous_volumes_belong_to_their_pod(service):
    pod = add_pod(service, ALICE, "p", "/cache", "named:/named")
    names = sorted(v.name for v in service.volumes(ALICE))
    assert names[0].startswith("anon-") and names[1] == "named"  # named: made as docker does
    service.tables._db.delete_pod(pod.id)
    run(service.release(pod.id))
    assert [v.name for v in service.volumes(ALICE)] == ["named"]
    # a hyperd that died between the two removals: the next start finds the orphan
    orphan = add_pod(service, ALICE, "q", "/tmp2")
    service.tables._db.delete_pod(orphan.id)
    run(service.recover())
    assert [v.name for v in service.volumes(ALICE)] == ["named"]
    run(service.remove(ALICE, "named"))
    assert service.driver.volume_ids() == []


def test_host_directories_are_for_the_operator_only(service):
    spec = PodSpec("p", (ContainerSpec("c", "busybox", volumes=(parse_mount("/srv:/srv"),)),))
    with pytest.raises(errors.PermissionDenied):
        run(service.prepare(Caller("alice", operator=False), secrets.token_hex(32), spec))


def test_a_failed_prepare_leaves_no_anonymous_volume(service):
    spec = PodSpec(
        "p",
        (ContainerSpec("c", "busybox", volumes=(parse_mount("/a"), parse_mount("/srv:/b"))),),
    )
    with pytest.raises(errors.PermissionDenied):
        run(service.prepare(Caller("alice", operator=False), secrets.token_hex(32), spec))
    assert service.volumes(Caller("alice")) == [] and service.driver.volume_ids() == []
