"""``hyper exec``: run a command in a running container, through its pod's control socket."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import AgentClient
from hyper.cli.main import settings_from
from hyper.cli.stdio import (
    attach,
    raw_terminal,
    start_failure_status,
    stdin_is_terminal,
    terminal_size,
)
from hyper.sandbox.rundir import live_pods


def find_container(pods_dir: Path, name: str) -> tuple[Path, str]:
    """The control socket of the pod running container ``name`` (or pod id/name prefix)."""
    for info in live_pods(pods_dir):
        if name in info.get("containers", []) or (
            info.get("id", "").startswith(name) and len(name) >= 12
        ):
            containers = info.get("containers", [])
            container = name if name in containers else containers[0]
            return Path(info["dir"]) / "control.sock", container
    raise errors.NotFound(f"no such container: {name}")


def main(args: Any) -> int:
    if not args.command:
        raise errors.InvalidArgument("exec needs a command")
    if args.tty and args.interactive and not stdin_is_terminal():
        print("hyper: the input device is not a TTY", file=sys.stderr)
        return 1
    settings = settings_from(args)
    control, container = find_container(settings.paths.pods, args.container)
    return asyncio.run(_exec(control, container, args, settings.container.stop_timeout))


async def _exec(control: Path, container: str, args: Any, grace: float) -> int:
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(control))
    except OSError as exc:
        raise errors.Unavailable(f"cannot reach container {container}: {exc}") from None
    client = AgentClient(reader, writer)
    try:
        await client.handshake(timeout=10.0)
        rows, cols = terminal_size()
        process_id = f"exec-{secrets.token_hex(4)}"
        with raw_terminal(args.tty and args.interactive and stdin_is_terminal()):
            try:
                process = await client.exec(
                    container,
                    process_id,
                    list(args.command),
                    env=list(args.env),
                    cwd=args.workdir or "/",
                    user=args.user,
                    tty=args.tty,
                    stdin=args.interactive,
                    rows=rows,
                    cols=cols,
                )
            except (errors.NotFound, errors.FailedPrecondition) as exc:
                return start_failure_status(exc)

            async def send_signal(s: int) -> None:
                await client.signal(process_id, s)

            async def resize(r: int, c: int) -> None:
                await client.resize(process_id, r, c)

            exit_ = await attach(
                process, signal_fn=send_signal, resize_fn=resize if args.tty else None, grace=grace
            )
        return exit_.status
    finally:
        await client.close()
