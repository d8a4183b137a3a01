"""Names on a network: one dnsmasq (Debian's) per network, listening on its gateway address.

Why dnsmasq rather than a resolver inside hyperd: it keeps answering while hyperd is down or
restarting (like the pods, it outlives hyperd), it forwards every other name upstream, and the
parser of untrusted packets from guests is a hardened program running as ``nobody``, not code in
hyperd's address space. Each network's dnsmasq knows only that network's names (its hosts
file), so names of other networks and other tenants never resolve.

Files live in ``/run/hyper-dns-<table>/`` (root:nogroup, 0750: dnsmasq re-reads its hosts file
on SIGHUP after dropping privileges): ``<bridge>.hosts`` and ``<bridge>.pid``.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shutil
import signal
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

from hyper.errors import Unavailable

_log = logging.getLogger(__name__)


class Dns:
    def __init__(self, table: str, binary: str = "dnsmasq", upstream: tuple[str, ...] = ()) -> None:
        self.dir = Path("/run") / f"hyper-dns-{table}"
        self.binary = binary
        self.upstream = upstream

    def running(self) -> dict[str, int]:
        """Bridge name -> pid of each of our dnsmasq processes that is alive."""
        found = {}
        for pidfile in self.dir.glob("*.pid") if self.dir.exists() else ():
            pid = self._pid(pidfile.stem)
            if pid:
                found[pidfile.stem] = pid
        return found

    def ensure(self, bridge: str, gateway: IPv4Address, hosts: dict[str, IPv4Address]) -> None:
        """The network's dnsmasq answers ``hosts`` (name -> address) from now on."""
        self._prepare_dir()
        path = self.dir / f"{bridge}.hosts"
        text = "".join(f"{address}\t{name}\n" for name, address in sorted(hosts.items()))
        changed = not path.exists() or path.read_text() != text
        if changed:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.chown(tmp, 0, _nogroup())
            tmp.chmod(0o640)
            tmp.rename(path)
        pid = self._pid(bridge)
        if pid is None:
            self._start(bridge, gateway, path)
        elif changed:
            os.kill(pid, signal.SIGHUP)  # dnsmasq re-reads --addn-hosts

    def stop(self, bridge: str) -> None:
        pid = self._pid(bridge)
        if pid is not None:
            _log.info("stopping dnsmasq %d of %s", pid, bridge)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for suffix in (".pid", ".hosts", ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{bridge}{suffix}").unlink()

    def remove_dir(self) -> None:
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def _start(self, bridge: str, gateway: IPv4Address, hosts: Path) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise Unavailable(f"{self.binary} is not installed (Debian package dnsmasq-base)")
        argv = [
            binary,
            "--conf-file=/dev/null",
            f"--pid-file={self.dir / (bridge + '.pid')}",
            f"--listen-address={gateway}",
            "--bind-interfaces",  # only the gateway's address, never a wildcard socket
            "--no-hosts",  # not the host's /etc/hosts: only this network's names
            f"--addn-hosts={hosts}",
            "--domain-needed",
            "--bogus-priv",
            "--user=nobody",
            "--group=nogroup",
            "--cache-size=0",
        ]
        if self.upstream:
            argv += ["--no-resolv", *(f"--server={server}" for server in self.upstream)]
        # dnsmasq daemonises itself once its socket is bound: an error exits non-zero here, and
        # the daemon is nobody's child (it outlives hyperd like the pods do).
        result = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise Unavailable(
                f"dnsmasq for {bridge} failed: {result.stderr.decode(errors='replace')[-1000:]}"
            )
        _log.info("dnsmasq for %s on %s started", bridge, gateway)

    def _pid(self, bridge: str) -> int | None:
        """The pid in the pid file, if that process is our dnsmasq for this bridge."""
        try:
            pid = int((self.dir / f"{bridge}.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"{bridge}.hosts".encode() in cmdline else None

    def _prepare_dir(self) -> None:
        self.dir.mkdir(mode=0o750, exist_ok=True)
        os.chown(self.dir, 0, _nogroup())
        self.dir.chmod(0o750)


def _nogroup() -> int:
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534
