"""``hyper template ...``: the VM templates that pods are cloned from.

Imported when the parser is built, so this module imports only what argparse needs; the verbs
import their helpers when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyper.cli import options

if TYPE_CHECKING:
    from hyper.cli.client import Client


def add_parsers(verbs: Any) -> None:
    template = verbs.add_parser("template", help="VM templates that new pods are cloned from")
    template_verbs = template.add_subparsers(dest="template_verb", metavar="COMMAND", required=True)
    ls = template_verbs.add_parser("ls", help="list templates")
    options.listing(ls, "only keys")
    build = template_verbs.add_parser("build", help="build a template ahead of time")
    build.add_argument("--cpus", type=int, help="vCPUs (default: the configured ones)")
    build.add_argument("-m", "--memory", help="memory, e.g. 512M (default: the configured one)")
    build.add_argument("--tenant", default="", help="for this tenant only (see the docs)")
    build.add_argument("--no-network", action="store_true", help="for pods without a NIC")
    build.add_argument("--force", action="store_true", help="rebuild it (if no pod uses it)")
    rm = template_verbs.add_parser("rm", help="remove templates (refused while pods use them)")
    rm.add_argument("keys", nargs="+", metavar="KEY")
    template_verbs.add_parser("prune", help="remove every template no pod uses")


def template(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.template_verb
    if verb == "ls":
        found = client.call("GET", "/templates")
        if args.format == "json":
            output.emit_json(found)
        elif args.quiet:
            for t in found:
                print(t["key"][:16])
        else:
            rows = [("KEY", "CPUS", "MEMORY", "ACCEL", "AGENT", "RAM", "IN USE", "CREATED")]
            for t in found:
                rows.append(
                    (
                        t["key"][:16],
                        str(t["cpus"]),
                        f"{t['memory_mb']}M",
                        t["accelerator"],
                        t["agent_version"] or "-",
                        output.size(t["ram_bytes"]),
                        "yes" if t["in_use"] else "no",
                        t["created_at"],
                    )
                )
            output.table(rows)
    elif verb == "build":
        body = {
            "cpus": args.cpus,
            "memory": args.memory,
            "tenant": args.tenant,
            "network": not args.no_network,
            "force": args.force,
        }
        built = client.call("POST", "/templates", body=body, timeout=600)
        print(built["key"][:16])
    elif verb == "rm":
        for key in args.keys:
            client.call("DELETE", f"/templates/{key}")
            print(key)
    else:
        for key in client.call("POST", "/templates/prune")["removed"]:
            print(key)
    return 0
