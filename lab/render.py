"""Render evidence as Markdown a person reads: summary.md, and the sections report.md shares.

Each ``format_*`` generator yields the lines of one section, or of one part of it, and
``yield from``s the smaller ones (the shape of bloomberg/pystack's ``traceback_formatter``):
summary.md here and report.md (``lab.report``) are compositions of the same generators, not
copies. Every value that came from the watched program or its debugger (argv, thread names,
details, frames, messages) is written through ``lab.markdown``, so that it renders as itself.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from lab import faults, fixes, markdown as md
from lab.evidence import (
    DebuggerInfo,
    DebugThread,
    Evidence,
    Frame,
    ParentInfo,
    PlatformInfo,
    ProcessRecord,
    PythonFrame,
    ThreadState,
)

TOP_FRAMES = 12
DEBUGGER_FACTS = ("stop_reason", "signal", "instruction", "message")
STACK_AT_FORK = 8  # frames of each thread's stack at the fork (all of them in evidence.json)
STACKS_AT_FORK = 16  # threads whose stack at the fork is shown


def culprit(evidence: Evidence) -> ProcessRecord | None:
    """The first process whose verdict is the run's, or None."""
    for record in evidence.processes:
        if record.verdict == evidence.verdict:
            return record
    return None


def expectation(evidence: Evidence) -> str | None:
    """"Expected **X**, observed **Y** (as expected)."; None when nothing was expected."""
    if not evidence.expected:
        return None
    match = "as expected" if evidence.expected == evidence.verdict else "NOT as expected"
    return (f"Expected **{md.text(evidence.expected)}**, observed "
            f"**{md.text(evidence.verdict)}** ({match}).")


def packages(platform: PlatformInfo) -> str:
    """"name version, ..." of the packages recorded; empty when none were."""
    return md.text(", ".join(f"{name} {version}" for name, version in platform.packages.items()))


def format_blocked_thread(thread: ThreadState) -> Iterator[str]:
    """One list item: the system call a thread sleeps in, decoded from /proc."""
    who = f"- thread {thread.tid} {md.code(thread.name)}"
    call = thread.syscall
    if call is None:
        yield f"{who}: state {md.text(thread.state)}, not in a syscall"
    elif call.futex:
        f = call.futex
        timeout = "NULL (wait forever)" if f.timeout is None else f.timeout
        futex = md.code(f"futex({f.uaddr}, {f.op}, {f.val}, {timeout})")
        yield (f"{who}: {futex} — syscall {call.nr}, state {md.text(thread.state)}, wchan "
               f"{md.code(thread.wchan or '-')}")
    else:
        args = ", ".join(call.args[:3])
        yield (f"{who}: {md.code(f'{call.name}({args}, ...)')} — syscall {call.nr}, state "
               f"{md.text(thread.state)}")


def format_blocking_calls(record: ProcessRecord) -> Iterator[str]:
    """The list of what each thread of ``record`` is blocked in."""
    for thread in record.threads:
        yield from format_blocked_thread(thread)


def format_threads_at_fork(parent: ParentInfo, explain: bool = False) -> Iterator[str]:
    """The section on the parent's threads that the child lacks (heading, table, blank line);
    with ``explain``, a sentence on why they matter under the heading."""
    yield f"## Threads of the parent (PID {parent.pid}) the child did not inherit"
    yield ""
    if explain:
        yield ("Only the thread that called `fork()` exists in the child; the locks these "
               "threads held stay locked there forever.")
        yield ""
    yield "| TID | name | started by |"
    yield "|---|---|---|"
    for thread in parent.threads_at_fork:
        name = thread.name if not thread.python_name else f"{thread.python_name} ({thread.name})"
        yield f"| {thread.tid} | {md.code(name, cell=True)} | {md.text(thread.library)} |"
    yield ""
    yield from format_fork_details(parent)


def format_fork_details(parent: ParentInfo) -> Iterator[str]:
    """How the child was started, the culprit thread, and each thread's Python stack at the
    fork (the hook's report) and, where it was read, at the verdict."""
    seen = {"hook": "its own report at the fork (the lab's startup hook)",
            "proc": "/proc, when the lab saw the fork event",
            "scenario": "the scenario's report at the fork"}.get(parent.source or "")
    if parent.start_method:
        yield f"The child was started by {md.text(parent.start_method)}."
    if seen:
        yield f"The threads are from {seen}."
    if parent.start_method or seen:
        yield ""
    culprit = parent.culprit
    if culprit:
        who = f"**The culprit:** thread {md.code(culprit.get('name'))} (TID " \
              f"{md.text(culprit.get('tid'))})"
        if culprit.get("statement"):
            place = f"{Path(str(culprit.get('file'))).name}:{culprit.get('line')}"
            yield (f"{who} was inside {md.code(culprit['statement'])} at {md.code(place)} (in "
                   f"{md.code(culprit.get('function'))}) when the fork happened.")
        else:
            yield f"{who}: {md.text(culprit.get('why'))}."
        yield ""
    shown = [t for t in parent.threads_at_fork if t.python_frames][:STACKS_AT_FORK]
    if parent.forking_thread and parent.forking_thread.python_frames:
        shown.insert(0, parent.forking_thread)
    for thread in shown:
        role = " (called fork: the child's only thread)" if thread is parent.forking_thread \
            else ""
        yield (f"Thread {md.code(thread.python_name or thread.name)} (TID "
               f"{md.text(thread.tid)}){role} at the fork, most recent call first:")
        yield ""
        yield from md.fence(_stack_lines(thread.python_frames[:STACK_AT_FORK], thread.holds))
        yield ""
    if parent.threads_at_verdict or parent.at_verdict:
        yield (f"Threads of PID {parent.pid} at the verdict "
               f"({md.text(parent.at_verdict or 'not read')}):")
        yield ""
        for thread in parent.threads_at_verdict[:STACKS_AT_FORK]:
            yield f"- thread {md.text(thread.tid)} {md.code(thread.name or '?')}:"
            yield ""
            yield from ("  " + line for line in md.fence(_stack_lines(
                thread.python_frames[:STACK_AT_FORK], None)))
        yield ""


def _stack_lines(frames: list[PythonFrame], holds: dict | None) -> Iterator[str]:
    for frame in frames:
        yield from format_python_frame(frame)
        if holds and frame.file == holds.get("file") and frame.line == holds.get("at"):
            yield md.fold(f"    inside {holds.get('statement')} (line {holds.get('line')})")


def crash_headline(record: ProcessRecord) -> str | None:
    """'crashed with SIGSEGV in `resize_image` (worker.py:8)', as Markdown; None without a
    faulthandler dump."""
    if record.fault is None:
        return None
    frame = faults.where(record.fault)
    signal = md.text(record.signal or record.fault.error)
    if frame is None:
        return f"crashed with {signal} outside Python code"
    place = f"{Path(frame.file).name}:{frame.line if frame.line is not None else '?'}"
    return f"crashed with {signal} in {md.code(frame.function)} ({md.text(place)})"


def format_crash(record: ProcessRecord) -> Iterator[str]:
    """Where a process crashed: the Python stack faulthandler wrote when the signal came."""
    fault = record.fault
    yield f"## PID {record.pid} {crash_headline(record)}"
    yield ""
    thread = faults.crashed_thread(fault)
    source = f" ({md.code(fault.file)})" if fault.file else ""
    if thread is None:
        yield f"faulthandler{source}: {md.text(fault.error)}, no Python stack."
        yield ""
        return
    yield (f"faulthandler{source}: {md.text(fault.error)} in thread {md.code(thread.ident)}, "
           "most recent call first:")
    yield ""
    yield from md.fence(line for frame in thread.python_frames
                        for line in format_python_frame(frame))
    yield ""
    if len(fault.threads) > 1:
        yield (f"The stacks of its {len(fault.threads) - 1} other thread(s) are in "
               "`evidence.json` and in the dump.")
        yield ""


def say(line: fixes.Say) -> str:
    """A sentence of the advice: the lab's template, the program's values escaped."""
    values = {}
    for key, value in line.values.items():
        if isinstance(value, fixes.Plain):
            values[key] = md.text(value)
        elif isinstance(value, str):
            values[key] = md.code(value)
        elif isinstance(value, (list, tuple)):
            values[key] = ", ".join(md.code(item) for item in value)
        else:
            values[key] = md.text(value)
    return line.template.format(**values)


def format_how_to_fix(evidence: Evidence, results_dir: Path = fixes.RESULTS) -> Iterator[str]:
    """The "How to fix" section: what was observed, then each fix with what it costs here.
    Nothing when the run has nothing to fix."""
    advice = fixes.advise(evidence, results_dir)
    if advice is None:
        return
    yield "## How to fix"
    yield ""
    yield from (f"- {say(line)}" for line in advice.observed)
    yield ""
    for number, fix in enumerate(advice.fixes, 1):
        why = f" — {say(fix.why)}" if fix.why else ""
        yield f"{number}. {say(fix.title)}{why}."
        if fix.code:
            yield ""
            yield from ("   " + line for line in md.fence(fix.code, "python"))
        for line in fix.measured:
            yield ""
            yield f"   Measured: {say(line)}"
        yield ""


def format_forensics(findings: Iterable[dict]) -> Iterator[str]:
    """One list item per orphaned-lock finding; the owner's Python stack at the fork under it."""
    for finding in findings:
        yield f"- {md.text(finding.get('summary'))}"
        frames = [PythonFrame(file=str(f.get("file")), line=f.get("line"),
                              function=str(f.get("function")))
                  for f in finding.get("owner_python_frames") or []][:STACK_AT_FORK]
        if frames:
            yield ""
            yield "  The owner's Python stack at the fork, most recent call first:"
            yield ""
            yield from ("  " + line for line in md.fence(_stack_lines(frames, None)))


def format_debugger_facts(dbg: DebuggerInfo, keys: Iterable[str] = DEBUGGER_FACTS
                          ) -> Iterator[str]:
    """List items for what the debugger said of the stop (``keys`` of it that are set)."""
    for key in keys:
        value = getattr(dbg, key)
        if value:
            yield f"- {key.replace('_', ' ')}: {md.code(value)}"


def format_python_frame(frame: PythonFrame) -> Iterator[str]:
    """A Python frame the way a traceback writes it, on one line (for a fenced block)."""
    yield md.fold(f'File "{frame.file}", line {frame.line}, in {frame.function}')


def format_native_frame(frame: Frame, source: bool = False) -> Iterator[str]:
    """A native frame as gdb's ``bt`` writes it, on one line; with ``source``, its file:line."""
    where = f" ({frame.library})" if frame.library else ""
    at = f" at {frame.file}:{frame.line}" if source and frame.file else ""
    yield md.fold(f"#{frame.index:<2} {frame.pc or '?':>18} {frame.function or '??'}{where}{at}")


def format_python_stack(thread: DebugThread, limit: int | None = None) -> Iterator[str]:
    """A fenced block of the thread's Python frames, most recent call first."""
    frames = thread.python_frames[:limit]
    yield from md.fence(line for frame in frames for line in format_python_frame(frame))


def format_native_stack(thread: DebugThread, limit: int = TOP_FRAMES, source: bool = False,
                        rest: str = "in evidence.json") -> Iterator[str]:
    """A fenced block of the thread's top ``limit`` native frames, and how many were left out
    (``rest``: where the others are)."""
    lines = [line for frame in thread.frames[:limit]
             for line in format_native_frame(frame, source)]
    if len(thread.frames) > limit:
        lines.append(f"... {len(thread.frames) - limit} more frames {rest}")
    yield from md.fence(lines)


# summary.md


def format_summary_header(evidence: Evidence) -> Iterator[str]:
    """Title, the verdict against the expectation, and the facts of the run as a list."""
    title = evidence.scenario or " ".join(evidence.command)
    yield f"# {md.text(title)}: {md.text(evidence.verdict or 'no verdict yet')}"
    yield ""
    sentence = expectation(evidence)
    if sentence:
        yield sentence
        yield ""
    p = evidence.platform
    yield f"- run id: {md.code(evidence.run_id)}"
    yield f"- command: {md.code(' '.join(evidence.command))}"
    if evidence.launcher:
        yield f"- launcher: {md.code(evidence.launcher)}"
    yield (f"- platform: {md.text(p.system or '?')} {md.text(p.machine or '?')}, Python "
           f"{md.text(p.python or '?')}, {md.text(p.libc or 'libc ?')}")
    if p.interpreter:
        yield f"- the program's interpreter: {md.code(p.interpreter)}"
    if p.packages:
        yield f"- packages: {packages(p)}"
    if evidence.watch_mode:
        note = f" ({md.text(evidence.watch_note)})" if evidence.watch_note else ""
        yield f"- watched with: {md.text(evidence.watch_mode)}{note}"
    if evidence.detect_s is not None:
        yield f"- verdict after {evidence.detect_s:.3f} s from launch"
    for key, value in evidence.timings.items():
        yield f"- {md.text(key.replace('_', ' '))}: {value:.3f}"
    if evidence.error:
        yield f"- error: {md.text(evidence.error)}"
    yield ""


HELPERS_SHOWN = 3  # helper processes listed before the rest are counted in one line


def helpers(processes: list[ProcessRecord]) -> set[int]:
    """The PIDs of helper processes: ended ok (exit 0, or a status their parent handled), not
    Python, and the parent of no process that is not one — what a wrapper (pyenv's shim, a
    shell script) runs before it execs the program. They are counted, not listed
    (evidence.json keeps each)."""
    root = processes[0].pid if processes else None
    found = {r.pid for r in processes if r.pid != root and not r.signal
             and ((r.verdict == "ok" and r.exit_code == 0)
                  or (r.verdict is None and r.exit_code is not None))  # its parent's to handle
             and not (r.argv and os.path.basename(r.argv[0]).startswith("python"))}
    ppid = {r.pid: r.ppid for r in processes}
    for r in processes:
        if r.pid in found:
            continue
        up, seen = ppid.get(r.pid), set()
        while up in ppid and up not in seen:  # an ancestor of a process that is listed
            seen.add(up)
            found.discard(up)
            up = ppid.get(up)
    return found


def format_processes(processes: Iterable[ProcessRecord]) -> Iterator[str]:
    """The table of the run's processes, with their verdicts and why; helper processes that
    ended ok (``helpers``) are counted in one line after it."""
    processes = list(processes)
    folded = helpers(processes)
    if len(folded) <= HELPERS_SHOWN:
        folded = set()
    yield "## Processes"
    yield ""
    yield "| PID | PPID | verdict | exit | signal | detail |"
    yield "|---|---|---|---|---|---|"
    for r in processes:
        if r.pid in folded:
            continue
        exit_code = "" if r.exit_code is None else r.exit_code
        yield (f"| {r.pid} | {r.ppid} | {md.text(r.verdict or '-')} | {exit_code} | "
               f"{md.text(r.signal or '')} | {md.text(r.detail)} "
               f"{md.code(' '.join(r.argv)[:60], cell=True)} |")
    if folded:
        names = collections.Counter(os.path.basename(r.argv[1] if len(r.argv) > 1 and
                                                     r.argv[0].endswith("sh") else
                                                     r.argv[0]) if r.argv else "?"
                                    for r in processes if r.pid in folded)
        yield ""
        yield (f"And {len(folded)} helper processes that ended as their parents expect (not "
               "Python; each in evidence.json): " + md.text(", ".join(
                   f"{name} ×{n}" if n > 1 else name for name, n in names.most_common(8))))
    yield ""


def format_warnings(warnings: Iterable[dict]) -> Iterator[str]:
    """One list item per warning a process raised (CPython's fork warning, for one)."""
    for warning in warnings:
        yield (f"- PID {md.text(warning.get('pid'))}: "
               f"{md.text(warning.get('category', 'Warning'))}: {md.text(warning.get('message'))}")


def format_debug_thread(thread: DebugThread, label: str | None = None,
                        rest: str = "in evidence.json") -> Iterator[str]:
    """A thread the debugger saw: its Python stack, if any, and its top native frames (where it
    has any, when ``label`` names it instead of its tid: a crash report's thread number)."""
    name = label if label is not None else str(thread.tid)
    yield f"### Thread {md.text(name)}" + (f" {md.text(thread.name)}" if thread.name else "")
    yield ""
    if thread.python_frames:
        yield "Python stack (most recent call first):"
        yield ""
        yield from format_python_stack(thread)
    if thread.frames or label is None:
        yield "Native stack:"
        yield ""
        yield from format_native_stack(thread, rest=rest)
    yield ""


def format_debugger(dbg: DebuggerInfo) -> Iterator[str]:
    """The debugger's section: what it said, every thread's stacks, registers, transcript."""
    yield " ".join(["##", md.text(dbg.name), *([md.text(dbg.version)] if dbg.version else [])])
    yield ""
    if dbg.error:
        yield f"Debugger error: {md.text(dbg.error)}"
        yield ""
    yield from format_debugger_facts(dbg)
    yield ""
    for thread in dbg.threads:
        yield from format_debug_thread(thread)
    if dbg.registers:
        registers = ", ".join(f"{k}={v}" for k, v in list(dbg.registers.items())[:18])
        yield f"Registers: {md.text(registers)}"
        yield ""
    if dbg.transcript:
        yield f"Raw transcript: {md.code(dbg.transcript)}"
        yield ""


def format_waits_for(evidence: Evidence) -> Iterator[str]:
    """The deadlock across processes, edge by edge, and what each stuck process waits for."""
    cycle = evidence.wait_for_cycle
    if cycle:
        yield "## Deadlock across processes (a wait-for cycle)"
        yield ""
        yield ("Every thread of each of these processes waits, with no timeout, for what only "
               "another of them could do; none has a timer or a handler for a signal from "
               "outside:")
        yield ""
        for edge in cycle.get("edges", []):
            yield f"- {md.text(edge.get('reason', ''))}"
        yield ""
    waiting = [r for r in evidence.processes if r.waits_for and r.verdict not in (None, "ok")]
    if not waiting:
        return
    yield "## What each stuck process waits for, and who could end it"
    yield ""
    for record in waiting:
        for wait in record.waits_for:
            tids = ", ".join(str(t) for t in wait.get("tids", []))
            timed = "with a timeout" if wait.get("timeout") else "no timeout"
            yield (f"- PID {record.pid} (thread {md.text(tids)}): {md.text(wait.get('kind'))}, "
                   f"{timed}: {md.text(wait.get('note', ''))}")
    yield ""


def format_summary(evidence: Evidence) -> Iterator[str]:
    """Every line of summary.md."""
    blocked = culprit(evidence)
    lines = format_summary_header(evidence)
    yield next(lines)  # the title, then what crashed where, before anything else
    if blocked and blocked.fault:
        yield ""
        yield f"PID {blocked.pid} {crash_headline(blocked)}."
    yield from lines
    yield from format_processes(evidence.processes)
    if blocked and blocked.fault:
        yield from format_crash(blocked)
    elif blocked and blocked.threads and evidence.verdict != "ok":
        source = "from /proc" if evidence.watch_mode else "from the transcript"
        yield f"## What PID {blocked.pid} is blocked in ({source})"
        yield ""
        yield from format_blocking_calls(blocked)
        yield ""
    if evidence.parent.threads_at_fork:
        yield from format_threads_at_fork(evidence.parent, explain=True)
    if evidence.forensics:
        yield "## Whose lock is it (read from the child's memory)"
        yield ""
        yield from format_forensics(evidence.forensics)
        yield ""
    yield from format_waits_for(evidence)
    yield from format_how_to_fix(evidence)
    if evidence.warnings:
        yield "## Warnings the processes raised"
        yield ""
        yield from format_warnings(evidence.warnings)
        yield ""
    dbg = evidence.debugger
    if dbg:
        yield from format_debugger(dbg)
    transcript = f", {md.code(dbg.transcript)}" if dbg and dbg.transcript else ""
    yield ("Files: `evidence.json` (all of it, machine-readable), `summary.md` (this), "
           f"`output.txt` (the command's output){transcript}.")
    yield ""


def summary_markdown(evidence: Evidence) -> str:
    """The text of summary.md for ``evidence``."""
    return "\n".join(format_summary(evidence)) + "\n"
