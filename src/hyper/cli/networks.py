"""``hyper network ...`` and ``hyper fip ...``: tenant networks and floating IPs.

Imported when the parser is built, so this module imports only what argparse needs; the verbs
import their helpers when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyper.cli import options

if TYPE_CHECKING:
    from hyper.cli.client import Client


def add_parsers(verbs: Any) -> None:
    network = verbs.add_parser("network", help="the tenant's private networks")
    net_verbs = network.add_subparsers(dest="network_verb", metavar="COMMAND", required=True)
    create = net_verbs.add_parser("create", help="create a network (a bridge, a subnet, a DNS)")
    create.add_argument("--subnet", default="", help="IPv4 CIDR (default: the next free one)")
    create.add_argument(
        "--no-nat", action="store_true", help="no outbound traffic to the host's uplink"
    )
    create.add_argument("name", metavar="NAME")
    options.listing(net_verbs.add_parser("ls", help="list networks"))
    inspect = net_verbs.add_parser("inspect", help="details of networks, as JSON")
    inspect.add_argument("networks", nargs="+", metavar="NETWORK")
    rm = net_verbs.add_parser("rm", help="remove networks (without pods)")
    rm.add_argument("networks", nargs="+", metavar="NETWORK")

    fip = verbs.add_parser("fip", help="floating IPs: public addresses for containers")
    fip_verbs = fip.add_subparsers(dest="fip_verb", metavar="COMMAND", required=True)
    fip_verbs.add_parser("allocate", help="take an address from the pool")
    associate = fip_verbs.add_parser("associate", help="route a floating IP to a container")
    associate.add_argument("fip", metavar="FIP")
    associate.add_argument("container", metavar="CONTAINER")
    disassociate = fip_verbs.add_parser("disassociate", help="detach it from its container")
    disassociate.add_argument("fip", metavar="FIP")
    release = fip_verbs.add_parser("release", help="give the address back to the pool")
    release.add_argument("fip", metavar="FIP")
    options.listing(fip_verbs.add_parser("ls", help="list the tenant's floating IPs"))


def network(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.network_verb
    if verb == "create":
        body = {"name": args.name, "subnet": args.subnet, "nat": not args.no_nat}
        print(client.call("POST", "/networks", body=body)["id"])
    elif verb == "ls":
        found = client.call("GET", "/networks")
        if args.quiet:
            print("\n".join(n["name"] for n in found))
        elif args.format == "json":
            output.emit_json(found)
        else:
            rows = [["NETWORK ID", "NAME", "SUBNET", "GATEWAY", "NAT", "PODS"]]
            for n in found:
                nat = "yes" if n["nat"] else "no"
                rows.append(
                    [n["id"][:12], n["name"], n["subnet"], n["gateway"], nat, str(n["endpoints"])]
                )
            output.table(output.whose(rows, found, client.tenant == "*"))
    elif verb == "inspect":
        output.emit_json([client.call("GET", f"/networks/{ref}") for ref in args.networks])
    elif verb == "rm":
        for ref in args.networks:
            client.call("DELETE", f"/networks/{ref}")
            print(ref)
    return 0


def fip(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.fip_verb
    if verb == "allocate":
        print(client.call("POST", "/fips")["address"])
    elif verb == "associate":
        client.call("POST", f"/fips/{args.fip}/associate", body={"container": args.container})
    elif verb == "disassociate":
        client.call("POST", f"/fips/{args.fip}/disassociate", body={})
    elif verb == "release":
        client.call("DELETE", f"/fips/{args.fip}")
    elif verb == "ls":
        found = client.call("GET", "/fips")
        if args.quiet:
            print("\n".join(f["address"] for f in found))
        elif args.format == "json":
            output.emit_json(found)
        else:
            rows = [["FLOATING IP", "CONTAINER"]]
            rows += [[f["address"], f["container"]] for f in found]
            output.table(output.whose(rows, found, client.tenant == "*"))
    return 0
