"""``hyper run`` and ``hyper pod run``: a pod in a micro-VM, owned by this process.

Until hyperd exists the pod lives as long as this command: the command serves the pod's control
socket (so ``hyper exec`` reaches it) and removes the pod, VM and files, when its main process
exits, when it fails, or when this command is interrupted. If this process is killed outright,
QEMU dies with it (PDEATHSIG) and the next ``hyper`` command sweeps the pod's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.cli.main import settings_from
from hyper.cli.stdio import (
    attach,
    raw_terminal,
    start_failure_status,
    stdin_is_terminal,
    terminal_size,
)
from hyper.model.pod import ContainerSpec, PodSpec, check_name, parse_memory, pod_from_dict
from hyper.proto import messages
from hyper.sandbox.rundir import PodDir, live_pods
from hyper.sandbox.runtime import open_runtime
from hyper.shim.control import ControlServer


def main(args: Any) -> int:
    settings = settings_from(args)
    if args.verb == "pod":
        spec = _pod_file(Path(args.file), args.name)
        if args.exit_code_from:
            spec.container(args.exit_code_from)  # it must exist
        return asyncio.run(_run_pod(settings, spec, args.exit_code_from))
    name = args.name or f"hyper-{secrets.token_hex(3)}"
    check_name(name, "container name")
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = (args.entrypoint,) if args.entrypoint else ()
    container = ContainerSpec(
        name=name,
        image=args.image,
        command=tuple(args.command) if args.command else None,
        entrypoint=entrypoint,
        env=tuple(args.env),
        workdir=args.workdir,
        user=args.user,
        tty=args.tty,
        stdin=args.interactive,
    )
    spec = PodSpec(
        name=name,
        containers=(container,),
        hostname=args.hostname or "",
        cpus=args.cpus or 0,
        memory_mb=parse_memory(args.memory) if args.memory else 0,
    )
    if args.tty and not stdin_is_terminal() and args.interactive:
        print("hyper: the input device is not a TTY", file=sys.stderr)
        return 1
    grace = args.stop_timeout if args.stop_timeout is not None else settings.container.stop_timeout
    return asyncio.run(_run_one(settings, spec, grace))


def _pod_file(path: Path, name: str | None) -> PodSpec:
    import yaml  # only pod files need it: keep `hyper run` start-up small

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read pod file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise errors.InvalidArgument(f"pod file {path} is not valid YAML/JSON: {exc}") from None
    spec = pod_from_dict(data, default_name=path.stem)
    if name:
        spec = PodSpec(
            name=check_name(name, "pod name"),
            containers=spec.containers,
            hostname=spec.hostname,
            cpus=spec.cpus,
            memory_mb=spec.memory_mb,
        )
    return spec


@contextlib.asynccontextmanager
async def _running_pod(settings: Any, spec: PodSpec) -> Any:
    """Start the pod and its control socket; tear everything down however the block ends."""
    if any(info.get("name") == spec.name for info in live_pods(settings.paths.pods)):
        raise errors.AlreadyExists(f"a pod named {spec.name!r} is running already")
    runtime = await open_runtime(settings)
    pod = runtime.new_pod(spec)
    control: ControlServer | None = None
    # While booting, SIGTERM/SIGINT must still remove the pod: turn them into cancellation.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel if task else (lambda: None))
    try:
        try:
            await pod.start()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        control = ControlServer(pod, PodDir(pod.dir).control_socket)
        await control.start()
        yield pod
    finally:
        if control is not None:
            await control.close()
        await asyncio.shield(pod.destroy())


async def _run_one(settings: Any, spec: PodSpec, grace: float) -> int:
    container = spec.containers[0]
    try:
        async with _running_pod(settings, spec) as pod:
            rows, cols = terminal_size()
            use_raw = container.tty and container.stdin and stdin_is_terminal()
            with raw_terminal(use_raw):
                try:
                    process = await pod.start_container(
                        container.name, stdin=container.stdin, rows=rows, cols=cols
                    )
                except (errors.NotFound, errors.FailedPrecondition) as exc:
                    return start_failure_status(exc)

                async def resize(r: int, c: int) -> None:
                    await pod.resize(container.name, r, c)

                async def send_signal(s: int) -> None:
                    await pod.signal(container.name, s)

                try:
                    exit_ = await attach(
                        process,
                        signal_fn=send_signal,
                        resize_fn=resize if container.tty else None,
                        grace=grace,
                    )
                except errors.HyperError as exc:
                    raise await pod.explain(exc) from exc
            return exit_.status
    except asyncio.CancelledError:
        return 130


async def _run_pod(settings: Any, spec: PodSpec, exit_code_from: str | None) -> int:
    """Start every container of the pod, relay their output by name, wait for all of them
    (or, with ``exit_code_from``, for that one: the others are then removed with the pod)."""
    try:
        async with _running_pod(settings, spec) as pod:
            processes = {c.name: await pod.start_container(c.name) for c in spec.containers}
            width = max(len(name) for name in processes)
            loop = asyncio.get_running_loop()

            forwarding: set[asyncio.Task[None]] = set()

            def forward(signum: int) -> None:
                for name, process in processes.items():
                    if not process.exited:
                        task = loop.create_task(_quiet(pod.signal(name, signum)))
                        forwarding.add(task)
                        task.add_done_callback(forwarding.discard)

            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, forward, signum)
            relays = {
                name: asyncio.create_task(_relay_prefixed(name.ljust(width), p))
                for name, p in processes.items()
            }
            if exit_code_from:
                status = (await relays[exit_code_from]).status
                for task in relays.values():
                    task.cancel()
                return status
            results = await asyncio.gather(*relays.values())
            return next((r.status for r in results if r.status), 0)
    except asyncio.CancelledError:
        return 130


async def _quiet(coro: Any) -> None:
    with contextlib.suppress(errors.HyperError):
        await coro


async def _relay_prefixed(prefix: str, process: Any) -> messages.Exit:
    async def pump(stream: Any, out: Any) -> None:
        pending = b""
        while chunk := await stream.read():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                out.write(prefix.encode() + b" | " + line + b"\n")
            out.flush()
        if pending:
            out.write(prefix.encode() + b" | " + pending + b"\n")
            out.flush()

    pumps = [
        pump(s, o)
        for s, o in ((process.stdout, sys.stdout.buffer), (process.stderr, sys.stderr.buffer))
        if s is not None
    ]
    await asyncio.gather(*pumps)
    exit_: messages.Exit = await process.wait()
    return exit_
