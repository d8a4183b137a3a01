"""A real OpenStack Keystone for tests: Debian's ``keystone`` package, on loopback.

Nothing is installed here (``scripts/setup.sh`` installs ``keystone python3-keystone``). Keystone
is a Debian-packaged Python program, so it runs with Debian's ``/usr/bin/python3`` through
``keystone-manage`` and ``keystone-wsgi-public``, never with the project's virtualenv. Everything
lives in a directory of the test's: ``keystone.conf`` (SQLite, fernet tokens), the database, the
fernet and credential key repositories and the logs.

``start_keystone`` runs the set-up steps (``db_sync``, ``fernet_setup``, ``credential_setup``,
``bootstrap``) once, then serves the public API on a free 127.0.0.1 port. ``start_short_lived``
serves a second process over the same database and keys whose tokens expire after a few seconds:
a token it issues is a real fernet token that the first process validates, then refuses once it
has expired, so a test of expiry waits seconds rather than Keystone's default hour. Processes are
killed by their PIDs when the test is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.registry_fixtures import free_port

KEYSTONE_MANAGE = "/usr/bin/keystone-manage"
KEYSTONE_WSGI = "/usr/bin/keystone-wsgi-public"
DEBIAN_PYTHON = "/usr/bin/python3"
ADMIN_PASSWORD = "admin-secret-for-tests"
SERVICE_PASSWORD = "hyperd-secret-for-tests"
USER_PASSWORD = "alice-secret-for-tests"


def available() -> str:
    """Why Keystone cannot run here ("" when it can)."""
    for path in (KEYSTONE_MANAGE, KEYSTONE_WSGI, DEBIAN_PYTHON):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: run scripts/setup.sh (Debian's keystone python3-keystone)"
    return ""


@dataclass
class Keystone:
    """One Keystone process; ``url`` ends with ``/v3``."""

    root: Path
    url: str
    proc: subprocess.Popen[bytes]
    children: list[Keystone] = field(default_factory=list)

    # ------------------------------------------------------------ the API, with the stdlib

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str = "",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("X-Auth-Token", token)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                raw = answer.read()
                return answer.status, dict(answer.headers), json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return exc.code, dict(exc.headers), parsed

    def password_token(
        self, user: str, password: str, *, project: str | None = None, system: bool = False
    ) -> str:
        """A token for ``user`` (in the Default domain), scoped to ``project`` or the system."""
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            }
        }
        if project:
            auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        elif system:
            auth["scope"] = {"system": {"all": True}}
        status, headers, body = self.request("POST", "/auth/tokens", body={"auth": auth})
        if status != 201:
            raise RuntimeError(f"keystone refused a token for {user}: {status} {body}")
        return headers["X-Subject-Token"]

    def admin_token(self) -> str:
        return self.password_token("admin", ADMIN_PASSWORD, project="admin")

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v3/<collection>s as the admin; the created object."""
        status, _, answer = self.request(
            "POST", f"/{collection}s", token=self.admin_token(), body={collection: body}
        )
        if status != 201:
            raise RuntimeError(f"keystone refused to create a {collection}: {status} {answer}")
        return dict(answer[collection])

    def find(self, collection: str, name: str) -> dict[str, Any]:
        status, _, answer = self.request(
            "GET", f"/{collection}s?name={name}", token=self.admin_token()
        )
        if status != 200 or not answer[f"{collection}s"]:
            raise RuntimeError(f"keystone has no {collection} named {name}: {status} {answer}")
        return dict(answer[f"{collection}s"][0])

    def grant(self, project_id: str, user_id: str, role_id: str) -> None:
        status, _, answer = self.request(
            "PUT",
            f"/projects/{project_id}/users/{user_id}/roles/{role_id}",
            token=self.admin_token(),
        )
        if status != 204:
            raise RuntimeError(f"keystone refused a role assignment: {status} {answer}")

    def revoke(self, token: str) -> None:
        status, _, answer = self.request(
            "DELETE", "/auth/tokens", token=self.admin_token(), headers={"X-Subject-Token": token}
        )
        if status != 204:
            raise RuntimeError(f"keystone refused to revoke a token: {status} {answer}")

    # ------------------------------------------------------------ lifetime

    def stop(self) -> None:
        for child in self.children:
            child.stop()
        _kill(self.proc)


def _conf(root: Path, expiration: int) -> str:
    return textwrap.dedent(
        f"""\
        [DEFAULT]
        log_dir = {root / "log"}
        use_stderr = false
        [database]
        connection = sqlite:///{root / "keystone.db"}
        [token]
        provider = fernet
        expiration = {expiration}
        [fernet_tokens]
        key_repository = {root / "fernet-keys"}
        [fernet_receipts]
        key_repository = {root / "fernet-keys"}
        [credential]
        key_repository = {root / "credential-keys"}
        """
    )


def _env(conf_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON", "VIRTUAL"))}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's python3 first, not the venv's
    env["OS_KEYSTONE_CONFIG_DIR"] = str(conf_dir)
    return env


def _manage(root: Path, *args: str) -> None:
    conf = root / "etc" / "keystone.conf"
    result = subprocess.run(
        [DEBIAN_PYTHON, KEYSTONE_MANAGE, "--config-file", str(conf), *args],
        env=_env(conf.parent),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"keystone-manage {args[0]} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace')[-2000:]}"
        )


def _serve(root: Path, conf_dir: Path, name: str, timeout: float = 60.0) -> tuple[str, Any]:
    """Start keystone-wsgi-public with the config in ``conf_dir``; wait until it answers."""
    port = free_port()
    log = open(root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (the process writes to it)
    proc = subprocess.Popen(
        [DEBIAN_PYTHON, KEYSTONE_WSGI, "--host", "127.0.0.1", "--port", str(port)],
        env=_env(conf_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}/v3"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = (root / "log" / f"{name}.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"keystone ({name}) exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return url, proc
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            _kill(proc)
            raise RuntimeError(f"keystone ({name}) did not answer on {url} within {timeout} s")
        time.sleep(0.1)  # polling a port: there is no event to wait on


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # its own session: the server only
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def start_keystone(root: Path) -> Keystone:
    """Set up and start a Keystone under ``root``, with an admin (project ``admin``), a project
    ``alpha`` whose user ``alice`` has the ``member`` role, and a service user ``hyperd`` with
    the ``service`` role in project ``service`` (what hyperd validates tokens with)."""
    conf_dir = root / "etc"
    for sub in ("etc", "log", "fernet-keys", "credential-keys"):
        (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    (conf_dir / "keystone.conf").write_text(_conf(root, 3600))
    _manage(root, "db_sync")
    # Keystone's SQLAlchemy pool may keep a read transaction open on one connection while it
    # writes on another: in SQLite's default journal mode that write fails with "database is
    # locked". In WAL mode (a property of the file, so it holds for every process) readers never
    # block a writer.
    with contextlib.closing(sqlite3.connect(root / "keystone.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")
    owner = ("--keystone-user", "root", "--keystone-group", "root")
    _manage(root, "fernet_setup", *owner)
    _manage(root, "credential_setup", *owner)
    port_hint = "http://127.0.0.1:5000/v3/"  # the catalog's URL; nothing here reads it
    _manage(
        root,
        "bootstrap",
        "--bootstrap-password",
        ADMIN_PASSWORD,
        "--bootstrap-admin-url",
        port_hint,
        "--bootstrap-public-url",
        port_hint,
        "--bootstrap-region-id",
        "RegionOne",
    )
    url, proc = _serve(root, conf_dir, "keystone")
    keystone = Keystone(root=root, url=url, proc=proc)
    try:
        _populate(keystone)
    except BaseException:
        keystone.stop()
        raise
    return keystone


def _populate(keystone: Keystone) -> None:
    member = keystone.find("role", "member")
    service_role = keystone.create("role", {"name": "service"})
    for project_name, user, password, role in (
        ("alpha", "alice", USER_PASSWORD, member),
        ("service", "hyperd", SERVICE_PASSWORD, service_role),
    ):
        project = keystone.create("project", {"name": project_name, "domain_id": "default"})
        created = keystone.create(
            "user", {"name": user, "password": password, "domain_id": "default"}
        )
        keystone.grant(project["id"], created["id"], role["id"])


def start_short_lived(keystone: Keystone, expiration: int) -> Keystone:
    """A second Keystone process over the same database and keys, whose tokens live
    ``expiration`` seconds; stopped with ``keystone``."""
    conf_dir = keystone.root / f"etc-short-{expiration}"
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    (conf_dir / "keystone.conf").write_text(_conf(keystone.root, expiration))
    url, proc = _serve(keystone.root, conf_dir, f"keystone-short-{expiration}")
    short = Keystone(root=keystone.root, url=url, proc=proc)
    keystone.children.append(short)
    return short


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
