"""Kuzu (embedded graph database) at fork: an inherited connection, and a spawned child's lock.

``kuzu.Database`` starts a task scheduler with worker threads (unnamed: they keep the
process's comm). A forked child that queries through the inherited connection hands its task
to that scheduler and waits forever on a condition variable no worker will signal. Spawn is
not the fix on its own: a child that opens the same database path instead (spawned, or any
pool worker, whose job travels by pickle) while the parent still has it open fails at once,
"IO exception: Could not set lock on file" (Kuzu allows one read-write process per database).
The fix closes the parent's database before the launch.
"""

from __future__ import annotations

import os
import tempfile

from lab.scenarios import Scenario, with_mp_default

# The pools' jobs travel by pickle, so a pool-fork worker opens the path too.
PICKLED_ROWS = ("pool-fork", "mp-spawn", "mp-forkserver", "pool-spawn")
NODES = 20
COUNT = "MATCH (p:Person) RETURN count(*)"


def _seed():
    import kuzu

    directory = tempfile.mkdtemp(prefix="kuzu-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    path = os.path.join(directory, "graph")
    database = kuzu.Database(path)
    connection = kuzu.Connection(database)
    connection.execute("CREATE NODE TABLE Person(id INT64, PRIMARY KEY(id))")
    connection.execute(f"UNWIND range(1, {NODES}) AS i CREATE (:Person {{id: i}})")
    count = connection.execute(COUNT).get_next()[0]
    print(f"parent {os.getpid()}: kuzu {kuzu.__version__}, {count} nodes in {path}", flush=True)
    return path, database, connection


def prepare():
    return _seed()


def closed_prepare():
    path, database, connection = _seed()
    connection.close()  # the fix: nothing of Kuzu's is left open (or running) in the parent
    database.close()
    return path


def handoff(state, pickles: bool):
    """Forked children get the live connection; pickling launchers get the database path."""
    path, _database, connection = state
    return path if pickles else connection


def child(payload):
    if isinstance(payload, str):
        import kuzu

        print(f"child {os.getpid()}: opening {payload}", flush=True)
        connection = kuzu.Connection(kuzu.Database(payload))
    else:
        print(f"child {os.getpid()}: querying through the inherited connection", flush=True)
        connection = payload
    count = connection.execute(COUNT).get_next()[0]
    print(f"child {os.getpid()}: {count} nodes", flush=True)
    assert count == NODES, count


KUZU = Scenario(
    name="kuzu",
    summary="A Kuzu connection used in the parent, queried in a forked child: deadlock; a "
            "child that opens the same path instead (spawn, pools) fails on the parent's "
            "file lock: error.",
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock",
                              **dict.fromkeys(PICKLED_ROWS, "error")}),
    prepare=prepare,
    child=child,
    handoff=handoff,
    requires=("kuzu",),
    expected_threads=("python",),
    fix="close the parent's Database before the launch; the child opens the path itself",
    default_timeout=30.0,
)

KUZU_CLOSED = Scenario(
    name="kuzu-close-before-launch",
    summary="Fixed twin of kuzu: the parent closes its Connection and Database before the "
            "launch; every child opens the database by path and queries it.",
    expected=with_mp_default(dict.fromkeys(("fork", "mp-fork", *PICKLED_ROWS), "ok")),
    prepare=closed_prepare,
    child=child,
    requires=("kuzu",),
    fixed_of="kuzu",
    fix="close the parent's Database before the launch; the child opens the path itself",
    default_timeout=30.0,
)
