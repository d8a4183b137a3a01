"""``hyperd``: the host daemon. One per host (a lock on its state dir makes sure of it).

It serves the API on a unix socket (mode 0600: the local operator) and, when configured, on TCP
with TLS. Stopping it (SIGTERM, SIGINT) or killing it leaves every pod running: each pod has its
own supervisor, and the next hyperd re-attaches to them (:meth:`PodService.recover`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hyper import errors
from hyper.config import Settings, load

if TYPE_CHECKING:
    import uvicorn

_log = logging.getLogger("hyperd")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hyperd", description="The hyper host daemon.")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (default: $HYPER_CONFIG or /etc/hyper/config.toml)",
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    name = args.config or os.environ.get("HYPER_CONFIG")
    config_file = Path(name).resolve() if name else None
    try:
        settings = load(config_file)
        lock = _take_lock(settings)
    except errors.HyperError as exc:
        print(f"hyperd: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        asyncio.run(serve(settings, config_file))
    finally:
        os.close(lock)
    return 0


def _take_lock(settings: Settings) -> int:
    settings.paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(settings.paths.state_dir / "hyperd.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.AlreadyExists(
            f"another hyperd is running with state dir {settings.paths.state_dir}"
        ) from None
    return fd


async def serve(settings: Settings, config_file: Path | None) -> None:
    import uvicorn

    from hyper.daemon.app import create_app
    from hyper.daemon.auth import Identified, local_operator
    from hyper.service.core import Services

    services = await Services.open(settings, config_file=config_file)
    servers: list[tuple[uvicorn.Server, list[socket.socket]]] = []
    try:
        app = create_app(services)
        unix = _unix_socket(settings.daemon.socket)
        operator = Identified(app, local_operator(settings.tenancy.default_tenant))
        servers.append((uvicorn.Server(_config(operator)), [unix]))
        if settings.daemon.tcp:  # every request is authenticated (its tenant and role)
            tenants = Identified(app, services.tenancy.authenticator.authenticate)
            servers.append((uvicorn.Server(_config(tenants, settings)), [_tcp_socket(settings)]))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        tasks = [asyncio.create_task(server.serve(sockets=sockets)) for server, sockets in servers]
        _log.info("hyperd listening on %s", settings.daemon.socket)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        _log.info("hyperd stopping; pods keep running")
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        waiter.cancel()
    finally:
        await services.close()
        with contextlib.suppress(FileNotFoundError):
            settings.daemon.socket.unlink()


def _config(app: object, settings: Settings | None = None) -> uvicorn.Config:
    import uvicorn

    kwargs: dict[str, object] = {}
    if settings is not None:
        kwargs.update(ssl_certfile=settings.daemon.tls_cert, ssl_keyfile=settings.daemon.tls_key)
        if settings.daemon.tls_client_ca:
            kwargs.update(
                ssl_ca_certs=settings.daemon.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED
            )
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        ws_max_size=1 << 20,
        timeout_graceful_shutdown=2,
        **kwargs,  # type: ignore[arg-type]
    )


def _unix_socket(path: Path) -> socket.socket:
    if len(os.fsencode(path)) >= 108:
        raise errors.InvalidArgument(f"daemon.socket {path} is too long for a unix socket")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            path.unlink()  # a stale socket of a hyperd that died
        else:
            raise errors.AlreadyExists(f"a daemon already answers on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _tcp_socket(settings: Settings) -> socket.socket:
    host, _, port = settings.daemon.tcp.rpartition(":")
    if not port.isdigit():
        raise errors.InvalidArgument(f"daemon.tcp {settings.daemon.tcp!r} is not host:port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets, and without it every
    # answer over TLS waited ~40 ms (Nagle against the client's delayed ACK). Linux passes the
    # listener's TCP_NODELAY on to the connections it accepts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
    sock.listen(128)
    return sock


if __name__ == "__main__":
    sys.exit(main())
