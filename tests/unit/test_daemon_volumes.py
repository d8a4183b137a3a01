"""hyperd's volume and snapshot routes over the real service (SQLite, qemu-img), no VM."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from starlette.requests import Request

from hyper.config.settings import from_dict
from hyper.daemon.app import create_app
from hyper.daemon.caller import caller
from hyper.service.core import Services


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no registry in this test", request=request)


def _client(root) -> TestClient:
    settings = from_dict({"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "r")}})
    services = Services.build(settings, registry_transport=httpx.MockTransport(_no_network))
    return TestClient(create_app(services))


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


def _request(scheme: str) -> Request:
    scope = {"type": "http", "scheme": scheme, "server": ("hyperd", 8443), "path": "/"}
    return Request({**scope, "headers": [], "query_string": b""})


def test_only_the_unix_socket_is_the_operator():
    assert caller(_request("http")).operator  # the unix socket (plain HTTP)
    assert not caller(_request("https")).operator  # TCP is always TLS
    assert caller(_request("https")).tenant == "default"
