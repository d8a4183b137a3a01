"""hyperd's REST API without VMs: the checked-in OpenAPI document, errors, filters, and a
schemathesis fuzz of every operation of that document (no 5xx, no crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hyper.config import Settings
from hyper.config.settings import from_dict
from hyper.daemon.app import create_app, parse_signal
from hyper.daemon.openapi import document
from hyper.errors import InvalidArgument
from hyper.images.store import ImageStore
from hyper.service.core import Services
from hyper.service.events import EventBus
from hyper.service.pods import PodService
from hyper.state.db import Database

ROOT = Path(__file__).resolve().parents[2]


def _services(root: Path) -> Services:
    config: Settings = from_dict(
        {"paths": {"state_dir": str(root / "state"), "run_dir": str(root / "run")}}
    )
    db = Database(root / "state" / "hyperd.db")
    images = ImageStore(config.paths.images)
    events = EventBus()
    pods = PodService(config, db, images, events, config_file=None)
    return Services(config, db, images, events, pods)


_FUZZ_ROOT = Path(__import__("tempfile").mkdtemp(prefix="hyperd-fuzz-"))
_app = create_app(_services(_FUZZ_ROOT))
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app)


def test_checked_in_openapi_document_is_current():
    checked_in = json.loads((ROOT / "docs" / "api" / "openapi.json").read_text())
    assert checked_in == json.loads(json.dumps(document())), "run `make openapi`"


def test_errors_carry_kind_and_status(tmp_path):
    client = TestClient(create_app(_services(tmp_path)))
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
    answer = TestClient(create_app(services)).get("/v1/info")
    assert answer.status_code == 200
    info = answer.json()
    assert "hyper setup" in info["guest"]["error"] and info["accelerator"]["name"] == "unknown"


def test_signal_names_and_numbers():
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == 9
    assert parse_signal("term") == 15
    for bad in ("NOPE", "0", "99", "SIG_DFL", "__class__"):
        with pytest.raises(InvalidArgument):
            parse_signal(bad)


@schema.exclude(path="/v1/events").parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzzed_from_its_openapi_document(case):
    case.call_and_validate(checks=[not_a_server_error])
