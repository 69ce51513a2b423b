"""Orphaned-lock forensics: whose lock is the deadlocked child waiting for?

For each thread of the child parked in a futex wait with no timeout, the futex word is read
from the child's memory. Where it is the ``__lock`` word of a locked glibc pthread mutex, the
mutex's ``__owner`` TID is compared with the child's own threads and with the threads the
parent had at fork: an owner that is a parent thread the child did not inherit is the
orphaned lock, named. Locks that do not record their owner (CPython's semaphore-based
``threading.Lock``, Rust's futex mutexes, condition variables) are reported as such.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lab import process
from lab.backend import Gone
from lab.evidence import ParentInfo, ThreadState
from lab.linux import mutex


def orphaned_locks(pid: int, threads: list[ThreadState], parent: ParentInfo | None,
                   ppid: int | None = None) -> list[dict[str, Any]]:
    """One finding per thread of ``pid`` blocked in an untimed futex wait (may be empty)."""
    findings = []
    source = process.reader()
    limit = source.pid_max()
    child_tids = {thread.tid for thread in threads}
    at_fork = {t.tid: t for t in (parent.threads_at_fork if parent else [])}
    for thread in threads:
        call = thread.syscall.futex if thread.syscall else None
        if call is None or not call.is_wait or call.timeout is not None:
            continue
        address = int(call.uaddr, 16)
        finding: dict[str, Any] = {"pid": pid, "tid": thread.tid, "thread": thread.name,
                                   "futex_word": call.uaddr}
        words = mutex.parse(source.read_memory(pid, address, mutex.SIZE))
        if words is None:
            finding.update(lock="unreadable",
                           summary=f"thread {thread.tid} waits on {call.uaddr}; the word "
                                   "could not be read from /proc/PID/mem")
        elif not words.looks_locked(limit):
            finding.update(lock="not a glibc mutex", word_value=words.lock,
                           summary=f"thread {thread.tid} waits on {call.uaddr} (value "
                                   f"{words.lock}): not a locked glibc pthread mutex, so no "
                                   "owner is recorded there (CPython locks, Rust mutexes "
                                   "and condition variables do not store one)")
        else:
            finding.update(_owner_finding(thread, call.uaddr, words, child_tids, at_fork,
                                          parent, ppid, source))
        findings.append(finding)
    return findings


def _owner_finding(thread: ThreadState, uaddr: str, words: mutex.MutexWords,
                   child_tids: set[int], at_fork: dict, parent: ParentInfo | None,
                   ppid: int | None, source: process.Backend) -> dict[str, Any]:
    owner = words.owner
    result: dict[str, Any] = {"lock": "glibc pthread_mutex_t", "mutex_kind": words.kind_name,
                              "owner_tid": owner, "owner_in_child": owner in child_tids}
    if owner in child_tids:
        result["orphaned"] = False
        result["summary"] = (f"thread {thread.tid} waits for mutex {uaddr} held by thread "
                             f"{owner} of the same process (a self- or lock-order deadlock)")
        return result
    name = None
    if owner in at_fork:
        name = f"{at_fork[owner].name}: {at_fork[owner].library}"
        result["owner_was_parent_thread"] = True
        if parent is not None and owner == parent.forking_tid:
            name = f"{name} (the thread that called fork)"
    elif ppid and owner in (live := _thread_names(source, ppid)):
        result["owner_was_parent_thread"] = True  # seen in the live parent instead
        name = live[owner] or None
    else:
        result["owner_was_parent_thread"] = None  # unknown: no inventory, parent gone
    result["owner_name"] = name
    result["orphaned"] = True
    result["summary"] = _orphan_summary(thread.tid, uaddr, words.kind_name, owner, name)
    return result


def _thread_names(source: process.Backend, pid: int) -> dict[int, str]:
    try:
        return source.thread_names(pid)
    except (Gone, PermissionError):
        return {}


def _orphan_summary(tid: int, uaddr: str, kind: str, owner: int, name: str | None) -> str:
    who = f"parent thread {owner} ({name})" if name else f"thread {owner}"
    return (f"thread {tid} waits for mutex {uaddr} ({kind}), locked by {who}, which does not "
            "exist in the child: nothing can ever unlock it")


def name_owner(finding: dict[str, Any], parent: ParentInfo) -> None:
    """Name the parent thread that owned the mutex of ``finding``, from ``parent`` (the fork
    that made the child, matched after the verdict), with its Python stack at the fork."""
    owner = finding.get("owner_tid")
    if owner is None or finding.get("owner_in_child"):
        return
    thread = next((t for t in parent.threads_at_fork if t.tid == owner), None)
    if thread is None and owner == parent.forking_tid:
        thread = parent.forking_thread
    if thread is None:
        return
    name = f"{thread.python_name or thread.name}: {thread.library}" if thread.library else \
        thread.python_name or thread.name
    if owner == parent.forking_tid:
        name = f"{name} (the thread that called fork)"
    finding.update(owner_name=name, owner_was_parent_thread=True,
                   owner_python_frames=[dataclasses.asdict(f) for f in thread.python_frames],
                   owner_seen_by=parent.source)
    finding["summary"] = _orphan_summary(finding.get("tid"), finding.get("futex_word"),
                                         finding.get("mutex_kind"), owner, name)
