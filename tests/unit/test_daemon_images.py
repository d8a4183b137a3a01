"""hyperd's image routes act in the caller's tenant: another tenant's image answers 404 exactly
like a missing one, a member only looks, an operator lists every tenant's, and image events
carry their tenant."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from hyper.daemon.app import create_app
from hyper.daemon.auth import TENANT_HEADER, as_operator
from hyper.errors import NotFound
from hyper.images.builder import build_image
from hyper.images.store import ImageStore
from hyper.tenancy.principal import Role
from tests.unit.conftest import bearer
from tests.unit.test_service_images import _registry_of


def test_another_tenants_image_is_not_found_like_a_missing_one(services, tcp):
    image = build_image(services.images.store.tenant("alice"), "app:1", [{"a": b"1"}])
    alice, bob = bearer(services, "alice", Role.ADMIN), bearer(services, "bob", Role.ADMIN)
    assert [r["Tag"] for r in tcp.get("/v1/images", headers=alice).json()] == ["1"]
    assert tcp.get("/v1/images/app:1/json", headers=alice).json()["Id"] == image.id
    assert tcp.get("/v1/images", headers=bob).json() == []
    for name in ("app:1", image.id):
        missing = "nope:1" if name == "app:1" else f"sha256:{'0' * 64}"
        for method, path, params in (
            ("GET", "/v1/images/{}/json", {}),
            ("GET", "/v1/images/{}/history", {}),
            ("POST", "/v1/images/{}/tag", {"target": "mine:1"}),
            ("POST", "/v1/images/{}/push", {}),
            ("DELETE", "/v1/images/{}", {"force": "true"}),
            ("GET", "/v1/images/save", {"reference": "{}"}),
        ):

            def ask(ref, method=method, path=path, params=params):
                query = {k: v.format(ref) for k, v in params.items()}
                return tcp.request(method, path.format(ref), params=query, headers=bob)

            theirs, none = ask(name), ask(missing)
            assert theirs.status_code == none.status_code == 404, (path, theirs.text)
            assert theirs.json()["kind"] == "NotFound"
            assert theirs.json()["message"] == none.json()["message"].replace(missing, name)
    assert tcp.get("/v1/images/app:1/json", headers=alice).json()["Id"] == image.id


def test_a_member_looks_but_does_not_change_images(services, tcp):
    build_image(services.images.store.tenant("alice"), "app:1", [{"a": b"1"}])
    member = bearer(services, "alice", Role.MEMBER)
    assert len(tcp.get("/v1/images", headers=member).json()) == 1
    assert tcp.get("/v1/images/app:1/json", headers=member).status_code == 200
    for method, path, kwargs in (
        ("POST", "/v1/images/pull", {"params": {"reference": "busybox"}}),
        ("POST", "/v1/images/app:1/push", {}),
        ("POST", "/v1/images/app:1/tag", {"params": {"target": "b:1"}}),
        ("DELETE", "/v1/images/app:1", {}),
        ("POST", "/v1/images/prune", {}),
        ("POST", "/v1/images/load", {"content": b"x"}),
        (
            "POST",
            "/v1/auth/login",
            {"json": {"registry": "r:5000", "username": "u", "password": "p"}},
        ),
        ("POST", "/v1/auth/logout", {"json": {"registry": "r:5000"}}),
    ):
        answer = tcp.request(method, path, headers=member, **kwargs)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["kind"] == "PermissionDenied"
    assert [r["Tag"] for r in tcp.get("/v1/images", headers=member).json()] == ["1"]


def test_the_operator_lists_every_tenants_images_and_events_carry_the_tenant(services):
    build_image(services.images.store.tenant("alice"), "app:1", [{"a": b"1"}])
    build_image(services.images.store.tenant("bob"), "app:1", [{"b": b"2"}])
    operator = TestClient(as_operator(create_app(services)))
    assert operator.get("/v1/images").json() == []  # its own tenant: "default"
    every = operator.get("/v1/images", headers={TENANT_HEADER: "*"}).json()
    assert sorted((r["Tenant"], r["Reference"]) for r in every) == [
        ("alice", "docker.io/library/app:1"),
        ("bob", "docker.io/library/app:1"),
    ]
    answer = operator.post(
        "/v1/images/app:1/tag", params={"target": "copy:1"}, headers={TENANT_HEADER: "bob"}
    )
    assert answer.status_code == 201, answer.text
    assert services.images.store.tenant("bob").resolve("copy:1")
    with pytest.raises(NotFound):  # not among alice's names
        services.images.store.tenant("alice").resolve("copy:1")
    (event,) = [e for e in services.events._history if e.type == "image"]
    assert (event.action, event.name, event.tenant) == ("tag", "copy:1", "bob")
    answer = operator.post("/v1/images/prune", headers={TENANT_HEADER: "*"})
    assert answer.status_code == 400  # a change names one tenant


def test_a_pull_streams_its_result_and_publishes_its_event_in_the_callers_tenant(
    services, tcp, tmp_path
):
    source = ImageStore(tmp_path / "source")
    image = build_image(source, "app:1", [{"a": b"1"}])
    services.images._transport = httpx.MockTransport(_registry_of(image, source))
    alice = bearer(services, "alice", Role.ADMIN)
    answer = tcp.post("/v1/images/pull", params={"reference": "r.test:5000/app:1"}, headers=alice)
    assert answer.status_code == 200, answer.text
    last = json.loads(answer.text.splitlines()[-1])
    assert last == {
        "result": {"reference": "r.test:5000/app:1", "digest": str(image.digest), "id": image.id}
    }
    (event,) = [e for e in services.events._history if e.type == "image"]
    assert (event.action, event.name, event.tenant) == ("pull", "r.test:5000/app:1", "alice")
    assert services.images.store.tenant("alice").resolve("r.test:5000/app:1").digest == image.digest
