"""The CLI's side of tenancy: which endpoint, key and CA a command uses, the key sent as
``Authorization: Bearer`` over https only (REST and websocket handshakes, recorded by real
servers), the masked key of ``hyper config show``, and the parsing of quota and usage verbs."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyper import errors
from hyper.cli import credentials
from hyper.cli.client import Client
from hyper.cli.main import build_parser, client_from, main
from hyper.cli.tenancy import parse_duration, parse_limits
from tests.registry_fixtures import make_tls

KEY = "hk_0123456789abcdef_" + "a" * 48
OTHER = "hk_1111111111111111_" + "b" * 48


class Recorder:
    """Answers each connection on ``listener`` with ``answer`` and keeps the request heads."""

    def __init__(self, listener: socket.socket, context: ssl.SSLContext | None = None) -> None:
        self.listener = listener
        self.context = context
        self.heads: list[str] = []
        self.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                self.heads.append(head.decode("latin-1"))
                conn.sendall(self.answer)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def headers(self, index: int = -1) -> dict[str, str]:
        lines = self.heads[index].split("\r\n")[1:]
        return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


@pytest.fixture()
def unix_server(tmp_path: Path) -> Iterator[tuple[str, Recorder]]:
    path = str(tmp_path / "h.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    yield f"unix://{path}", Recorder(listener)
    listener.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture()
def https_server(tls) -> Iterator[tuple[str, Recorder]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", Recorder(listener, context)
    listener.close()


def test_the_key_never_goes_to_the_unix_socket(unix_server) -> None:
    endpoint, recorder = unix_server
    client = Client(endpoint, key=KEY, tenant="acme")
    assert client.call("GET", "/whoami") == {}
    assert "authorization" not in recorder.headers()
    assert recorder.headers()["x-hyper-tenant"] == "acme"
    recorder.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with pytest.raises(errors.HyperError):
        client.websocket("/containers/x/attach")
    assert recorder.headers()["upgrade"].lower() == "websocket"
    assert "authorization" not in recorder.headers()


def test_the_key_goes_as_a_bearer_token_over_https(https_server, tls) -> None:
    endpoint, recorder = https_server
    client = Client(endpoint, key=KEY, ca=str(tls.ca))
    client.call("GET", "/whoami")
    assert recorder.headers()["authorization"] == f"Bearer {KEY}"
    recorder.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with pytest.raises(errors.HyperError):
        client.websocket("/containers/x/attach")
    assert recorder.headers()["upgrade"].lower() == "websocket"
    assert recorder.headers()["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in Client(endpoint, ca=str(tls.ca)).headers()


def test_an_untrusted_certificate_is_refused(https_server) -> None:
    endpoint, _ = https_server
    with pytest.raises(errors.Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        Client(endpoint, key=KEY).call("GET", "/whoami")


def _args(*argv: str):
    return build_parser().parse_args([*argv, "whoami"])


def test_options_then_environment_then_the_stored_file(tmp_path: Path) -> None:
    stored = tmp_path / "client.toml"
    remote = "https://hyperd.example:8443"
    credentials.save(stored, credentials.ClientConfig(remote, KEY, "/stored/ca.pem"))
    settings = tmp_path / "config.toml"
    settings.write_text(f'[daemon]\nsocket = "{tmp_path}/local.sock"\n')
    env = {"HYPER_CLIENT_CONFIG": str(stored), "HYPER_CONFIG": str(settings)}
    client = client_from(_args(), env)
    assert client.endpoint == remote and client.headers()["Authorization"] == f"Bearer {KEY}"
    assert client._ca == "/stored/ca.pem"
    assert client_from(_args("--key", OTHER), env).headers()["Authorization"].endswith(OTHER)
    by_env = client_from(_args(), {**env, "HYPER_KEY": OTHER})
    assert by_env.headers()["Authorization"].endswith(OTHER)
    legacy = client_from(_args(), {**env, "HYPER_KEY": "/etc/tls/client.key"})
    assert legacy.headers()["Authorization"].endswith(KEY)  # a path: the old TLS key
    elsewhere = client_from(_args("-H", "https://other.example:1"), env)
    assert "Authorization" not in elsewhere.headers() and elsewhere._ca == ""
    assert client_from(_args("--ca", "/mine.pem"), env)._ca == "/mine.pem"
    os.environ["HYPER_CONFIG"] = str(settings)  # settings_from reads the process's environment
    try:
        local = client_from(_args("--key", OTHER), {"HYPER_CLIENT_CONFIG": str(tmp_path / "no")})
    finally:
        del os.environ["HYPER_CONFIG"]
    assert local.endpoint == f"unix://{tmp_path}/local.sock"
    assert "Authorization" not in local.headers()


def test_config_show_masks_the_key_and_unset_forgets_it(tmp_path, monkeypatch, capsys) -> None:
    stored = tmp_path / "client.toml"
    monkeypatch.setenv("HYPER_CLIENT_CONFIG", str(stored))
    credentials.save(stored, credentials.ClientConfig("https://h.example:1", KEY))
    assert stored.stat().st_mode & 0o777 == 0o600  # it holds a key
    assert [p.name for p in tmp_path.iterdir()] == ["client.toml"]  # no temporary file left
    assert main(["config", "show", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == "hk_0123456789abcdef_aaaa…" and KEY not in json.dumps(shown)
    assert shown["endpoint"] == "https://h.example:1" and shown["file"] == str(stored)
    assert credentials.mask("keystone-token-xyz") == "keys…" and credentials.mask("") == ""
    assert main(["config", "unset"]) == 0 and not stored.exists()


def test_config_set_checks_the_endpoint_first(tmp_path, monkeypatch, capsys) -> None:
    stored = tmp_path / "client.toml"
    monkeypatch.setenv("HYPER_CLIENT_CONFIG", str(stored))
    assert main(["config", "set", "unix:///x.sock", "--key", KEY]) == 125
    assert "is not https://" in capsys.readouterr().err
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert main(["config", "set", f"https://127.0.0.1:{port}", "--key", KEY]) != 0
    assert not stored.exists()


def test_quota_limits_from_pairs_and_flags() -> None:
    assert parse_limits(["pods=10", "volume-bytes=2G"], {"vcpus": "unlimited"}) == {
        "vcpus": -1,
        "pods": 10,
        "volume_bytes": 2 << 30,
    }
    assert parse_limits(["memory_mb=default"], {}) == {"memory_mb": None}
    for bad in (["cores=1"], ["pods"], ["pods=ten"], ["pods=-5"], ["memory_mb=1G"]):
        with pytest.raises(errors.InvalidArgument):
            parse_limits(bad, {})
    with pytest.raises(errors.InvalidArgument, match="name limits"):
        parse_limits([], {"pods": None})
    args = build_parser().parse_args(["quota", "set", "acme", "fips=1", "--pods", "3"])
    assert args.quota_pods == "3" and args.limits == ["fips=1"] and args.name == "acme"


def test_key_expiry_durations() -> None:
    assert parse_duration("3600") == 3600 and parse_duration("30m") == 1800
    assert parse_duration("90d") == 90 * 86400
    for bad in ("", "0", "-5", "soon", "inf"):
        with pytest.raises(errors.InvalidArgument):
            parse_duration(bad)


def test_a_verbs_tenant_is_the_global_one() -> None:
    args = build_parser().parse_args(["--tenant", "a", "usage", "--tenant", "*"])
    assert args.tenant == "a" and args.verb_tenant == "*"
    assert build_parser().parse_args(["--tenant", "a", "usage"]).tenant == "a"
