"""VM templates through hyperd and the CLI: pods are clones, each with its own identity and
network address; templates are listed, built ahead of time, refused removal while in use, and
leave nothing once removed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vm


def _ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _templates(hyper) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(_ok(hyper("template", "ls", "--format", "json")))
    return found


def test_clones_have_their_own_identity_and_address_and_hold_their_template(hyper):
    key = _ok(hyper("template", "build")).strip()  # ahead of time: the pods then clone it
    [template] = [t for t in _templates(hyper) if t["key"].startswith(key)]
    assert not template["in_use"] and template["ram_bytes"] > 0
    probe = (
        "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 | awk '{print $4}';"
        " cat /proc/sys/kernel/random/uuid; hostname"
    )
    seen = []
    try:
        for name in ("tpl-a", "tpl-b"):
            _ok(hyper("run", "-d", "--name", name, "busybox", "sleep", "600"))
            seen.append(_ok(hyper("exec", name, "sh", "-c", probe)).split())
        (mac_a, ip_a, uuid_a, host_a), (mac_b, ip_b, uuid_b, host_b) = seen
        assert mac_a != mac_b and ip_a != ip_b and uuid_a != uuid_b
        assert (host_a, host_b) == ("tpl-a", "tpl-b")
        [held] = [t for t in _templates(hyper) if t["key"] == template["key"]]
        assert held["in_use"]
        refused = hyper("template", "rm", key)
        assert refused.returncode != 0 and b"in use" in refused.stderr
    finally:
        hyper("rm", "-f", "tpl-a", "tpl-b")
    _ok(hyper("template", "rm", key))
    assert not Path(template["path"]).exists() and not Path(template["ram"]).exists()
    assert all(t["key"] != template["key"] for t in _templates(hyper))


def test_a_pod_labelled_cold_boots_cold_and_needs_no_template(hyper):
    _ok(hyper("template", "prune"))
    result = hyper("run", "--rm", "-l", "hyper.boot=cold", "busybox", "echo", "cold")
    assert _ok(result) == "cold\n"
    assert _templates(hyper) == []
