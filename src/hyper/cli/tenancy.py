"""``hyper config``, ``whoami``, ``tenant``, ``key``, ``quota`` and ``usage``: who talks to which
hyperd, and the tenants, access keys, quotas and usage of a host (docs/tenancy.md).

``hyper login``/``logout`` stay what they are in docker: the credentials of an image registry.
The endpoint and access key of a remote hyperd are kept by ``hyper config set ENDPOINT`` instead
(``--key K``, ``--key-stdin``, or asked for on a terminal; ``--ca FILE``), which checks them
with ``GET /v1/whoami`` before it writes ``client.toml`` (mode 0600, :mod:`.credentials`);
``hyper config show`` prints it with the key masked, ``hyper config unset`` forgets it.

Imported when the parser is built, so this module imports only what argparse needs; the verbs
import their helpers when they run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hyper.cli import options

if TYPE_CHECKING:
    from hyper.cli.client import Client

RESOURCES = ("pods", "vcpus", "memory_mb", "volume_bytes", "snapshots", "fips", "networks")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parsers(verbs: Any) -> None:
    config = verbs.add_parser("config", help="the hyperd this client talks to, and its key")
    config_verbs = config.add_subparsers(dest="config_verb", metavar="COMMAND", required=True)
    set_ = config_verbs.add_parser("set", help="check an endpoint and key, then keep them")
    set_.add_argument("endpoint", metavar="ENDPOINT", help="https://host:port")
    given = set_.add_mutually_exclusive_group()
    given.add_argument("--key", dest="config_key", metavar="KEY", help="the access key")
    given.add_argument("--key-stdin", action="store_true", help="read the access key from stdin")
    set_.add_argument("--ca", dest="config_ca", metavar="FILE", help="the CA of hyperd's cert")
    options.output_format(
        config_verbs.add_parser("show", help="the stored endpoint, key (masked) and CA")
    )
    config_verbs.add_parser("unset", help="forget the stored endpoint and key")

    options.output_format(
        verbs.add_parser("whoami", help="the tenant and role of this client's credential")
    )

    tenant = verbs.add_parser("tenant", help="tenants of this host (operator)")
    tenant_verbs = tenant.add_subparsers(dest="tenant_verb", metavar="COMMAND", required=True)
    create = tenant_verbs.add_parser("create", help="create a tenant")
    create.add_argument("--description", default="", help="what it is for")
    create.add_argument("name", metavar="NAME")
    options.listing(tenant_verbs.add_parser("ls", help="list tenants"), "only names or ids")
    rm = tenant_verbs.add_parser("rm", help="remove tenants that own nothing any more")
    rm.add_argument("names", nargs="+", metavar="NAME")

    key = verbs.add_parser("key", help="access keys of a tenant")
    key_verbs = key.add_subparsers(dest="key_verb", metavar="COMMAND", required=True)
    key_create = key_verbs.add_parser("create", help="create an access key (shown once)")
    key_create.add_argument(
        "--role", choices=("member", "admin", "operator"), default="member", help="default: member"
    )
    key_create.add_argument("--name", default="", help="what it is for")
    key_create.add_argument(
        "--expires", metavar="DURATION", help="valid for this long: seconds, or 30m, 12h, 90d"
    )
    _tenant(key_create)
    options.output_format(key_create)
    key_ls = key_verbs.add_parser("ls", help="list access keys")
    key_ls.add_argument("-a", "--all", action="store_true", help="also the revoked ones")
    options.listing(key_ls, "only names or ids")
    revoke = key_verbs.add_parser("revoke", help="revoke access keys")
    revoke.add_argument("ids", nargs="+", metavar="ID")

    quota = verbs.add_parser("quota", help="the quotas of a tenant")
    quota_verbs = quota.add_subparsers(dest="quota_verb", metavar="COMMAND", required=True)
    show = quota_verbs.add_parser("show", help="limits and usage (default: your tenant)")
    show.add_argument("name", nargs="?", metavar="TENANT")
    options.output_format(show)
    quota_set = quota_verbs.add_parser("set", help="set limits (operator): -1 unlimited")
    quota_set.add_argument("name", metavar="TENANT")
    quota_set.add_argument(
        "limits", nargs="*", metavar="RESOURCE=LIMIT", help="e.g. pods=10 memory_mb=8192"
    )
    for resource in RESOURCES:
        quota_set.add_argument(
            f"--{resource.replace('_', '-')}", dest=f"quota_{resource}", metavar="LIMIT"
        )
    options.output_format(quota_set)

    usage = verbs.add_parser("usage", help="vCPU, memory, volume and floating IP seconds used")
    usage.add_argument("--since", help="from this time (epoch, RFC 3339, or 10m, 2h)")
    usage.add_argument("--until", help="up to this time (default: now)")
    _tenant(usage, "a tenant, or '*' for every tenant (operator)")
    options.output_format(usage)


def _tenant(parser: argparse.ArgumentParser, text: str = "in this tenant (operator)") -> None:
    parser.add_argument("--tenant", dest="verb_tenant", metavar="TENANT", help=text)


# ---------------------------------------------------------------- config and whoami


def config(args: Any) -> int:
    from hyper.cli import credentials, output

    path = credentials.config_path()
    if args.config_verb == "unset":
        path.unlink(missing_ok=True)
        return 0
    if args.config_verb == "show":
        stored = credentials.load(path)
        view = {
            "file": str(path),
            "endpoint": stored.endpoint,
            "key": credentials.mask(stored.key),
            "ca": stored.ca,
        }
        if args.format == "json":
            output.emit_json(view)
        else:
            output.pairs(view)
        return 0
    return _config_set(args, path)


def _config_set(args: Any, path: Any) -> int:
    import os

    from hyper import errors
    from hyper.cli import credentials
    from hyper.cli.client import Client

    if not args.endpoint.startswith("https://"):
        raise errors.InvalidArgument(
            f"endpoint {args.endpoint!r} is not https://host:port (the local socket needs no"
            " configuration)"
        )
    key = args.config_key or args.key or ""
    if args.key_stdin:
        key = sys.stdin.readline().strip()
    elif not key and sys.stdin.isatty():
        import getpass

        key = getpass.getpass("Access key: ").strip()
    if not key:
        raise errors.InvalidArgument("give the access key with --key KEY or --key-stdin")
    ca = args.config_ca or args.ca or ""
    ca = os.path.abspath(ca) if ca else ""
    checked = credentials.ClientConfig(endpoint=args.endpoint, key=key, ca=ca)
    credentials.resolve(host=checked.endpoint, key=checked.key, env={})  # validates the key
    me = Client(checked.endpoint, key=checked.key, ca=checked.ca, timeout=30).call("GET", "/whoami")
    credentials.save(path, checked)
    print(f"{checked.endpoint}: tenant {me['tenant']}, role {me['role']} (saved in {path})")
    return 0


def whoami(client: Client, args: Any) -> int:
    from hyper.cli import output

    me = client.call("GET", "/whoami")
    if args.format == "json":
        output.emit_json(me)
        return 0
    expires = me.get("expires_at")
    output.pairs(
        {
            "Endpoint": client.endpoint,
            "Tenant": me["tenant"],
            "Role": me["role"],
            "Credential": me["credential"],
            **({"User": me["user"]} if me.get("user") else {}),
            "Expires": _when(expires) if expires else "never",
        }
    )
    return 0


# ---------------------------------------------------------------- tenants and keys


def tenant(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.tenant_verb
    if verb == "create":
        body = {"name": args.name, "description": args.description}
        print(client.call("POST", "/tenants", body=body)["name"])
    elif verb == "rm":
        for name in args.names:
            client.call("DELETE", f"/tenants/{_quote(name)}")
            print(name)
    else:
        tenants = client.call("GET", "/tenants")
        if args.format == "json":
            output.emit_json(tenants)
        elif args.quiet:
            for item in tenants:
                print(item["name"])
        else:
            rows = [["TENANT", "SOURCE", "CREATED", "DESCRIPTION"]]
            rows += [
                [t["name"], t["source"], output.ago(t["created_at"]), t["description"]]
                for t in tenants
            ]
            output.table(rows)
    return 0


def key(client: Client, args: Any) -> int:
    from hyper.cli import output

    verb = args.key_verb
    if verb == "create":
        body: dict[str, Any] = {"role": args.role, "name": args.name}
        if args.expires:
            body["expires_in"] = parse_duration(args.expires)
        made = client.call("POST", "/keys", body=body)
        if args.format == "json":
            output.emit_json(made)
        else:
            print(made["key"])
            print(
                f"key {made['id']} ({made['role']} of tenant {made['tenant']}): this is the"
                " only time it is shown",
                file=sys.stderr,
            )
    elif verb == "revoke":
        for key_id in args.ids:
            client.call("DELETE", f"/keys/{_quote(key_id)}")
            print(key_id)
    else:
        keys = client.call("GET", "/keys", params={"revoked": args.all})
        if args.format == "json":
            output.emit_json(keys)
        elif args.quiet:
            for item in keys:
                print(item["id"])
        else:
            rows = [["ID", "TENANT", "ROLE", "NAME", "CREATED", "EXPIRES", "REVOKED"]]
            rows += [
                [
                    k["id"],
                    k["tenant"],
                    k["role"],
                    k["name"],
                    output.ago(k["created_at"]),
                    _when(k["expires_at"]) if k["expires_at"] else "never",
                    output.ago(k["revoked_at"]),
                ]
                for k in keys
            ]
            output.table(rows)
    return 0


# ---------------------------------------------------------------- quotas and usage


def quota(client: Client, args: Any) -> int:
    from hyper.cli import output

    if args.quota_verb == "set":
        limits = parse_limits(args.limits, {r: getattr(args, f"quota_{r}") for r in RESOURCES})
        answer = client.call("PUT", f"/quotas/{_quote(args.name)}", body=limits)
    else:
        name = (
            args.name
            or (args.tenant if args.tenant and args.tenant != "*" else None)
            or client.call("GET", "/whoami")["tenant"]
        )
        answer = client.call("GET", f"/quotas/{_quote(name)}")
    if args.format == "json":
        output.emit_json(answer)
        return 0
    rows = [["RESOURCE", "USED", "LIMIT"]]
    for line in answer["resources"]:
        limit = "unlimited" if line["limit"] == -1 else str(line["limit"])
        rows.append([line["resource"], str(line["used"]), limit + (" (default)" * line["default"])])
    output.table(rows)
    return 0


def usage(client: Client, args: Any) -> int:
    from hyper.cli import output

    params = {"since": output.parse_time(args.since), "until": output.parse_time(args.until)}
    report = client.call("GET", "/usage", params=params)
    if args.format == "json":
        output.emit_json(report)
        return 0
    columns = ("vcpu_seconds", "memory_gib_seconds", "volume_gib_seconds", "fip_seconds")
    rows = [["TENANT", "KIND", "NAME", "ID", "VCPU-S", "MEMORY GIB-S", "VOLUME GIB-S", "FIP-S"]]
    for item in report["objects"]:
        rows.append(
            [item["tenant"], item["kind"], item["name"], item["id"][:12]]
            + [_amount(item[c]) for c in columns]
        )
    rows.append(["TOTAL", "", "", ""] + [_amount(report["total"][c]) for c in columns])
    output.table(rows)
    return 0


# ---------------------------------------------------------------- parsing


def parse_limits(pairs: list[str], flags: dict[str, str | None]) -> dict[str, int | None]:
    """``RESOURCE=LIMIT`` arguments and ``--resource LIMIT`` flags as the body of ``PUT
    /v1/quotas``: an integer (sizes may say K, M, G, T), ``-1``/``unlimited``, or ``default``
    (None: back to the settings' default)."""
    from hyper import errors

    given: dict[str, str] = {r: v for r, v in flags.items() if v is not None}
    for pair in pairs:
        resource, sep, value = pair.partition("=")
        resource = resource.strip().replace("-", "_")
        if not sep or resource not in RESOURCES:
            raise errors.InvalidArgument(
                f"{pair!r} is not RESOURCE=LIMIT with a resource of {', '.join(RESOURCES)}"
            )
        given[resource] = value
    if not given:
        raise errors.InvalidArgument("name limits to set, e.g. pods=10 (or --pods 10)")
    return {resource: _limit(resource, value) for resource, value in given.items()}


def _limit(resource: str, text: str) -> int | None:
    from hyper import errors

    value = text.strip().lower()
    if value == "default":
        return None
    if value in ("unlimited", "-1"):
        return -1
    number, unit = value, ""
    if resource == "volume_bytes" and value[-1:] in _UNITS:
        number, unit = value[:-1], value[-1]
    if not number.isdigit():
        raise errors.InvalidArgument(
            f"quota {resource}={text!r}: use an integer, -1 (unlimited) or default"
        )
    return int(number) * _UNITS[unit]


def parse_duration(text: str) -> float:
    """``--expires``: seconds, or a number with s, m, h or d."""
    from hyper import errors

    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _SECONDS else "s"
    number = value[:-1] if value[-1:] in _SECONDS else value
    try:
        seconds = float(number) * _SECONDS[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise errors.InvalidArgument(f"duration {text!r} is not understood: use 3600, 30m, 90d")
    return seconds


def _amount(value: float) -> str:
    return f"{value:.1f}"


def _when(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _quote(part: str) -> str:
    import urllib.parse

    return urllib.parse.quote(part, safe="")
