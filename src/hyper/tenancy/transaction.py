"""One ``BEGIN IMMEDIATE`` transaction on a connection the tenancy stores were given.

IMMEDIATE takes SQLite's write lock at BEGIN rather than at the first write, so a
read-check-write (a quota's usage, a ledger's open interval) cannot interleave with another
writer's, whichever connection or process it comes from; a writer that finds the lock taken
waits up to the connection's ``busy_timeout``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator

from hyper import errors


def check_autocommit(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Refuse a connection whose module opens transactions behind our back: ours are explicit
    (hyperd's :class:`~hyper.state.db.Database` opens its connection so)."""
    if conn.isolation_level is not None:
        raise errors.Internal("the tenancy stores need a connection with isolation_level=None")
    return conn


def open_tables(conn: sqlite3.Connection, schema: Iterable[str]) -> sqlite3.Connection:
    """``conn`` (checked by :func:`check_autocommit`) with a store's tables made if missing,
    all of them or none."""
    check_autocommit(conn)
    with immediate(conn) as tx:
        for statement in schema:
            tx.execute(statement)
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Committed whole on success, rolled back on any exception."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # still locked after busy_timeout
        raise errors.Unavailable(f"the state database is busy: {exc}") from None
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
