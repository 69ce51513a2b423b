"""The fixes timed in their own processes: per-child start cost, a process per query, a warm query.

``python -m lab.bench.fixprobe seed PATH``: a ChromaDB directory with the scenario's documents.
``... start METHOD PATH --children K``: K children one after another under ``fork`` (broken: the
child only reports that it runs, a query would deadlock), ``forkserver``, ``spawn`` or ``lazy``
(fork, the client created in the child). The parent of fork, forkserver and spawn has used a
client, as in chromadb-tokio; the lazy parent has imported chromadb but opened no client.
``... query PATH``: one fresh process that opens a client and queries once.
``... warm PATH --queries N``: one client, N queries.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from lab.bench.probe import emit

CHILD_TIMEOUT_S = 120.0  # one child: interpreter start, import chromadb, open, query
METHODS = ("fork", "forkserver", "spawn", "lazy")


def _query(path: str) -> None:
    from lab.scenarios.chromadb_tokio import DOCUMENTS, open_collection

    _client, collection = open_collection(path)
    found = collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)["ids"][0]
    if found != ["fork"]:
        raise AssertionError(f"query returned {found}")


def _child(path: str, method: str, queue) -> None:
    queue.put(("entered", time.monotonic_ns()))
    if method == "fork":
        return  # the broken case: its query would wait forever on an inherited lock
    _query(path)
    queue.put(("ready", time.monotonic_ns()))


def start(method: str, path: str, children: int) -> None:
    if method == "lazy":
        import chromadb  # noqa: F401  (imported, as an application does; no client yet)

        context = multiprocessing.get_context("fork")
    else:
        _query(path)  # the parent uses a client first, as in chromadb-tokio
        context = multiprocessing.get_context(method)
    queue = context.Queue()
    for index in range(children):
        launched = time.monotonic_ns()
        process = context.Process(target=_child, args=(path, method, queue))
        process.start()
        try:
            times = {}
            want = {"entered"} if method == "fork" else {"entered", "ready"}
            while want - set(times):
                label, stamp = queue.get(timeout=CHILD_TIMEOUT_S)
                times[label] = stamp
            process.join(CHILD_TIMEOUT_S)
        finally:
            if process.is_alive():
                process.kill()
                process.join()
        emit({"method": method, "child": index + 1, "exit_code": process.exitcode,
              "start_s": (times["entered"] - launched) / 1e9,
              "ready_s": (times["ready"] - launched) / 1e9 if "ready" in times else None})


def fresh_query(path: str) -> None:
    began = time.monotonic()
    import chromadb  # noqa: F401

    imported = time.monotonic()
    from lab.scenarios.chromadb_tokio import DOCUMENTS, open_collection

    _client, collection = open_collection(path)
    opened = time.monotonic()
    collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)
    emit({"import_s": imported - began, "open_s": opened - imported,
          "query_s": time.monotonic() - opened})


def warm(path: str, queries: int) -> None:
    from lab.scenarios.chromadb_tokio import DOCUMENTS, open_collection

    _client, collection = open_collection(path)
    seconds = []
    for _ in range(queries):
        began = time.monotonic()
        collection.query(query_texts=[DOCUMENTS["fork"]], n_results=1)
        seconds.append(time.monotonic() - began)
    emit({"query_s": seconds})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.fixprobe")
    parser.add_argument("action", choices=("seed", "start", "query", "warm"))
    parser.add_argument("rest", nargs="+", help="seed PATH | start METHOD PATH | query PATH | "
                        "warm PATH")
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--queries", type=int, default=10)
    args = parser.parse_args(argv)
    if args.action == "seed":
        from lab.scenarios.chromadb_tokio import seed

        seed(args.rest[0])
        emit({"seeded": args.rest[0]})
    elif args.action == "start":
        method, path = args.rest
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        start(method, path, args.children)
    elif args.action == "query":
        fresh_query(args.rest[0])
    else:
        warm(args.rest[0], args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
