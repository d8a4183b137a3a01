"""hyperd's volume, snapshot and network routes over the real services (SQLite, qemu-img), no VM:
the unix socket's operator, and tenants authenticated by their access keys."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from hyper.config.settings import from_dict
from hyper.daemon.app import create_app
from hyper.daemon.auth import as_operator
from hyper.service.core import Services
from hyper.tenancy.principal import Role
from tests.unit.conftest import tcp_app


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no registry in this test", request=request)


def _client(root) -> TestClient:
    settings = from_dict({"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "r")}})
    services = Services.build(settings, registry_transport=httpx.MockTransport(_no_network))
    return TestClient(as_operator(create_app(services)))


def test_volume_and_snapshot_lifecycle(tmp_path):
    client = _client(tmp_path)
    made = client.post("/v1/volumes", json={"name": "db", "size": "32M"})
    assert made.status_code == 201, made.text
    assert made.json()["size"] == 32 << 20 and made.json()["tenant"] == "default"
    assert client.post("/v1/volumes", json={"name": "db"}).status_code == 409
    assert client.post("/v1/volumes", json={"size": "1K"}).status_code == 400
    assert client.post("/v1/volumes", json={"name": "../x"}).status_code == 400
    assert [v["name"] for v in client.get("/v1/volumes").json()] == ["db"]
    detail = client.get("/v1/volumes/db").json()
    assert detail["allocated"] > 0 and detail["snapshots"] == [] and detail["users"] == []
    snap = client.post("/v1/snapshots", json={"volume": "db", "name": "s"})
    assert snap.status_code == 201 and snap.json()["consistency"] == "clean"
    assert client.get("/v1/snapshots", params={"volume": "db"}).json()[0]["name"] == "s"
    assert client.delete("/v1/volumes/db").status_code == 409  # it has a snapshot
    copy = client.post("/v1/volumes", json={"name": "copy", "from_snapshot": "s"})
    assert copy.status_code == 201 and copy.json()["source_snapshot"] == snap.json()["id"]
    assert client.delete("/v1/snapshots/s").status_code == 204
    for name in ("db", "copy"):
        assert client.delete(f"/v1/volumes/{name}").status_code == 204
    assert client.get("/v1/volumes/db").status_code == 404
    assert not list((tmp_path / "state" / "volumes").iterdir())


def _tenants(root):
    """The app as the TCP listener serves it (every request authenticated by its key), with
    tenants alice and bob, and a key per role."""
    settings = from_dict({"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "r")}})
    services = Services.build(settings, registry_transport=httpx.MockTransport(_no_network))
    for tenant in ("alice", "bob"):
        services.tenancy.tenants.create(tenant)
    keys = services.tenancy.keys

    def client(tenant: str, role: Role) -> TestClient:
        key = keys.create(tenant, role).key
        return TestClient(tcp_app(services), headers={"Authorization": f"Bearer {key}"})

    return services, client


def test_tenants_see_only_their_own_volumes_through_the_api(tmp_path):
    services, client = _tenants(tmp_path)
    alice, bob = client("alice", Role.ADMIN), client("bob", Role.ADMIN)
    member = client("alice", Role.MEMBER)
    made = alice.post("/v1/volumes", json={"name": "db", "size": "16M"})
    assert made.status_code == 201 and made.json()["tenant"] == "alice"
    assert alice.post("/v1/snapshots", json={"volume": "db", "name": "s"}).status_code == 201
    assert bob.get("/v1/volumes").json() == [] and bob.get("/v1/snapshots").json() == []
    for kind, ref in (("volume", "db"), ("volume", made.json()["id"]), ("snapshot", "s")):
        path = f"/v1/{kind}s/{ref}"  # as if it did not exist
        assert bob.get(path).json() == {"kind": "NotFound", "message": f"no such {kind}: {ref}"}
        assert bob.delete(path).json() == bob.get(path).json()
    assert bob.post("/v1/snapshots", json={"volume": "db"}).status_code == 404
    # a member reads, and changes nothing (403)
    assert [v["name"] for v in member.get("/v1/volumes").json()] == ["db"]
    assert member.post("/v1/volumes", json={"name": "x"}).status_code == 403
    assert member.delete("/v1/snapshots/s").status_code == 403
    # over quota: 409, and the quota is given back with the volume
    services.tenancy.quotas.set_limits("alice", {"volume_bytes": 20 << 20})
    over = alice.post("/v1/volumes", json={"name": "big", "size": "16M"})
    assert over.status_code == 409 and "quota exceeded" in over.json()["message"]
    assert alice.delete("/v1/snapshots/s").status_code == 204
    assert alice.delete("/v1/volumes/db").status_code == 204
    assert alice.post("/v1/volumes", json={"name": "big", "size": "16M"}).status_code == 201
    # the operator's every-tenant listing (the unix socket's caller, --tenant '*')
    assert bob.post("/v1/volumes", json={"name": "big", "size": "16M"}).status_code == 201
    operator = TestClient(as_operator(create_app(services)), headers={"X-Hyper-Tenant": "*"})
    listed = sorted((v["tenant"], v["name"]) for v in operator.get("/v1/volumes").json())
    assert listed == [("alice", "big"), ("bob", "big")]
    assert operator.get("/v1/volumes/big").status_code == 400  # whose? name one tenant
    assert alice.delete("/v1/volumes/big").status_code == 204
    assert bob.delete("/v1/volumes/big").status_code == 204


def test_tenants_see_only_their_own_networks_and_floating_ips(tmp_path):
    services, client = _tenants(tmp_path)
    alice, bob = client("alice", Role.ADMIN), client("bob", Role.ADMIN)
    made = alice.post("/v1/networks", json={"name": "net", "subnet": "10.99.1.0/24"})
    assert made.status_code == 201 and made.json()["tenant"] == "alice"
    assert bob.get("/v1/networks").json() == []
    assert bob.get("/v1/networks/net").status_code == 404
    assert bob.delete("/v1/networks/net").status_code == 404
    clash = bob.post("/v1/networks", json={"name": "net", "subnet": "10.99.1.0/25"})
    assert clash.status_code == 409 and "10.99.1.0/24" not in clash.json()["message"]
    assert client("alice", Role.MEMBER).post("/v1/networks", json={"name": "x"}).status_code == 403
    assert alice.delete("/v1/networks/net").status_code == 204
    assert services.tenancy.quotas.usage("alice") == {}
