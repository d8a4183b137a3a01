"""A client that keeps presenting refused keys over TCP is turned away (429) before hyperd
hashes another, through the real CLI and hyperd on TCP with TLS; other clients are not. No VM
is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Hyper, TcpTls, create_tenant, tcp_client, tcp_tls_config

LIMIT = 3


@pytest.fixture()
def tcp(hyper_home, tmp_path: Path) -> TcpTls:
    return tcp_tls_config(hyper_home[0], tmp_path)


@pytest.fixture()
def hyperd_config(tcp: TcpTls) -> Path:
    text = tcp.config.read_text()
    assert "[tenancy]" not in text
    tcp.config.write_text(text + f"\n[tenancy]\nrefused_credentials = {LIMIT}\n")
    return tcp.config


def test_refused_keys_from_one_address_are_throttled(hyper: Hyper, tcp: TcpTls) -> None:
    tcp.wait()
    good = tcp_client(hyper, tcp, create_tenant(hyper, "throttled", "member"))
    wrong = tcp_client(hyper, tcp, "hk_" + "1" * 16 + "_" + "2" * 48)
    try:
        assert good("whoami").returncode == 0
        for _ in range(LIMIT):
            refused = wrong("whoami")
            assert refused.returncode != 0 and b"429" not in refused.stderr
            assert b"too many" not in refused.stderr, refused.stderr
        for client in (wrong, good):  # the address is turned away, whatever key it sends
            turned_away = client("whoami")
            assert turned_away.returncode != 0
            assert b"too many refused credentials" in turned_away.stderr, turned_away.stderr
            assert b"retry in 20 s" in turned_away.stderr, turned_away.stderr
        # the unix socket is the operator's and never throttled
        tenants = json.loads(hyper("tenant", "ls", "--format", "json").stdout)
        assert "throttled" in {t["name"] for t in tenants}
    finally:
        hyper("tenant", "rm", "throttled")
