"""One ``lab inspect PID``: judge the live tree, record its stacks, leave it as it was found."""

# The order keeps the target's pause short and last: first what costs the target nothing (the
# /proc window, the verdict, py-spy's non-blocking read of its memory, the parent's threads,
# the forensics' read of the lock words), then, only if a debugger is wanted, one ptrace
# capture of the culprit (and of the parent with ``--parent``), which stops it until the
# debugger detaches. Nothing is ever killed or signalled; the only signal the lab may send is
# the SIGCONT that undoes a stop one of its own tools left (``process.wait_released``).

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import debuggers, evidence as ev, forensics, process, redact
from lab.envinfo import platform_info
from lab.errors import (
    BadInput,
    DebuggerFailed,
    EvidenceNotWritten,
    InspectingSelf,
    Interrupted,
    LabError,
    ProcessIsZombie,
    ProcessNotFound,
    PtraceRefused,
    TargetExited,
)
from lab.inspector import render, sample, story
from lab.process import Backend, Gone
from lab.progress import Progress
from lab.rundir import PRIVATE_DIR, RunDir
from lab.stacks import agree, pyspy
from lab.verdicts import Verdict, worst
from lab.watch import judge, stackproof

MAX_STACK_DUMPS = 16  # py-spy reads of one tree: the culprits first, then parents first
PARENT_DIR = "parent"  # the parent's debugger transcript, beside the culprit's


@dataclass
class InspectOptions:
    pid: int
    tree: bool = True  # judge the descendants too
    parent: bool = False  # also the parent's native stacks (a second ptrace capture)
    debugger: str = "auto"
    window: float = sample.WINDOW_S
    out_base: Path = Path("crash_dumps")
    debugger_timeout: float | None = None


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
    check_target(backend, options.pid)
    return Inspection(backend, options, progress or Progress()).run()


class Inspection:
    def __init__(self, backend: Backend, options: InspectOptions, progress: Progress):
        self.backend, self.options, self.progress = backend, options, progress
        self.started = time.monotonic()
        pid = options.pid
        try:
            argv = redact.argv(backend.cmdline(pid))
        except (Gone, PermissionError):
            raise ProcessNotFound(f"no process has PID {pid}") from None
        self.rundir = RunDir.create(options.out_base, None, f"inspect-{pid}")
        self.evidence = ev.Evidence(run_id=self.rundir.run_id, command=argv,
                                    platform=platform_info(),
                                    evidence_dir=str(self.rundir.path), mode="inspect")
        self.info: dict[str, Any] = {
            "pid": pid, "tree": options.tree, "window_s": options.window, "samples": 0,
            "python": {}, "parent": None, "fork_story": [], "pauses": [],
            "left_as_found": None, "notes": []}
        self.evidence.inspect = self.info
        self.seen: dict[int, sample.Sampled] = {}
        self.stacks: dict[int, dict[str, Any]] = {}
        self.pending: LabError | None = None

    # -- the whole inspection --------------------------------------------------------------

    def run(self) -> ev.Evidence:
        evidence = self.evidence
        try:
            self.write()
            self.judge()
            self.python_stacks()
            self.parent()
            self.debug()
        except Interrupted as exc:
            reached = evidence.verdict
            evidence.verdict = Verdict.INTERRUPTED.value
            evidence.error = str(exc) + (f" (after the verdict {reached})" if reached else "")
            self.finish()
            exc.evidence = evidence
            raise
        except BaseException as exc:
            evidence.error = (exc.line() if isinstance(exc, LabError)
                              else f"lab error: {type(exc).__name__}: {exc}")
            self.finish()
            if isinstance(exc, LabError):
                exc.evidence = evidence
            raise
        self.finish()
        error = self.pending
        if self.rundir.failed:
            error = EvidenceNotWritten(f"verdict {evidence.verdict}, but the evidence in "
                                       f"{self.rundir.path} is incomplete: {self.rundir.failed}")
        if error is not None:
            error.evidence = evidence
            raise error
        return evidence

    def finish(self) -> None:
        """Check that every process was left as found; the final writes, whatever happened."""
        problems = sample.left_as_found(self.seen)
        self.info["left_as_found"] = not problems
        for pid, problem in problems.items():
            self.note(f"PID {pid} is {problem} after the inspection")
            self.pending = self.pending or DebuggerFailed(f"process {pid} is {problem} after "
                                                          "the inspection")
        self.evidence.timings["total_s"] = round(time.monotonic() - self.started, 4)
        self.evidence.stages = list(self.progress.stages)
        self.evidence.complete = True
        self.write()
        try:
            ev.write_atomic(self.rundir.path / "summary.md", render.summary(self.evidence))
        except OSError as exc:
            self.rundir.failed = self.rundir.failed or f"summary.md: {exc.strerror or exc}"
        self.progress.stage("evidence", f"{self.rundir.path}/evidence.json")

    def write(self) -> None:
        self.rundir.write_evidence(self.evidence)

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
        evidence.timings["window_s"] = round(time.monotonic() - began, 4)
        self.info["samples"] = sampler.samples
        evidence.processes = sample.judge_all(self.seen, options.window,
                                              self.backend.sees_syscalls)
        root = self.seen.get(options.pid)
        if root is None or root.gone:
            self.pending = TargetExited(f"process {options.pid} exited during the "
                                        "inspection", "nothing is left to inspect")
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
        name = self.debugger_name()
        if name == "none":
            self.note("no debugger: nothing was attached, no process was paused", "debugger")
            return
        target = self.culprit() or self.quiet_one() or self.options.pid
        began = time.monotonic()
        info = self.capture(name, target, self.rundir.path)
        self.evidence.timings["debugger_s"] = round(time.monotonic() - began, 4)
        if info is not None:
            self.evidence.debugger = info
            self.prove_from_stacks(target, info)
        parent = self.info["parent"]
        if self.options.parent and parent is not None and self.pending is None:
            folder = self.rundir.path / PARENT_DIR
            folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
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

    def debugger_name(self) -> str:
        choice = self.options.debugger
        if choice != "auto":
            return choice
        return next((name for name in debuggers.names() if shutil.which(name)), "none")

    def capture(self, name: str, pid: int, folder: Path) -> ev.DebuggerInfo | None:
        """Attach, record, detach; the pause is measured. A failure is kept, raised at the end."""
        if not process.alive(pid):
            self.note(f"PID {pid} exited before {name} could attach", "debugger")
            return None
        self.progress.stage("debugger", f"attaching {name} to PID {pid} (it is paused until "
                            f"{name} detaches)")
        extra = ({"timeout": self.options.debugger_timeout}
                 if self.options.debugger_timeout else {})
        began = time.monotonic()
        try:
            info = debuggers.get(name).capture(
                pid, folder, progress=lambda text: self.progress.stage("debugger", text),
                **extra)
        except Interrupted:
            raise
        except LabError as exc:
            self.pending = self.pending or exc
            self.progress.stage("debugger", f"failed: {exc.line()}")
            failed = ev.DebuggerInfo(name=name, pid=pid, error=exc.line())
            if (folder / f"{name}.txt").exists():
                failed.transcript = f"{name}.txt"
            return failed
        finally:
            paused = round(time.monotonic() - began, 4)
            self.info["pauses"].append({"pid": pid, "by": name, "seconds": paused})
        stacks = self.stacks.get(pid)
        if stacks is not None and not stacks["error"]:
            for entry in agree.reconcile(info, stacks):
                if not entry["agree"]:
                    self.note(f"PID {pid} thread {entry['tid']}: {entry['note']}", "stacks")
        self.progress.stage("debugger", f"PID {pid}: {len(info.threads)} thread(s), "
                            f"{sum(len(t.frames) for t in info.threads)} native frames; paused "
                            f"at most {paused:.2f} s; detached, running again")
        return info
