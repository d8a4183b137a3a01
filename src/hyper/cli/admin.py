"""Operator verbs: ``setup``, ``guest info|build``, ``info``, ``ps``, ``images``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
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
    if verb == "info":
        return asyncio.run(_info(settings))
    if verb == "ps":
        return _ps(settings)
    if verb == "images":
        return _images(settings)
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


async def _info(settings: Settings) -> int:
    from hyper import __version__
    from hyper.guest.artifacts import resolve
    from hyper.vmm.accel import choose

    guest = resolve(settings, build=False)
    accelerator = await choose(settings, guest.kernel)
    _print_table(
        {
            "version": __version__,
            "accelerator": f"{accelerator.name} ({accelerator.reason})",
            "guest kernel": f"{guest.release} ({guest.source})",
            "guest agent": f"hyperstart {guest.agent_version}",
            "state dir": str(settings.paths.state_dir),
            "run dir": str(settings.paths.run_dir),
            "cache dir": str(settings.paths.cache_dir),
        }
    )
    return 0


def _ps(settings: Settings) -> int:
    from hyper.sandbox.rundir import live_pods, sweep

    sweep(settings.paths.pods)  # what dead owners left is not running: remove it
    rows = [("POD ID", "NAME", "CONTAINERS", "IMAGE")]
    for info in live_pods(settings.paths.pods):
        images = info.get("images", {})
        rows.append(
            (
                info["id"][:12],
                info["name"],
                ",".join(info.get("containers", [])),
                ",".join(sorted(set(images.values()))),
            )
        )
    _print_rows(rows)
    return 0


def _images(settings: Settings) -> int:
    from hyper.images.store import ImageStore

    rows = [("REPOSITORY", "TAG", "IMAGE ID", "SIZE")]
    for image in ImageStore(settings.paths.images).list():
        ref = image.reference
        rows.append(
            (
                ref.familiar.rsplit(":", 1)[0],
                ref.tag or "<none>",
                image.digest.hex[:12],
                _size(image.size),
            )
        )
    _print_rows(rows)
    return 0


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size = size / 1000  # type: ignore[assignment]
    return f"{size:.3g}TB"


def _print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_table(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values)
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        print(f"{key.ljust(width)}  {text}")
