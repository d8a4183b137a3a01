"""hyperd's REST API without VMs: the checked-in OpenAPI document, errors, filters, and a
schemathesis fuzz of every operation of that document (no 5xx, no crash)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hyper.config import Settings
from hyper.config.settings import from_dict
from hyper.daemon.app import create_app, parse_signal
from hyper.daemon.auth import as_operator
from hyper.daemon.openapi import document
from hyper.errors import InvalidArgument
from hyper.service.core import Services

ROOT = Path(__file__).resolve().parents[2]


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no registry in this test", request=request)


def _services(root: Path) -> Services:
    config: Settings = from_dict(
        {"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "run")}}
    )
    return Services.build(config, registry_transport=httpx.MockTransport(_no_network))


_FUZZ_ROOT = Path(tempfile.mkdtemp(prefix="hyperd-fuzz-"))
_app = as_operator(create_app(_services(_FUZZ_ROOT)))


@pytest.fixture(scope="module", autouse=True)
def _remove_fuzz_state() -> Iterator[None]:
    """The fuzzed app's state (made at import, for schemathesis) goes with the module."""
    yield
    shutil.rmtree(_FUZZ_ROOT, ignore_errors=True)


schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app)


def test_checked_in_openapi_document_is_current():
    checked_in = json.loads((ROOT / "docs" / "api" / "openapi.json").read_text())
    assert checked_in == json.loads(json.dumps(document())), "run `make openapi`"


def test_errors_carry_kind_and_status(tmp_path):
    client = TestClient(as_operator(create_app(_services(tmp_path))))
    answer = client.get("/v1/containers/nothing-here")
    assert answer.status_code == 404
    assert answer.json() == {"kind": "NotFound", "message": "no such container: nothing-here"}
    answer = client.post("/v1/containers", json={"image": "busybox", "bogus": 1})
    assert answer.status_code == 422
    answer = client.post("/v1/containers", json={"image": "no-such-image:1"})
    assert answer.status_code == 404 and answer.json()["kind"] == "NotFound"
    answer = client.get("/v1/containers", params={"filter": "colour=blue"})
    assert answer.status_code == 400 and "bad filter" in answer.json()["message"]
    assert client.get("/v1/_ping").json() == {"api_version": "1"}


def test_info_answers_on_a_host_that_is_not_set_up(tmp_path):
    services = _services(tmp_path)
    services.settings = from_dict(
        {"paths": {"state_dir": str(tmp_path / "state"), "cache_dir": str(tmp_path / "cache")}}
    )
    answer = TestClient(as_operator(create_app(services))).get("/v1/info")
    assert answer.status_code == 200
    info = answer.json()
    assert "hyper setup" in info["guest"]["error"] and info["accelerator"]["name"] == "unknown"


def test_signal_names_and_numbers():
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == 9
    assert parse_signal("term") == 15
    for bad in ("NOPE", "0", "99", "SIG_DFL", "__class__"):
        with pytest.raises(InvalidArgument):
            parse_signal(bad)


# Building a VM template boots a VM: not in a unit test (tests/integration/test_templates.py).
@schema.exclude(path="/v1/events").exclude(path="/v1/templates", method="POST").parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzzed_from_its_openapi_document(case):
    """No crash: every answer below 500, except an upstream failure reported as such (a
    registry that cannot be reached is a 503 with a kind, not a server error)."""
    response = case.call()
    if response.status_code in (502, 503, 504):
        assert response.json()["kind"] in ("ProtocolError", "Unavailable", "Timeout")
    else:
        case.validate_response(response, checks=[not_a_server_error])


def test_pull_reports_its_failure_as_the_last_line_of_the_stream(tmp_path):
    client = TestClient(as_operator(create_app(_services(tmp_path))))
    answer = client.post("/v1/images/pull", params={"reference": "127.0.0.1:1/team/app:1"})
    assert answer.status_code == 200
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines[-1]["error"]["kind"] == "Unavailable"
    assert "no registry in this test" in lines[-1]["error"]["message"]
    bad = client.post("/v1/images/pull", params={"reference": "Not A Reference"})
    assert bad.status_code == 400 and bad.json()["kind"] == "InvalidArgument"
    missing = client.post("/v1/images/nothing/here:1/push")
    assert missing.status_code == 404 and missing.json()["kind"] == "NotFound"
    assert client.get("/v1/images/busybox/json").json()["kind"] == "NotFound"
    assert client.get("/v1/images").json() == []
    assert client.post("/v1/images/load", content=b"").json()["kind"] == "InvalidArgument"
    garbage = client.post("/v1/images/load", content=b"not a tar archive" * 100)
    assert garbage.status_code == 400, garbage.text
    assert client.post("/v1/commit", json={"container": "nope"}).json()["kind"] == "NotFound"
    assert list((tmp_path / "state").rglob("load-*")) == []


def test_progress_is_one_line_per_change_of_state_into_a_pipe():
    import io

    from hyper.cli.progress import TransferDisplay

    out = io.StringIO()
    display = TransferDisplay(out)
    for status, current in [("waiting", 0), ("downloading", 10), ("downloading", 20), ("done", 30)]:
        display.update({"id": "abc", "status": status, "current": current, "total": 30})
    display.finish()
    assert out.getvalue().splitlines() == ["abc: Waiting", "abc: Downloading", "abc: Complete"]


def test_the_tcp_listener_sends_without_waiting_for_acks():
    """TCP_NODELAY on the listener (inherited by its connections) and the protocol named, so
    that asyncio keeps it: without it every answer over TLS waited ~40 ms for a delayed ACK."""
    import socket

    from hyper.daemon.main import _tcp_socket

    settings = from_dict(
        {"daemon": {"tcp": "127.0.0.1:0", "tls_cert": "/c.pem", "tls_key": "/k.pem"}}
    )
    listener = _tcp_socket(settings)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        accepted.close()
        client.close()
    finally:
        listener.close()
