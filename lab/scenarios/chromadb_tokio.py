"""ChromaDB PersistentClient used in the parent, then queried in a forked child: deadlock.

The parent's query starts the Rust core's Tokio runtime and sqlx's SQLite worker threads. The
child inherits their locks, held or not, but none of the threads: its query waits forever on a
futex that only a vanished thread could release.
"""

from __future__ import annotations

import os
import tempfile

from lab.scenarios import Scenario

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


def prepare():
    path = tempfile.mkdtemp(prefix="chromadb-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    client, collection = open_collection(path)
    collection.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
    found = collection.query(query_texts=["threads and locks"], n_results=1)["ids"][0]
    print(f"parent: {collection.count()} documents in {path}; query found {found}", flush=True)
    return client, collection


def child(state):
    _client, collection = state
    print(f"child {os.getpid()}: querying the inherited client", flush=True)
    found = collection.query(query_texts=["fork"], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: query returned {found}", flush=True)


SCENARIO = Scenario(
    name="chromadb-tokio",
    summary=__doc__.splitlines()[0],
    expected={"fork": "deadlock"},
    prepare=prepare,
    child=child,
    requires=("chromadb",),
    expected_threads=("tokio-rt-worker", "sqlx-sqlite-wor"),
    default_timeout=60.0,
)
