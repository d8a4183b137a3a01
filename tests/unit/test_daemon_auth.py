"""hyperd's listeners say who calls: the unix socket is the operator, TCP needs a credential,
and only the operator may act in another tenant (the X-Hyper-Tenant header)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from hyper.config.settings import from_dict
from hyper.daemon.app import create_app
from hyper.daemon.auth import TENANT_HEADER, as_operator
from hyper.service.core import Services
from hyper.tenancy.principal import Role
from tests.unit.conftest import bearer, tcp_app


def test_tcp_refuses_requests_without_a_valid_credential(services):
    client = TestClient(tcp_app(services))
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer hk_0_0"}):
        answer = client.get("/v1/containers", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["kind"] == "Unauthenticated"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "credential" in client.get("/v1/info").json()["message"]
    revoked = services.tenancy.keys.create("alice", Role.ADMIN)
    services.tenancy.keys.revoke("alice", revoked.record.id)
    answer = client.get("/v1/containers", headers={"X-Auth-Token": revoked.key})
    assert answer.status_code == 401


def test_a_tenant_key_acts_in_its_own_tenant_only(services):
    client = TestClient(tcp_app(services))
    alice = bearer(services, "alice", Role.ADMIN)
    assert client.get("/v1/containers", headers=alice).json() == []
    answer = client.get("/v1/containers", headers={**alice, TENANT_HEADER: "bob"})
    assert answer.status_code == 403 and answer.json()["kind"] == "PermissionDenied"
    # naming its own tenant is allowed, and changes nothing
    assert client.get("/v1/pods", headers={**alice, TENANT_HEADER: "alice"}).status_code == 200


def test_a_member_reads_but_does_not_change(services):
    client = TestClient(tcp_app(services))
    member = bearer(services, "alice", Role.MEMBER)
    assert client.get("/v1/pods", headers=member).status_code == 200
    answer = client.post("/v1/containers", json={"image": "busybox"}, headers=member)
    assert answer.status_code == 403, answer.text
    answer = client.delete("/v1/containers/whatever", headers=member)
    assert answer.status_code == 403


def test_websockets_are_authenticated_before_they_are_accepted(services):
    client = TestClient(tcp_app(services))
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/v1/x/exec"):
        pass
    assert refused.value.code == 1008


def test_the_operator_names_a_tenant_that_exists_or_every_tenant(services):
    client = TestClient(as_operator(create_app(services)))
    assert client.get("/v1/pods", headers={TENANT_HEADER: "bob"}).status_code == 200
    assert client.get("/v1/pods", headers={TENANT_HEADER: "*"}).status_code == 200
    missing = client.get("/v1/pods", headers={TENANT_HEADER: "carol"})
    assert missing.status_code == 404 and missing.json()["message"] == "no such tenant: carol"
    bad = client.get("/v1/pods", headers={TENANT_HEADER: "../etc"})
    assert bad.status_code == 400
    every = client.post("/v1/containers", json={"image": "x"}, headers={TENANT_HEADER: "*"})
    assert every.status_code == 400 and "one tenant" in every.json()["message"]


def test_templates_are_the_operators(services):
    """Templates are the host's, and an unshared one names its tenant: no tenant sees them."""
    client = TestClient(tcp_app(services))
    admin = bearer(services, "alice", Role.ADMIN)
    for method, path in (
        ("GET", "/v1/templates"),
        ("POST", "/v1/templates/prune"),
        ("DELETE", "/v1/templates/abcdef12"),
    ):
        answer = client.request(method, path, headers=admin)
        assert answer.status_code == 403, (path, answer.text)
    assert TestClient(as_operator(create_app(services))).get("/v1/templates").status_code == 200


def test_an_address_that_presents_too_many_refused_credentials_is_answered_429(tmp_path):
    """Each refused key costs a hash: after ``tenancy.refused_credentials`` of them, the
    address is turned away before any, even with a good key; other addresses are not."""
    settings = from_dict(
        {
            "paths": {"state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run")},
            "tenancy": {"refused_credentials": 3, "refused_credentials_window": 60},
        }
    )
    services = Services.build(settings)
    try:
        services.tenancy.tenants.create("alice")
        good = bearer(services, "alice", Role.ADMIN)
        app = tcp_app(services)
        guesser = TestClient(app, client=("192.0.2.7", 40000))
        wrong = {"Authorization": "Bearer hk_" + "0" * 16 + "_" + "0" * 48}
        assert guesser.get("/v1/pods", headers=good).status_code == 200
        for _ in range(3):
            assert guesser.get("/v1/pods", headers=wrong).status_code == 401
        for headers in (wrong, good):
            answer = guesser.get("/v1/pods", headers=headers)
            assert answer.status_code == 429, answer.text
            assert answer.json()["kind"] == "ResourceExhausted"
            assert answer.headers["retry-after"] == "20"
        exec_ = "/v1/containers/x/exec"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            guesser.websocket_connect(exec_, headers=good),
        ):
            pass
        assert closed.value.code == 1008 and "retry in" in closed.value.reason
        # no credential at all costs nothing and is not counted; it is still a 401
        assert guesser.get("/v1/pods").status_code == 401
        other = TestClient(app, client=("192.0.2.8", 40000))
        assert other.get("/v1/pods", headers=good).status_code == 200
    finally:
        services.db.close()
