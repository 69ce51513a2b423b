"""Which threads a process has at the moment it forks, and which library started each one."""

from __future__ import annotations

import os
import threading

from lab import process
from lab.backend import Gone
from lab.evidence import ThreadAtFork

# comm prefix (Linux truncates thread names to 15 bytes) -> (what it is, loaded objects that
# start it: the first one mapped into the process names the owner).
KNOWN_THREADS = [
    ("tokio-rt-worker", "Tokio runtime worker", ("chromadb_rust_bindings", "tokio")),
    ("tokio-runtime-w", "Tokio runtime worker", ("chromadb_rust_bindings", "tokio")),
    ("sqlx-sqlite-wor", "sqlx SQLite worker", ("chromadb_rust_bindings", "sqlx")),
    ("grpc_global_tim", "gRPC timer thread", ("cygrpc", "grpc")),
    ("pt_main_thread", "PyTorch main thread", ("libtorch",)),
    ("pt_thread", "PyTorch thread", ("libtorch",)),
    ("OMP", "OpenMP worker", ("libgomp", "libiomp", "libomp")),
    ("onnxruntime", "ONNX Runtime thread pool", ("onnxruntime",)),
    ("tokenizers", "Hugging Face tokenizers (Rayon)", ("tokenizers",)),
    ("rayon", "Rayon thread pool", ("tokenizers", "polars")),
    ("polars", "Polars thread pool", ("polars",)),
    ("kuzu", "Kuzu worker", ("kuzu",)),
]


def mapped_objects(pid: int) -> list[str]:
    if not process.linux_sources():
        return []  # runs inside the program at each fork: no psutil import there
    try:
        return process.reader().mapped(pid)
    except (Gone, OSError):
        return []


def library_for(name: str, python_threads: dict[int, str], tid: int, mapped: list[str]) -> str:
    """Name who started thread ``tid`` called ``name``."""
    if tid in python_threads:
        return f"Python threading ({python_threads[tid]})"
    for prefix, what, owners in KNOWN_THREADS:
        if name.startswith(prefix):
            for owner in owners:
                for path in mapped:
                    if owner in os.path.basename(path):
                        return f"{os.path.basename(path)} ({what})"
            return what
    return "native thread, not started by Python's threading (library unknown)"


def threads_at_fork(pid: int | None = None) -> tuple[int, list[ThreadAtFork]]:
    """Return (forking tid, the other threads) of the calling process, right now.

    Call it in the parent just before fork (an ``os.register_at_fork(before=...)`` hook): the
    threads returned are exactly those the child will not have.
    """
    pid = pid or os.getpid()
    me = threading.get_native_id()
    python_threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    mapped = mapped_objects(pid)
    result = []
    try:
        names = process.reader().thread_names(pid) if process.linux_sources() else {}
    except (Gone, OSError):
        names = {}
    if not names:
        # macOS (or the portable backend): no thread names, Python's threads only
        return me, [ThreadAtFork(tid=tid, name=name, library="a Python thread (no /proc here: "
                                 "native threads are not listed)")
                    for tid, name in python_threads.items() if tid != me]
    for tid, name in sorted(names.items()):
        if tid == me:
            continue
        result.append(ThreadAtFork(tid=tid, name=name,
                                   library=library_for(name, python_threads, tid, mapped)))
    return me, result


def name_libraries(pid: int, threads: list[ThreadAtFork], python_known: bool = True) -> None:
    """Fill in ``library`` for each of ``pid``'s threads that has none (a hook's report, a
    /proc snapshot); /proc/PID/maps is read only when a thread's name needs it. Without
    ``python_known`` (seen from /proc only) a thread is never called "not Python's"."""
    python_threads = {t.tid: t.python_name for t in threads if t.python_name}
    mapped: list[str] | None = None
    for thread in threads:
        if thread.library:
            continue
        if mapped is None and any(thread.name.startswith(p) for p, _, _ in KNOWN_THREADS):
            mapped = mapped_objects(pid)
        library = library_for(thread.name, python_threads, thread.tid, mapped or [])
        if not python_known and library.startswith("native thread, not started"):
            library = ("unknown: seen from /proc only (no Python thread names without the "
                       "lab's hook)")
        thread.library = library
