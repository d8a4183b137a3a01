"""``hyper pod ...``: pods of several containers from a pod file, as clients of hyperd."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.cli import output
from hyper.cli.client import Client
from hyper.cli.containers import each


def main(client: Client, args: Any) -> int:
    verb = args.pod_verb
    if verb in ("run", "create"):
        return _create(client, args, run=verb == "run")
    if verb == "ls":
        return _ls(client, args)
    if verb == "inspect":
        output.emit_json([client.call("GET", f"/pods/{ref}") for ref in args.pods])
        return 0
    return each(client, "pods", verb, args.pods, args)


def read_pod_file(path: Path) -> Any:
    import yaml  # only pod files need it: keep `hyper run` start-up small

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read pod file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise errors.InvalidArgument(f"pod file {path} is not valid YAML/JSON: {exc}") from None


def _create(client: Client, args: Any, *, run: bool) -> int:
    spec = read_pod_file(Path(args.file))
    if isinstance(spec, dict):
        if args.name:
            spec["name"] = args.name
        spec.setdefault("name", Path(args.file).stem)
    body = {
        "spec": spec,
        "restart": args.restart,
        "labels": dict(item.partition("=")[::2] for item in args.label),
        "auto_remove": bool(getattr(args, "rm", False)),
    }
    if run and args.exit_code_from and isinstance(spec, dict):
        names = [c.get("name") for c in spec.get("containers", []) if isinstance(c, dict)]
        if args.exit_code_from not in names:
            raise errors.InvalidArgument(f"the pod has no container {args.exit_code_from!r}")
    created = client.call("POST", "/pods", body=body)
    if not run:
        print(created["id"])
        return 0
    client.call("POST", f"/pods/{created['id']}/start")
    if args.detach:
        print(created["id"])
        return 0
    return _follow(client, created["id"], args.exit_code_from)


def _follow(client: Client, pod_id: str, exit_code_from: str | None) -> int:
    """Print every container's output prefixed by its name, until they end (or until
    ``exit_code_from`` ends: the pod is then stopped); the status of that one, or the first
    non-zero one."""
    pod = client.call("GET", f"/pods/{pod_id}")
    names = [c["name"] for c in pod["containers"]]
    width = max(len(_short(c, pod)) for c in pod["containers"])
    lock = threading.Lock()

    def follow(view: dict[str, Any]) -> None:
        prefix = _short(view, pod).ljust(width) + " | "
        try:
            for entry in client.stream(
                "GET", f"/containers/{view['id']}/logs", params={"follow": True}
            ):
                target = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
                with lock:
                    target.write(prefix + entry.get("log", ""))
                    target.flush()
        except errors.HyperError:
            return

    threads = [
        threading.Thread(target=follow, args=(view,), daemon=True) for view in pod["containers"]
    ]
    for thread in threads:
        thread.start()
    try:
        if exit_code_from:
            target = next(c for c in pod["containers"] if _short(c, pod) == exit_code_from)
            done = client.call("POST", f"/containers/{target['id']}/wait", timeout=None)
            client.call("POST", f"/pods/{pod_id}/stop")
            for thread in threads:
                thread.join(timeout=5)
            return int(done["exit_code"] or 0)
        codes = [
            client.call("POST", f"/containers/{name}/wait", timeout=None)["exit_code"]
            for name in names
        ]
        for thread in threads:
            thread.join(timeout=5)
        return next((int(c) for c in codes if c), 0)
    except KeyboardInterrupt:
        client.call("POST", f"/pods/{pod_id}/stop")
        return 130


def _short(view: dict[str, Any], pod: dict[str, Any]) -> str:
    name: str = view["name"]
    prefix = pod["name"] + "."
    return name[len(prefix) :] if name.startswith(prefix) else name


def _ls(client: Client, args: Any) -> int:
    pods = client.call("GET", "/pods", params={"all": args.all, "filter": args.filter})
    if args.quiet:
        for pod in pods:
            print(pod["id"][:12])
        return 0
    if args.format == "json":
        output.emit_json(pods)
        return 0
    rows = [("POD ID", "NAME", "STATE", "CONTAINERS", "CREATED")]
    for pod in pods:
        rows.append(
            (
                pod["id"][:12],
                pod["name"],
                pod["state"],
                ",".join(_short(c, pod) for c in pod["containers"]),
                output.ago(pod["created_at"]),
            )
        )
    output.table(rows)
    return 0
