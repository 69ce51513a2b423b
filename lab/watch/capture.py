"""Evidence beyond /proc for a judged run: the debugger's capture, a core file, strace's tail.

``native`` is the one debugger capture of the lab's ways of looking: ``watch`` and ``run``
(``with_debugger``) and ``lab inspect`` call it alike."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

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
    info, seconds = native(session, name, target, session.rundir.path, stacks)
    evidence.debugger = info
    if info.error:
        return
    timings = evidence.timings
    timings["debugger_s"] = seconds
    if timings.get("fork_to_verdict_s") is not None:
        timings["fork_to_evidence_s"] = round(
            timings["fork_to_verdict_s"] + timings.get("python_stacks_s", 0.0)
            + timings["debugger_s"], 4)
    session.write()
    progress.stage("debugger", f"{len(info.threads)} thread(s), "
                   f"{sum(len(t.frames) for t in info.threads)} native frames, "
                   f"{sum(len(t.python_frames) for t in info.threads)} Python frames "
                   f"in {timings['debugger_s']:.2f} s")


def native(session: RunSession, name: str, pid: int, folder: Path,
           stacks: dict | None = None) -> tuple[ev.DebuggerInfo, float]:
    """Attach debugger ``name`` to ``pid``, record its threads and stacks into ``folder``,
    detach; return the capture and the seconds it held ``pid`` (an upper bound of its pause).

    A failure is a capture with its ``error`` (and the transcript, when one was written); the
    error itself is kept in ``session.pending_error``, raised once the evidence is complete.
    ``stacks``: py-spy's, read before, that the debugger's are checked against.
    """
    progress = session.progress
    progress.stage("debugger", f"attaching {name} to PID {pid} (it is paused until {name} "
                   "detaches)")
    extra = ({"timeout": session.options.debugger_timeout}
             if session.options.debugger_timeout else {})
    started = time.monotonic()
    try:
        info = debuggers.get(name).capture(
            pid, folder, progress=lambda text: progress.stage("debugger", text), **extra)
    except Interrupted:
        raise
    except LabError as exc:
        failed = ev.DebuggerInfo(name=name, pid=pid, error=exc.line())
        if (folder / f"{name}.txt").exists():
            failed.transcript = f"{name}.txt"
        session.pending_error = session.pending_error or exc
        progress.stage("debugger", f"failed: {exc.line()}")
        return failed, round(time.monotonic() - started, 4)
    seconds = round(time.monotonic() - started, 4)
    if stacks is not None and not stacks["error"]:
        for entry in agree.reconcile(info, stacks):
            if not entry["agree"]:
                progress.stage("stacks", f"PID {pid} thread {entry['tid']}: {entry['note']}")
    return info, seconds


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
