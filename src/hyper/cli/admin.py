"""Host verbs run locally (``setup``, ``guest info|build``), and ``info`` and
``version``, which ask hyperd."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hyper.cli.main import settings_from
from hyper.config import Settings


def main(args: Any) -> int:
    settings = settings_from(args)
    verb = args.verb
    if verb == "setup":
        return asyncio.run(_setup(settings))
    if verb == "guest":
        from hyper.guest import artifacts

        if args.guest_verb == "build":
            built = artifacts.build(settings, force=args.force)
            print(
                f"guest built: kernel {built.release} ({built.source}), "
                f"hyperstart {built.agent_version}"
            )
            return 0
        _print_table(artifacts.describe(settings))
        return 0
    raise AssertionError(verb)


async def _setup(settings: Settings) -> int:
    from hyper.guest.artifacts import build
    from hyper.images.busybox import ensure_busybox
    from hyper.images.store import ImageStore
    from hyper.vmm.accel import choose

    guest = await asyncio.to_thread(build, settings)
    print(f"guest:       kernel {guest.release} ({guest.source}), hyperstart {guest.agent_version}")
    accelerator = await choose(settings, guest.kernel)
    print(f"accelerator: {accelerator.name} ({accelerator.reason})")
    image = await asyncio.to_thread(ensure_busybox, ImageStore(settings.paths.images))
    print(f"image:       busybox:latest {str(image.digest)[:19]}")
    return 0


def remote(client: Any, args: Any) -> int:
    """``hyper info`` and ``hyper version``, answered by hyperd."""
    from hyper import __version__
    from hyper.cli import output

    if args.verb == "version":
        server = client.call("GET", "/version")
        answer = {"client": {"version": __version__}, "server": server}
        if args.format == "json":
            output.emit_json(answer)
        else:
            output.pairs(
                {
                    "client version": __version__,
                    "server version": server["version"],
                    "api version": server["api_version"],
                    "host kernel": f"{server['kernel']} ({server['arch']})",
                }
            )
        return 0
    info = client.call("GET", "/info")
    if args.format == "json":
        output.emit_json(info)
        return 0
    output.pairs(
        {
            "version": info["version"],
            "accelerator": f"{info['accelerator']['name']} ({info['accelerator']['reason']})",
            "guest kernel": info["guest"]["error"]
            or f"{info['guest']['release']} ({info['guest']['source']})",
            "pods": f"{info['pods']['running']} running, {info['pods']['total']} in all",
            "containers": (
                f"{info['containers']['running']} running, {info['containers']['total']} in all"
            ),
            "images": str(info["images"]),
            "state dir": info["paths"]["state_dir"],
            "socket": info["paths"]["socket"],
        }
    )
    return 0


def _print_table(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values)
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        print(f"{key.ljust(width)}  {text}")
