"""Render evidence as Markdown a person reads: summary.md, and the sections report.md shares.

Each ``format_*`` generator yields the lines of one section, or of one part of it, and
``yield from``s the smaller ones (the shape of bloomberg/pystack's ``traceback_formatter``):
summary.md here and report.md (``lab.report``) are compositions of the same generators, not
copies. Every value that came from the watched program or its debugger (argv, thread names,
details, frames, messages) is written through ``lab.markdown``, so that it renders as itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lab import markdown as md
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
        yield f"| {thread.tid} | {md.code(thread.name, cell=True)} | {md.text(thread.library)} |"
    yield ""


def format_forensics(findings: Iterable[dict]) -> Iterator[str]:
    """One list item per orphaned-lock finding."""
    for finding in findings:
        yield f"- {md.text(finding.get('summary'))}"


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


def format_native_stack(thread: DebugThread, limit: int = TOP_FRAMES,
                        source: bool = False) -> Iterator[str]:
    """A fenced block of the thread's top ``limit`` native frames, and how many were left out."""
    lines = [line for frame in thread.frames[:limit]
             for line in format_native_frame(frame, source)]
    if len(thread.frames) > limit:
        lines.append(f"... {len(thread.frames) - limit} more frames in evidence.json")
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


def format_processes(processes: Iterable[ProcessRecord]) -> Iterator[str]:
    """The table of every process of the run, with its verdict and why."""
    yield "## Processes"
    yield ""
    yield "| PID | PPID | verdict | exit | signal | detail |"
    yield "|---|---|---|---|---|---|"
    for r in processes:
        exit_code = "" if r.exit_code is None else r.exit_code
        yield (f"| {r.pid} | {r.ppid} | {md.text(r.verdict or '-')} | {exit_code} | "
               f"{md.text(r.signal or '')} | {md.text(r.detail)} "
               f"{md.code(' '.join(r.argv)[:60], cell=True)} |")
    yield ""


def format_warnings(warnings: Iterable[dict]) -> Iterator[str]:
    """One list item per warning a process raised (CPython's fork warning, for one)."""
    for warning in warnings:
        yield (f"- PID {md.text(warning.get('pid'))}: "
               f"{md.text(warning.get('category', 'Warning'))}: {md.text(warning.get('message'))}")


def format_debug_thread(thread: DebugThread) -> Iterator[str]:
    """A thread the debugger saw: its Python stack, if any, and its top native frames."""
    yield f"### Thread {thread.tid}" + (f" {md.text(thread.name)}" if thread.name else "")
    yield ""
    if thread.python_frames:
        yield "Python stack (most recent call first):"
        yield ""
        yield from format_python_stack(thread)
    yield "Native stack:"
    yield ""
    yield from format_native_stack(thread)
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


def format_summary(evidence: Evidence) -> Iterator[str]:
    """Every line of summary.md."""
    yield from format_summary_header(evidence)
    yield from format_processes(evidence.processes)
    blocked = culprit(evidence)
    if blocked and blocked.threads:
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
