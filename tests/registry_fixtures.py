"""Real registries for tests: Debian's docker-registry (distribution 2.8) on loopback.

``start_registry`` runs ``docker-registry serve CONFIG`` on a free 127.0.0.1 port, plain, with
htpasswd basic auth and TLS (a CA made here with openssl), or with the bearer-token flow against
``TokenServer``, a tiny stdlib token server in a thread that signs RS256 JWTs with openssl (the
registry checks them against a certificate in ``rootcertbundle``). Everything lives under a
directory of the test's; a registry is killed by its PID when the test is done.

Also used by bench/pull.py.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SERVICE = "hyper-test-registry"
ISSUER = "hyper-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    """Until something accepts on 127.0.0.1:port (or the process died), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the registry exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            # Not listening yet: wait for the process to change state, at most 50 ms.
            if proc is not None:
                try:
                    fd = os.pidfd_open(proc.pid)
                    try:
                        select.select([fd], [], [], 0.05)
                    finally:
                        os.close(fd)
                except ProcessLookupError:
                    pass
            else:
                select.select([], [], [], 0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def run(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd, timeout=60)


@dataclass
class TlsMaterial:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsMaterial:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "2", "-subj", "/CN=hyper test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    ext = directory / "ext.cnf"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return TlsMaterial(ca, cert, key)


@dataclass
class Registry:
    host: str
    """``127.0.0.1:PORT``: the registry part of image references."""
    proc: subprocess.Popen[bytes]
    root: Path
    tls: TlsMaterial | None = None
    username: str = ""
    password: str = ""
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.token_server is not None:
            self.token_server.stop()


def start_registry(
    root: Path,
    *,
    tls: TlsMaterial | None = None,
    htpasswd: tuple[str, str] | None = None,
    token_server: TokenServer | None = None,
) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls.cert}", f"    key: {tls.key}"]
    if htpasswd is not None:
        file = root / "htpasswd"
        out = subprocess.run(
            ["htpasswd", "-Bbn", *htpasswd], check=True, capture_output=True, timeout=60
        ).stdout
        file.write_bytes(out)
        lines += ["auth:", "  htpasswd:", "    realm: hyper-test", f"    path: {file}"]
    if token_server is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token_server.url}/token",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {token_server.cert}",
        ]
    config = root / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    registry = Registry(f"127.0.0.1:{port}", proc, root, tls, token_server=token_server)
    if htpasswd is not None:
        registry.username, registry.password = htpasswd
    try:
        wait_port(port, proc)
    except BaseException:
        registry.stop()
        raise
    return registry


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """``GET /token?service=&scope=...``: a JWT for the scopes asked, if the password is right.

    Anonymous requests get a token with no access (so the registry refuses the operation);
    wrong credentials get a 401. Every request's scopes and user are recorded in ``requests``.
    """

    directory: Path
    users: dict[str, str]
    requests: list[tuple[str, list[str]]] = field(default_factory=list)
    url: str = ""
    cert: Path = Path()
    key: Path = Path()
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> TokenServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = self.directory / "token.key", self.directory / "token.crt"
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
            "-out", str(self.cert), "-days", "2", "-subj", "/CN=hyper token signer")  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True, timeout=60,
        ).stdout  # fmt: skip
        x5c = base64.b64encode(der).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.urlparse(self.path)
                params = urllib.parse.parse_qs(query.query)
                scopes = params.get("scope", [])
                user = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        server.requests.append((f"!{name}", scopes))
                        self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                        return
                    user = name
                server.requests.append((user, scopes))
                access: list[dict[str, object]] = []
                if user:
                    for scope in scopes:
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = server.sign(user, access, x5c)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, doc: object) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def sign(self, user: str, access: list[dict[str, object]], x5c: str) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now - 60,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True, timeout=60,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


Stopper = Callable[[], None]
