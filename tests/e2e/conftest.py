"""Fixtures for end-to-end tests: a private hyperd, the real `hyper` CLI, real QEMU.

The guest (kernel and initramfs) is shared with the machine's cache (built by `make setup`, or
here on first use). The session has one private state dir (images shared by its tests) and run
dir; each test gets its own hyperd on them, and when the test ends every pod is removed and
nothing of it may remain: no pod directory, no QEMU, no supervisor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HYPER = [sys.executable, "-m", "hyper.cli"]


NO_CLIENT_CONFIG = {"HYPER_CLIENT_CONFIG": os.devnull}
"""The CLI's stored endpoint and key (``hyper config set``) of the machine never apply here."""


class Hyper:
    def __init__(
        self,
        config: Path,
        run_dir: Path,
        *,
        options: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.options = list(options)
        """Global options before every command's own (``-H``, ``--key``...)."""
        self.env = {**os.environ, "HYPER_CONFIG": str(config), **NO_CLIENT_CONFIG, **(env or {})}
        self.clients: list[subprocess.Popen[bytes]] = []

    def __call__(
        self, *args: str, input: bytes | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*HYPER, *self.options, *args],
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )

    def popen(self, *args: str, **kwargs) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        client = subprocess.Popen([*HYPER, *self.options, *args], env=self.env, **kwargs)
        self.clients.append(client)
        return client

    def kill_clients(self) -> None:
        for client in self.clients:
            if client.poll() is None:
                client.kill()  # its QEMU dies with it (PDEATHSIG)
                client.wait(timeout=30)

    def pod_dirs(self) -> list[Path]:
        pods = self.run_dir / "pods"
        return sorted(pods.iterdir()) if pods.exists() else []


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll a condition the test cannot be notified of, with a deadline and a clear failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def read_line(stream, timeout: float, what: str) -> bytes:
    """Read one line from a child's pipe within a deadline (select, no sleeps)."""
    import select

    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        char = os.read(stream.fileno(), 1)  # unbuffered: select sees what is left
        if not char:
            raise AssertionError(f"stream ended while waiting for {what}: {line!r}")
        line += char
    return line


class Daemon:
    """A private hyperd for the tests: started, killed (-9) and restarted at will."""

    def __init__(self, config: Path, state: Path, run_dir: Path) -> None:
        self.config = config
        self.state = state
        self.run_dir = run_dir
        self.socket = run_dir / "hyperd.sock"
        self.log = state / "hyperd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "hyperd runs already"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hyper.daemon", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self._answers, 60, f"hyperd to answer on {self.socket} (log: {self.log})")

    def _answers(self) -> bool:
        import socket

        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"hyperd exited: {self.log.read_text()[-3000:]}")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def hyper_home(tmp_path_factory) -> Iterator[tuple[Path, Path, Path]]:
    """One private state (images shared by the session's tests) and a short run dir."""
    root: Path = tmp_path_factory.mktemp("hyper")
    state = root / "state"
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-e2e-"))  # short: unix socket paths
    config = root / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{state}"\nrun_dir = "{run_dir}"\n'
        f'[vm]\nboot_timeout = 120.0\n[daemon]\nsocket = "{run_dir}/hyperd.sock"\n'
        + network_section()
    )
    result = subprocess.run(
        [*HYPER, "setup"],
        capture_output=True,
        env={**os.environ, "HYPER_CONFIG": str(config)},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr.decode()
    yield config, state, run_dir
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture()
def hyperd_config(hyper_home) -> Path:
    """The settings file hyperd runs with; a test module overrides this fixture to add to it."""
    config: Path = hyper_home[0]
    return config


@pytest.fixture()
def hyperd(hyper_home, hyperd_config: Path) -> Iterator[Daemon]:
    _, state, run_dir = hyper_home
    config = hyperd_config
    daemon = Daemon(config, state, run_dir)
    daemon.start()
    yield daemon
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    env = {**os.environ, "HYPER_CONFIG": str(config), **NO_CLIENT_CONFIG}
    every = ("--tenant", "*")  # the pods of every tenant
    listed = subprocess.run(
        [*HYPER, *every, "pod", "ls", "-a", "-q"], capture_output=True, env=env, timeout=60
    )
    for pod in listed.stdout.decode().split():
        subprocess.run(
            [*HYPER, *every, "pod", "rm", "-f", pod], capture_output=True, env=env, timeout=120
        )
    daemon.stop()
    leftovers = assert_nothing_left(state, run_dir) + network_leftovers(config)
    assert not leftovers, f"left behind: {leftovers}"


def routed_networks() -> list[Any]:
    """The IPv4 destinations the host routes now: subnets a test must not take."""
    import ipaddress

    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [
            ipaddress.IPv4Network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False)
            for r in ipr.get_routes(family=2)
            if r.get_attr("RTA_DST")
        ]


def network_section(**extra: str) -> str:
    """A ``[network]`` of this session's own: link prefix, nftables table and a /16 no route
    of the host uses, so concurrent hyperds (and the host) never share a link, rule or subnet."""
    import ipaddress
    import secrets

    routed = routed_networks()
    while True:
        pool = ipaddress.IPv4Network(f"10.{100 + secrets.randbelow(150)}.0.0/16")
        if not any(pool.overlaps(r) for r in routed):
            break
    token = secrets.token_hex(2)
    lines = [
        "[network]",
        f'prefix = "e{token}"',
        f'table = "hyper_e2e_{token}"',
        f'subnet_pool = "{pool}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def network_leftovers(config: Path) -> list[str]:
    """Our bridges, taps, nftables tables and dnsmasq processes that still exist."""
    from hyper.config import load
    from hyper.config.settings import network_settings
    from hyper.network.host import HostNetwork

    return HostNetwork(network_settings(load(config))).leftovers()


def assert_nothing_left(state: Path, run_dir: Path) -> list[str]:
    """Pod run dirs, pod state dirs, template builds, QEMU or supervisor processes of this
    test's daemon."""
    found = [str(p) for p in (run_dir / "pods").glob("*")] if (run_dir / "pods").exists() else []
    found += [str(p) for p in (state / "pods").glob("*")] if (state / "pods").exists() else []
    # Anonymous volumes go with their pods; a test removes the named ones it made.
    found += [str(p) for p in (state / "volumes").glob("*")] if (state / "volumes").exists() else []
    # VM templates stay for the session's next tests (like images); a half-built one may not.
    found += [str(p) for p in (run_dir / "templates").glob(".build-*")]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(run_dir).encode() in cmdline or str(state).encode() + b"/pods" in cmdline:
            shown = cmdline.replace(bytes(1), b" ")[:120]
            found.append(f"process {proc.name}: {shown!r}")
    return found


@pytest.fixture()
def hyper(hyperd: Daemon) -> Iterator[Hyper]:
    tool = Hyper(hyperd.config, hyperd.run_dir)
    yield tool
    tool.kill_clients()


# ---------------------------------------------------------------- hyperd over TCP + TLS


@dataclass(frozen=True)
class TcpTls:
    """A settings file whose hyperd also serves TCP with TLS, and how a client reaches it."""

    config: Path
    endpoint: str
    """``https://127.0.0.1:PORT``"""
    ca: Path
    """The CA that signed hyperd's certificate (for ``--ca`` or $HYPER_CA)."""

    def wait(self, timeout: float = 60) -> None:
        """Until hyperd accepts TCP connections (it opens the unix socket first)."""
        import socket

        port = int(self.endpoint.rpartition(":")[2])

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout, f"hyperd to listen on {self.endpoint}")


def tcp_tls_config(base: Path, directory: Path) -> TcpTls:
    """The settings file ``base`` (the session's: same state, run dir and network) with hyperd
    also on TCP 127.0.0.1:<free port>, with a certificate of a new CA, written in ``directory``.
    A test module uses it by overriding the ``hyperd_config`` fixture (see test_tenancy_cli)."""
    import socket

    from tests.registry_fixtures import make_tls

    tls = make_tls(directory / "tls")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = base.read_text()
    assert "[daemon]\n" in text, f"{base} has no [daemon] section"
    text = text.replace(
        "[daemon]\n",
        f'[daemon]\ntcp = "127.0.0.1:{port}"\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n',
        1,
    )
    config = directory / "config.toml"
    config.write_text(text)
    return TcpTls(config, f"https://127.0.0.1:{port}", tls.ca)


def create_tenant(hyper: Hyper, tenant: str, role: str = "admin") -> str:
    """A new tenant (made through ``hyper``: the unix socket's operator) and an access key of
    ``role`` in it: the key."""
    made = hyper("tenant", "create", tenant)
    assert made.returncode == 0, made.stderr.decode()
    return create_key(hyper, tenant, role)


def create_key(hyper: Hyper, tenant: str, role: str = "admin") -> str:
    """Another access key of ``role`` in ``tenant`` (by the operator): the key."""
    made = hyper("key", "create", "--tenant", tenant, "--role", role, "--name", "e2e")
    assert made.returncode == 0, made.stderr.decode()
    key = made.stdout.decode().strip()
    assert key.startswith("hk_"), made.stdout
    return key


def tcp_client(hyper: Hyper, tcp: TcpTls, key: str) -> Hyper:
    """``hyper -H https://127.0.0.1:PORT --key KEY ...`` trusting ``tcp.ca`` ($HYPER_CA)."""
    return Hyper(
        hyper.config,
        hyper.run_dir,
        options=["-H", tcp.endpoint, "--key", key],
        env={"HYPER_CA": str(tcp.ca)},
    )
