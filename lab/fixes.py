"""How to fix it, for this program: advice from what the run observed, with the catalog's costs."""

# Every piece of advice is tied to an observation of this run (a thread alive at the fork, the
# lock it held, the library that started it, the start method of the child) and carries what
# the catalog measured of that fix here: its twin's rate in `lab matrix` (results/<platform>.json)
# and the start cost of each method in `make bench` (results/bench-<platform>.json). A library
# gets advice only when one of its threads or frames was seen: no ChromaDB advice for a program
# that never loaded ChromaDB. Sentences are templates of the lab's own words; the values that
# came from the program are kept apart, for the renderer to escape (lab.render).

from __future__ import annotations

import collections
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.evidence import Evidence, ParentInfo, ProcessRecord, PythonFrame
from lab.target import REPO

RESULTS = REPO / "results"
ADVISED = ("deadlock", "hang", "crash")
# (what shows a library was there: a thread's library or name, a frame's file) -> the catalog
# scenario of that hazard, and the library's name as the advice says it.
LIBRARIES = (
    (("chromadb",), "chromadb-tokio", "ChromaDB (its Rust core's Tokio and sqlx threads)"),
    (("libgomp", "libiomp", "libomp", "OpenMP", "libtorch", "torch/"), "openmp-threads",
     "PyTorch / OpenMP"),
    (("tokenizers",), "tokenizers", "Hugging Face tokenizers"),
    (("polars",), "polars", "Polars"),
    (("kuzu",), "kuzu", "Kuzu"),
)
HAZARDS = {"python": "python-lock-held", "native": "native-mutex-held"}
FRESH_LAUNCHERS = ("mp-spawn", "mp-forkserver", "pool-spawn")


class Plain(str):
    """A program-supplied value rendered as text, not as code."""


@dataclass
class Say:
    """A sentence: the lab's template, and the program's values it names (escaped later)."""

    template: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fix:
    title: Say
    why: Say | None = None
    code: list[str] = field(default_factory=list)
    measured: list[Say] = field(default_factory=list)


@dataclass
class Advice:
    observed: list[Say] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)


def platform_id(evidence: Evidence) -> str:
    from lab.envinfo import platform_key

    return platform_key(evidence.platform).lower()


def matrix_rows(evidence: Evidence, results_dir: Path) -> list[dict] | None:
    """This platform's `lab matrix` rows, or None without results."""
    return _load(Path(results_dir) / f"{platform_id(evidence)}.json", "rows")


def advise(evidence: Evidence, results_dir: Path = RESULTS) -> Advice | None:
    """What to change, from what this run observed; None when there is nothing to fix."""
    culprit = next((r for r in evidence.processes if r.verdict == evidence.verdict), None)
    if evidence.verdict not in ADVISED or culprit is None:
        return None
    parent = evidence.parent if culprit.pid in evidence.parent.children else None
    advice = Advice()
    rows = matrix_rows(evidence, results_dir) or []
    bench = _load(Path(results_dir) / f"bench-{platform_id(evidence)}.json", "fix_cost")
    where = platform_id(evidence)
    if parent is None:
        advice.observed.append(Say(
            "No fork record names the parent of PID {pid} (its parent was not watched with the "
            "hook, or it was started by exec): the threads alive at its start are not known.",
            {"pid": culprit.pid}))
    else:
        _observed_fork(advice, evidence, culprit, parent)
    if culprit.fault is not None:
        _crash(advice, culprit)
    if parent is None or "nothing inherited" in (parent.start_method or ""):
        return advice
    if not parent.threads_at_fork:
        advice.observed.append(Say(
            "No other thread was alive in PID {parent} when it forked: nothing the child "
            "inherited was held by a thread it lacks. " + (
                "The crash comes from the child's own work." if culprit.fault else
                "Look at the child's own threads and stacks (a lock-order deadlock, or a "
                "wait on something that never comes)."), {"parent": parent.pid}))
        return advice
    parent_record = next((r for r in evidence.processes if r.pid == parent.pid), None)
    if parent.source != "hook" and parent_record is not None and not (
            parent_record.argv and os.path.basename(parent_record.argv[0]).startswith("python")):
        advice.fixes += _native_program_fixes(rows, where)
        return advice
    held = parent.culprit if parent.culprit and parent.culprit.get("lock") else None
    if held:
        advice.fixes += lock_fixes(held, rows, where)
    libraries = _libraries(parent)
    for scenario, name in libraries:
        advice.fixes.append(_library_fix(scenario, name, rows, bench, where))
    hazard = HAZARDS["python"] if held else libraries[0][0] if libraries else HAZARDS["native"]
    advice.fixes.append(_start_method_fix(parent, rows, bench, where, hazard))
    return advice


def python_frames(evidence: Evidence, pid: int) -> list[PythonFrame]:
    """Process ``pid``'s Python frames, each thread innermost first: the debugger's, then
    py-spy's."""
    frames: list[PythonFrame] = []
    if evidence.debugger is not None and evidence.debugger.pid == pid:
        for thread in evidence.debugger.threads:
            frames += thread.python_frames
    for entry in evidence.python_stacks:
        if entry.get("pid") == pid:
            for thread in entry.get("threads") or []:
                frames += [PythonFrame(file=str(f.get("file")), line=f.get("line"),
                                       function=str(f.get("function")))
                           for f in thread.get("python_frames") or []]
    return frames


def _child_waits_on(evidence: Evidence, child: ProcessRecord, lock: str) -> Say | None:
    """Where the child's own Python stack (the debugger's, or py-spy's) takes ``lock``."""
    from lab import locksite

    for frame in (f for f in python_frames(evidence, child.pid)
                  if not locksite.is_stdlib(f.file)):
        text = locksite.line_text(frame.file, frame.line) or ""
        named = re.search(rf"(?<![\w.]){re.escape(lock)}(?!\w)", text)
        if named and (text.startswith(("with ", "async with ")) or
                      text[named.end():].startswith(".acquire(")):
            return Say("The child waits at {where} ({statement}), on a lock of the same name: "
                       "most likely the one it inherited locked.",
                       {"where": f"{os.path.basename(frame.file)}:{frame.line}",
                        "statement": text})
    return None


def _observed_fork(advice: Advice, evidence: Evidence, child: ProcessRecord,
                   parent: ParentInfo) -> None:
    advice.observed.append(Say("PID {child} was started from PID {parent} by {method}.",
                               {"child": child.pid, "parent": parent.pid,
                                "method": Plain(parent.start_method or "fork")}))
    if parent.threads_at_fork:
        counts = collections.Counter(
            f"{t.python_name} (a Python thread)" if t.python_name else
            f"{t.name} ({t.library})" if t.library else t.name for t in parent.threads_at_fork)
        names = [f"{name} ×{count}" if count > 1 else name for name, count in counts.items()]
        seen = {"hook": "its own report at the fork", "scenario": "the scenario's report",
                "proc": "/proc, when the lab saw the fork"}.get(parent.source or "", "a report")
        advice.observed.append(Say(
            "At that fork {count} other thread(s) were alive in the parent (from " + seen +
            "); the child has none of them: {threads}.",
            {"count": len(parent.threads_at_fork), "threads": names}))
    culprit = parent.culprit
    if culprit:
        where = f"{os.path.basename(culprit.get('file', '?'))}:{culprit.get('line', '?')}"
        if culprit.get("statement"):
            advice.observed.append(Say(
                "Thread {name} (TID {tid}) was inside {statement} at {where} (in {function}) "
                "when the fork happened: the child inherited {lock} locked, and none of its "
                "threads will ever release it.",
                {"name": culprit.get("name"), "tid": culprit.get("tid"),
                 "statement": culprit.get("statement"), "where": where,
                 "function": culprit.get("function"), "lock": culprit.get("lock")}))
            waits = _child_waits_on(evidence, child, culprit["lock"])
            if waits is not None:
                advice.observed.append(waits)
        else:
            advice.observed.append(Say(
                "Thread {name} (TID {tid}) is the {why}; it does not exist in the child.",
                {"name": culprit.get("name"), "tid": culprit.get("tid"),
                 "why": Plain(culprit.get("why", ""))}))


def _crash(advice: Advice, record: ProcessRecord) -> None:
    from lab import faults

    frame = faults.where(record.fault)
    if frame is None:
        return
    advice.observed.append(Say(
        "PID {pid} {headline}: the fault is in native code that this line called; the Python "
        "stack is in the crash section, faulthandler's dump in {file}.",
        {"pid": record.pid, "headline": Plain(faults.headline(record) or ""),
         "file": record.fault.file or "-"}))
    advice.fixes.append(Fix(
        Say("Check what {function} hands to native code at {where}: a NULL, freed or too "
            "small buffer, a wrong type or length through ctypes or cffi, or an extension "
            "used from two threads at once",
            {"function": frame.function,
             "where": f"{os.path.basename(frame.file)}:{frame.line}"}),
        Say("for the native frames too, let the crash leave a core (`ulimit -c unlimited`) "
            "and open it with gdb; a debugger cannot attach to a process that is gone")))


def lock_fixes(held: dict[str, Any], rows: list[dict], where: str) -> list[Fix]:
    lock, name = held["lock"], held.get("name") or "?"
    owner, _, attribute = lock.rpartition(".")
    if owner == "self":
        code = ["import os, threading", "",
                "# in the class that owns it, e.g. in __init__ (this keeps the object alive):",
                f"os.register_at_fork(after_in_child=lambda: setattr(self, {attribute!r}, "
                "threading.Lock()))"]
    elif owner:
        code = ["import os, threading", "",
                f"os.register_at_fork(after_in_child=lambda: setattr({owner}, {attribute!r}, "
                "threading.Lock()))"]
    else:
        code = ["import os, threading", "", "def _fresh_lock_in_child():",
                f"    global {lock}", f"    {lock} = threading.Lock()", "",
                "os.register_at_fork(after_in_child=_fresh_lock_in_child)"]
    reinit = Fix(Say("Re-create {lock} in the child (with an RLock or a Condition, the same "
                     "kind), once the data it guards is safe to use there",
                     {"lock": lock}),
                 Say("the child inherited it held by {name}, a thread it does not have",
                     {"name": name}), code,
                 _twin_rates("python-lock-held", rows, where))
    order = Fix(Say("Or fork only where {name} cannot hold {lock}: before the thread starts, "
                    "or after it has stopped (nothing to measure: the same fork, at another "
                    "moment)", {"name": name, "lock": lock}))
    return [reinit, order]


def _native_program_fixes(rows: list[dict], where: str) -> list[Fix]:
    fresh = [f"`{row['launcher']}` ok in {row['trials']}/{row['trials']}" for row in rows
             if row.get("scenario") == HAZARDS["native"] and row.get("observed") == "ok"
             and row.get("rate") == 1.0]
    measured = [Say(f"`lab matrix` on {where}: the catalog's `{HAZARDS['native']}` (a "
                    f"mutex held by a native thread) under {', '.join(fresh)}.")] if fresh else []
    atfork = Fix(Say("Make the lock safe across fork: take it in a `pthread_atfork` prepare "
                     "handler and release it in the parent and child handlers, so the child "
                     "gets it unlocked"),
                 code=["static void prepare(void) { pthread_mutex_lock(&mutex); }",
                       "static void release(void) { pthread_mutex_unlock(&mutex); }",
                       "/* once, before the threads start: */",
                       "pthread_atfork(prepare, release, release);"])
    spawn = Fix(Say("Or fork before any thread starts, or have the child exec at once "
                    "(`posix_spawn`): a new program inherits no lock"), measured=measured)
    return [atfork, spawn]


def _libraries(parent: ParentInfo) -> list[tuple[str, str]]:
    text = " ".join([t.library + " " + t.name for t in parent.threads_at_fork] +
                    [f.file for t in parent.threads_at_fork for f in t.python_frames])
    return [(scenario, name) for markers, scenario, name in LIBRARIES
            if any(marker in text for marker in markers)]


def _library_fix(scenario: str, name: str, rows: list[dict], bench: dict | None,
                 where: str) -> Fix:
    twins = [row for row in rows if row.get("fixed_of") == scenario]
    fix = next((row.get("fix") for row in twins if row.get("fix")), None)
    if fix is None:
        fix = next((row.get("fix") for row in rows if row.get("scenario") == scenario
                    and row.get("fix")), None) or catalog_fix(scenario)
    measured = _twin_rates(scenario, rows, where)
    if scenario == "chromadb-tokio" and bench and "lazy" in bench.get("start", {}):
        lazy = bench["start"]["lazy"]
        measured.append(Say(_ms("creating the client in the child (`make bench`, " + where +
                                "): start {start}, ready to query {ready} (median of later "
                                "children).", lazy)))
    return Fix(Say(name + " was running threads at the fork: {fix}", {"fix": Plain(fix)}),
               measured=measured)


def _start_method_fix(parent: ParentInfo, rows: list[dict], bench: dict | None, where: str,
                      hazard: str) -> Fix:
    method = parent.start_method or ""
    if "ProcessPoolExecutor" in method:
        code = ["import multiprocessing",
                "from concurrent.futures import ProcessPoolExecutor", "",
                'pool = ProcessPoolExecutor(mp_context=multiprocessing.get_context("forkserver"))']
    elif "multiprocessing.Pool" in method:
        code = ["import multiprocessing", "",
                'pool = multiprocessing.get_context("forkserver").Pool()']
    elif "multiprocessing" in method:
        code = ["import multiprocessing", "",
                'process = multiprocessing.get_context("forkserver").Process(target=work)']
    else:
        code = ["import multiprocessing", "", "# instead of os.fork(): a child that starts "
                "from a fresh interpreter", 'ctx = multiprocessing.get_context("forkserver")',
                "process = ctx.Process(target=work, args=(...,))", "process.start()"]
    fresh = [f"`{row['scenario']}` under `{row['launcher']}` ok in {row['trials']}/"
             f"{row['trials']}" for row in rows
             if row.get("scenario") == hazard and row.get("observed") == "ok"
             and row.get("rate") == 1.0 and row.get("launcher") in FRESH_LAUNCHERS]
    measured = [Say(f"`lab matrix` on {where}: {', '.join(fresh)}.")] if fresh else []
    start = (bench or {}).get("start", {})
    if all(key in start for key in ("fork", "forkserver", "spawn")):
        costs = ", ".join(_ms(f"{key} {{start}}", start[key]) for key in
                          ("fork", "forkserver", "spawn"))
        measured.append(Say(f"From `Process.start()` to a later child's first line, median "
                            f"(`make bench`, {where}): {costs}; the child's own imports come "
                            "on top, and forkserver's first child pays for the server's start."))
    return Fix(Say("Start the child with forkserver (or spawn) instead of fork: it begins in "
                   "a fresh interpreter, with no thread's lock inherited"),
               Say("the target and its arguments must then be picklable, and module-level "
                   "state is rebuilt by importing the modules again"), code, measured)


def _twin_rates(scenario: str, rows: list[dict], where: str) -> list[Say]:
    ok = [row for row in rows if row.get("fixed_of") == scenario and row.get("observed") == "ok"
          and row.get("rate") == 1.0]
    if not ok:
        return [Say("Not measured on " + where + " (no `lab matrix` results for the catalog's "
                    "twin of this hazard here).")]
    return [Say(f"`lab matrix` on {where}: the catalog's fixed twin " + ", ".join(
        f"`{row['scenario']}` under `{row['launcher']}` ok in {row['trials']}/{row['trials']}"
        for row in ok) + ".")]


def catalog_fix(scenario: str) -> str:
    from lab import scenarios

    try:
        entry = scenarios.get(scenario)
    except Exception:
        return "see the catalog (`python -m lab list`)"
    twins = [scenarios.get(name) for name in scenarios.names()]
    return next((twin.fix for twin in twins if twin.fixed_of == scenario and twin.fix),
                entry.fix or "see the catalog (`python -m lab list`)")


def _ms(template: str, entry: dict) -> str:
    def fmt(stat):
        value = (stat or {}).get("median") if isinstance(stat, dict) else stat
        return "-" if value is None else f"{value * 1000:.1f} ms"

    return template.replace("{start}", fmt(entry.get("start_s"))).replace(
        "{ready}", fmt(entry.get("ready_s")))


def _load(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
