"""Resolving an exec's ``user`` against a container's /etc/passwd and /etc/group."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyper.errors import InvalidArgument, NotFound
from hyperstart.users import User, resolve

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
app:x:1000:
audio:x:29:app,daemon
video:x:44:app
"""


@pytest.fixture
def etc(tmp_path: Path) -> str:
    (tmp_path / "passwd").write_text(PASSWD)
    (tmp_path / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", User(0, 0, (0,), "/root")),
        ("root", User(0, 0, (0,), "/root")),
        ("app", User(1000, 1000, (1000, 29, 44), "/home/app")),
        ("1000", User(1000, 1000, (1000, 29, 44), "/home/app")),
        ("app:audio", User(1000, 29, (29,), "/home/app")),
        ("1000:44", User(1000, 44, (44,), "/home/app")),
        ("4242", User(4242, 0, (0,), "/")),
        ("4242:4343", User(4242, 4343, (4343,), "/")),
    ],
)
def test_resolve(etc: str, spec: str, expected: User) -> None:
    assert resolve(spec, etc) == expected


@pytest.mark.parametrize("spec", ["nobody-here", "app:nogroup"])
def test_unknown_names(etc: str, spec: str) -> None:
    with pytest.raises(NotFound):
        resolve(spec, etc)


def test_without_passwd_only_numbers_work(tmp_path: Path) -> None:
    assert resolve("", str(tmp_path)) == User(0, 0, (0,), "/root")
    assert resolve("12:34", str(tmp_path)) == User(12, 34, (34,), "/")
    with pytest.raises(NotFound):
        resolve("app", str(tmp_path))


def test_group_without_user_is_invalid(etc: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve(":audio", etc)
