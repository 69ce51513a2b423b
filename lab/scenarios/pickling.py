"""Pickling across process boundaries: ChromaDB's Rust bindings, and results a pool drops."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from lab.scenarios import Scenario
from lab.scenarios.chromadb_tokio import DOCUMENTS, open_collection, prepare as chroma_prepare

SPAWNERS = {"mp-spawn": None, "pool-spawn": None}


def bindings_handoff(state, pickles):
    _path, _client, collection = state
    return collection  # the broken pattern: the live collection, pickled or not


def by_path_handoff(state, pickles):
    path, _client, collection = state
    return ("path", path, collection.name)  # the fix: strings only


def query_child(payload):
    if isinstance(payload, tuple):
        _client, collection = open_collection(payload[1])
    else:
        collection = payload
    found = collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)["ids"][0]
    print(f"child {os.getpid()}: query returned {found}", flush=True)


PICKLE_BINDINGS = Scenario(
    name="pickle-bindings",
    summary="A ChromaDB collection handed to a spawned child: cannot pickle 'builtins.Bindings'.",
    expected={"mp-spawn": "error", "pool-spawn": "error", "fork": "deadlock"},
    prepare=chroma_prepare,
    child=query_child,
    handoff=bindings_handoff,
    requires=("chromadb",),
    default_timeout=30.0,
)

PICKLE_BY_PATH = Scenario(
    name="pickle-by-path",
    summary="Fixed twin of pickle-bindings: the child gets the path and collection name and "
            "opens its own client.",
    expected={"mp-spawn": "ok", "pool-spawn": "ok", "mp-forkserver": "ok"},
    prepare=chroma_prepare,
    child=query_child,
    handoff=by_path_handoff,
    requires=("chromadb",),
    fixed_of="pickle-bindings",
    fix="pass picklable strings (path, collection name); build the client in the child",
    default_timeout=30.0,
)


# -- a pool whose results cannot travel back ------------------------------------------------

def chunk_job(number: int):
    """Returns a result holding a generator: the worker cannot pickle it back."""
    return {"file": f"file-{number}", "chunks": (f"chunk-{i}" for i in range(3))}


def plain_job(number: int):
    return {"file": f"file-{number}", "chunks": [f"chunk-{i}" for i in range(3)]}


def _process_files(job) -> list:
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        for future in [pool.submit(job, n) for n in range(3)]:
            try:
                results.append(future.result())
            except Exception:  # the caller's "robust" error handling: a failure is no result
                pass
    return results


def silent_child(_payload):
    results = _process_files(chunk_job)
    print(f"child {os.getpid()}: processed files, {len(results)} results", flush=True)


def plain_child(_payload):
    results = _process_files(plain_job)
    print(f"child {os.getpid()}: processed files, {len(results)} results", flush=True)
    assert len(results) == 3


POOL_SILENT_ZERO = Scenario(
    name="pool-silent-zero",
    summary="ProcessPoolExecutor jobs return a generator; the caller turns the pickling error "
            "into 0 results. The lab surfaces the real exception.",
    expected={"fork": "error", "mp-spawn": "error"},
    prepare=lambda: None,
    child=silent_child,
    handoff=lambda state, pickles: None,
    default_timeout=30.0,
)

POOL_PLAIN = Scenario(
    name="pool-plain-results",
    summary="Fixed twin of pool-silent-zero: jobs return plain data (a list, not a generator).",
    expected={"fork": "ok", "mp-spawn": "ok"},
    prepare=lambda: None,
    child=plain_child,
    handoff=lambda state, pickles: None,
    fixed_of="pool-silent-zero",
    fix="return plain, picklable data from pool jobs; never swallow a job's exception",
    default_timeout=30.0,
)
