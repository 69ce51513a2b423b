"""The fork story of a live child: its parent's threads now, and the lock owner among them."""

# ``inspect`` never saw the fork, so the threads the child lacks are read from the live parent
# instead: every thread it has now, named (the library that started each, from its name and
# the objects mapped into the parent), with what it is doing and, from py-spy, its Python stack.
# A glibc mutex records its owner's TID; where the forensics read one from the child's memory,
# the parent's thread with that TID is the one that held the lock at fork, if it still runs.

from __future__ import annotations

import os
import re
from typing import Any

from lab import evidence as ev
from lab.inventory import library_for
from lab.process import Backend, Gone
from lab.watch import judge

PYTHON_OBJECT = re.compile(r"^(lib)?python\d+(\.\d+)?[a-z]*(\.so(\.[\d.]+)?)?$")
MAIN_THREAD_NOTE = ("the parent's threads as they are now (inspect did not see the fork); "
                    "its main thread (TID = PID) is the one a pool forks its workers from "
                    "(Celery's prefork, multiprocessing.Pool), so the child has a copy of it, "
                    "and evidence.parent.threads_at_fork leaves it out")


def is_python(backend: Backend, pid: int) -> bool | None:
    """True when ``pid`` runs CPython (the interpreter or libpython is mapped); None when its
    mappings cannot be read or are not shown here (then py-spy is asked anyway)."""
    try:
        mapped = backend.mapped(pid)
    except (Gone, PermissionError):
        return None
    if not mapped:
        return None
    return any(PYTHON_OBJECT.match(os.path.basename(path)) for path in mapped)


def forked_without_exec(backend: Backend, child: int, parent: int) -> bool:
    """True when ``child`` still runs its parent's program (a fork without exec: a pool's
    worker): then it holds a copy of the parent's memory, locks included."""
    # The same argv (an exec rewrites it; multiprocessing's spawn and forkserver children
    # carry their own) and the same mappings of the interpreter.
    try:
        return (backend.cmdline(child) == backend.cmdline(parent)
                and _interpreter(backend, child) == _interpreter(backend, parent))
    except (Gone, PermissionError):
        return False


def _interpreter(backend: Backend, pid: int) -> set[str]:
    return {path for path in backend.mapped(pid)
            if PYTHON_OBJECT.match(os.path.basename(path))}


def parent_threads(backend: Backend, ppid: int, threads: list[ev.ThreadState],
                   stacks: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each thread of the parent: ``tid``, ``name``, ``library``, ``state``, ``doing`` and,
    where py-spy read one, ``python_frames``."""
    spied = {t["tid"]: t for t in (stacks or {}).get("threads", []) if t.get("tid")}
    python_names = {tid: t["name"] or "a Python thread" for tid, t in spied.items()}
    try:
        mapped = backend.mapped(ppid)
    except (Gone, PermissionError):
        mapped = []
    result = []
    for thread in threads:
        entry = {"tid": thread.tid, "name": thread.name,
                 "library": library_for(thread.name, python_names, thread.tid, mapped),
                 "state": thread.state, "doing": judge.describe_wait(thread)}
        if thread.tid in spied:
            entry["python_frames"] = spied[thread.tid]["python_frames"]
        result.append(entry)
    return result


def parent_info(ppid: int, threads: list[dict[str, Any]],
                stacks: dict[str, Any] | None) -> ev.ParentInfo:
    """The evidence's ``parent`` (``source`` "inspect"): as ``threads_at_fork``, the live
    parent's threads but its main one (see the note); as ``threads_at_verdict``, every thread
    with the Python stack py-spy read now."""
    spied = {t["tid"]: t for t in (stacks or {}).get("threads", []) if t.get("tid")}
    at_fork = [ev.ThreadAtFork(tid=t["tid"], name=t["name"], library=t["library"],
                               python_name=(spied.get(t["tid"]) or {}).get("name"))
               for t in threads if t["tid"] != ppid]
    now = [ev.DebugThread(tid=t["tid"], name=t["name"], python_source="py-spy",
                          python_frames=[ev.PythonFrame(**f) for f in t["python_frames"]])
           for t in threads if t.get("python_frames")]
    read = (f"py-spy {stacks['mode']} dump in {stacks['seconds']} s" if stacks and
            not stacks.get("error") else (stacks or {}).get("error") or "no Python stacks")
    return ev.ParentInfo(pid=ppid, threads_at_fork=at_fork, source="inspect",
                         threads_at_verdict=now, at_verdict=f"{read}; {MAIN_THREAD_NOTE}")


def thread_names(threads: list[dict[str, Any]], ppid: int) -> str:
    """"tokio-rt-worker ×4, sqlx-sqlite-wor, holder": the threads but the main one, by their
    Python name where they have one (Python threads keep the process's name in /proc)."""
    counts: dict[str, int] = {}
    for thread in threads:
        if thread["tid"] == ppid:
            continue
        library = thread["library"]
        name = (library[len("Python threading ("):-1]
                if library.startswith("Python threading (") else thread["name"])
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(name + (f" \u00d7{n}" if n > 1 else "") for name, n in counts.items())


def fork_story(findings: list[dict[str, Any]], ppid: int,
               threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each orphaned lock whose owner TID is known: that thread of the parent, now."""
    by_tid = {t["tid"]: t for t in threads}
    story = []
    for finding in findings:
        owner = finding.get("owner_tid")
        if not owner or finding.get("owner_in_child"):
            continue
        thread = by_tid.get(owner)
        entry = {"pid": finding["pid"], "tid": finding["tid"], "owner_tid": owner,
                 "parent_pid": ppid, "parent_thread": thread}
        if thread is None:
            entry["summary"] = (f"thread {finding['tid']} of PID {finding['pid']} waits for a "
                                f"mutex locked by TID {owner}, which is no thread of the parent "
                                f"(PID {ppid}) now: it has exited since the fork")
        else:
            top = (thread.get("python_frames") or [None])[0]
            where = (f"; its Python stack is at {top['file']}:{top['line']} in "
                     f"{top['function']}" if top else "")
            entry["summary"] = (f"thread {finding['tid']} of PID {finding['pid']} waits for a "
                                f"mutex locked at fork by the parent's thread {owner} "
                                f"({thread['name']}: {thread['library']}), which runs on in the "
                                f"parent (PID {ppid}), {thread['doing']}{where}; the child has "
                                "no copy of it, so nothing can unlock the mutex there")
        story.append(entry)
    return story
