"""Which threads each fork left behind, per child: the hook's reports, else /proc at the fork."""

# A Python process with the lab's startup hook reports every fork itself (lab/hook): every other
# thread with its Python stack. A process without it (a C program, `sh`, Python with
# LAB_NO_FORK_HOOK=1 or -I) is seen through the tree instead: when the lab first sees a new
# child, it lists the parent's threads in /proc (within one sampling interval of the fork).
# The forking thread is the task whose /proc/PID/task/TID/children lists the child (the
# kernel makes the thread that called fork() the child's parent, proc(5)); failing that, the
# one whose name the child still bears. Each child is matched to the last report its parent
# sent before the child appeared.

from __future__ import annotations

import collections
import os
import time
from typing import Any

from lab import forensics, inventory, locksite, process, redact
from lab.backend import Gone
from lab.evidence import DebugThread, Evidence, ParentInfo, ProcessRecord, PythonFrame, ThreadAtFork

MAX_RECORDS = 1024  # fork records kept per run (a shell loop may fork thousands of times)
PER_PARENT = 64  # the last reports of one parent
MAX_THREADS = 512
MAX_FRAMES = 64
MAX_TEXT = 1024
IN_EVIDENCE = 32  # forks listed in evidence.forks
# The frames of the forking thread that say which start method made the child.
START_METHODS = (("concurrent/futures/process.py", "fork (concurrent.futures.ProcessPoolExecutor)"),
                 ("multiprocessing/pool.py", "fork (multiprocessing.Pool)"),
                 ("multiprocessing/forkserver.py", "forkserver (multiprocessing)"),
                 ("billiard/", "fork (billiard: Celery's prefork pool)"),
                 ("multiprocessing/popen_fork.py", "fork (multiprocessing.Process)"))


def parse_report(report: dict[str, Any]) -> ParentInfo | None:
    """A ``fork`` report (the hook's, or a catalog scenario's) as a ParentInfo; None when it is
    not one (a report is what a watched process wrote: every field is checked)."""
    pid, tid, t_ns, raw = (report.get(key) for key in ("pid", "tid", "t_ns", "threads"))
    if not (_is_int(pid) and _is_int(tid) and _is_int(t_ns) and isinstance(raw, list)):
        return None
    threads = [t for t in map(_thread, raw[:MAX_THREADS]) if t is not None]
    return ParentInfo(pid=pid, forking_tid=tid, threads_at_fork=threads, t_ns=t_ns,
                      source="hook" if report.get("source") == "hook" else "scenario",
                      forking_thread=_thread(report.get("forking_thread")))


class ForkLog:
    """Every fork of a run: reports by parent, /proc snapshots by child; matched at the end."""

    def __init__(self, snapshots: bool = True):
        # /proc snapshots need the Linux backend; the portable one has the hook's reports only
        self.snapshots_on = snapshots and process.linux_sources()
        self.by_parent: dict[int, collections.deque[ParentInfo]] = {}
        self.snapshots: dict[int, ParentInfo] = {}  # child pid -> its parent at the fork
        self.seen_ns: dict[int, int] = {}  # child pid -> its fork (or first sighting), ns
        self.cwd: dict[int, str] = {}  # id(report's ParentInfo) -> the reporter's cwd
        self.count = 0
        self.dropped = 0  # forks over MAX_RECORDS
        self.malformed = 0  # fork reports that were not one
        self._members = 0

    def add(self, report: dict[str, Any]) -> ParentInfo | None:
        """Keep one ``fork`` report; return it parsed (None: malformed, or over the limit)."""
        info = parse_report(report)
        if info is None:
            self.malformed += 1
            return None
        if self.count >= MAX_RECORDS:
            self.dropped += 1
            return None
        self.count += 1
        self.by_parent.setdefault(info.pid, collections.deque(maxlen=PER_PARENT)).append(info)
        # Now, while the parent lives: its maps say which library started a known thread.
        inventory.name_libraries(info.pid, info.threads_at_fork, python_known=True)
        if isinstance(report.get("cwd"), str):
            self.cwd[id(info)] = report["cwd"]
        return info

    def observe(self, tree) -> list[ParentInfo]:
        """Note the children the tree found since the last call; list (the process backend)
        the threads of each one's parent that does not report its own forks; return those new
        records."""
        members = list(tree.members.values())
        new, self._members = members[self._members:], len(members)
        now, found = time.monotonic_ns(), []
        for member in new:
            pid, ppid = member.record.pid, member.record.ppid
            self.seen_ns[pid] = member.forked_ns or now
            parent = tree.members.get(ppid)
            if not self.snapshots_on or parent is None or ppid in self.by_parent:
                continue
            if self.count >= MAX_RECORDS:
                self.dropped += 1
                continue
            info = snapshot(ppid, pid, member.forked_ns or now, looks_python(parent.record))
            if info is not None:
                self.count += 1
                self.snapshots[pid] = info
                found.append(info)
        return found

    def for_child(self, pid: int, ppid: int | None) -> ParentInfo | None:
        """The fork that made ``pid``: its parent's last report before it, else the /proc
        snapshot."""
        when = self.seen_ns.get(pid)
        reports = [info for info in self.by_parent.get(ppid or -1, ())
                   if when is None or info.t_ns is None or info.t_ns <= when]
        return reports[-1] if reports else self.snapshots.get(pid)

    def finish(self, evidence: Evidence, culprit: ProcessRecord | None) -> None:
        """Link children to forks, tell start methods and held locks, choose ``evidence.parent``
        (the fork that made the culprit), list the forks, and name the owners the forensics
        read. The parent a scenario reported first stays when no fork made the culprit."""
        records = {record.pid: record for record in evidence.processes}
        for record in evidence.processes:
            info = self.for_child(record.pid, record.ppid)
            if info is not None and record.pid not in info.children:
                info.children.append(record.pid)
                if info.start_method is None:
                    info.start_method = start_method(info, record, records.get(info.pid))
        chosen = self.for_child(culprit.pid, culprit.ppid) if culprit else None
        if chosen is not None and culprit is not None:
            chosen.start_method = start_method(chosen, culprit, records.get(chosen.pid))
        forks = [info for info in self._all() if info.threads_at_fork or info is chosen]
        for info in forks[:IN_EVIDENCE]:
            self._locks(info)
        for finding in evidence.forensics:
            record = records.get(finding.get("pid"))
            info = self.for_child(record.pid, record.ppid) if record else None
            if info is not None:
                forensics.name_owner(finding, info)
        if chosen is not None:
            chosen.culprit = culprit_of(chosen, evidence.forensics)
            evidence.parent = chosen
        elif evidence.parent.pid is None and forks:
            evidence.parent = forks[0]
        evidence.forks = forks[:IN_EVIDENCE]

    def _all(self) -> list[ParentInfo]:
        found = [info for infos in self.by_parent.values() for info in infos]
        found += self.snapshots.values()
        return sorted(found, key=lambda info: info.t_ns or 0)

    def _locks(self, info: ParentInfo) -> None:
        cwd = self.cwd.get(id(info))
        for thread in info.threads_at_fork:
            if thread.python_frames and thread.holds is None:
                thread.holds = locksite.held(thread.python_frames, cwd)


def culprit_of(info: ParentInfo, findings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The thread of ``info`` whose lock the child inherited: the owner the forensics read from
    the child's memory (proven), else the one whose stack was inside a lock (told from the
    source); None when neither."""
    threads = {thread.tid: thread for thread in info.threads_at_fork}
    for finding in findings:
        owner = threads.get(finding.get("owner_tid"))
        if owner is not None:
            return {"tid": owner.tid, "name": owner.python_name or owner.name,
                    "why": f"owner of the glibc mutex {finding.get('futex_word')} the child "
                           "waits on (read from the child's memory)", **(owner.holds or {})}
    for thread in info.threads_at_fork:
        if thread.holds:
            site = thread.holds
            return {"tid": thread.tid, "name": thread.python_name or thread.name,
                    "why": f"held {site['lock']} at the fork: its stack was inside "
                           f"{site['statement']!r} at {os.path.basename(site['file'])}:"
                           f"{site['line']} (told from the source)", **site}
    return None


def start_method(info: ParentInfo | None, child: ProcessRecord,
                 parent: ProcessRecord | None) -> str:
    """How ``child`` was started, from its command line and its parent's stack at the fork."""
    argv, parent_argv = " ".join(child.argv), " ".join(parent.argv if parent else [])
    if "multiprocessing.spawn" in argv or "spawn_main" in argv:
        return "spawn (multiprocessing): a fresh interpreter, nothing inherited"
    if "multiprocessing.forkserver" in argv:
        return "forkserver (multiprocessing): the server process itself"
    if "multiprocessing.forkserver" in parent_argv:
        return "forkserver (multiprocessing): forked from a single-threaded server"
    exec_ed = bool(parent and child.argv and parent.argv and child.argv != parent.argv)
    frames = info.forking_thread.python_frames if info and info.forking_thread else []
    for marker, method in START_METHODS:
        if any(marker in frame.file for frame in frames):
            return method + (" then exec" if exec_ed else "")
    if exec_ed:
        return f"fork + exec of {os.path.basename(child.argv[0])}: a new program, nothing inherited"
    own = next((f for f in frames if not locksite.is_stdlib(f.file)), None)
    if own is not None:
        return f"os.fork() at {os.path.basename(own.file)}:{own.line} (in {own.function})"
    return "fork"


def snapshot(ppid: int, child: int, t_ns: int, python: bool) -> ParentInfo | None:
    """``ppid``'s threads now (the process backend), as the threads at the fork that made
    ``child``."""
    source = process.reader()
    try:
        names = source.thread_names(ppid)
    except (Gone, PermissionError):
        return None
    try:  # a forked child keeps its forking thread's name
        bears = source.thread_names(child).get(child)
    except (Gone, PermissionError):
        bears = None
    forking = source.forking_thread(ppid, child)
    if forking is None and len(names) == 1:
        forking = next(iter(names))  # a single-threaded parent: its one thread forked
    same = [tid for tid, name in names.items() if name == bears]
    if forking is None and len(same) == 1:
        forking = same[0]
    threads = [ThreadAtFork(tid=tid, name=name, library="") for tid, name in names.items()
               if tid != forking]
    inventory.name_libraries(ppid, threads, python_known=not python)
    return ParentInfo(pid=ppid, forking_tid=forking, threads_at_fork=threads, source="proc",
                      t_ns=t_ns, children=[],
                      forking_thread=ThreadAtFork(tid=forking, name=bears or "?", library="")
                      if forking else None)


def at_verdict(stacks: dict[str, Any]) -> tuple[list[DebugThread], str]:
    """A process's threads with their Python stacks from py-spy's ``stacks`` of it (read from
    its memory without pausing it: ``lab.stacks.pyspy.dump``); and a note of how, or why none."""
    if stacks.get("error"):
        return [], f"py-spy: {stacks['error']}"
    threads = [DebugThread(tid=t.get("tid"), name=_text(t.get("name")) or None,
                           python_frames=_frames(t.get("python_frames")),
                           python_source="py-spy")
               for t in stacks.get("threads") or []]
    return threads, f"py-spy {stacks.get('mode')} dump in {stacks.get('seconds')} s"


# -- checking what a process wrote ------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: Any) -> str:
    return redact.text(value[:MAX_TEXT]) if isinstance(value, str) else ""


def _thread(data: Any) -> ThreadAtFork | None:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    tid = data.get("tid")
    return ThreadAtFork(tid=tid if _is_int(tid) else None, name=_text(data.get("name")) or "?",
                        library=_text(data.get("library")),
                        python_name=_text(data.get("python_name")) or None,
                        python_frames=_frames(data.get("frames") or data.get("python_frames")))


def _frames(raw: Any) -> list[PythonFrame]:
    frames = []
    for item in raw[:MAX_FRAMES] if isinstance(raw, list) else []:
        if isinstance(item, dict):
            item = [item.get("file"), item.get("line"), item.get("function")]
        if isinstance(item, list) and len(item) == 3 and isinstance(item[0], str):
            line = item[1] if _is_int(item[1]) else None
            frames.append(PythonFrame(file=_text(item[0]), line=line,
                                      function=_text(item[2]) or "?"))
    return frames


def looks_python(record: ProcessRecord) -> bool:
    return bool(record.argv) and os.path.basename(record.argv[0]).startswith("python")
