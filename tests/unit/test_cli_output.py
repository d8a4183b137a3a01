"""The CLI's shared output pieces: an every-tenant listing says whose each row is."""

from __future__ import annotations

import pytest

from hyper.cli import output


def test_an_every_tenant_table_gets_a_tenant_column_first() -> None:
    rows = [["NAME", "SIZE"], ["db", "1G"], ["web", "2G"]]
    found = [{"tenant": "alice", "name": "db"}, {"tenant": "bob", "name": "web"}]
    assert output.whose(rows, found, every=False) == rows
    assert output.whose(rows, found, every=True) == [
        ("TENANT", "NAME", "SIZE"),
        ("alice", "db", "1G"),
        ("bob", "web", "2G"),
    ]
    with pytest.raises(ValueError):  # a row per item, or it is a bug
        output.whose(rows, found[:1], every=True)
