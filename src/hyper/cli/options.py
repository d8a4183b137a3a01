"""Options that many verbs share, defined once: ``--format`` and a listing's ``-q``.

Imported while the parser is built, on the hot path of every command: argparse only.
"""

from __future__ import annotations

import argparse


def output_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="table (default) or json"
    )


def listing(parser: argparse.ArgumentParser, quiet: str = "only names") -> None:
    """A listing's options: ``-q`` prints ``quiet`` (what identifies each item), else a table
    or JSON."""
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet)
    output_format(parser)
