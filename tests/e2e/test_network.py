"""Pod networking, end to end: real bridges, taps, nftables, dnsmasq and QEMU pods.

The "outside" is a network namespace of the test's own, joined to the host by a veth whose
host end is hyperd's uplink; floating IPs come from that link's subnet. All traffic stays on
this machine. Every name (links, tables, namespace) is the test's own and checked gone at the end.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    Daemon,
    Hyper,
    assert_nothing_left,
    network_leftovers,
    network_section,
    routed_networks,
    wait_for,
)

pytestmark = pytest.mark.vm

HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


class Outside:
    """A namespace with one veth to the host: ``host_ip`` on our end, ``ip`` on its end."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.ns = f"hyper-out-{token}"
        self.host_link, peer = f"xo{token}", f"xi{token}"
        self.subnet = _free_subnet()
        base = self.subnet.network_address
        self.host_ip, self.ip = str(base + 1), str(base + 2)
        self.fip_pool = f"{base + 100}-{base + 103}"
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", peer)
        _ip("-n", self.ns, "link", "set", peer, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], capture_output=True, timeout=timeout
        )

    def get(self, url: str, timeout: int = 2) -> str | None:
        # (busybox 1.35's wget -T crashes: bound it with timeout instead)
        result = self.run("timeout", str(timeout), "busybox", "wget", "-qO-", url, timeout=30)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    routed = routed_networks()
    while True:
        candidate = ipaddress.IPv4Network(f"198.18.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(r) for r in routed):
            return candidate


@pytest.fixture()
def outside() -> Iterator[Outside]:
    place = Outside()
    yield place
    place.close()


@pytest.fixture()
def net(hyper_home, outside: Outside, tmp_path: Path) -> Iterator[tuple[Hyper, Daemon]]:
    """A hyperd of its own whose uplink is the veth to ``outside``, with a floating IP pool."""
    base_config, state, run_dir = hyper_home
    text = base_config.read_text().split("[network]")[0]
    config = tmp_path / "config.toml"
    config.write_text(
        text + network_section(uplink=f'"{outside.host_link}"', fip_pool=f'["{outside.fip_pool}"]')
    )
    daemon = Daemon(config, state, run_dir)
    daemon.start()
    tool = Hyper(config, run_dir)
    made = tool("tenant", "create", "blue")  # another tenant (the state outlives one test)
    assert made.returncode == 0 or b"exists already" in made.stderr, made.stderr.decode()
    archive = tmp_path / "busybox.tar"  # with the default tenant's busybox (images are a
    ok(tool("save", "-o", str(archive), "busybox"))  # tenant's): save, load as blue
    ok(tool("--tenant", "blue", "load", "-i", str(archive)))
    yield tool, daemon
    tool.kill_clients()
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    every = ("--tenant", "*")  # the pods of every tenant
    for pod in tool(*every, "pod", "ls", "-a", "-q").stdout.decode().split():
        tool(*every, "pod", "rm", "-f", pod)
    for tenant in ("default", "blue"):
        for name in tool("--tenant", tenant, "network", "ls", "-q").stdout.decode().split():
            tool("--tenant", tenant, "network", "rm", name)
    daemon.stop()
    leftovers = assert_nothing_left(state, run_dir) + network_leftovers(config)
    assert not leftovers, f"left behind: {leftovers}"


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode().strip()


def addresses(hyper: Hyper, network: str, tenant: str = "default") -> dict[str, str]:
    view = json.loads(ok(hyper("--tenant", tenant, "network", "inspect", network)))[0]
    return {ep["pod"]: ep["address"] for ep in view["endpoints"]}


def test_pods_talk_on_their_network_and_nothing_crosses(net, outside):
    hyper, _ = net
    ok(hyper("network", "create", "front"))
    ok(hyper("network", "create", "back", "--subnet", "10.99.251.0/24"))
    ok(hyper("run", "-d", "--network", "front", "--name", "alpha", "busybox", "sh", "-c", HTTPD))
    ok(
        hyper(
            "run", "-d", "--network", "front", "--name", "beta", "--link", "alpha:db",
            "busybox", "sh", "-c", HTTPD,
        )
    )  # fmt: skip
    ok(hyper("run", "-d", "--network", "back", "--name", "gamma", "busybox", "sh", "-c", HTTPD))
    ok(hyper("--tenant", "blue", "run", "-d", "--name", "delta", "busybox", "sh", "-c", HTTPD))
    front = addresses(hyper, "front")
    gamma = addresses(hyper, "back")["gamma"]
    delta = addresses(hyper, "default", tenant="blue")["delta"]
    assert ipaddress.IPv4Address(gamma) in ipaddress.IPv4Network("10.99.251.0/24")

    def get(pod: str, target: str) -> str | None:
        result = hyper("exec", pod, "timeout", "3", "wget", "-qO-", f"http://{target}/")
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def ping(pod: str, target: str) -> bool:
        return bool(hyper("exec", pod, "ping", "-c", "1", "-W", "2", target).returncode == 0)

    # Same network: ping and TCP both ways, by address, by name and by link alias.
    for src, dst in (("alpha", "beta"), ("beta", "alpha")):
        assert ping(src, front[dst]) and ping(src, dst), f"{src} cannot ping {dst}"
        assert get(src, front[dst]) == dst
        assert get(src, dst) == dst
    assert get("beta", "db") == "alpha"
    # Another network, another tenant: no packet either way, and their names do not resolve.
    for src, dst_ip in (
        ("gamma", front["alpha"]),
        ("delta", front["alpha"]),
        ("alpha", gamma),
        ("alpha", delta),
        ("gamma", delta),
        ("delta", gamma),
    ):
        assert not ping(src, dst_ip), f"{src} reached {dst_ip}"
        assert get(src, dst_ip) is None, f"{src} reached {dst_ip} over TCP"
    for src, name in (("gamma", "alpha"), ("delta", "alpha"), ("alpha", "delta")):
        assert hyper("exec", src, "nslookup", name).returncode != 0, f"{src} resolved {name}"
    # The host's own services are out of reach (DNS on the gateway is the one exception).
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        gateway = json.loads(ok(hyper("network", "inspect", "front")))[0]["gateway"]
        probe = hyper("exec", "alpha", "sh", "-c", f"nc -w 2 {gateway} {port} </dev/null")
        assert probe.returncode != 0, "a pod reached a host service"
    # A pod cannot send from another address (nor reach anyone with it).
    spoof = ipaddress.IPv4Address(front["alpha"]) + 100
    ok(hyper("exec", "alpha", "ip", "addr", "add", f"{spoof}/24", "dev", "eth0"))
    assert hyper("exec", "alpha", "ping", "-c", "1", "-W", "2", "-I", str(spoof), "beta").returncode
    assert ping("alpha", "beta")


def test_published_port_and_floating_ip(net, outside):
    hyper, _ = net
    port = _free_port()
    ok(hyper("run", "-d", "--name", "web", "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD))
    ps = ok(hyper("ps"))
    assert f"0.0.0.0:{port}->80/tcp" in ps, ps
    wait_for(lambda: _http(f"http://127.0.0.1:{port}/") == "web", 30, "the port from the host")
    assert _http(f"http://{outside.host_ip}:{port}/") == "web"
    assert outside.get(f"http://{outside.host_ip}:{port}/") == "web"

    # Outbound traffic leaves masqueraded (the uplink's address), then from the FIP.
    with _Echo(outside) as echo:
        assert _source_seen(hyper, outside, echo.port) == outside.host_ip
        fip = ok(hyper("fip", "allocate"))
        assert outside.get(f"http://{fip}/", timeout=1) is None
        ok(hyper("fip", "associate", fip, "web"))
        associated = time.monotonic()
        wait_for(lambda: outside.get(f"http://{fip}/", timeout=1) == "web", 10, "the FIP")
        print(f"FIP answered {time.monotonic() - associated:.3f} s after associate returned")
        assert _source_seen(hyper, outside, echo.port) == fip
        listing = ok(hyper("fip", "ls"))
        assert fip in listing and "web" in listing
        # Another tenant neither sees nor moves it.
        assert fip not in ok(hyper("--tenant", "blue", "fip", "ls"))
        theirs = hyper("--tenant", "blue", "fip", "disassociate", fip)
        assert theirs.returncode != 0 and b"no such floating IP" in theirs.stderr
        every = ok(hyper("--tenant", "*", "fip", "ls")).split("\n")
        assert every[0].split()[0] == "TENANT" and every[1].split()[:2] == ["default", fip]
        ok(hyper("fip", "disassociate", fip))
        wait_for(lambda: outside.get(f"http://{fip}/", timeout=1) is None, 10, "the FIP to go")
        assert _source_seen(hyper, outside, echo.port) == outside.host_ip
        ok(hyper("fip", "release", fip))
        assert fip not in ok(hyper("fip", "ls"))


def test_kill9_restart_reconciles_links_and_rules(net, outside):
    hyper, daemon = net
    ok(hyper("run", "-d", "--name", "one", "busybox", "sh", "-c", HTTPD))
    ok(hyper("run", "-d", "--name", "two", "busybox", "sh", "-c", HTTPD))
    assert hyper("exec", "one", "timeout", "3", "wget", "-qO-", "http://two/").stdout == b"two\n"
    view = json.loads(ok(hyper("network", "inspect", "default")))[0]
    settings = _settings(daemon.config)
    daemon.kill9()
    # While hyperd is down: our inet table and the bridge vanish, a stale tap of ours appears.
    subprocess.run(["nft", "delete", "table", "inet", settings.table], check=True, timeout=30)
    _ip("link", "del", view["bridge"])
    stale = f"{settings.prefix}t" + "f" * (14 - len(settings.prefix))
    _ip("tuntap", "add", "dev", stale, "mode", "tap")
    daemon.start()
    wait_for(
        lambda: (
            hyper("exec", "one", "timeout", "3", "wget", "-qO-", "http://two/").stdout == b"two\n"
        ),
        60,
        "traffic between the pods after the restart",
    )
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, timeout=30).stdout.decode()
    assert stale not in links and view["bridge"] in links
    ok(hyper("rm", "-f", "one", "two"))
    assert not network_leftovers(daemon.config)


# ---------------------------------------------------------------- helpers


def _settings(config: Path):
    from hyper.config import load
    from hyper.config.settings import network_settings

    return network_settings(load(config))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return str(answer.read().decode().strip())
    except OSError:
        return None


class _Echo:
    """A TCP server in the outside namespace that answers each client with its source address."""

    def __init__(self, outside: Outside) -> None:
        self.outside = outside
        self.port = _free_port()
        code = (
            "import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {self.port})); s.listen(); print('ready', flush=True)\n"
            "while True:\n"
            "    c, a = s.accept(); c.sendall(a[0].encode() + b'\\n'); c.close()\n"
        )
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", outside.ns, "python3", "-c", code],
            stdout=subprocess.PIPE,
        )
        stdout = self.process.stdout
        assert stdout is not None
        ready = threading.Event()

        def wait_ready() -> None:
            stdout.readline()
            ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        assert ready.wait(30), "the echo server did not start"

    def __enter__(self) -> _Echo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def _source_seen(hyper: Hyper, outside: Outside, port: int) -> str:
    result = hyper("exec", "web", "sh", "-c", f"nc -w 3 {outside.ip} {port} </dev/null")
    return ok(result)
