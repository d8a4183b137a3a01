"""Fixtures for end-to-end tests: the real `hyper` CLI, real QEMU, a private state and run dir.

The guest (kernel and initramfs) is shared with the machine's cache (built by `make setup`, or
here on first use); everything a test makes lives under its own temporary directories, which must
be empty of pods when the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HYPER = [sys.executable, "-m", "hyper.cli"]


class Hyper:
    def __init__(self, config: Path, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.env = {**os.environ, "HYPER_CONFIG": str(config)}
        self.clients: list[subprocess.Popen[bytes]] = []

    def __call__(
        self, *args: str, input: bytes | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*HYPER, *args], input=input, capture_output=True, env=self.env, timeout=timeout
        )

    def popen(self, *args: str, **kwargs) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        client = subprocess.Popen([*HYPER, *args], env=self.env, **kwargs)
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


@pytest.fixture(scope="session")
def hyper_base(tmp_path_factory) -> Path:
    root: Path = tmp_path_factory.mktemp("hyper")
    return root


@pytest.fixture()
def hyper(hyper_base: Path, tmp_path: Path) -> Iterator[Hyper]:
    state = hyper_base / "state"  # images are shared by the session's tests
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-e2e-"))  # short: unix socket paths
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{state}"\nrun_dir = "{run_dir}"\n[vm]\nboot_timeout = 120.0\n'
    )
    tool = Hyper(config, run_dir)
    result = tool("setup", timeout=900)
    assert result.returncode == 0, result.stderr.decode()
    yield tool
    tool.kill_clients()
    if tool.pod_dirs():
        tool("ps")  # sweeps the pods of killed clients
    leftovers = tool.pod_dirs()
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not leftovers, f"pods left behind: {leftovers}"
