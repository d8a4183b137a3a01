"""The ``hyper`` command: parse the command line, run one verb, map errors to exit codes.

The CLI is on the hot path of every container start, so this module imports only argparse at
start-up; each verb imports what it needs when it runs (``python -X importtime -m hyper.cli``).

Exit codes follow ``docker run``: the container's own status, 125 when hyper itself failed,
126 when the command cannot be invoked, 127 when it is not found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="keep stdin open and connect it to the process",
    )
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable (repeatable)",
    )
    parser.add_argument(
        "-w", "--workdir", default="", metavar="DIR", help="working directory inside the container"
    )
    parser.add_argument(
        "-u",
        "--user",
        default="",
        metavar="USER[:GROUP]",
        help="user name or uid, optionally with a group",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyper",
        description="Run containers, each in its own lightweight virtual machine.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (default: $HYPER_CONFIG or /etc/hyper/config.toml)",
    )
    parser.add_argument("--debug", action="store_true", help="log what happens, to stderr")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    run = verbs.add_parser("run", help="run a command in a new container, in a new micro-VM")
    _add_process_flags(run)
    run.add_argument(
        "--rm",
        action="store_true",
        help="remove the container when it exits (always, until hyperd exists)",
    )
    run.add_argument("--name", help="name of the container (and its pod)")
    run.add_argument("--memory", "-m", help="memory of the VM, e.g. 512M or 1G")
    run.add_argument("--cpus", type=int, help="vCPUs of the VM")
    run.add_argument("--entrypoint", help="replace the image's entrypoint")
    run.add_argument("--hostname", dest="hostname", help="host name of the pod")
    run.add_argument(
        "--stop-timeout",
        type=float,
        metavar="SECONDS",
        help="grace period between SIGTERM and SIGKILL",
    )
    run.add_argument("image", metavar="IMAGE")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    exec_ = verbs.add_parser("exec", help="run a command in a running container")
    _add_process_flags(exec_)
    exec_.add_argument("container", metavar="CONTAINER")
    exec_.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    pod = verbs.add_parser("pod", help="pods of several containers")
    pod_verbs = pod.add_subparsers(dest="pod_verb", metavar="COMMAND", required=True)
    pod_run = pod_verbs.add_parser("run", help="run a pod from a spec file (YAML or JSON)")
    pod_run.add_argument("file", metavar="FILE")
    pod_run.add_argument("--name", help="override the pod's name")
    pod_run.add_argument(
        "--exit-code-from",
        metavar="CONTAINER",
        help="when this container exits, stop the pod and exit with its status",
    )

    verbs.add_parser("ps", help="list running pods and their containers")
    verbs.add_parser("images", help="list local images")
    verbs.add_parser("info", help="show the guest, the accelerator and the paths in use")
    verbs.add_parser("setup", help="build the guest, probe the accelerator, make `busybox`")
    guest = verbs.add_parser("guest", help="the guest kernel and initramfs")
    guest_verbs = guest.add_subparsers(dest="guest_verb", metavar="COMMAND", required=True)
    guest_verbs.add_parser("info", help="which guest is in use and where it came from")
    build = guest_verbs.add_parser("build", help="build the default guest")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser


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
    if args.verb in ("run", "pod"):
        from hyper.cli import run

        return run.main(args)
    if args.verb == "exec":
        from hyper.cli import exec as exec_

        return exec_.main(args)
    from hyper.cli import admin

    return admin.main(args)


def settings_from(args: Any) -> Any:
    """The settings file named by --config, else $HYPER_CONFIG, else the default."""
    from pathlib import Path

    from hyper.config import load

    name = args.config or os.environ.get("HYPER_CONFIG")
    return load(Path(name) if name else None)


if __name__ == "__main__":
    sys.exit(main())
