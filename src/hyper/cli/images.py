"""The image verbs: pull, push, images, rmi, tag, history, save, load, commit, login, logout,
image prune; all answered by hyperd, which owns the store and the registry credentials."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.cli import output
from hyper.cli.client import Client
from hyper.cli.progress import TransferDisplay


def pull(client: Client, args: Any) -> int:
    result = pull_image(client, args.image, quiet=args.quiet)
    print(result["reference"] if args.quiet else f"Status: pulled {result['reference']}")
    return 0


def pull_image(client: Client, reference: str, *, quiet: bool = False, to: Any = None) -> Any:
    """Pull ``reference`` through hyperd, showing progress on ``to`` (stdout by default)."""
    stream = to or sys.stdout
    display = None if quiet else TransferDisplay(stream)
    if display is not None:
        print(f"Pulling {reference}", file=stream)
    lines = client.stream("POST", "/images/pull", params={"reference": reference})
    result = _follow(lines, display)
    if display is not None:
        print(f"Digest: {result['digest']}", file=stream)
    return result


def push(client: Client, args: Any) -> int:
    display = None if args.quiet else TransferDisplay(sys.stdout)
    result = _follow(client.stream("POST", f"/images/{args.image}/push"), display)
    print(f"{result['reference']}: digest: {result['digest']} size: {result['size']}")
    return 0


def _follow(lines: Any, display: TransferDisplay | None) -> Any:
    """Show the progress lines of a pull or push; the final result, or raise its error."""
    for line in lines:
        if "error" in line:
            if display is not None:
                display.finish()
            error = line["error"]
            raise errors.by_kind(str(error.get("kind")), errors.HyperError)(str(error["message"]))
        if "result" in line:
            if display is not None:
                display.finish()
            return line["result"]
        if display is not None:
            display.update(line)
    raise errors.Unavailable("hyperd ended the transfer without a result")


def images(client: Client, args: Any) -> int:
    rows = client.call("GET", "/images")
    if args.quiet:
        for image_id in dict.fromkeys(row["Id"][7:19] for row in rows):
            print(image_id)
        return 0
    if args.format == "json":
        output.emit_json(rows)
        return 0
    # An operator's every-tenant listing (--tenant '*') says whose each name is.
    every = client.tenant == "*"
    table: list[tuple[str, ...]] = [
        ("TENANT",) * every + ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    ]
    for row in rows:
        table.append(
            (str(row.get("Tenant", "")),) * every
            + (
                row["Repository"],
                row["Tag"],
                row["Id"][7:19],
                _age(row["Created"]),
                output.size(row["Size"]),
            )
        )
    output.table(table)
    return 0


def rmi(client: Client, args: Any) -> int:
    status = 0
    for ref in args.images:
        try:
            for item in client.call("DELETE", f"/images/{ref}", params={"force": args.force}):
                for action, what in item.items():
                    print(f"{action}: {what}")
        except errors.HyperError as exc:
            print(f"hyper: {ref}: {exc}", file=sys.stderr)
            status = 1
    return status


def tag(client: Client, args: Any) -> int:
    client.call("POST", f"/images/{args.source}/tag", params={"target": args.target})
    return 0


def history(client: Client, args: Any) -> int:
    rows = client.call("GET", f"/images/{args.image}/history")
    if args.format == "json":
        output.emit_json(rows)
        return 0
    table = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for row in rows:
        created_by = row.get("CreatedBy") or ""
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        image_id = row.get("Id") or "<missing>"
        table.append(
            (
                image_id[7:19] if image_id.startswith("sha256:") else image_id,
                _age(row.get("Created") or ""),
                created_by,
                output.size(row.get("Size") or 0),
                row.get("Comment") or "",
            )
        )
    output.table(table)
    return 0


def save(client: Client, args: Any) -> int:
    params = {"reference": args.images, "format": args.format}
    if args.output in (None, "-"):
        if sys.stdout.isatty():
            raise errors.InvalidArgument("refusing to write an archive to a terminal: use -o FILE")
        client.download("/images/save", sys.stdout.buffer, params=params)
        return 0
    target = Path(args.output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as file:
            client.download("/images/save", file, params=params)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return 0


def load(client: Client, args: Any) -> int:
    if args.input in (None, "-"):
        if sys.stdin.isatty():
            raise errors.InvalidArgument("load reads an archive: use -i FILE or a pipe")
        answer = client.upload("/images/load", sys.stdin.buffer)
    else:
        try:
            with open(args.input, "rb") as file:
                answer = client.upload("/images/load", file)
        except FileNotFoundError:
            raise errors.NotFound(f"no such file: {args.input}") from None
    for reference in answer["loaded"]:
        print(f"Loaded image: {reference}")
    return 0


def commit(client: Client, args: Any) -> int:
    body = {
        "container": args.container,
        "reference": args.reference or "",
        "comment": args.message or "",
        "author": args.author or "",
        "changes": args.change,
    }
    answer = client.call("POST", "/commit", body=body)
    print(answer["id"])
    return 0


def login(client: Client, args: Any) -> int:
    username = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = args.password or getpass.getpass("Password: ")
    answer = client.call(
        "POST",
        "/auth/login",
        body={"registry": args.server or "", "username": username, "password": password},
    )
    print(answer["status"])
    return 0


def logout(client: Client, args: Any) -> int:
    answer = client.call("POST", "/auth/logout", body={"registry": args.server or ""})
    server = args.server or "docker.io"
    if answer["removed"]:
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


def prune(client: Client, args: Any) -> int:
    answer = client.call("POST", "/images/prune")
    if answer.get("NamesRemoved"):
        print(f"Untagged {answer['NamesRemoved']} dangling image names")
    print(f"Total reclaimed space: {output.size(answer['BytesFreed'])}")
    return 0


def inspect_image(client: Client, ref: str) -> Any:
    return client.call("GET", f"/images/{ref}/json")


def _age(created: str) -> str:
    """``3 days ago`` for an RFC 3339 time from an image config; "" when there is none."""
    try:
        return output.ago(output.parse_time(created[:26].rstrip("Z") + "Z")) if created else ""
    except errors.InvalidArgument:
        return ""
