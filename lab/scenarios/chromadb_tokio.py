"""ChromaDB PersistentClient used in the parent, then queried in a forked child: deadlock.

The parent's query starts the Rust core's Tokio runtime and sqlx's SQLite worker threads. The
child inherits their locks, held or not, but none of the threads: its query waits forever on a
futex that only a vanished thread could release.
"""

from __future__ import annotations

import os
import tempfile

from lab.scenarios import Scenario, with_mp_default

DOCUMENTS = {
    "fork": "fork() copies one thread and all of memory, locks included",
    "futex": "a futex wait with no timeout sleeps until another thread wakes it",
    "tokio": "the Tokio runtime runs tasks on a pool of worker threads",
}


def open_collection(path: str):
    import chromadb
    from chromadb.config import Settings

    from lab.scenarios.embeddings import HashEmbedding

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    return client, client.get_or_create_collection("docs", embedding_function=HashEmbedding())


def seed(path: str):
    client, collection = open_collection(path)
    collection.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
    found = collection.query(query_texts=[DOCUMENTS["tokio"]], n_results=1)["ids"][0]
    print(f"parent: {collection.count()} documents in {path}; query found {found}", flush=True)
    return client, collection


def prepare():
    path = tempfile.mkdtemp(prefix="chromadb-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    return (path, *seed(path))


def handoff(state, pickles: bool):
    """Forked children get the live collection; pickling launchers get only the path."""
    path, _client, collection = state
    return ("path", path) if pickles else collection


def child(payload):
    if isinstance(payload, tuple):  # spawned/forkserver/pool child: its own client
        print(f"child {os.getpid()}: opening its own client on {payload[1]}", flush=True)
        _client, collection = open_collection(payload[1])
    else:
        print(f"child {os.getpid()}: querying the inherited client", flush=True)
        collection = payload
    # Hash embeddings are not semantic: a document's own text is its only sure match.
    found = collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: query returned {found}", flush=True)
    assert found == ["fork"], found


def trap_on_darwin(*launchers: str) -> dict[str, dict[str, str]]:
    """The prediction for macOS: where the Linux child deadlocks on the lock its parent's tokio
    threads held, libdispatch finds the semaphore the fork left behind and traps (``brk #0x1``,
    EXC_BREAKPOINT, SIGTRAP: tests/data/lldb-arm64-macos-trap.txt): a crash, not a hang."""
    return {"darwin": {launcher: "crash" for launcher in launchers}}


SCENARIO = Scenario(
    name="chromadb-tokio",
    summary=__doc__.splitlines()[0],
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock", "pool-fork": "deadlock",
                              "mp-spawn": "ok", "mp-forkserver": "ok", "pool-spawn": "ok"}),
    predicted=trap_on_darwin("fork", "mp-fork", "pool-fork"),
    prepare=prepare,
    child=child,
    handoff=handoff,
    fix="spawn or forkserver: the child starts a fresh interpreter and opens its own client",
    requires=("chromadb",),
    expected_threads=("tokio-rt-worker", "sqlx-sqlite-wor"),
    default_timeout=60.0,
)
