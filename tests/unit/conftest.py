"""Fixtures shared by the unit tests of hyperd's services and API (no VM, no network)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from hyper.config.settings import from_dict
from hyper.daemon.app import create_app
from hyper.daemon.auth import Identified
from hyper.service.core import Services
from hyper.service.tenancy import TenancyService
from hyper.state.db import Database
from hyper.tenancy.principal import Role


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no registry in this test", request=request)


@pytest.fixture()
def db(settings) -> Iterator[Database]:
    """hyperd's database in the test's ``settings`` (a fixture of the test's module)."""
    database = Database(settings.paths.state_dir / "hyperd.db")
    yield database
    database.close()


@pytest.fixture()
def tenancy(settings, db: Database) -> TenancyService:
    return TenancyService(settings, db.connection)


@pytest.fixture()
def services(tmp_path) -> Iterator[Services]:
    """Every service of one hyperd over a temporary state, with tenants alice and bob; no
    registry is reachable."""
    settings = from_dict(
        {"paths": {"state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run")}}
    )
    built = Services.build(settings, registry_transport=httpx.MockTransport(_no_network))
    built.tenancy.tenants.create("alice")
    built.tenancy.tenants.create("bob")
    yield built
    built.db.close()


def tcp_app(services: Services) -> Identified:
    """hyperd's app as its TCP listener serves it: every request authenticated by its key."""
    return Identified(create_app(services), services.tenancy.authenticator.authenticate)


@pytest.fixture()
def tcp(services: Services) -> TestClient:
    """A client of :func:`tcp_app` (with no credential of its own)."""
    return TestClient(tcp_app(services))


def bearer(services: Services, tenant: str, role: Role) -> dict[str, str]:
    """The header of a new access key of ``role`` in ``tenant``."""
    return {"Authorization": f"Bearer {services.tenancy.keys.create(tenant, role).key}"}
