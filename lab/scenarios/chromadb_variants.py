"""ChromaDB variants of the fork hazard: ephemeral client, exit-time hang, a new client."""

from __future__ import annotations

import gc
import os
import tempfile

from lab.scenarios import Scenario, with_mp_default
from lab.scenarios.chromadb_tokio import DOCUMENTS, open_collection, seed, trap_on_darwin

SPAWN_ROWS = {"mp-spawn": "ok", "mp-forkserver": "ok"}


def _ephemeral():
    import chromadb
    from chromadb.config import Settings

    from lab.scenarios.embeddings import HashEmbedding

    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("docs", embedding_function=HashEmbedding())
    collection.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
    collection.query(query_texts=[DOCUMENTS["tokio"]], n_results=1)
    return client, collection


def ephemeral_child(payload):
    # A pickling launcher's child cannot see the parent's in-memory data: it builds its own.
    collection = _ephemeral()[1] if payload is None else payload[1]
    found = collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: query returned {found}", flush=True)


EPHEMERAL = Scenario(
    name="chromadb-ephemeral",
    summary="ChromaDB EphemeralClient (in memory) used in the parent, queried in a forked child.",
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock", **SPAWN_ROWS}),
    predicted=trap_on_darwin("fork", "mp-fork"),
    prepare=_ephemeral,
    child=ephemeral_child,
    handoff=lambda state, pickles: None if pickles else state,
    requires=("chromadb",),
    expected_threads=("tokio-rt-worker",),
)


def _persistent():
    path = tempfile.mkdtemp(prefix="chromadb-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    return (path, *seed(path))


def exit_child(payload):
    """Never touches ChromaDB: drops its references and leaves through interpreter exit."""
    from lab.launchers.fork import InterpreterExit

    print(f"child {os.getpid()}: not using ChromaDB; exiting", flush=True)
    del payload
    raise InterpreterExit(0)


EXIT_HANG = Scenario(
    name="chromadb-exit-hang",
    summary="A forked child that never touches ChromaDB hangs at interpreter exit, "
            "when the inherited client is garbage-collected.",
    # multiprocessing children leave with os._exit: no finalization, so no hang there.
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "ok"}),
    predicted=trap_on_darwin("fork"),
    prepare=_persistent,
    child=exit_child,
    handoff=lambda state, pickles: state,
    requires=("chromadb",),
    expected_threads=("tokio-rt-worker", "sqlx-sqlite-wor"),
    default_timeout=20.0,
)


def new_client_child(payload):
    """Opens a fresh PersistentClient on a new path in the child and uses it."""
    path = tempfile.mkdtemp(prefix="chromadb-child-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    print(f"child {os.getpid()}: new client on {path}", flush=True)
    _client, collection = open_collection(path)
    collection.add(ids=["child"], documents=["made in the child"])
    found = collection.query(query_texts=["made in the child"], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: query returned {found}", flush=True)


NEW_CLIENT = Scenario(
    name="chromadb-new-client-in-child",
    summary="A fresh ChromaDB client on a new path in a forked child, after the parent used one: "
            "it works (a new client brings its own runtime and pool; nothing inherited is locked).",
    expected={"fork": "ok", **SPAWN_ROWS},
    prepare=_persistent,
    child=new_client_child,
    handoff=lambda state, pickles: None,
    requires=("chromadb",),
    expected_threads=("tokio-rt-worker", "sqlx-sqlite-wor"),
    default_timeout=30.0,
)


def lazy_prepare():
    """The fix: the parent only seeds the data in a process of its own; no client lives here."""
    import multiprocessing

    path = tempfile.mkdtemp(prefix="chromadb-", dir=os.environ.get("LAB_SCRATCH_DIR"))
    seeder = multiprocessing.get_context("spawn").Process(target=seed, args=(path,))
    seeder.start()
    seeder.join()
    gc.collect()
    return path


def lazy_child(path):
    _client, collection = open_collection(path)
    found = collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: client created after fork; query returned {found}", flush=True)
    assert found == ["fork"], found


LAZY = Scenario(
    name="chromadb-lazy-init",
    summary="Fixed twin of chromadb-tokio: the client is created in the child, after fork.",
    expected=with_mp_default({"fork": "ok", "mp-fork": "ok", "pool-fork": "ok"}),
    prepare=lazy_prepare,
    child=lazy_child,
    requires=("chromadb",),
    fixed_of="chromadb-tokio",
    fix="create the client after fork (lazily, per process), never at import in the parent",
)
