"""Tenancy's acceptance over hyperd's TCP listener (TLS, access keys), on real VMs.

- Tenant alice's admin key on 40+ operations against tenant bob's objects (a running container,
  its pod, an image tag, a volume, a snapshot, a network, a floating IP, keys, quota, usage):
  each answers exactly as for a missing object (404, same message) or forbidden (403), nothing
  of bob's changes, and nothing of bob's shows in alice's lists, events or error messages.
- 50 concurrent creates against a quota of 10 pods: exactly 10 succeed, the others are refused
  with the quota's message, and the quota shows 10 in use.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import TcpTls, tcp_tls_config, wait_for

pytestmark = pytest.mark.vm


@pytest.fixture()
def tcp(hyper_home, tmp_path) -> TcpTls:
    """The session's settings with a TCP listener (TLS) and a small pool of floating IPs (only
    allocated here, never routed)."""
    found = tcp_tls_config(hyper_home[0], tmp_path)
    text = found.config.read_text()
    found.config.write_text(
        text.replace("[network]\n", '[network]\nfip_pool = ["198.18.254.0/30"]\n', 1)
    )
    return found


@pytest.fixture()
def hyperd_config(tcp: TcpTls) -> Path:
    return tcp.config


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


class Api:
    """hyperd's REST API as one caller sees it: over TCP with a key, or over the unix socket."""

    def __init__(self, client: httpx.Client, ws_base: str, headers: dict[str, str], tls_ca: Any):
        self.http = client
        self.ws_base = ws_base
        self.headers = headers
        self.tls_ca = tls_ca

    def __getattr__(self, verb: str) -> Any:
        return getattr(self.http, verb)

    def ok(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json() if response.content else None

    def websocket_refusal(self, path: str, first: str | None = None) -> dict[str, Any]:
        """The error a websocket route answers with (its END frame), as {kind, message}."""
        with connect(
            f"{self.ws_base}{path}",
            additional_headers=self.headers,
            ssl=_trust(self.tls_ca),
            open_timeout=30,
        ) as ws:
            if first is not None:
                ws.send(first)
            frame = ws.recv(timeout=60)
        assert isinstance(frame, bytes) and frame[0] == 3, frame  # relay.END
        answer: dict[str, Any] = json.loads(frame[1:])
        return answer


@pytest.fixture()
def unix(hyperd) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=str(hyperd.socket))
    with httpx.Client(transport=transport, base_url="http://hyperd/v1", timeout=300) as client:
        yield client


def _tenant_key(unix: httpx.Client, tenant: str, role: str = "admin") -> str:
    created = unix.post("/tenants", json={"name": tenant})
    assert created.status_code in (201, 409), created.text
    answer = unix.post("/keys", json={"role": role, "name": "e2e"}, headers={_T: tenant})
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


_T = "X-Hyper-Tenant"


@pytest.fixture()
def api_for(hyperd, tcp: TcpTls) -> Iterator[Any]:
    tcp.wait()
    clients: list[httpx.Client] = []

    def make(key: str) -> Api:
        headers = {"Authorization": f"Bearer {key}"}
        client = httpx.Client(
            base_url=f"{tcp.endpoint}/v1", headers=headers, verify=_trust(tcp.ca), timeout=300
        )
        clients.append(client)
        return Api(client, tcp.endpoint.replace("https:", "wss:") + "/v1", headers, tcp.ca)

    yield make
    for client in clients:
        client.close()


def _give_busybox(hyper, tmp_path: Path, tenant: str) -> None:
    """Copy the default tenant's busybox into ``tenant``: save, then load as that tenant."""
    archive = tmp_path / "busybox.tar"
    if not archive.exists():
        _run(hyper("save", "-o", str(archive), "busybox"))
    _run(hyper("--tenant", tenant, "load", "-i", str(archive)))


def _run(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode()


def _like(real: str) -> str:
    """A name of the same shape as ``real`` that names nothing."""
    if real.count(".") == 3 and real.replace(".", "").isdigit():
        return "198.18.253.77"  # an address outside the pool
    if all(c in "0123456789abcdef" for c in real):
        return secrets.token_hex(len(real) // 2)
    _, colon, tag = real.partition(":")
    return f"nothing{secrets.token_hex(4)}{colon}{tag}"


def _missing(api: Api, method: str, path: str, real: str, **kwargs: Any) -> None:
    """``path`` naming bob's object ``real`` answers exactly as the same path naming nothing."""
    fake = _like(real)
    got = api.request(method, path.format(real), **kwargs)
    kwargs = json.loads(json.dumps(kwargs).replace(real, fake))
    baseline = api.request(method, path.format(fake), **kwargs)
    assert got.status_code in (403, 404), (method, path, got.status_code, got.text)
    assert got.status_code == baseline.status_code, (path, got.text, baseline.text)
    assert got.json()["message"].replace(real, fake) == baseline.json()["message"], (path,)


def test_another_tenants_objects_answer_as_missing_and_nothing_leaks(
    hyper, hyperd, unix, api_for, tmp_path
):
    bob_key, alice_key = _tenant_key(unix, "bob"), _tenant_key(unix, "alice")
    for tenant in ("bob", "alice"):
        _give_busybox(hyper, tmp_path, tenant)
    bob, alice = api_for(bob_key), api_for(alice_key)

    try:
        # bob: a running container, an image tag, a volume and its snapshot, a network, a FIP
        bob.ok(bob.post("/images/busybox/tag", params={"target": "bobimg:1"}))
        bob.ok(bob.post("/networks", json={"name": "bobnet"}))
        bob.ok(bob.post("/volumes", json={"name": "bobvault", "size": "16M"}))
        bob.ok(bob.post("/snapshots", json={"volume": "bobvault", "name": "bobsnap"}))
        created = bob.ok(
            bob.post(
                "/containers",
                json={
                    "name": "bobsecret",
                    "image": "bobimg:1",
                    "command": ["sh", "-c", "echo bob-was-here; sleep 600"],
                    "network": "bobnet",
                },
            )
        )
        bob.ok(bob.post("/containers/bobsecret/start"))
        fip = bob.ok(bob.post("/fips"))["address"]
        before = bob.ok(bob.get("/containers/bobsecret"))
        assert before["running"] and before["tenant"] == "bob"
        cid, pod_id = before["id"], before["pod"]["id"]
        # the container's start is the guest's, known when start returns: not the VM's boot
        assert before["started_at"] > bob.ok(bob.get(f"/pods/{pod_id}"))["started_at"]
        bob_keys = bob.ok(bob.get("/keys"))
        secrets_of_bob = {
            cid,
            pod_id,
            "bobsecret",
            "bobnet",
            "bobvault",
            "bobsnap",
            fip,
            "bob-was-here",
        }
        secrets_of_bob |= {k["id"] for k in bob_keys}

        # alice's own container, to aim bob's FIP at
        alice.ok(alice.post("/containers", json={"name": "mine", "image": "busybox"}))
        alice_fip = alice.ok(alice.post("/fips"))["address"]
        since = time.time() - 1

        checked = 0
        for method, path, real, extra in [
            ("GET", "/containers/{}", "bobsecret", {}),
            ("GET", "/containers/{}", cid, {}),
            ("GET", "/containers/{}", cid[:12], {}),
            ("POST", "/containers/{}/start", "bobsecret", {}),
            ("POST", "/containers/{}/stop", "bobsecret", {}),
            ("POST", "/containers/{}/restart", "bobsecret", {}),
            ("POST", "/containers/{}/kill", "bobsecret", {}),
            ("DELETE", "/containers/{}?force=true", "bobsecret", {}),
            ("POST", "/containers/{}/wait", "bobsecret", {}),
            ("GET", "/containers/{}/logs", "bobsecret", {}),
            ("GET", "/containers/{}/stats", "bobsecret", {}),
            ("GET", "/containers/{}/top", "bobsecret", {}),
            ("GET", "/pods/{}", "bobsecret", {}),
            ("GET", "/pods/{}", pod_id, {}),
            ("POST", "/pods/{}/start", "bobsecret", {}),
            ("POST", "/pods/{}/stop", "bobsecret", {}),
            ("POST", "/pods/{}/restart", "bobsecret", {}),
            ("POST", "/pods/{}/kill", "bobsecret", {}),
            ("DELETE", "/pods/{}?force=true", "bobsecret", {}),
            (
                "POST",
                "/commit",
                "bobsecret",
                {"json": {"container": "bobsecret", "reference": "x:1"}},
            ),
            ("GET", "/images/{}/json", "bobimg:1", {}),
            ("GET", "/images/{}/history", "bobimg:1", {}),
            ("POST", "/images/{}/tag?target=stolen:1", "bobimg:1", {}),
            ("POST", "/images/{}/push", "bobimg:1", {}),
            ("DELETE", "/images/{}", "bobimg:1", {}),
            ("GET", "/images/save?reference={}", "bobimg:1", {}),
            ("POST", "/containers", "bobimg:1", {"json": {"image": "bobimg:1"}}),
            ("GET", "/volumes/{}", "bobvault", {}),
            ("DELETE", "/volumes/{}", "bobvault", {}),
            ("POST", "/snapshots", "bobvault", {"json": {"volume": "bobvault"}}),
            ("GET", "/snapshots/{}", "bobsnap", {}),
            ("DELETE", "/snapshots/{}", "bobsnap", {}),
            ("POST", "/volumes", "bobsnap", {"json": {"name": "copy", "from_snapshot": "bobsnap"}}),
            ("GET", "/networks/{}", "bobnet", {}),
            ("DELETE", "/networks/{}", "bobnet", {}),
            (
                "POST",
                "/containers",
                "bobnet",
                {"json": {"image": "busybox", "network": "bobnet"}},
            ),
            ("POST", "/fips/{}/associate", fip, {"json": {"container": "mine"}}),
            ("POST", "/fips/{}/disassociate", fip, {}),
            ("DELETE", "/fips/{}", fip, {}),
            # alice's own FIP aimed at bob's container
            (
                "POST",
                f"/fips/{alice_fip}/associate",
                "bobsecret",
                {"json": {"container": "bobsecret"}},
            ),
            ("DELETE", "/keys/{}", bob_keys[0]["id"], {}),
        ]:
            _missing(alice, method, path, real, **extra)
            checked += 1

        forbidden: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/quotas/bob", {}),
            ("PUT", "/quotas/bob", {"json": {"pods": 1000}}),
            ("GET", "/usage", {"params": {"tenant": "bob"}}),
            ("GET", "/keys", {"headers": {_T: "bob"}}),
            ("GET", "/containers", {"headers": {_T: "bob"}}),
            ("GET", "/containers", {"headers": {_T: "*"}}),
            ("DELETE", "/tenants/bob", {}),
            ("POST", "/tenants", {"json": {"name": "eve"}}),
            ("POST", "/keys", {"json": {"role": "operator"}}),
        ]
        for method, path, kwargs in forbidden:
            answer = alice.request(method, path, **kwargs)
            assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
            checked += 1
        metrics = httpx.get(
            str(alice.http.base_url.join("/metrics")),
            headers=alice.headers,
            verify=_trust(alice.tls_ca),
        )
        assert metrics.status_code == 403
        checked += 1

        for path, first in [
            (f"/containers/{cid}/attach?stdin=true", None),
            ("/containers/bobsecret/attach", None),
            ("/containers/bobsecret/exec", json.dumps({"cmd": ["cat", "/etc/hostname"]})),
        ]:
            refusal = alice.websocket_refusal(path, first)
            assert refusal["kind"] == "NotFound", refusal
            assert refusal["message"] in (
                f"no such container: {cid}",
                "no such container: bobsecret",
            )
            checked += 1
        assert checked >= 30

        # nothing of bob's in alice's lists, events or answers
        listings = [
            alice.get(path).text
            for path in (
                "/containers?all=true",
                "/pods?all=true",
                "/images",
                "/volumes",
                "/snapshots",
                "/networks",
                "/fips",
                "/keys",
                "/usage",
                "/info",
                "/whoami",
            )
        ]
        listings.append(
            alice.get("/events", params={"since": since - 600, "until": time.time()}).text
        )
        for text in listings:
            for secret in secrets_of_bob:
                assert secret not in text, (secret, text[:500])

        # and nothing of bob's changed
        after = bob.ok(bob.get("/containers/bobsecret"))
        assert after["running"] and after["started_at"] == before["started_at"]
        assert after["restart_count"] == 0 and after["id"] == created["id"]
        assert bob.ok(bob.get("/images/bobimg:1/json"))
        assert [v["name"] for v in bob.ok(bob.get("/volumes"))] == ["bobvault"]
        assert [s["name"] for s in bob.ok(bob.get("/snapshots"))] == ["bobsnap"]
        assert "bobnet" in [n["name"] for n in bob.ok(bob.get("/networks"))]
        assert [f["address"] for f in bob.ok(bob.get("/fips"))] == [fip]
        assert alice.get("/images/stolen:1/json").status_code == 404
        logs = bob.get("/containers/bobsecret/logs").text
        assert "bob-was-here" in logs
        assert len(bob.ok(bob.get("/keys"))) == len(bob_keys)
    finally:  # everything of both tenants, whatever happened
        for api in (alice, bob):
            for c in api.get("/containers", params={"all": True}).json():
                api.delete(f"/containers/{c['id']}", params={"force": True})
            for f in api.get("/fips").json():
                api.delete(f"/fips/{f['address']}")
        bob.delete("/snapshots/bobsnap")
        bob.delete("/volumes/bobvault")
        bob.delete("/networks/bobnet")
        for tenant in ("alice", "bob"):
            listed = hyper("--tenant", tenant, "images", "--format", "json").stdout
            for image in json.loads(listed or b"[]"):
                hyper("--tenant", tenant, "rmi", "-f", image.get("Reference") or image["Id"])


def test_fifty_concurrent_creates_against_a_quota_of_ten(hyper, hyperd, unix, api_for, tmp_path):
    key = _tenant_key(unix, "quota10")
    _give_busybox(hyper, tmp_path, "quota10")
    assert unix.put("/quotas/quota10", json={"pods": 10}).status_code == 200
    api = api_for(key)

    def create(number: int) -> httpx.Response:
        answer: httpx.Response = api.post(
            "/containers", json={"name": f"q{number}", "image": "busybox"}
        )
        return answer

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(create, range(50)))
    created = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(created) == 10, [a.text for a in answers]
    assert {a.status_code for a in refused} == {409}
    assert all("quota" in a.json()["message"] for a in refused)
    listed = api.ok(api.get("/containers", params={"all": True}))
    assert len(listed) == 10
    quota = api.ok(api.get("/quotas/quota10"))
    pods = next(line for line in quota["resources"] if line["resource"] == "pods")
    assert (pods["used"], pods["limit"]) == (10, 10)
    for c in listed:
        api.ok(api.delete(f"/containers/{c['id']}"))
    quota = api.ok(api.get("/quotas/quota10"))
    assert next(x for x in quota["resources"] if x["resource"] == "pods")["used"] == 0
    wait_for(lambda: create(99).status_code == 201, 10, "a create once the quota is free")
    api.ok(api.delete("/containers/q99"))
