"""The ``hyper`` command: parse the command line, run one verb, map errors to exit codes.

Every verb but the host set-up (``setup``, ``guest``) is a client of hyperd (:mod:`.client`).
The CLI is on the hot path of every container start, so this module imports only argparse at
start-up; each verb imports what it needs when it runs (``python -X importtime -m hyper.cli``).

Exit codes follow docker: a container's own status for run/start -a/exec, 125 when hyper itself
failed (daemon unreachable, bad request, not found...), 126 when the command cannot be invoked,
127 when it is not found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from hyper.cli import networks, options, templates, tenancy, volumes  # parsers only, at start


def _process_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="keep stdin open and connect it"
    )
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set a variable"
    )
    parser.add_argument("-w", "--workdir", default="", metavar="DIR", help="working directory")
    parser.add_argument("-u", "--user", default="", metavar="USER[:GROUP]", help="user")


def _container_flags(parser: argparse.ArgumentParser) -> None:
    _process_flags(parser)
    parser.add_argument("--name", help="name of the container (and of its pod)")
    parser.add_argument("-m", "--memory", help="memory of the VM, e.g. 512M or 1G")
    parser.add_argument("--cpus", type=int, help="vCPUs of the VM")
    parser.add_argument("--entrypoint", help="replace the image's entrypoint")
    parser.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="[NAME:]PATH[:ro]",
        help="mount a volume (NAME:/data, anonymous /data; /host/dir:/data for the operator)",
    )
    parser.add_argument("--hostname", help="host name of the pod")
    parser.add_argument(
        "--restart", default="no", help="no, on-failure[:N] or always (default: no)"
    )
    parser.add_argument(
        "-l", "--label", action="append", default=[], metavar="KEY=VALUE", help="add a label"
    )
    parser.add_argument(
        "--pull",
        choices=("missing", "always", "never"),
        default="missing",
        help="pull the image: missing (default), always or never",
    )
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--filter", action="append", default=[], metavar="KEY=VALUE", help="filter"
    )


def _image_verbs(verbs: Any) -> None:
    pull = verbs.add_parser("pull", help="pull an image from a registry")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress, only the name")
    pull.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    push = verbs.add_parser("push", help="push an image to a registry")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress")
    push.add_argument("image", metavar="NAME[:TAG]")
    images = verbs.add_parser("images", help="list images")
    options.listing(images, "only ids")
    rmi = verbs.add_parser("rmi", help="remove images")
    rmi.add_argument("-f", "--force", action="store_true", help="even if a container uses it")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    tag = verbs.add_parser("tag", help="give an image another name")
    tag.add_argument("source", metavar="SOURCE[:TAG]")
    tag.add_argument("target", metavar="TARGET[:TAG]")
    history = verbs.add_parser("history", help="the layers of an image and how they were made")
    history.add_argument("--no-trunc", action="store_true", help="do not shorten the commands")
    options.output_format(history)
    history.add_argument("image", metavar="IMAGE")
    save = verbs.add_parser("save", help="write images to a tar archive (docker save format)")
    save.add_argument("-o", "--output", metavar="FILE", help="the archive (default: stdout)")
    save.add_argument(
        "--format", choices=("docker", "oci"), default="docker", help="docker (default) or oci"
    )
    save.add_argument("images", nargs="+", metavar="IMAGE")
    load = verbs.add_parser("load", help="load images from a tar archive (docker or OCI)")
    load.add_argument("-i", "--input", metavar="FILE", help="the archive (default: stdin)")
    commit = verbs.add_parser("commit", help="a new image from a running container's changes")
    commit.add_argument("-m", "--message", help="commit message")
    commit.add_argument("-a", "--author", help="author")
    commit.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        metavar="INSTRUCTION",
        help="a Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL...)",
    )
    commit.add_argument("container", metavar="CONTAINER")
    commit.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    login = verbs.add_parser("login", help="log in to a registry (hyperd keeps the credentials)")
    login.add_argument("-u", "--username", help="user name")
    login.add_argument("-p", "--password", help="password (prefer --password-stdin)")
    login.add_argument("--password-stdin", action="store_true", help="read the password")
    login.add_argument("server", nargs="?", metavar="SERVER", help="default: docker.io")
    logout = verbs.add_parser("logout", help="forget the credentials of a registry")
    logout.add_argument("server", nargs="?", metavar="SERVER", help="default: docker.io")
    image = verbs.add_parser("image", help="manage images")
    image_verbs = image.add_subparsers(dest="image_verb", metavar="COMMAND", required=True)
    image_verbs.add_parser("prune", help="free the blobs no image uses")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyper", description="Run containers, each in its own lightweight virtual machine."
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (default: $HYPER_CONFIG or /etc/hyper/config.toml)",
    )
    parser.add_argument(
        "-H",
        "--host",
        metavar="URL",
        help="hyperd to talk to (unix:///path or https://host:port; default: $HYPER_HOST,"
        " else `hyper config set`, else the local socket)",
    )
    parser.add_argument(
        "--key",
        metavar="KEY",
        help="access key for hyperd over https (default: $HYPER_KEY, else `hyper config set`)",
    )
    parser.add_argument(
        "--ca", metavar="FILE", help="CA of hyperd's certificate (default: $HYPER_CA, stored)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--tenant",
        metavar="TENANT",
        help="act in this tenant, or '*' to list every tenant's (operator only)",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    run = verbs.add_parser("run", help="run a command in a new container, in a new micro-VM")
    run.add_argument("-d", "--detach", action="store_true", help="run in the background")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    _container_flags(run)
    create = verbs.add_parser("create", help="create a container without starting it")
    _container_flags(create)
    for verb in (run, create):
        verb.add_argument(
            "--network", default="", help="the network to join (default: default; none: no NIC)"
        )
        verb.add_argument(
            "-p",
            "--publish",
            action="append",
            default=[],
            metavar="[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]",
            help="publish a container's port on the host",
        )
        verb.add_argument(
            "--link",
            action="append",
            default=[],
            metavar="CONTAINER[:ALIAS]",
            help="the alias resolves to that container (on the same network)",
        )

    start = verbs.add_parser("start", help="start stopped containers")
    start.add_argument("-a", "--attach", action="store_true", help="attach to its output")
    start.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    start.add_argument("containers", nargs="+", metavar="CONTAINER")
    for name, text in (("stop", "stop running containers"), ("restart", "restart containers")):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("-t", "--time", type=float, help="seconds before SIGKILL")
        verb.add_argument("containers", nargs="+", metavar="CONTAINER")
    kill = verbs.add_parser("kill", help="send a signal to containers (default SIGKILL)")
    kill.add_argument("-s", "--signal", default="KILL", help="signal name or number")
    kill.add_argument("containers", nargs="+", metavar="CONTAINER")
    rm = verbs.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true", help="kill and remove running ones")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")

    ps = verbs.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="also the stopped ones")
    options.listing(ps, "only ids")
    _filter(ps)
    logs = verbs.add_parser("logs", help="a container's output")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following")
    logs.add_argument("-n", "--tail", help="only the last N lines (default: all)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show times")
    logs.add_argument("--since", help="from this time (epoch, RFC 3339, or 10m, 2h)")
    logs.add_argument("--until", help="up to this time")
    logs.add_argument("container", metavar="CONTAINER")
    exec_ = verbs.add_parser("exec", help="run a command in a running container")
    _process_flags(exec_)
    exec_.add_argument("container", metavar="CONTAINER")
    exec_.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    attach = verbs.add_parser("attach", help="attach to a running container's main process")
    attach.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    attach.add_argument("container", metavar="CONTAINER")
    inspect = verbs.add_parser("inspect", help="details of containers, pods or images, as JSON")
    inspect.add_argument("names", nargs="+", metavar="NAME")
    wait = verbs.add_parser("wait", help="wait for containers to stop; print their codes")
    wait.add_argument("containers", nargs="+", metavar="CONTAINER")
    stats = verbs.add_parser("stats", help="memory, CPU and processes of containers")
    stats.add_argument("--no-stream", action="store_true", help="print once and exit")
    options.output_format(stats)
    stats.add_argument("containers", nargs="*", metavar="CONTAINER")
    top = verbs.add_parser("top", help="the processes of a container")
    options.output_format(top)
    top.add_argument("container", metavar="CONTAINER")
    events = verbs.add_parser("events", help="lifecycle events, as they happen")
    events.add_argument("--since", help="replay from this time")
    events.add_argument("--until", help="stop at this time")
    options.output_format(events)
    _filter(events)

    pod = verbs.add_parser("pod", help="pods of several containers")
    pod_verbs = pod.add_subparsers(dest="pod_verb", metavar="COMMAND", required=True)
    for name, text in (("run", "create and start a pod from a file"), ("create", "create a pod")):
        verb = pod_verbs.add_parser(name, help=text)
        verb.add_argument("file", metavar="FILE", help="pod file (YAML or JSON)")
        verb.add_argument("--name", help="override the pod's name")
        verb.add_argument("--restart", default="no", help="no, on-failure[:N] or always")
        verb.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE")
        if name == "run":
            verb.add_argument("-d", "--detach", action="store_true", help="in the background")
            verb.add_argument("--rm", action="store_true", help="remove the pod when it ends")
            verb.add_argument(
                "--exit-code-from",
                metavar="CONTAINER",
                help="when this container exits, stop the pod and exit with its status",
            )
    pod_ls = pod_verbs.add_parser("ls", help="list pods")
    pod_ls.add_argument("-a", "--all", action="store_true", help="also the stopped ones")
    options.listing(pod_ls, "only ids")
    _filter(pod_ls)
    for name, text in (
        ("inspect", "details of pods"),
        ("start", "start pods"),
        ("stop", "stop pods"),
        ("restart", "restart pods"),
        ("kill", "signal every container of pods"),
        ("rm", "remove pods"),
    ):
        verb = pod_verbs.add_parser(name, help=text)
        if name in ("stop", "restart"):
            verb.add_argument("-t", "--time", type=float, help="seconds before SIGKILL")
        if name == "kill":
            verb.add_argument("-s", "--signal", default="KILL", help="signal name or number")
        if name == "rm":
            verb.add_argument("-f", "--force", action="store_true", help="also running ones")
        verb.add_argument("pods", nargs="+", metavar="POD")

    _image_verbs(verbs)
    volumes.add_parsers(verbs)
    networks.add_parsers(verbs)
    templates.add_parsers(verbs)
    tenancy.add_parsers(verbs)
    info = verbs.add_parser("info", help="the daemon, the guest, the accelerator")
    options.output_format(info)
    version = verbs.add_parser("version", help="versions of the client and the daemon")
    options.output_format(version)
    verbs.add_parser("setup", help="build the guest, probe the accelerator, make `busybox`")
    guest = verbs.add_parser("guest", help="the guest kernel and initramfs (local)")
    guest_verbs = guest.add_subparsers(dest="guest_verb", metavar="COMMAND", required=True)
    guest_verbs.add_parser("info", help="which guest is in use and where it came from")
    build = guest_verbs.add_parser("build", help="build the default guest")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    completion = verbs.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash",))
    return parser


LOCAL = ("setup", "guest", "completion")
IMAGE_VERBS = (
    "pull",
    "push",
    "images",
    "rmi",
    "tag",
    "history",
    "save",
    "load",
    "commit",
    "login",
    "logout",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from hyper.errors import HyperError

        if not isinstance(exc, HyperError) or args.debug:
            raise
        print(f"hyper: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args: Any) -> int:
    if args.verb == "completion":
        from hyper.cli.completion import bash

        print(bash(build_parser()))
        return 0
    if args.verb in LOCAL:
        from hyper.cli import admin

        return admin.main(args)
    if args.verb == "config":
        return tenancy.config(args)
    if getattr(args, "verb_tenant", None):  # `key create --tenant`, `usage --tenant`
        args.tenant = args.verb_tenant
    client = client_from(args)
    if args.verb in ("whoami", "tenant", "key", "quota", "usage"):
        return int(getattr(tenancy, args.verb)(client, args))
    if args.verb == "pod":
        from hyper.cli import pods

        return pods.main(client, args)
    if args.verb in IMAGE_VERBS or args.verb == "image":
        from hyper.cli import images

        image_verb: Any = getattr(images, args.image_verb if args.verb == "image" else args.verb)
        return int(image_verb(client, args))
    if args.verb in ("volume", "snapshot"):
        return int(getattr(volumes, args.verb)(client, args))
    if args.verb in ("network", "fip"):
        return int(getattr(networks, args.verb)(client, args))
    if args.verb == "template":
        return templates.template(client, args)
    if args.verb in ("info", "version"):
        from hyper.cli import admin

        return admin.remote(client, args)
    from hyper.cli import containers

    verb = {"exec": "exec_"}.get(args.verb, args.verb)
    handler: Any = getattr(containers, verb)
    return int(handler(client, args))


def settings_from(args: Any) -> Any:
    """The settings file named by --config, else $HYPER_CONFIG, else the default."""
    from pathlib import Path

    from hyper.config import load

    name = args.config or os.environ.get("HYPER_CONFIG")
    return load(Path(name) if name else None)


def client_from(args: Any, env: Any = None) -> Any:
    """The client of one command: ``-H``, else $HYPER_HOST, else the stored endpoint, else the
    settings' socket; ``--key``, else $HYPER_KEY, else the stored key (sent only to the stored
    endpoint, and never to a unix socket); ``--ca``, else $HYPER_CA, else the stored CA."""
    from hyper.cli import credentials
    from hyper.cli.client import Client

    env = os.environ if env is None else env
    chosen = credentials.resolve(
        host=args.host,
        key=args.key,
        env=env,
        stored=credentials.load(credentials.config_path(env)),
    )
    endpoint = chosen.endpoint or f"unix://{settings_from(args).daemon.socket}"
    return Client(endpoint, tenant=args.tenant, key=chosen.key, ca=args.ca or chosen.ca)


if __name__ == "__main__":
    sys.exit(main())
