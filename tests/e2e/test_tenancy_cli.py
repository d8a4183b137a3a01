"""Tenancy through the real CLI and hyperd on TCP with TLS: the operator (the unix socket)
makes a tenant and its key; the tenant then uses ``hyper -H https://... --key ...`` and sees
only its own objects, its quota and its usage. No VM is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    Hyper,
    TcpTls,
    create_key,
    create_tenant,
    tcp_client,
    tcp_tls_config,
)


@pytest.fixture()
def tcp(hyper_home, tmp_path: Path) -> TcpTls:
    return tcp_tls_config(hyper_home[0], tmp_path)


@pytest.fixture()
def hyperd_config(tcp: TcpTls) -> Path:
    return tcp.config


def _ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return str(result.stdout.decode())


def test_a_tenant_works_over_tcp_with_its_key(hyper: Hyper, tcp: TcpTls) -> None:
    tcp.wait()
    key = create_tenant(hyper, "acme", "admin")
    acme = tcp_client(hyper, tcp, key)
    me = json.loads(_ok(acme("whoami", "--format", "json")))
    assert me["tenant"] == "acme" and me["role"] == "admin"

    anonymous = Hyper(hyper.config, hyper.run_dir, options=["-H", tcp.endpoint])
    anonymous.env["HYPER_CA"] = str(tcp.ca)
    refused = anonymous("whoami")
    assert refused.returncode != 0 and b"needs a credential" in refused.stderr

    # isolation: each tenant lists its own volumes only
    _ok(hyper("volume", "create", "--size", "16M", "ops-data"))
    _ok(acme("volume", "create", "--size", "16M", "acme-data"))
    try:
        assert _ok(acme("volume", "ls", "-q")).split() == ["acme-data"]
        assert _ok(hyper("volume", "ls", "-q")).split() == ["ops-data"]
        assert _ok(hyper("--tenant", "acme", "volume", "ls", "-q")).split() == ["acme-data"]
        other = acme("--tenant", "default", "volume", "ls")
        assert other.returncode != 0 and b"only the operator" in other.stderr
        kept = hyper("tenant", "rm", "acme")
        assert kept.returncode != 0 and b"tenant acme still owns 1 volume" in kept.stderr
    finally:
        _ok(acme("volume", "rm", "acme-data"))
        _ok(hyper("volume", "rm", "ops-data"))

    # quotas: the operator sets, the tenant reads
    assert acme("quota", "set", "acme", "pods=1").returncode != 0
    _ok(hyper("quota", "set", "acme", "pods=2", "--volume-bytes", "1G"))
    shown = json.loads(_ok(acme("quota", "show", "--format", "json")))
    limits = {line["resource"]: line["limit"] for line in shown["resources"]}
    assert shown["tenant"] == "acme" and limits["pods"] == 2 and limits["volume_bytes"] == 1 << 30
    assert "pods" in _ok(acme("quota", "show"))

    # usage: its own objects only, per object and in total
    usage = json.loads(_ok(acme("usage", "--since", "1h", "--format", "json")))
    assert set(usage) == {"since", "until", "objects", "total"}
    assert {o["tenant"] for o in usage["objects"]} <= {"acme"}
    assert set(usage["total"]) >= {"vcpu_seconds", "memory_gib_seconds", "fip_seconds"}
    assert "TOTAL" in _ok(acme("usage"))
    assert acme("usage", "--tenant", "*").returncode != 0
    _ok(hyper("usage", "--tenant", "*", "--format", "json"))

    # keys: a member reads but cannot make keys; a revoked key is refused
    member_key = create_key(hyper, "acme", "member")
    member = tcp_client(hyper, tcp, member_key)
    assert json.loads(_ok(member("whoami", "--format", "json")))["role"] == "member"
    assert member("key", "create").returncode != 0
    assert acme("key", "create", "--role", "operator").returncode != 0
    member_id = json.loads(_ok(member("whoami", "--format", "json")))["credential"]
    assert member_id in _ok(acme("key", "ls", "-q")).split()
    _ok(acme("key", "revoke", member_id))
    assert member("whoami").returncode != 0
    _ok(hyper("tenant", "rm", "acme"))
    assert "acme" not in _ok(hyper("tenant", "ls", "-q")).split()
