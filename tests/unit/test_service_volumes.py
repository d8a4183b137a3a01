"""The volume service over a real SQLite file and the real local driver (no VM): tenants and
roles, quotas and the usage ledger, who uses what, exclusive read-write use, anonymous volumes,
host directories."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from hyper import errors
from hyper.config.settings import Paths, Settings
from hyper.model.mount import parse_mount
from hyper.model.pod import ContainerSpec, PodSpec
from hyper.service.caller import Caller
from hyper.service.events import EventBus
from hyper.service.volumes import VolumeService
from hyper.state.db import PodRecord
from hyper.tenancy.metering import Event, Kind
from hyper.tenancy.principal import Principal, Role, Scope


def admin(tenant: str) -> Caller:
    return Caller(Principal(tenant, Role.ADMIN, f"key-{tenant}"))


ALICE, BOB, CAROL = admin("alice"), admin("bob"), admin("carol")
MEMBER = Caller(Principal("alice", Role.MEMBER, "key-member"))
EVERY = Caller(Principal.local_operator("default"), every=True)
M = 1 << 20


@pytest.fixture()
def settings(tmp_path):
    return Settings(paths=Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run"))


@pytest.fixture()
def service(settings, db, tenancy):
    return VolumeService(settings, db, EventBus(), tenancy=tenancy)


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
        tenant=caller.writes().single(),
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
    assert service.conflicts(reader.id) == [writer.id] and service.conflicts(writer.id) == []
    with pytest.raises(errors.FailedPrecondition, match="writer uses it read-write"):
        service.attachments(reader.id, "reader")
    [attachment] = service.attachments(writer.id, "writer")  # its own use is no conflict
    assert attachment.target == "/data" and not attachment.readonly
    assert attachment.format == "qcow2" and attachment.disk.startswith("vol-")
    set_state(service, writer, "exited")
    set_state(service, reader, "running")
    r2 = add_pod(service, ALICE, "r2", "db:/d:ro")
    assert service.attachments(r2.id, "r2")[0].readonly and service.conflicts(r2.id) == []
    assert service.conflicts(writer.id) == [reader.id]  # r2 is not active: no conflict yet
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
    spec = PodSpec("p", (ContainerSpec("c", "busybox", volumes=(parse_mount("/srv:/srv:ro"),)),))
    with pytest.raises(errors.PermissionDenied):
        run(service.prepare(ALICE, secrets.token_hex(32), spec))
    # the host's operator, acting in a tenant, may
    assert run(service.prepare(Caller.operator("alice"), secrets.token_hex(32), spec)) == []


def test_a_failed_prepare_leaves_no_anonymous_volume(service, tenancy):
    spec = PodSpec(
        "p",
        (ContainerSpec("c", "busybox", volumes=(parse_mount("/a"), parse_mount("/srv:/b"))),),
    )
    with pytest.raises(errors.PermissionDenied):
        run(service.prepare(ALICE, secrets.token_hex(32), spec))
    assert service.volumes(ALICE) == [] and service.driver.volume_ids() == []
    assert tenancy.quotas.usage("alice") == {}  # its anonymous volume's charge went too


# ---------------------------------------------------------------- scopes and roles


def test_another_tenants_objects_answer_like_missing_ones(service):
    volume = run(service.create(ALICE, name="data", size="16M"))
    run(service.create_snapshot(ALICE, "data", name="snap"))

    def message(call, *args, **kwargs):
        with pytest.raises(errors.NotFound) as raised:
            result = call(*args, **kwargs)
            if asyncio.iscoroutine(result):
                run(result)
        return str(raised.value)

    for ref in ("data", volume.id, "snap"):  # bob's answers are carol's, who has nothing
        for call in (service.volume, service.snapshot, service.snapshots, service.remove,
                     service.remove_snapshot, service.create_snapshot):  # fmt: skip
            assert message(call, BOB, ref) == message(call, CAROL, ref)
    assert message(service.create, BOB, name="x", from_snapshot="snap") == message(
        service.create, CAROL, name="x", from_snapshot="snap"
    )
    assert message(service.volume, BOB, "data") == "no such volume: data"
    assert [v.name for v in service.volumes(ALICE)] == ["data"]  # all of it still there
    assert [s.name for s in service.snapshots(ALICE)] == ["snap"]


def test_a_member_reads_and_changes_nothing(service, tenancy):
    run(service.create(ALICE, name="data", size="16M"))
    run(service.create_snapshot(ALICE, "data", name="snap"))
    assert [v.name for v in service.volumes(MEMBER)] == ["data"]
    assert service.volume(MEMBER, "data").tenant == "alice"
    assert [s.name for s in service.snapshots(MEMBER, "data")] == ["snap"]
    assert service.snapshot(MEMBER, "snap").name == "snap"
    for change in (
        service.create(MEMBER, name="mine", size="16M"),
        service.remove(MEMBER, "data"),
        service.create_snapshot(MEMBER, "data"),
        service.remove_snapshot(MEMBER, "snap"),
    ):
        with pytest.raises(errors.PermissionDenied):
            run(change)
    assert [v.name for v in service.volumes(ALICE)] == ["data"]
    assert len(service.driver.volume_ids()) == 1 and tenancy.quotas.usage("alice") == {
        "volume_bytes": 16 * M,
        "snapshots": 1,
    }


def test_the_operator_lists_every_tenant_and_acts_in_one(service):
    a = run(service.create(ALICE, name="data", size="16M"))
    b = run(service.create(BOB, name="data", size="16M"))
    run(service.create(BOB, name="other", size="16M"))
    assert sorted((v.tenant, v.name) for v in service.volumes(EVERY)) == [
        ("alice", "data"),
        ("bob", "data"),
        ("bob", "other"),
    ]
    with pytest.raises(errors.InvalidArgument, match="several tenants"):
        service.volume(EVERY, "data")  # two tenants' "data": not a guess
    assert service.volume(EVERY, b.id).tenant == "bob" and service.volume(EVERY, "other")
    with pytest.raises(errors.InvalidArgument):
        run(service.create(EVERY, name="x", size="16M"))  # a change names one tenant
    with pytest.raises(errors.InvalidArgument, match="several tenants"):
        run(service.remove(EVERY, "data"))
    run(service.remove(EVERY, "other"))  # whose it is, the volume says
    operator = Caller.operator("bob")
    assert [v.name for v in service.volumes(operator)] == ["data"]
    run(service.remove(operator, "data"))
    assert [v.id for v in service.volumes(EVERY) if v.name == "data"] == [a.id]
    # a tenant admin may not act in another tenant, nor list every tenant
    for caller in (Caller(ALICE.principal, tenant="bob"), Caller(ALICE.principal, every=True)):
        with pytest.raises(errors.PermissionDenied):
            service.volumes(caller)


def test_volume_events_carry_their_tenant(service):
    seen: list[Any] = []
    service.events.publish = seen.append
    run(service.create(ALICE, name="data", size="16M"))
    run(service.create_snapshot(ALICE, "data", name="s"))
    assert [(e.type, e.action, e.tenant) for e in seen] == [
        ("volume", "create", "alice"),
        ("snapshot", "create", "alice"),
    ]


# ---------------------------------------------------------------- quotas


def test_a_volume_over_quota_is_refused_and_leaves_nothing(service, tenancy):
    quotas = tenancy.quotas
    quotas.set_limits("alice", {"volume_bytes": 32 * M})
    run(service.create(ALICE, name="a", size="16M"))
    with pytest.raises(errors.FailedPrecondition, match="quota exceeded"):
        run(service.create(ALICE, name="b", size="32M"))
    assert [v.name for v in service.volumes(ALICE)] == ["a"]
    assert len(service.driver.volume_ids()) == 1
    assert quotas.usage("alice") == {"volume_bytes": 16 * M}
    assert [e.object_id for e in tenancy.ledger.running(Scope(None))] == [
        service.volume(ALICE, "a").id
    ]
    run(service.create(BOB, name="b", size="32M"))  # bob's quota is bob's
    run(service.remove(ALICE, "a"))  # removal frees the quota
    assert quotas.usage("alice") == {}
    run(service.create(ALICE, name="b", size="32M"))
    assert quotas.usage("alice") == {"volume_bytes": 32 * M}


def test_a_failed_creation_gives_its_quota_back(service, tenancy):
    async def broken(volume_id, size):
        raise errors.Internal("the disk is full")

    service.driver.create = broken
    with pytest.raises(errors.Internal):
        run(service.create(ALICE, name="a", size="16M"))
    assert tenancy.quotas.usage("alice") == {} and service.volumes(ALICE) == []
    assert tenancy.ledger.running(Scope(None)) == []


def test_snapshots_are_counted_and_their_removal_frees_them(service, tenancy):
    quotas = tenancy.quotas
    quotas.set_limits("alice", {"snapshots": 1})
    run(service.create(ALICE, name="v", size="16M"))
    first = run(service.create_snapshot(ALICE, "v", name="s1"))
    with pytest.raises(errors.FailedPrecondition, match="snapshots"):
        run(service.create_snapshot(ALICE, "v", name="s2"))
    assert [s.name for s in service.snapshots(ALICE)] == ["s1"]
    assert quotas.usage("alice")["snapshots"] == 1
    # a volume made from a snapshot pays for the snapshot's size
    copy = run(service.create(ALICE, name="copy", from_snapshot="s1"))
    assert copy.size == 16 * M and quotas.usage("alice")["volume_bytes"] == 32 * M
    run(service.remove_snapshot(ALICE, first.id))
    assert "snapshots" not in quotas.usage("alice")
    run(service.create_snapshot(ALICE, "v", name="s2"))
    assert quotas.usage("alice")["snapshots"] == 1


def test_anonymous_volumes_are_charged_to_their_pods_tenant(service, tenancy):
    quotas = tenancy.quotas
    pod = add_pod(service, ALICE, "p", "/cache")
    [anonymous] = service.volumes(ALICE)
    assert quotas.usage("alice") == {"volume_bytes": anonymous.size}
    run(service.create_snapshot(ALICE, anonymous.name, name="s"))
    service.tables._db.delete_pod(pod.id)
    run(service.release(pod.id))  # the volume goes with its pod, its snapshot too
    assert quotas.usage("alice") == {} and service.snapshots(ALICE) == []
    # over quota, a pod's anonymous volume is refused and nothing of the pod's stays
    quotas.set_limits("alice", {"volume_bytes": 16 * M})
    spec = PodSpec("q", (ContainerSpec("c", "busybox", volumes=(parse_mount("/a"),)),))
    with pytest.raises(errors.FailedPrecondition, match="quota"):
        run(service.prepare(ALICE, secrets.token_hex(32), spec))
    assert service.volumes(ALICE) == [] and service.driver.volume_ids() == []


# ---------------------------------------------------------------- the usage ledger


def test_a_volume_is_metered_from_creation_to_removal(service, tenancy):
    ledger = tenancy.ledger
    volume = run(service.create(ALICE, name="data", size="16M"))
    [running] = ledger.running(Scope("alice"))
    assert (running.object_id, running.kind, running.bytes, running.name) == (
        volume.id,
        Kind.VOLUME,
        16 * M,
        "data",
    )
    assert running.at == volume.created_at
    assert ledger.running(Scope("bob")) == []
    run(service.remove(ALICE, "data"))
    assert ledger.running(Scope(None)) == []
    events = ledger.events(Scope("alice"), 0, volume.created_at + 3600)
    assert [e.event for e in events] == [Event.START, Event.STOP]


def test_recovery_reconciles_the_ledger_with_the_volumes(settings, db, tenancy, service):
    # a crash between the record and its ledger event: made by a service without a ledger
    unmetered = VolumeService(settings, db, EventBus())
    volume = run(unmetered.create(ALICE, name="data", size="16M"))
    # and an interval open for a volume that is gone (a crash after its removal)
    tenancy.ledger.start("bob", "f" * 64, Kind.VOLUME, at=volume.created_at, size=M)
    # an open FIP interval is not the volume service's business
    tenancy.ledger.start("bob", "203.0.113.16", Kind.FIP, at=volume.created_at)
    run(service.recover())
    running = {e.object_id: e for e in tenancy.ledger.running(Scope(None))}
    assert set(running) == {volume.id, "203.0.113.16"}
    assert running[volume.id].at == volume.created_at and running[volume.id].bytes == 16 * M
    run(service.recover())  # again: nothing changes
    assert len(tenancy.ledger.events(Scope("alice"), 0, volume.created_at + 3600)) == 1
