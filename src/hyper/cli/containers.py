"""Container verbs, as clients of hyperd: run, create, start, stop, restart, kill, rm, ps, logs,
exec, attach, inspect, wait, stats, top, events."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from hyper import errors
from hyper.cli import output
from hyper.cli.client import Client

REMOVAL_TIMEOUT = 60.0
"""Seconds `run --rm` waits for hyperd to remove the container once it has exited."""


def create_body(args: Any) -> dict[str, Any]:
    labels = {}
    for item in args.label:
        key, _, value = item.partition("=")
        labels[key] = value
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    body = {
        "image": args.image,
        "name": args.name,
        "command": list(args.command) or None,
        "entrypoint": entrypoint,
        "env": list(args.env),
        "workdir": args.workdir,
        "user": args.user,
        "tty": args.tty,
        "stdin": args.interactive,
        "hostname": args.hostname or "",
        "memory": args.memory,
        "cpus": args.cpus,
        "restart": args.restart,
        "labels": labels,
        "auto_remove": getattr(args, "rm", False),
    }
    if getattr(args, "volume", None):
        body["volumes"] = list(args.volume)
    if getattr(args, "network", ""):
        body["network"] = args.network
    if getattr(args, "publish", None):
        body["ports"] = list(args.publish)
    if getattr(args, "link", None):
        body["links"] = list(args.link)
    return body


def create(client: Client, args: Any) -> int:
    created = _create(client, args)
    print(created["id"])
    return 0


def _create(client: Client, args: Any) -> Any:
    """Create the container, pulling its image first as ``--pull`` says (docker's way: the
    client pulls when the daemon answers that the image is missing)."""
    from hyper.cli.images import pull_image

    if args.pull == "always":
        pull_image(client, args.image, to=sys.stderr)
    try:
        return client.call("POST", "/containers", body=create_body(args))
    except errors.NotFound as exc:
        if args.pull != "missing" or not str(exc).startswith("no such image"):
            raise
    print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
    pull_image(client, args.image, to=sys.stderr)
    return client.call("POST", "/containers", body=create_body(args))


def run(client: Client, args: Any) -> int:
    from hyper.cli import stdio

    if args.tty and args.interactive and not stdio.stdin_is_terminal():
        print("hyper: the input device is not a TTY", file=sys.stderr)
        return 1
    if args.detach and args.rm and args.restart != "no":
        raise errors.InvalidArgument("--rm and --restart cannot be combined")
    created = _create(client, args)
    if args.detach:
        try:
            client.call("POST", f"/containers/{created['id']}/start")
        except errors.HyperError as exc:
            print(f"hyper: {exc}", file=sys.stderr)
            return errors.start_failure_status(type(exc).__name__)
        print(created["id"])
        return 0
    status = _attached(client, created["id"], stdin=args.interactive, tty=args.tty, start=True)
    if args.rm:  # as docker's CLI: when `run --rm` returns, the container is gone
        with contextlib.suppress(errors.HyperError):
            client.call(
                "POST", f"/containers/{created['id']}/wait", params={"condition": "removed"},
                timeout=REMOVAL_TIMEOUT,
            )  # fmt: skip
    return status


def _attached(client: Client, ref: str, *, stdin: bool, tty: bool, start: bool) -> int:
    from hyper.cli import stdio

    rows, cols = stdio.terminal_size()
    ws = client.websocket(
        f"/containers/{ref}/attach",
        params={"stdin": stdin, "start": start, "rows": rows, "cols": cols},
    )
    return stdio.relay(ws, stdin=stdin, tty_=tty)


def start(client: Client, args: Any) -> int:
    if args.attach:
        if len(args.containers) != 1:
            raise errors.InvalidArgument("start -a takes one container")
        view = client.call("GET", f"/containers/{args.containers[0]}")
        return _attached(
            client, view["id"], stdin=args.interactive, tty=bool(view["tty"]), start=True
        )
    return each(client, "containers", "start", args.containers, args)


_PARAMS: dict[str, Callable[[Any], dict[str, Any] | None]] = {
    "start": lambda args: None,
    "stop": lambda args: {"timeout": args.time},
    "restart": lambda args: {"timeout": args.time},
    "kill": lambda args: {"signal": args.signal},
    "rm": lambda args: {"force": args.force},
}


def each(client: Client, kind: str, verb: str, refs: list[str], args: Any) -> int:
    """``verb`` on each of ``refs`` (``kind``: containers or pods), as docker's multi-target
    verbs do it: print each one done, report each failure, go on; the first failure's code."""
    params = _PARAMS[verb](args)
    status = 0
    for ref in refs:
        try:
            if verb == "rm":
                client.call("DELETE", f"/{kind}/{ref}", params=params)
            else:
                client.call("POST", f"/{kind}/{ref}/{verb}", params=params)
        except errors.HyperError as exc:
            print(f"hyper: {ref}: {exc}", file=sys.stderr)
            status = status or exc.exit_code
        else:
            print(ref)
    return status


def lifecycle(client: Client, args: Any) -> int:
    """``stop``, ``restart``, ``kill`` and ``rm`` of each container named."""
    return each(client, "containers", args.verb, args.containers, args)


stop = restart = kill = rm = lifecycle


def ps(client: Client, args: Any) -> int:
    views = client.call("GET", "/containers", params={"all": args.all, "filter": args.filter})
    if args.quiet:
        for view in views:
            print(view["id"][:12])
        return 0
    if args.format == "json":
        output.emit_json(views)
        return 0
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for view in views:
        command = " ".join(view.get("command") or view.get("entrypoint") or [])
        rows.append(
            (
                view["id"][:12],
                view["image"],
                json.dumps(command[:20] + ("…" if len(command) > 20 else "")),
                output.ago(view["created_at"]),
                output.status(view),
                ", ".join(_port(p) for p in view.get("ports", [])),
                view["name"],
            )
        )
    output.table(rows)
    return 0


def _port(published: str) -> str:
    """``127.0.0.1:8080:80/tcp`` or ``8080:80/tcp`` as docker shows it: ``0.0.0.0:8080->80/tcp``."""
    *host, container = published.split(":")
    return f"{host[0] if len(host) == 2 else '0.0.0.0'}:{host[-1]}->{container}"


def logs(client: Client, args: Any) -> int:
    params = {
        "follow": args.follow,
        "tail": None if args.tail in (None, "all") else int(args.tail),
        "since": output.parse_time(args.since),
        "until": output.parse_time(args.until),
    }
    try:
        for entry in client.stream("GET", f"/containers/{args.container}/logs", params=params):
            line = entry.get("log", "")
            if args.timestamps:
                line = f"{entry.get('time')} {line}"
            target = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
            target.write(line)
            target.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def exec_(client: Client, args: Any) -> int:
    from hyper.cli import stdio

    if not args.command:
        raise errors.InvalidArgument("exec needs a command")
    if args.tty and args.interactive and not stdio.stdin_is_terminal():
        print("hyper: the input device is not a TTY", file=sys.stderr)
        return 1
    rows, cols = stdio.terminal_size()
    ws = client.websocket(f"/containers/{args.container}/exec")
    config = {
        "cmd": args.command,
        "env": args.env,
        "workdir": args.workdir,
        "user": args.user,
        "tty": args.tty,
        "stdin": args.interactive,
        "rows": rows,
        "cols": cols,
    }
    ws.send(json.dumps(config))
    return stdio.relay(ws, stdin=args.interactive, tty_=args.tty)


def attach(client: Client, args: Any) -> int:
    view = client.call("GET", f"/containers/{args.container}")
    stdin = bool(view["stdin"]) and not args.no_stdin
    return _attached(client, view["id"], stdin=stdin, tty=bool(view["tty"]), start=False)


def inspect(client: Client, args: Any) -> int:
    found, status = [], 0
    for ref in args.names:
        try:
            found.append(client.call("GET", f"/containers/{ref}"))
        except errors.NotFound:
            try:
                found.append(client.call("GET", f"/pods/{ref}"))
            except errors.NotFound:
                try:
                    found.append(client.call("GET", f"/images/{ref}/json"))
                except (errors.NotFound, errors.InvalidArgument):
                    print(f"hyper: no such container, pod or image: {ref}", file=sys.stderr)
                    status = 1
    output.emit_json(found)
    return status


def wait(client: Client, args: Any) -> int:
    status = 0
    for ref in args.containers:
        try:
            done = client.call("POST", f"/containers/{ref}/wait", timeout=None)
        except errors.HyperError as exc:
            print(f"hyper: {ref}: {exc}", file=sys.stderr)
            status = exc.exit_code
            continue
        print(done["exit_code"])
    return status


def stats(client: Client, args: Any) -> int:
    refs = args.containers or [v["name"] for v in client.call("GET", "/containers")]
    while True:
        samples = [client.call("GET", f"/containers/{ref}/stats") for ref in refs]
        if args.format == "json":
            output.emit_json(samples)
        else:
            rows = [("NAME", "MEM USAGE / LIMIT", "MEM %", "CPU TIME", "PIDS")]
            for s in samples:
                used = s.get("memory_total", 0) - s.get("memory_available", 0)
                total = s.get("memory_total", 0) or 1
                rows.append(
                    (
                        s["name"],
                        f"{output.size(used)} / {output.size(total)}",
                        f"{100 * used / total:.1f}%",
                        f"{(s.get('cpu_user_us', 0) + s.get('cpu_system_us', 0)) / 1e6:.2f}s",
                        str(s.get("processes", "")),
                    )
                )
            output.table(rows)
        if args.no_stream:
            return 0
        time.sleep(1.0)


def top(client: Client, args: Any) -> int:
    answer = client.call("GET", f"/containers/{args.container}/top")
    if args.format == "json":
        output.emit_json(answer["processes"])
        return 0
    rows = [("PID", "PPID", "USER", "STATE", "RSS", "TIME", "COMMAND")]
    for p in answer["processes"]:
        rows.append(
            (
                str(p.get("pid")),
                str(p.get("ppid")),
                str(p.get("user", p.get("uid"))),
                str(p.get("state", "")),
                output.size(p.get("rss", 0)),
                f"{p.get('cpu_time', 0):.2f}s",
                str(p.get("command", "")),
            )
        )
    output.table(rows)
    return 0


def events(client: Client, args: Any) -> int:
    params = {
        "since": output.parse_time(args.since),
        "until": output.parse_time(args.until),
        "filter": args.filter,
    }
    try:
        for event in client.stream("GET", "/events", params=params):
            if args.format == "json":
                print(json.dumps(event), flush=True)
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event["time"]))
                attrs = [f"name={event['name']}"]
                attrs += [f"{k}={v}" for k, v in sorted(event["attributes"].items())]
                print(
                    f"{stamp} {event['type']} {event['action']} {event['id'][:12]} "
                    f"({', '.join(attrs)})",
                    flush=True,
                )
    except KeyboardInterrupt:
        return 0
    return 0
