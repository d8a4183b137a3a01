"""hyperd's tenancy routes over the real services (SQLite), no VM: as a TCP listener serves them
(every request authenticated by its access key) and as the unix socket does (the operator)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hyper.config.settings import from_dict
from hyper.daemon.app import create_app
from hyper.daemon.auth import as_operator
from hyper.service.core import Services
from hyper.state.db import PodRecord
from hyper.tenancy.metering import Kind
from hyper.tenancy.prometheus import CONTENT_TYPE
from tests.unit.conftest import tcp_app


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no registry in this test", request=request)


class Host:
    """One hyperd's app, reachable as its operator (``local``) and over "TCP" (``tcp``)."""

    def __init__(self, root: Path) -> None:
        settings = from_dict(
            {"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "run")}}
        )
        self.services = Services.build(
            settings, registry_transport=httpx.MockTransport(_no_network)
        )
        app = create_app(self.services)
        self.local = TestClient(as_operator(app))
        self.tcp = TestClient(tcp_app(self.services))

    def tenant(self, name: str) -> None:
        assert self.local.post("/v1/tenants", json={"name": name}).status_code == 201

    def key(self, tenant: str, role: str = "admin") -> str:
        made = self.local.post("/v1/keys", json={"role": role}, headers={"X-Hyper-Tenant": tenant})
        assert made.status_code == 201, made.text
        key: str = made.json()["key"]
        return key


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_tcp_without_a_credential_is_refused_with_a_clear_message(host: Host) -> None:
    answer = host.tcp.get("/v1/whoami")
    assert answer.status_code == 401
    assert answer.json()["kind"] == "Unauthenticated"
    assert "needs a credential" in answer.json()["message"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert host.tcp.get("/v1/whoami", headers=_bearer("hk_nope")).status_code == 401


def test_whoami_names_the_tenant_and_role_of_the_key(host: Host) -> None:
    host.tenant("acme")
    key = host.key("acme", "member")
    me = host.tcp.get("/v1/whoami", headers=_bearer(key)).json()
    assert me["tenant"] == "acme" and me["role"] == "member"
    assert key.startswith(f"hk_{me['credential']}_")
    assert host.tcp.get("/v1/whoami", headers={"X-Auth-Token": key}).json() == me
    local = host.local.get("/v1/whoami").json()
    assert local["role"] == "operator" and local["credential"] == "local"


def test_a_tenant_admin_manages_its_keys_but_never_above_its_role(host: Host) -> None:
    host.tenant("acme")
    host.tenant("other")
    admin = _bearer(host.key("acme", "admin"))
    member = host.tcp.post("/v1/keys", json={"role": "member", "name": "ci"}, headers=admin)
    assert member.status_code == 201 and member.json()["tenant"] == "acme"
    assert member.json()["key"].startswith("hk_")
    assert host.tcp.post("/v1/keys", json={"role": "admin"}, headers=admin).status_code == 201
    operator = host.tcp.post("/v1/keys", json={"role": "operator"}, headers=admin)
    assert operator.status_code == 403 and "operator role" in operator.json()["message"]
    elsewhere = host.tcp.post(
        "/v1/keys", json={"role": "member"}, headers={**admin, "X-Hyper-Tenant": "other"}
    )
    assert elsewhere.status_code == 403
    listed = host.tcp.get("/v1/keys", headers=admin).json()
    assert {k["tenant"] for k in listed} == {"acme"} and len(listed) == 3
    assert all("key" not in k and "hash" not in k for k in listed)
    # a member reads, never creates
    as_member = _bearer(member.json()["key"])
    refused = host.tcp.post("/v1/keys", json={"role": "member"}, headers=as_member)
    assert refused.status_code == 403
    assert host.tcp.get("/v1/keys", headers=as_member).status_code == 403
    # a revoked key is refused at once, like any invalid key
    assert host.tcp.delete(f"/v1/keys/{member.json()['id']}", headers=admin).status_code == 204
    gone = host.tcp.get("/v1/whoami", headers=as_member)
    assert gone.status_code == 401 and gone.json()["message"] == "the access key is not valid"
    assert len(host.tcp.get("/v1/keys", headers=admin).json()) == 2
    assert len(host.tcp.get("/v1/keys?revoked=true", headers=admin).json()) == 3
    # another tenant's key is not found
    theirs = host.local.post("/v1/keys", json={}, headers={"X-Hyper-Tenant": "other"}).json()
    assert host.tcp.delete(f"/v1/keys/{theirs['id']}", headers=admin).status_code == 404


def test_tenants_are_the_operators(host: Host) -> None:
    host.tenant("acme")
    admin = _bearer(host.key("acme", "admin"))
    assert host.tcp.get("/v1/tenants", headers=admin).status_code == 403
    assert host.tcp.post("/v1/tenants", json={"name": "x"}, headers=admin).status_code == 403
    assert host.tcp.delete("/v1/tenants/acme", headers=admin).status_code == 403
    assert [t["name"] for t in host.local.get("/v1/tenants").json()] == ["acme", "default"]
    assert host.local.post("/v1/tenants", json={"name": "acme"}).status_code == 409
    assert host.local.post("/v1/tenants", json={"name": "../x"}).status_code == 400
    assert host.local.delete("/v1/tenants/default").status_code == 409
    assert host.local.delete("/v1/tenants/nope").status_code == 404
    operator = _bearer(host.key("default", "operator"))
    assert host.tcp.get("/v1/tenants", headers=operator).status_code == 200


def test_a_tenant_that_owns_a_pod_or_a_volume_is_kept(host: Host) -> None:
    host.tenant("acme")
    key = host.key("acme", "admin")
    pod = PodRecord("p" * 64, "web", {}, {}, {}, False, tenant="acme")
    host.services.db.insert_pod(pod)
    as_acme = TestClient(as_operator(create_app(host.services), "acme"))
    assert as_acme.post("/v1/volumes", json={"name": "db", "size": "32M"}).status_code == 201
    refused = host.local.delete("/v1/tenants/acme")
    assert refused.status_code == 409
    assert refused.json()["message"] == "tenant acme still owns 1 pod, 1 volume"
    assert host.tcp.get("/v1/whoami", headers=_bearer(key)).status_code == 200
    host.services.db.delete_pod(pod.id)
    assert as_acme.delete("/v1/volumes/db").status_code == 204
    assert host.local.delete("/v1/tenants/acme").status_code == 204
    assert host.tcp.get("/v1/whoami", headers=_bearer(key)).status_code == 401  # keys went


def test_quotas_are_set_by_the_operator_and_read_by_members(host: Host) -> None:
    host.tenant("acme")
    host.tenant("other")
    admin, member = (_bearer(host.key("acme", role)) for role in ("admin", "member"))
    assert host.tcp.put("/v1/quotas/acme", json={"pods": 1}, headers=admin).status_code == 403
    set_ = host.local.put("/v1/quotas/acme", json={"pods": 3, "fips": -1})
    assert set_.status_code == 200, set_.text
    assert host.local.put("/v1/quotas/acme", json={"pods": -2}).status_code in (400, 422)
    assert host.local.put("/v1/quotas/acme", json={"cores": 1}).status_code in (400, 422)
    assert host.local.put("/v1/quotas/nope", json={"pods": 1}).status_code == 404
    shown = host.tcp.get("/v1/quotas/acme", headers=member)
    assert shown.status_code == 200
    lines = {line["resource"]: line for line in shown.json()["resources"]}
    assert shown.json()["tenant"] == "acme"
    assert lines["pods"] == {"resource": "pods", "limit": 3, "used": 0, "default": False}
    assert lines["fips"]["limit"] == -1 and lines["vcpus"]["default"] is True
    assert host.tcp.get("/v1/quotas/other", headers=member).status_code == 403
    host.local.put("/v1/quotas/acme", json={"pods": None})  # back to the default
    again = host.local.get("/v1/quotas/acme").json()["resources"]
    assert next(line for line in again if line["resource"] == "pods")["default"] is True


def test_usage_is_scoped_and_shaped(host: Host) -> None:
    host.tenant("acme")
    host.tenant("other")
    ledger = host.services.tenancy.ledger
    ledger.start("acme", "pod-a", Kind.POD, 1000.0, vcpus=2, memory_mb=512, name="web")
    ledger.stop("acme", "pod-a", 1010.0)
    ledger.start("other", "vol-b", Kind.VOLUME, 1000.0, size=1 << 30, name="db")
    ledger.stop("other", "vol-b", 1100.0)
    member = _bearer(host.key("acme", "member"))
    report = host.tcp.get("/v1/usage", params={"since": 0, "until": 2000}, headers=member)
    assert report.status_code == 200, report.text
    body = report.json()
    assert set(body) == {"since", "until", "objects", "total"}
    assert body["since"] == 0 and body["until"] == 2000
    assert body["objects"] == [
        {
            "tenant": "acme",
            "id": "pod-a",
            "kind": "pod",
            "name": "web",
            "seconds": 10.0,
            "vcpu_seconds": 20.0,
            "memory_gib_seconds": 5.0,
            "volume_gib_seconds": 0.0,
            "fip_seconds": 0.0,
        }
    ]
    assert body["total"]["vcpu_seconds"] == 20.0
    refused = host.tcp.get("/v1/usage", params={"tenant": "*"}, headers=member)
    assert refused.status_code == 403
    assert host.tcp.get("/v1/usage", params={"tenant": "other"}, headers=member).status_code == 403
    every = host.local.get("/v1/usage", params={"tenant": "*", "until": 2000}).json()
    assert {o["tenant"] for o in every["objects"]} == {"acme", "other"}
    other = host.local.get("/v1/usage", headers={"X-Hyper-Tenant": "other"}).json()
    assert [o["id"] for o in other["objects"]] == ["vol-b"]
    assert other["total"]["volume_gib_seconds"] == 100.0


def test_a_usage_report_is_computed_and_encoded_off_hyperds_event_loop(
    host: Host, monkeypatch
) -> None:
    """Replaying a long history takes seconds: it must not stall every other request."""
    ledger = host.services.tenancy.ledger
    ledger.start("default", "pod-a", Kind.POD, 1000.0, vcpus=1, memory_mb=256)
    report, threads = ledger.report, []

    def in_a_worker(*args: Any) -> Any:
        with pytest.raises(RuntimeError):  # no event loop runs in this thread
            asyncio.get_running_loop()
        threads.append(threading.get_ident())
        return report(*args)

    monkeypatch.setattr(ledger, "report", in_a_worker)
    answer = host.local.get("/v1/usage", params={"until": 1100})
    assert answer.status_code == 200 and answer.json()["total"]["seconds"] == 100.0
    assert answer.headers["content-type"] == "application/json"
    assert len(threads) == 1 and threads[0] != threading.get_ident()


def test_metrics_are_for_the_operator(host: Host) -> None:
    host.tenant("acme")
    host.services.tenancy.ledger.start("acme", "p", Kind.POD, 1000.0, vcpus=1, memory_mb=1024)
    host.services.tenancy.ledger.stop("acme", "p", 1060.0)
    admin = _bearer(host.key("acme", "admin"))
    refused = host.tcp.get("/metrics", headers=admin)
    assert refused.status_code == 403 and refused.json()["kind"] == "PermissionDenied"
    assert host.tcp.get("/metrics").status_code == 401
    text = host.local.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"] == CONTENT_TYPE
    assert 'hyper_usage_vcpu_seconds_total{tenant="acme"} 60.0' in text.text
    assert 'hyper_quota_used{tenant="default",resource="pods"} 0' in text.text


def test_a_removed_tenant_leaves_nothing_to_its_namesake(host: Host) -> None:
    """Its image names and registry credentials go with it: a tenant made later under the same
    name (someone else, perhaps) starts with none of them."""
    from hyper.images.busybox import ensure_busybox
    from hyper.registry.auth import Credentials
    from hyper.service.caller import Caller

    image = ensure_busybox(host.services.images.store)
    host.tenant("acme")
    acme = Caller.operator("acme")
    host.services.images.store.tenant("acme").tag("acme/app:1", image.digest)
    host.services.images.auth("acme").store("registry.example:5000", Credentials("user", "secret"))
    assert [i["Reference"] for i in host.services.images.list(acme)] == ["docker.io/acme/app:1"]
    assert host.local.delete("/v1/tenants/acme").status_code == 204
    host.tenant("acme")
    assert host.services.images.list(acme) == []
    assert host.services.images.auth("acme").get("registry.example:5000") is None
    assert host.services.images.list(Caller.operator())  # the default tenant's stay


def test_charges_of_objects_that_do_not_exist_are_released_at_start(host: Host) -> None:
    """A crash between a reservation and the insert of its object leaves a charge behind: the
    audit at start gives it back, and keeps the charges of objects that exist."""
    quotas = host.services.tenancy.quotas
    pod = PodRecord("p" * 64, "web", {}, {}, {}, False)
    host.services.db.insert_pod(pod)
    quotas.reserve("default", {"pods": 1, "vcpus": 1}, owner=pod.id)
    quotas.reserve("default", {"pods": 1, "vcpus": 2}, owner="q" * 64)  # never inserted
    assert quotas.usage("default") == {"pods": 2, "vcpus": 3}
    existing = host.services.db.object_ids()
    assert host.services.tenancy.release_orphaned_charges(existing) == 1
    assert quotas.usage("default") == {"pods": 1, "vcpus": 1}
    assert host.services.tenancy.release_orphaned_charges(existing) == 0
