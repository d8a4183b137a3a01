"""Who a process runs as: the ``user`` of an exec, resolved in the container's /etc.

Forms, as in Docker: ``""`` (root), ``name``, ``uid``, ``uid:gid``, ``name:group`` (and mixes).
Names are looked up in the container's /etc/passwd and /etc/group, never the guest's; numeric ids
need no entry. Supplementary groups are those of /etc/group that list the user by name.
"""

from __future__ import annotations

from typing import NamedTuple

from hyper.errors import InvalidArgument, NotFound


class User(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def _number(text: str) -> int | None:
    if text.isdigit() and text.isascii():
        value = int(text)
        if value < 2**32 - 1:
            return value
        raise InvalidArgument(f"id {text} out of range")
    return None


def resolve(spec: str, etc: str = "/etc") -> User:
    """Resolve ``spec`` against ``etc`` (the container's /etc once chrooted)."""
    name, _, group = spec.partition(":")
    if not name and group:
        raise InvalidArgument(f"user {spec!r} names a group without a user")
    passwd = _entries(f"{etc}/passwd")
    uid = _number(name or "0")
    entry = None
    for fields in passwd:
        if len(fields) < 7:
            continue
        if (uid is None and fields[0] == name) or (uid is not None and fields[2] == str(uid)):
            entry = fields
            break
    if uid is None:
        if entry is None:
            raise NotFound(f"unable to find user {name}: no matching entries in passwd file")
        uid = _number(entry[2])
        if uid is None:
            raise NotFound(f"user {name} has an invalid uid in passwd")
    gid = 0
    home = "/"
    username = ""
    if entry is not None:
        gid = _number(entry[3]) or 0
        home = entry[5] or "/"
        username = entry[0]
    elif uid == 0:
        home = "/root"
    groups_file = _entries(f"{etc}/group")
    if group:
        wanted = _number(group)
        if wanted is None:
            for fields in groups_file:
                if len(fields) >= 3 and fields[0] == group:
                    wanted = _number(fields[2])
                    break
            if wanted is None:
                raise NotFound(f"unable to find group {group}: no matching entries in group file")
        gid = wanted
    extra: list[int] = []
    if username and not group:
        for fields in groups_file:
            if len(fields) >= 4 and username in fields[3].split(","):
                number = _number(fields[2])
                if number is not None and number != gid and number not in extra:
                    extra.append(number)
    return User(uid, gid, (gid, *extra), home)
