"""Does a pasted text show a fork, which catalog scenario does it match, and what fixed it here."""

# A text shows the fork by a frame inside fork() or its handlers (os_fork_impl, run_at_forkers,
# __run_fork_handlers), a Python frame of a fork start method (multiprocessing's popen_fork
# _launch, billiard's, gunicorn's arbiter), a phrase macOS or CPython writes only after a fork
# ("*** multi-threaded process forked ***", "crashed on child side of fork pre-exec", the fork
# DeprecationWarning), or a crash report whose parent process is a Python interpreter. Only
# then does the diagnosis name a scenario: a lock wait alone is no fork bug. The measured fixes
# are the catalog's fixed twins that `lab matrix` found ok (results/<platform>.json).

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.evidence import DebugThread
from lab.parsers.transcript import Parsed
from lab.parsers.waits import Wait, base_name

RESULTS = Path(__file__).resolve().parents[2] / "results"
FRESH_LAUNCHERS = ("mp-spawn", "mp-forkserver", "pool-spawn")
FRAME_SIGNS = {
    "os_fork_impl": "the thread is inside os.fork()",
    "os_fork": "the thread is inside os.fork()",
    "PyOS_AfterFork_Child": "CPython's after-fork work in the child (inside os.fork())",
    "run_at_forkers": "an os.register_at_fork handler is running (inside os.fork())",
    "run_fork_handlers": "pthread_atfork handlers are running (inside fork())",
    "libc_fork": "the thread is inside fork()",
    "Fork": "the thread is inside fork()",
    "fork": "the thread is inside fork()",
    "libSystem_atfork_child": "libSystem's after-fork handler in the child",
    "THE_PROCESS_HAS_FORKED_AND_YOU_CANNOT_USE_THIS_COREFOUNDATION_FUNCTIONALITY___YOU_MUST_EXEC":
        "CoreFoundation refused to run in a forked child",
    "objc_initializeAfterForkError": "the Objective-C runtime refused to run in a forked child",
    "performForkChildInitialize": "the Objective-C runtime's check in a forked child",
}
# (end of the file's path, function or None for any) -> what it means
PYTHON_SIGNS = (
    ("multiprocessing/popen_fork.py", "_launch", "a multiprocessing child started with the "
     "fork method (popen_fork.py's _launch is on its stack)"),
    ("billiard/popen_fork.py", "_launch", "a Celery prefork child (billiard's popen_fork.py "
     "_launch is on its stack)"),
    ("gunicorn/arbiter.py", "spawn_worker", "a gunicorn worker forked by its arbiter"),
    ("<built-in>", "fork", "os.fork() is on its Python stack"),
    ("threading.py", "_after_fork", "threading's after-fork handler is running"),
    ("logging/__init__.py", "_after_at_fork_child_reinit_locks",
     "logging's after-fork handler is running"),
)
TEXT_SIGNS = (
    ("*** multi-threaded process forked ***", "macOS noted that a process with threads forked"),
    ("*** single-threaded process forked ***", "macOS noted that the process was forked"),
    ("crashed on child side of fork pre-exec", "it crashed in the child of a fork, before any "
     "exec"),
    ("when fork() was called", "the Objective-C runtime found work of another thread cut short "
     "by fork()"),
    ("use of fork() may lead to deadlocks in the child", "CPython warned that a process with "
     "threads forked"),
    ("process has forked and you cannot use this CoreFoundation", "CoreFoundation refused to "
     "run in a forked child"),
)
# (what shows a library was there, in a frame's library, function or file) -> scenario
LIBRARIES = (
    (("chromadb",), "chromadb-tokio"),
    (("libgomp", "libiomp", "libomp.", "torch/", "libtorch"), "openmp-threads"),
    (("tokenizers",), "tokenizers"),
    (("polars",), "polars"),
    (("kuzu",), "kuzu"),
)
_CPYTHON_LOCK = ("PyThread_acquire_lock_timed", "acquire_timed", "lock_PyThread_acquire_lock",
                 "rlock_acquire")
_NATIVE_MUTEX = ("pthread_mutex_lock", "lll_lock_wait", "lll_lock_wait_private")


def fork_signs(parsed: Parsed) -> list[dict[str, str]]:
    """Every sign of a fork the text holds: ``{"sign", "where", "means"}``."""
    signs = []
    for thread in parsed.info.threads:
        who = _who(thread)
        for frame in thread.frames:
            name = base_name(frame.function).split("(", 1)[0]  # a C++ signature's arguments
            means = FRAME_SIGNS.get(name) or FRAME_SIGNS.get(name.rstrip("_"))
            if means:
                signs.append({"sign": f"frame #{frame.index} {frame.function}", "where": who,
                              "means": means})
        for frame in thread.python_frames:
            function = frame.function.rsplit(".", 1)[-1]
            for file, wanted, means in PYTHON_SIGNS:
                if frame.file.replace("\\", "/").endswith(file) and function == wanted:
                    place = frame.file + (f":{frame.line}" if frame.line else "")
                    signs.append({"sign": f"Python {frame.function} ({place})", "where": who,
                                  "means": means})
    for phrase in parsed.text_signs:
        means = next(m for p, m in TEXT_SIGNS if p == phrase)
        signs.append({"sign": f'"{phrase}"', "where": "the text", "means": means})
    parent = parsed.facts.get("parent_process")
    if parent and str(parent).lower().startswith("python"):
        pid = parsed.facts.get("parent_pid")
        signs.append({"sign": f"parent process {parent}" + (f" [{pid}]" if pid else ""),
                      "where": "the report's header", "means": "its parent is a Python "
                      "interpreter: consistent with a fork from Python (multiprocessing, a pool)"})
    return _unique(signs)


def text_signs(text: str) -> list[str]:
    """The fork phrases of TEXT_SIGNS that ``text`` holds (one search each)."""
    return [phrase for phrase, _ in TEXT_SIGNS if phrase in text]


def scenario_for(parsed: Parsed, waits: list[Wait]) -> tuple[str | None, str]:
    """``(catalog scenario, why)`` the text matches, or ``(None, why not)``."""
    haystack = _library_text(parsed.info.threads)
    for markers, scenario in LIBRARIES:
        hit = next((m for m in markers if m in haystack), None)
        if hit:
            return scenario, f"{hit!r} appears in its frames"
    files = " ".join(f.file for t in parsed.info.threads for f in t.python_frames)
    if "logging/__init__.py" in files:
        return "logging-lock", "a thread waits inside logging"
    functions = {base_name(f.function) for t in parsed.info.threads for f in t.frames[:24]}
    if functions & {"bufferedwriter_write", "enter_buffered_busy", "buffered_flush_and_rewind_"
                    "unlocked", "bufferedwriter_flush_unlocked"}:
        return "buffered-writer-lock", "a thread waits for a buffered file's lock"
    locked = [w for w in waits if w.kind == "lock" and w.untimed is not False]
    python_lock = functions & set(_CPYTHON_LOCK) or any(
        (w.function or "").rsplit(".", 1)[-1] in ("acquire", "wait") for w in locked)
    if locked and python_lock:
        return "python-lock-held", "a thread waits on a Python lock (threading.Lock)"
    if locked and functions & set(_NATIVE_MUTEX):
        return "native-mutex-held", "a thread waits on a native pthread mutex"
    return None, "no library or lock of the catalog's scenarios in its frames"


def measured_fixes(scenario: str, results_dir: Path = RESULTS) -> list[dict[str, Any]]:
    """The catalog's fixes of ``scenario``, each with what `lab matrix` measured of it."""
    from lab import scenarios

    rows = _rows(results_dir)
    fixes = []
    for name in scenarios.names():
        twin = scenarios.get(name)
        if twin.fixed_of != scenario:
            continue
        ok = [f"{row['launcher']} ok in {row['trials']}/{row['trials']} ({row['platform']})"
              for row in rows if row.get("scenario") == name and _ok(row)]
        fixes.append({"scenario": name, "fix": twin.fix, "measured": ok or
                      ["not measured here (no `lab matrix` results for it)"]})
    fresh = [f"{row['launcher']} ok in {row['trials']}/{row['trials']} ({row['platform']})"
             for row in rows if row.get("scenario") == scenario and _ok(row)
             and row.get("launcher") in FRESH_LAUNCHERS]
    fixes.append({"scenario": scenario, "fix": "start the child with forkserver or spawn: it "
                  "begins in a fresh interpreter and inherits no thread's lock",
                  "measured": fresh or ["not measured here for this scenario"]})
    return fixes


def broken_rate(scenario: str, results_dir: Path = RESULTS) -> list[str]:
    """What `lab matrix` observed of ``scenario`` itself under fork launchers."""
    return [f"{row['launcher']}: {row['observed']} in {round(row['rate'] * row['trials'])}/"
            f"{row['trials']} ({row['platform']})" for row in _rows(results_dir)
            if row.get("scenario") == scenario and _forks(str(row.get("launcher")))
            and row.get("observed") and row.get("rate") is not None and row.get("trials")]


def _forks(launcher: str) -> bool:
    """A launcher that copies the parent (fork, mp-fork, pool-fork, Celery's prefork)."""
    return launcher in ("fork", "mp-fork", "pool-fork") or "prefork" in launcher


def _ok(row: dict) -> bool:
    return row.get("observed") == "ok" and row.get("rate") == 1.0 and bool(row.get("trials"))


def _rows(results_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("bench-"):
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        platform = (doc.get("platform") or {}).get("id") or path.stem
        rows += [{**row, "platform": platform} for row in doc.get("rows") or []
                 if isinstance(row, dict)]
    return rows


def _library_text(threads: list[DebugThread]) -> str:
    parts = []
    for thread in threads:
        parts += [f"{f.library or ''} {f.function or ''} {f.file or ''}" for f in thread.frames]
        parts += [f.file for f in thread.python_frames]
        parts.append(thread.name or "")
    return " ".join(parts)


def _who(thread: DebugThread) -> str:
    return f"thread {thread.tid if thread.tid is not None else '?'}" + (
        f" ({thread.name})" if thread.name else "")


def _unique(signs: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, kept = set(), []
    for sign in signs:
        key = (sign["means"], sign["where"])
        if key not in seen:
            seen.add(key)
            kept.append(sign)
    return kept
