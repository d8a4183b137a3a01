"""Names for pods and containers the user did not name, and finding objects by name or id.

Generated names are ``adjective_noun`` like docker's, easier to type than an id. Lookups accept
a full id, a unique id prefix (at least 4 characters, so a short name is never read as an id), or
an exact name, as docker does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import TypeVar

from hyper import errors

_ADJECTIVES = [
    "brave",
    "calm",
    "eager",
    "fond",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "proud",
    "quiet",
    "sharp",
    "swift",
    "tender",
    "vivid",
    "witty",
    "zealous",
    "bold",
]
_NOUNS = [
    "turing",
    "hopper",
    "lovelace",
    "knuth",
    "ritchie",
    "thompson",
    "torvalds",
    "liskov",
    "hamilton",
    "dijkstra",
    "lamport",
    "perlman",
    "wirth",
    "backus",
    "kay",
    "cerf",
]

T = TypeVar("T")


def generate(taken: Callable[[str], bool]) -> str:
    for _ in range(20):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if not taken(name):
            return name
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}_{secrets.token_hex(3)}"


def find(
    items: Iterable[T],
    ref: str,
    *,
    id_of: Callable[[T], str],
    name_of: Callable[[T], str],
    what: str,
) -> T:
    """The one item whose name is ``ref``, or whose id is or starts with ``ref``."""
    if not ref:
        raise errors.InvalidArgument(f"a {what} name or id is required")
    candidates = list(items)
    for item in candidates:
        if name_of(item) == ref or id_of(item) == ref:
            return item
    if len(ref) >= 4:
        matches = [item for item in candidates if id_of(item).startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"{ref!r} matches several {what}s: give more of the id")
    raise errors.NotFound(f"no such {what}: {ref}")
