"""The network service over a real SQLite file, with a host that changes nothing: tenants and
roles, quotas (networks, floating IPs) and the usage ledger of floating IPs."""

from __future__ import annotations

import asyncio
import secrets
from typing import cast

import pytest

from hyper import errors
from hyper.config.settings import NetworkSettings, Paths, Settings
from hyper.network.host import HostNetwork
from hyper.service.caller import Caller
from hyper.service.networks import NetworkService
from hyper.state.db import ContainerRecord, PodRecord
from hyper.tenancy.metering import Event, Kind
from hyper.tenancy.principal import Principal, Role, Scope

FIP_POOL = "203.0.113.16/30"  # two usable addresses


def admin(tenant: str) -> Caller:
    return Caller(Principal(tenant, Role.ADMIN, f"key-{tenant}"))


ALICE, BOB, CAROL = admin("alice"), admin("bob"), admin("carol")
MEMBER = Caller(Principal("alice", Role.MEMBER, "key-member"))
EVERY = Caller(Principal.local_operator("default"), every=True)


class Host:
    """The host's side, recorded instead of done."""

    def __init__(self) -> None:
        self.topologies: list[object] = []

    def routed(self) -> list[object]:
        return []

    def converge(self, topology: object) -> None:
        self.topologies.append(topology)


@pytest.fixture()
def settings(tmp_path):
    return Settings(
        paths=Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run"),
        network=NetworkSettings(fip_pool=(FIP_POOL,)),
    )


@pytest.fixture()
def service(settings, db, tenancy):
    return NetworkService(settings, db, cast(HostNetwork, Host()), tenancy=tenancy)


def run(coro):
    return asyncio.run(coro)


def add_pod(service, tenant, name, *, network="", ports=(), state="created"):
    """A pod as PodService records one, with its endpoint."""
    pod_id = secrets.token_hex(32)
    spec = {"name": name, "network": network, "ports": list(ports), "containers": []}
    pod = PodRecord(
        id=pod_id,
        name=name,
        spec=spec,
        restart={"policy": "no"},
        labels={},
        auto_remove=False,
        tenant=tenant,
        state=state,
        created_at=1.0,
    )
    pod.containers.append(ContainerRecord(secrets.token_hex(32), pod_id, name, name, "busybox"))
    service.db.insert_pod(pod)
    run(service.attach(pod, tenant))
    return pod


def message(call, *args, **kwargs):
    with pytest.raises(errors.NotFound) as raised:
        result = call(*args, **kwargs)
        if asyncio.iscoroutine(result):
            run(result)
    return str(raised.value)


# ---------------------------------------------------------------- scopes and roles


def test_another_tenants_network_answers_like_a_missing_one(service):
    net = run(service.create(ALICE, "net", subnet="10.99.1.0/24"))
    for ref in ("net", net.id, net.id[:8]):
        for call in (service.network, service.inspect, service.remove):
            assert message(call, BOB, ref) == message(call, CAROL, ref)
    assert message(service.network, BOB, "net") == "no such network: net"
    assert [n["name"] for n in service.networks(BOB)] == []
    assert [n["name"] for n in service.networks(ALICE)] == ["net"]
    mine = run(service.create(BOB, "net"))  # names are per tenant
    assert mine.id != net.id and service.network(BOB, "net").id == mine.id


def test_a_subnet_clash_names_nothing_of_another_tenant(service):
    run(service.create(ALICE, "secret-net", subnet="10.99.1.0/24"))
    with pytest.raises(errors.AlreadyExists) as theirs:
        run(service.create(BOB, "b", subnet="10.99.0.0/16"))
    assert str(theirs.value) == "subnet 10.99.0.0/16 is not available"
    with pytest.raises(errors.AlreadyExists) as own:  # one's own network may be named
        run(service.create(ALICE, "a2", subnet="10.99.1.128/25"))
    assert "secret-net" in str(own.value)
    assert [n["name"] for n in service.networks(BOB)] == []


def test_a_member_reads_and_changes_nothing(service, tenancy):
    run(service.create(ALICE, "net"))
    run(service.fip_allocate(ALICE))
    assert [n["name"] for n in service.networks(MEMBER)] == ["net"]
    assert service.inspect(MEMBER, "net")["tenant"] == "alice"
    [fip] = service.fips(MEMBER)
    for change in (
        service.create(MEMBER, "mine"),
        service.remove(MEMBER, "net"),
        service.fip_allocate(MEMBER),
        service.fip_disassociate(MEMBER, fip["address"]),
        service.fip_release(MEMBER, fip["address"]),
    ):
        with pytest.raises(errors.PermissionDenied):
            run(change)
    assert tenancy.quotas.usage("alice") == {"networks": 1, "fips": 1}


def test_the_operator_lists_every_tenant(service):
    run(service.create(ALICE, "net"))
    run(service.create(BOB, "net"))
    run(service.fip_allocate(BOB))
    assert sorted((n["tenant"], n["name"]) for n in service.networks(EVERY)) == [
        ("alice", "net"),
        ("bob", "net"),
    ]
    assert [f["tenant"] for f in service.fips(EVERY)] == ["bob"]
    with pytest.raises(errors.InvalidArgument, match="several"):
        service.network(EVERY, "net")
    with pytest.raises(errors.InvalidArgument):
        run(service.create(EVERY, "x"))  # a create names one tenant
    with pytest.raises(errors.InvalidArgument):
        run(service.fip_allocate(EVERY))
    run(service.remove(Caller.operator("bob"), "net"))
    assert [n["tenant"] for n in service.networks(EVERY)] == ["alice"]


def test_another_tenants_floating_ip_answers_like_a_missing_one(service, tenancy):
    fip = run(service.fip_allocate(ALICE))
    address = fip.address
    for call in (service.fip, service.fip_disassociate, service.fip_release):
        assert message(call, BOB, address) == message(call, CAROL, address)
    assert message(service.fip, BOB, address) == f"no such floating IP: {address}"
    assert service.fips(BOB) == []
    # nor can alice's address be pointed at bob's pod, or bob's at alice's
    bobs = add_pod(service, "bob", "web")
    with pytest.raises(errors.FailedPrecondition, match="no network of this tenant"):
        run(service.fip_associate(ALICE, address, bobs))
    assert service.fip(ALICE, address)["container"] == ""
    alices = add_pod(service, "alice", "web")
    assert run(service.fip_associate(ALICE, address, alices)).pod_id == alices.id
    assert service.fip(ALICE, address)["container"] == "web"


def test_host_ports_of_another_tenant_are_not_named(service):
    add_pod(service, "alice", "secret-pod", ports=("8080:80",), state="running")
    bobs = add_pod(service, "bob", "web", ports=("8080:80",))
    with pytest.raises(errors.AlreadyExists) as taken:
        run(service.prepare(bobs))
    assert "secret-pod" not in str(taken.value) and "not available" in str(taken.value)
    mine = add_pod(service, "alice", "again", ports=("8080:80",))
    with pytest.raises(errors.AlreadyExists, match="published by secret-pod"):
        run(service.prepare(mine))


# ---------------------------------------------------------------- quotas


def test_networks_over_quota_are_refused_and_the_default_network_is_free(service, tenancy):
    quotas = tenancy.quotas
    quotas.set_limits("alice", {"networks": 1})
    add_pod(service, "alice", "p")  # the tenant's first pod makes its default network
    assert [n["name"] for n in service.networks(ALICE)] == ["default"]
    assert quotas.usage("alice") == {}
    run(service.create(ALICE, "one"))
    with pytest.raises(errors.FailedPrecondition, match="quota exceeded"):
        run(service.create(ALICE, "two"))
    assert [n["name"] for n in service.networks(ALICE)] == ["default", "one"]
    assert quotas.usage("alice") == {"networks": 1}
    run(service.create(BOB, "two"))  # bob's quota is bob's
    run(service.remove(ALICE, "one"))
    assert quotas.usage("alice") == {}
    run(service.create(ALICE, "two"))
    assert quotas.usage("alice") == {"networks": 1}


def test_a_failed_network_creation_gives_its_quota_back(service, tenancy):
    run(service.create(ALICE, "a", subnet="10.99.1.0/24"))

    def clash(net):  # another hyperd's network took the subnet meanwhile
        raise errors.AlreadyExists(f"subnet {net.subnet} is not available")

    service.store.insert_network = clash
    with pytest.raises(errors.AlreadyExists):
        run(service.create(ALICE, "b", subnet="10.99.2.0/24"))
    assert tenancy.quotas.usage("alice") == {"networks": 1}


def test_floating_ips_over_quota_are_refused_and_release_frees_them(service, tenancy):
    quotas = tenancy.quotas
    quotas.set_limits("alice", {"fips": 1})
    first = run(service.fip_allocate(ALICE))
    with pytest.raises(errors.FailedPrecondition, match="quota exceeded"):
        run(service.fip_allocate(ALICE))
    assert [f["address"] for f in service.fips(ALICE)] == [first.address]
    assert quotas.usage("alice") == {"fips": 1}
    second = run(service.fip_allocate(BOB))  # the refused one did not take an address
    assert second.address != first.address
    run(service.fip_release(ALICE, first.address))
    assert quotas.usage("alice") == {} and service.fips(ALICE) == []
    run(service.fip_allocate(ALICE))
    assert quotas.usage("alice") == {"fips": 1}


# ---------------------------------------------------------------- the usage ledger


def test_a_floating_ip_is_metered_from_allocation_to_release(service, tenancy):
    fip = run(service.fip_allocate(ALICE))
    [running] = tenancy.ledger.running(Scope(None))
    assert (running.tenant, running.object_id, running.kind, running.at) == (
        "alice",
        fip.address,
        Kind.FIP,
        fip.created_at,
    )
    run(service.fip_release(ALICE, fip.address))
    assert tenancy.ledger.running(Scope(None)) == []
    events = tenancy.ledger.events(Scope("alice"), 0, fip.created_at + 3600)
    assert [e.event for e in events] == [Event.START, Event.STOP]


def test_recovery_reconciles_the_ledger_with_the_floating_ips(settings, db, tenancy, service):
    unmetered = NetworkService(
        settings, db, cast(HostNetwork, Host())
    )  # a crash before the ledger heard of it
    fip = run(unmetered.fip_allocate(ALICE))
    tenancy.ledger.start("bob", "203.0.113.99", Kind.FIP, at=fip.created_at)  # released since
    tenancy.ledger.start("bob", "f" * 64, Kind.VOLUME, at=fip.created_at)  # not ours
    run(service.recover())
    running = {e.object_id: e for e in tenancy.ledger.running(Scope(None))}
    assert set(running) == {fip.address, "f" * 64}
    assert running[fip.address].at == fip.created_at and running[fip.address].tenant == "alice"
    run(service.recover())  # again: nothing changes
    assert len(tenancy.ledger.events(Scope("alice"), 0, fip.created_at + 3600)) == 1
