"""One ``lab inspect PID``: judge the live tree, record its stacks, leave it as it was found.

The run itself (run dir, seeded evidence, the check that every process was left as found, the
final write) is a RunSession's, whose target is the existing process; this module is the
observer, and its debugger capture is the one ``watch`` uses (``lab.watch.capture``).
"""

# The order keeps the target's pause short and last: first what costs the target nothing (the
# /proc window, the verdict, py-spy's non-blocking read of its memory, the parent's threads,
# the forensics' read of the lock words), then, only if a debugger is wanted, one ptrace
# capture of the culprit (and of the parent with ``--parent``), which stops it until the
# debugger detaches. Nothing is ever killed or signalled; the only signal the lab may send is
# the SIGCONT that undoes a stop one of its own tools left (``process.wait_released``).

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from lab import evidence as ev, forensics, process, redact, target
from lab.errors import (
    BadInput,
    InspectingSelf,
    ProcessIsZombie,
    ProcessNotFound,
    PtraceRefused,
    TargetExited,
)
from lab.inspector import sample, story
from lab.options import InspectOptions
from lab.process import Backend, Gone
from lab.progress import Progress
from lab.session import Observer, RunSession
from lab.stacks import pyspy
from lab.verdicts import Verdict, worst
from lab.watch import capture, judge, stackproof, waits_for

MAX_STACK_DUMPS = 16  # py-spy reads of one tree: the culprits first, then parents first
PARENT_DIR = "parent"  # the parent's debugger transcript, beside the culprit's


def check_target(backend: Backend, pid: int) -> str:
    """Refuse what cannot (or must not) be inspected; return the process's state letter.

    Raises InspectingSelf, ProcessNotFound, ProcessIsZombie, PtraceRefused (with the reason:
    another user's process without CAP_SYS_PTRACE, Yama).
    """
    if pid == os.getpid():
        raise InspectingSelf(f"PID {pid} is this lab process itself")
    try:
        info = backend.info(pid)
        if info.state in "ZX":
            raise ProcessIsZombie(f"process {pid} is a zombie (exited, not reaped by its "
                                  f"parent, PID {info.ppid})")
        refusal = backend.trace_refusal(pid)
    except Gone:
        raise ProcessNotFound(f"no process has PID {pid}") from None
    if refusal:
        raise PtraceRefused(refusal)
    return info.state


def inspect(options: InspectOptions, progress: Progress | None = None) -> ev.Evidence:
    """Inspect ``options.pid``; return the evidence, or raise a LabError (evidence attached
    when the run directory was made). The processes are left running, untraced."""
    if options.window < sample.MIN_WINDOW_S:
        raise BadInput(f"--window {options.window:g} is too short to prove anything "
                       f"(at least {sample.MIN_WINDOW_S:.2f} s)")
    backend = process.backend()
    progress = progress or Progress()
    try:
        leader = backend.thread_group(options.pid)
    except (Gone, PermissionError):
        raise ProcessNotFound(f"no process has PID {options.pid}") from None
    if leader != options.pid:  # a thread's ID: the whole process is what is stuck
        progress.stage("inspect", f"TID {options.pid} is a thread of PID {leader}; inspecting "
                       f"PID {leader}")
        options = dataclasses.replace(options, pid=leader)
    check_target(backend, options.pid)
    try:
        argv = backend.cmdline(options.pid)
    except (Gone, PermissionError):
        raise ProcessNotFound(f"no process has PID {options.pid}") from None
    inspector = Inspector(options)
    return RunSession(target.existing(options.pid, argv), options, progress).run(inspector)


class Inspector(Observer):
    """Looks at a session's existing process: the window, the stacks, the parent, the
    debugger, in the order that keeps the target's pause short and last."""

    def __init__(self, options: InspectOptions):
        self.options = options
        self.started = time.monotonic()
        self.info: dict[str, Any] = {
            "pid": options.pid, "tree": options.tree, "window_s": options.window,
            "samples": 0, "python": {}, "parent": None, "fork_story": [], "pauses": [],
            "left_as_found": None, "notes": []}
        self.seen: dict[int, sample.Sampled] = {}
        self.stacks: dict[int, dict[str, Any]] = {}

    def run(self, session: RunSession) -> None:
        self.session, self.backend = session, session.backend
        self.progress, self.evidence = session.progress, session.evidence
        self.evidence.inspect = self.info
        session.launch()  # the process runs already: nothing is started or attached
        self.judge()
        self.python_stacks()
        self.parent()
        self.debug()

    def conclude(self, session: RunSession) -> None:
        self.info["left_as_found"] = not session.not_as_found
        for pid, problem in session.not_as_found.items():
            self.info["notes"].append(f"PID {pid} is {problem} after the inspection")
        self.evidence.timings["total_s"] = round(time.monotonic() - self.started, 4)

    def write(self) -> None:
        self.session.write()

    def note(self, text: str, stage: str = "inspect") -> None:
        self.info["notes"].append(text)
        self.progress.stage(stage, text)

    # -- the steps -------------------------------------------------------------------------

    def judge(self) -> None:
        """The /proc window, a verdict per process, the forensics of each deadlocked one."""
        options, evidence = self.options, self.evidence
        what = "and its descendants " if options.tree else ""
        source = "/proc" if self.backend.sees_syscalls else "psutil (portable backend)"
        self.progress.stage("inspect", f"sampling PID {options.pid} {what}from {source} for "
                            f"{options.window:g} s (nothing is attached or stopped)")
        sampler = sample.TreeSampler(self.backend, options.pid, tree=options.tree,
                                     exclude={os.getpid()})
        began = time.monotonic()
        self.seen = sampler.run(options.window)
        self.session.found = sample.as_found(self.seen)
        evidence.timings["window_s"] = round(time.monotonic() - began, 4)
        self.info["samples"] = sampler.samples
        evidence.processes = sample.judge_all(self.seen, options.window,
                                              self.backend.sees_syscalls)
        judged = [r for r in evidence.processes if r.verdict is not None]
        waits_for.annotate(judged, self.backend)
        evidence.wait_for_cycle = waits_for.prove(judged, self.backend)
        root = self.seen.get(options.pid)
        if root is None or root.gone:
            self.session.pending_error = TargetExited(
                f"process {options.pid} exited during the inspection",
                "nothing is left to inspect")
        verdicts = [r.verdict for r in evidence.processes if r.verdict]
        evidence.verdict = worst(verdicts).value if verdicts else Verdict.OK.value
        # detect_s stays null: it counts from a launch, and inspect launched nothing
        evidence.timings["verdict_s"] = round(time.monotonic() - self.started, 4)
        self.write()
        culprit = self.culprit()
        where = f" (PID {culprit})" if culprit else ""
        self.progress.stage("verdict", f"{evidence.verdict}{where} after "
                            f"{evidence.timings['verdict_s']:.3f} s; {len(self.seen)} "
                            "process(es) judged")

    def culprit(self) -> int | None:
        """The first deadlocked process; else the first that hangs; else None."""
        for verdict in (Verdict.DEADLOCK.value, Verdict.HANG.value):
            for record in self.evidence.processes:
                if record.verdict == verdict:
                    return record.pid
        return None

    def python_stacks(self) -> None:
        """py-spy, non-blocking (the target is not paused), on each Python process."""
        culprits = [r.pid for r in self.evidence.processes if r.verdict in
                    (Verdict.DEADLOCK.value, Verdict.HANG.value)]
        order = culprits + [pid for pid in self.seen if pid not in culprits]
        began = time.monotonic()
        for pid in order[:MAX_STACK_DUMPS]:
            if not self.seen[pid].gone:
                self.dump(pid)
        self.evidence.timings["python_stacks_s"] = round(time.monotonic() - began, 4)
        self.write()

    def dump(self, pid: int) -> dict[str, Any] | None:
        python = story.is_python(self.backend, pid)
        self.info["python"][str(pid)] = python
        if python is False:
            self.note(f"PID {pid} is not a Python process: native stacks only", "stacks")
            return None
        stacks = pyspy.dump(pid)
        if stacks["reason"] == "not-python":
            self.info["python"][str(pid)] = False
            self.note(f"PID {pid} is not a Python process: native stacks only", "stacks")
            return None
        self.evidence.python_stacks.append(stacks)
        self.stacks[pid] = stacks
        frames = sum(len(t["python_frames"]) for t in stacks["threads"])
        self.progress.stage("stacks", stacks["error"] or (
            f"py-spy PID {pid}: {len(stacks['threads'])} thread(s), {frames} Python frames in "
            f"{stacks['seconds']:.3f} s (non-blocking: not paused)"))
        return stacks

    def parent(self) -> None:
        """The parent of the culprit (else of PID): its threads now, named; the forensics of
        each deadlocked process against them; the fork story."""
        subject = self.culprit() or self.options.pid
        ppid = self.seen[subject].ppid if subject in self.seen else None
        auto = bool(ppid) and story.forked_without_exec(self.backend, subject, ppid)
        wanted = bool(ppid) and ppid > 1 and (auto or self.options.parent)
        parent_info = None
        if wanted:
            why = ("--parent" if self.options.parent else
                   f"PID {subject} was forked from it without exec (a pool's worker)")
            parent_info = self.parent_threads(ppid, why)
        siblings = set()  # deadlocked children of that parent: its threads name their owners
        for record in self.evidence.processes:
            if record.verdict == Verdict.DEADLOCK.value:
                ours = parent_info is not None and record.ppid == ppid
                siblings |= {record.pid} if ours else set()
                found = forensics.orphaned_locks(record.pid, record.threads,
                                                 parent_info if ours else None, record.ppid)
                self.evidence.forensics.extend(found)
                for finding in found:
                    if finding.get("orphaned"):
                        self.progress.stage("forensics", finding["summary"])
        if parent_info is not None:
            told = story.fork_story([f for f in self.evidence.forensics if f["pid"] in siblings],
                                    ppid, self.info["parent"]["threads"])
            self.info["fork_story"] = told
            for entry in told:
                self.progress.stage("fork", entry["summary"])
        self.write()

    def parent_threads(self, ppid: int, why: str) -> ev.ParentInfo | None:
        try:
            threads = (self.seen[ppid].threads if ppid in self.seen and not self.seen[ppid].gone
                       else self.backend.threads(ppid))
            argv = redact.argv(self.backend.cmdline(ppid))
        except (Gone, PermissionError):
            self.note(f"the parent, PID {ppid}, has exited: no fork story")
            return None
        stacks = self.stacks.get(ppid)
        if stacks is None and ppid not in self.seen:
            stacks = self.dump(ppid)
        named = story.parent_threads(self.backend, ppid, threads, stacks)
        self.info["parent"] = {"pid": ppid, "argv": argv, "why": why, "threads": named,
                               "note": story.MAIN_THREAD_NOTE, "debugger": None}
        self.evidence.parent = story.parent_info(ppid, named, stacks)
        self.progress.stage("parent", f"PID {ppid} ({why}): {len(threads)} thread(s) now; "
                            "the child has none of: "
                            f"{story.thread_names(named, ppid) or 'no other thread'}")
        return self.evidence.parent

    def debug(self) -> None:
        """One debugger capture of the culprit (else of PID), and of the parent on request."""
        name = capture.debugger_name(self.session)
        if name == "none":
            self.note("no debugger: nothing was attached, no process was paused", "debugger")
            return
        target = self.culprit() or self.quiet_one() or self.options.pid
        began = time.monotonic()
        info = self.capture(name, target, self.session.rundir.path)
        self.evidence.timings["debugger_s"] = round(time.monotonic() - began, 4)
        if info is not None:
            self.evidence.debugger = info
            self.prove_from_stacks(target, info)
        parent = self.info["parent"]
        if self.options.parent and parent is not None and self.session.pending_error is None:
            folder = self.session.rundir.subdir(PARENT_DIR)
            found = self.capture(name, parent["pid"], folder)
            if found is not None:
                if found.transcript:
                    found.transcript = f"{PARENT_DIR}/{found.transcript}"
                parent["debugger"] = dataclasses.asdict(found)
        self.write()

    def quiet_one(self) -> int | None:
        """Without syscalls (the portable backend): the newest process that slept through the
        window with its CPU time unchanged, whose stacks may prove a deadlock."""
        if self.backend.sees_syscalls:
            return None
        enough = min(judge.QUIET_S, 0.8 * self.options.window)
        return next((pid for pid, seen in reversed(self.seen.items()) if not seen.gone
                     and not seen.stopped and judge.quiet_for(seen.watch) >= enough), None)

    def prove_from_stacks(self, pid: int, info: ev.DebuggerInfo) -> None:
        """Where the window proved nothing (no syscalls to see), the capture's stacks may."""
        if self.backend.sees_syscalls:
            return  # /proc's proof, with its signal rules (judge), is the one that counts
        record = next((r for r in self.evidence.processes if r.pid == pid), None)
        if record is None or info.error or record.verdict == Verdict.DEADLOCK.value:
            return
        found = stackproof.judge(info)
        if not found.proven:
            record.detail += f"; {found.detail}"
            return
        record.verdict, record.proof, record.detail = (Verdict.DEADLOCK.value, found.proof,
                                                       found.detail)
        self.evidence.verdict = worst(r.verdict for r in self.evidence.processes
                                      if r.verdict).value
        self.progress.stage("verdict", f"{self.evidence.verdict} (PID {pid}): {found.detail}")

    def capture(self, name: str, pid: int, folder) -> ev.DebuggerInfo | None:
        """The capture ``watch`` makes, of a process that may have ended since; the pause is
        measured."""
        if not process.alive(pid):
            self.note(f"PID {pid} exited before {name} could attach", "debugger")
            return None
        stacks = self.stacks.get(pid)
        info, paused = capture.native(self.session, name, pid, folder, stacks)
        self.info["pauses"].append({"pid": pid, "by": name, "seconds": paused})
        if not info.error:
            self.progress.stage("debugger", f"PID {pid}: {len(info.threads)} thread(s), "
                                f"{sum(len(t.frames) for t in info.threads)} native frames; "
                                f"paused at most {paused:.2f} s; detached, running again")
        return info
