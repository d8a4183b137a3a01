"""``hyper volume ...`` and ``hyper snapshot ...``: block volumes and their snapshots.

Imported when the parser is built, so this module imports only what argparse needs; the verbs
import their helpers when they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hyper.cli import options

if TYPE_CHECKING:
    from hyper.cli.client import Client


def add_parsers(verbs: Any) -> None:
    volume = verbs.add_parser("volume", help="block volumes that outlive pods")
    volume_verbs = volume.add_subparsers(dest="volume_verb", metavar="COMMAND", required=True)
    create = volume_verbs.add_parser("create", help="create a volume (an empty ext4 file system)")
    create.add_argument("--name", help="its name (default: generated)")
    create.add_argument("--size", help="e.g. 512M or 10G (default: 1G)")
    create.add_argument("--from-snapshot", metavar="SNAPSHOT", help="a copy of a snapshot")
    create.add_argument("name_arg", nargs="?", metavar="NAME", help="its name (as docker)")
    options.listing(volume_verbs.add_parser("ls", help="list volumes"))
    inspect = volume_verbs.add_parser("inspect", help="details of volumes, as JSON")
    inspect.add_argument("volumes", nargs="+", metavar="VOLUME")
    rm = volume_verbs.add_parser("rm", help="remove volumes (not in use, without snapshots)")
    rm.add_argument("volumes", nargs="+", metavar="VOLUME")

    snapshot = verbs.add_parser("snapshot", help="point-in-time copies of volumes")
    snap_verbs = snapshot.add_subparsers(dest="snapshot_verb", metavar="COMMAND", required=True)
    snap = snap_verbs.add_parser("create", help="snapshot a volume (live if a pod runs on it)")
    snap.add_argument("--name", help="its name (default: generated)")
    snap.add_argument("volume", metavar="VOLUME")
    snap_ls = snap_verbs.add_parser("ls", help="list snapshots")
    snap_ls.add_argument("--volume", help="only the snapshots of this volume")
    options.listing(snap_ls)
    snap_inspect = snap_verbs.add_parser("inspect", help="details of snapshots, as JSON")
    snap_inspect.add_argument("snapshots", nargs="+", metavar="SNAPSHOT")
    snap_rm = snap_verbs.add_parser("rm", help="remove snapshots")
    snap_rm.add_argument("snapshots", nargs="+", metavar="SNAPSHOT")


def volume(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.volume_verb
    if verb == "create":
        body = {"name": args.name or args.name_arg, "size": args.size}
        body["from_snapshot"] = args.from_snapshot
        print(client.call("POST", "/volumes", body=body)["name"])
    elif verb == "ls":
        found = client.call("GET", "/volumes")
        rows = [("NAME", "SIZE", "DRIVER", "USED BY", "CREATED")]
        for v in found:
            users = ",".join(sorted({u["pod"] for u in v["users"]})) or "-"
            created = output.ago(v["created"])
            rows.append((v["name"], output.size(v["size"]), v["driver"], users, created))
        _emit(client, args, found, rows)
    elif verb == "inspect":
        output.emit_json([client.call("GET", f"/volumes/{ref}") for ref in args.volumes])
    else:
        for ref in args.volumes:
            client.call("DELETE", f"/volumes/{ref}")
            print(ref)
    return 0


def snapshot(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.snapshot_verb
    if verb == "create":
        made = client.call("POST", "/snapshots", body={"volume": args.volume, "name": args.name})
        print(made["name"])
    elif verb == "ls":
        params = {"volume": args.volume} if args.volume else None
        found = client.call("GET", "/snapshots", params=params)
        rows = [("NAME", "VOLUME", "SIZE", "CONSISTENCY", "CREATED")]
        for s in found:
            created = output.ago(s["created"])
            rows.append((s["name"], s["volume"], output.size(s["size"]), s["consistency"], created))
        _emit(client, args, found, rows)
    elif verb == "inspect":
        output.emit_json([client.call("GET", f"/snapshots/{ref}") for ref in args.snapshots])
    else:
        for ref in args.snapshots:
            client.call("DELETE", f"/snapshots/{ref}")
            print(ref)
    return 0


def _emit(
    client: Client, args: Any, found: list[dict[str, Any]], rows: Sequence[Sequence[str]]
) -> None:
    from hyper.cli import output

    if args.quiet:
        for item in found:
            print(item["name"])
    elif args.format == "json":
        output.emit_json(found)
    else:
        output.table(output.whose(rows, found, client.tenant == "*"))
