"""Plain sqlite3 in WAL mode with a write transaction open at fork: the child's commit is lost.

POSIX record locks are not inherited by fork(), but the WAL index (a MAP_SHARED file) is
shared: the child "commits" through the copied connection, appending frames to the WAL without
the write lock. The parent, which still believes it holds the only write transaction, then
commits from its own idea of the WAL's end and writes its frames over the child's. Nothing
fails, nothing hangs; the child's row is simply not there. SQLite's FAQ: do not carry a
connection across fork().
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from lab.scenarios import Scenario, with_mp_default


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=2.0)


def prepare(open_transaction: bool = True):
    path = os.path.join(tempfile.mkdtemp(prefix="sqlite-", dir=os.environ.get("LAB_SCRATCH_DIR")),
                        "lab.db")
    conn = _connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE rows (who TEXT)")
    conn.execute("INSERT INTO rows VALUES ('setup')")
    if open_transaction:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO rows VALUES ('parent, uncommitted')")
    return path, conn


def child(state):
    path, conn = state
    conn.execute("INSERT INTO rows VALUES ('child')")
    conn.execute("COMMIT")
    print(f"child {os.getpid()}: committed through the inherited connection", flush=True)


def check(state, code):
    """In the parent, after the child: finish its own transaction, then look for the row."""
    path, conn = state
    if conn.in_transaction:
        conn.execute("COMMIT")
    conn.close()
    rows = [r[0] for r in _connect(path).execute("SELECT who FROM rows")]
    print(f"parent: rows on disk after both: {rows}", flush=True)
    if code == 0 and "child" not in rows:
        return ("data-loss", "the child committed a row (COMMIT returned without error) "
                f"that is not in the database afterwards: rows are {rows}")
    return None


SQLITE_WAL_TXN = Scenario(
    name="sqlite-wal-txn",
    summary="sqlite3 WAL with a transaction open at fork: the child's commit is silently lost.",
    expected=with_mp_default({"fork": "data-loss", "mp-fork": "data-loss"}),
    prepare=prepare,
    child=child,
    check=check,
    default_timeout=20.0,
)


def fresh_prepare():
    return prepare(open_transaction=False)


def fresh_child(state):
    path, _inherited = state
    conn = _connect(path)  # the fix: a connection of the child's own
    conn.execute("INSERT INTO rows VALUES ('child')")
    conn.close()
    print(f"child {os.getpid()}: committed through its own connection", flush=True)


SQLITE_FRESH = Scenario(
    name="sqlite-own-connection",
    summary="Fixed twin of sqlite-wal-txn: no transaction open at fork, and the child opens "
            "its own connection.",
    expected=with_mp_default({"fork": "ok", "mp-fork": "ok"}),
    prepare=fresh_prepare,
    child=fresh_child,
    check=check,
    fixed_of="sqlite-wal-txn",
    fix="finish transactions before fork and open a new connection in the child",
)
