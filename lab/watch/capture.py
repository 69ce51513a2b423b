"""Evidence beyond /proc for a judged run: the debugger's capture, a core file, strace's tail."""

from __future__ import annotations

import shutil
import time

from lab import debuggers, evidence as ev
from lab.errors import DebuggerMissing, Interrupted, LabError
from lab.session import RunSession
from lab.stacks import agree, pyspy

STRACE_FILE = "strace.txt"


def debugger_name(session: RunSession) -> str:
    """The debugger --debugger asks for; for ``auto`` the first one installed, else none."""
    choice = session.options.debugger
    if choice != "auto":
        return choice
    for name in debuggers.names():
        if shutil.which(name):
            return name
    session.progress.stage("debugger", "none found (auto): the verdict stands on /proc alone")
    return "none"


def with_debugger(session: RunSession, target: int | None) -> None:
    """Attach the debugger to ``target``, record it, detach. A failed capture is noted in the
    evidence and raised only after the evidence is complete (``session.pending_error``)."""
    name = debugger_name(session) if target is not None else "none"
    if name == "none":
        return
    progress, evidence = session.progress, session.evidence
    if session.options.strace:
        progress.stage("debugger", f"skipped: strace already traces PID {target} "
                       "(a process has one tracer at a time)")
        return
    stacks = python_stacks(session, target)
    progress.stage("debugger", f"attaching {name} to PID {target}")
    started = time.monotonic()
    try:
        driver = debuggers.get(name)
        extra = ({"timeout": session.options.debugger_timeout}
                 if session.options.debugger_timeout else {})
        info = driver.capture(target, session.rundir.path,
                              progress=lambda text: progress.stage("debugger", text), **extra)
    except Interrupted:
        raise
    except LabError as exc:
        evidence.debugger = ev.DebuggerInfo(name=name, pid=target, error=exc.line())
        if (session.rundir.path / f"{name}.txt").exists():
            evidence.debugger.transcript = f"{name}.txt"
        session.pending_error = exc
        progress.stage("debugger", f"failed: {exc.line()}")
        return
    evidence.debugger = info
    if stacks is not None and not stacks["error"]:
        for entry in agree.reconcile(info, stacks):
            if not entry["agree"]:
                progress.stage("debugger", f"thread {entry['tid']}: {entry['note']}")
    timings = evidence.timings
    timings["debugger_s"] = round(time.monotonic() - started, 4)
    if timings.get("fork_to_verdict_s") is not None:
        timings["fork_to_evidence_s"] = round(
            timings["fork_to_verdict_s"] + timings.get("python_stacks_s", 0.0)
            + timings["debugger_s"], 4)
    session.write()
    progress.stage("debugger", f"{len(info.threads)} thread(s), "
                   f"{sum(len(t.frames) for t in info.threads)} native frames, "
                   f"{sum(len(t.python_frames) for t in info.threads)} Python frames "
                   f"in {timings['debugger_s']:.2f} s")


def python_stacks(session: RunSession, target: int) -> dict | None:
    """py-spy's Python stacks of ``target``, before a debugger attaches (a process has one
    tracer), into ``evidence.python_stacks``. Non-blocking when every thread sleeps (nothing
    moves: no pause is needed); blocking when one runs, for a consistent picture."""
    member = session.tree.members.get(target)
    threads = member.record.threads if member is not None else []
    running = any(thread.state == "R" for thread in threads)
    stacks = pyspy.dump(target, blocking=running)
    session.evidence.python_stacks.append(stacks)
    session.evidence.timings["python_stacks_s"] = stacks["seconds"] or 0.0
    count = sum(len(t["python_frames"]) for t in stacks["threads"])
    session.progress.stage("stacks", stacks["error"] or f"py-spy ({stacks['mode']}): "
                           f"{len(stacks['threads'])} thread(s), {count} Python frames in "
                           f"{stacks['seconds']:.3f} s")
    return stacks


def with_gcore(session: RunSession, target: int | None) -> None:
    """With --gcore: a core of ``target``, after the debugger, within the size limit."""
    limit = session.options.gcore_limit_mb
    if limit is None or target is None or session.options.strace:
        return
    from lab.debuggers import gcore

    session.progress.stage("core", f"gcore of PID {target} (limit {limit:g} MiB)")
    session.evidence.core = core = gcore.dump(target, session.rundir.path, limit)
    if "file" in core:
        from lab.stacks import pystack

        stacks = pystack.from_core(session.rundir.path / core["file"], target)
        session.evidence.python_stacks.append(stacks)
        core["python_stacks"] = (stacks.get("skipped") or stacks["error"]
                                 or f"pystack: {len(stacks['threads'])} thread(s)")
    session.write()
    session.progress.stage("core", f"{core['file']}: {core['bytes']:,} bytes in "
                           f"{core['seconds']:.2f} s" if "file" in core else
                           core.get("skipped") or core.get("error", ""))


def strace_prefix(session: RunSession) -> list[str]:
    """``strace -f ...`` writing to the run directory; raises DebuggerMissing."""
    if not shutil.which("strace"):
        raise DebuggerMissing("strace is not installed", "apt-get install strace")
    return ["strace", "-f", "-tt", "-T", "-s", "80", "-o",
            str(session.rundir.path / STRACE_FILE)]


def strace_tail(session: RunSession, culprit: int | None) -> None:
    """The last syscalls of ``culprit`` from strace's log, into the evidence."""
    from lab.parsers.strace import tail_of

    path = session.rundir.path / STRACE_FILE
    if path.exists() and culprit:
        session.evidence.strace = {"file": STRACE_FILE, "pid": culprit,
                                   "tail": tail_of(path.read_text(errors="replace"), culprit)}
