"""Render evidence as Markdown a person reads (summary.md): verdict, the wait, the stacks."""

from __future__ import annotations

from lab.evidence import Evidence, ProcessRecord

TOP_FRAMES = 12


def _culprit(evidence: Evidence) -> ProcessRecord | None:
    for record in evidence.processes:
        if record.verdict == evidence.verdict:
            return record
    return None


def _blocking_calls(record: ProcessRecord) -> list[str]:
    lines = []
    for thread in record.threads:
        call = thread.syscall
        if call is None:
            lines.append(f"- thread {thread.tid} `{thread.name}`: state {thread.state}, "
                         f"not in a syscall")
            continue
        if call.futex:
            f = call.futex
            timeout = "NULL (wait forever)" if f.timeout is None else f.timeout
            lines.append(
                f"- thread {thread.tid} `{thread.name}`: `futex({f.uaddr}, {f.op}, {f.val}, "
                f"{timeout})` — syscall {call.nr}, state {thread.state}, wchan "
                f"`{thread.wchan or '-'}`"
            )
        else:
            lines.append(f"- thread {thread.tid} `{thread.name}`: `{call.name}("
                         f"{', '.join(call.args[:3])}, ...)` — syscall {call.nr}, state "
                         f"{thread.state}")
    return lines


def summary_markdown(evidence: Evidence) -> str:
    out: list[str] = []
    title = evidence.scenario or " ".join(evidence.command)
    out.append(f"# {title}: {evidence.verdict or 'no verdict yet'}\n")
    if evidence.expected:
        match = "as expected" if evidence.expected == evidence.verdict else "NOT as expected"
        out.append(f"Expected **{evidence.expected}**, observed **{evidence.verdict}** "
                   f"({match}).\n")
    p = evidence.platform
    out.append(f"- run id: `{evidence.run_id}`")
    out.append(f"- command: `{' '.join(evidence.command)}`")
    if evidence.launcher:
        out.append(f"- launcher: `{evidence.launcher}`")
    out.append(f"- platform: {p.system or '?'} {p.machine or '?'}, Python {p.python or '?'}, "
               f"{p.libc or 'libc ?'}")
    versions = ", ".join(f"{k} {v}" for k, v in p.packages.items())
    if versions:
        out.append(f"- packages: {versions}")
    if evidence.watch_mode:
        out.append(f"- watched with: {evidence.watch_mode}" +
                   (f" ({evidence.watch_note})" if evidence.watch_note else ""))
    if evidence.detect_s is not None:
        out.append(f"- verdict after {evidence.detect_s:.3f} s from launch")
    for key, value in evidence.timings.items():
        out.append(f"- {key.replace('_', ' ')}: {value:.3f}")
    if evidence.error:
        out.append(f"- error: {evidence.error}")
    out.append("")

    out.append("## Processes\n")
    out.append("| PID | PPID | verdict | exit | signal | detail |")
    out.append("|---|---|---|---|---|---|")
    for r in evidence.processes:
        argv = " ".join(r.argv)[:60]
        out.append(f"| {r.pid} | {r.ppid} | {r.verdict or '-'} | "
                   f"{'' if r.exit_code is None else r.exit_code} | {r.signal or ''} | "
                   f"{r.detail} `{argv}` |")
    out.append("")

    culprit = _culprit(evidence)
    if culprit and culprit.threads:
        source = "from /proc" if evidence.watch_mode else "from the transcript"
        out.append(f"## What PID {culprit.pid} is blocked in ({source})\n")
        out.extend(_blocking_calls(culprit))
        out.append("")

    if evidence.parent.threads_at_fork:
        out.append(f"## Threads of the parent (PID {evidence.parent.pid}) the child did not "
                   "inherit\n")
        out.append("Only the thread that called `fork()` exists in the child; the locks these "
                   "threads held stay locked there forever.\n")
        out.append("| TID | name | started by |")
        out.append("|---|---|---|")
        for t in evidence.parent.threads_at_fork:
            out.append(f"| {t.tid} | `{t.name}` | {t.library} |")
        out.append("")

    if evidence.forensics:
        out.append("## Whose lock is it (read from the child's memory)\n")
        out.extend(f"- {finding['summary']}" for finding in evidence.forensics)
        out.append("")

    if evidence.warnings:
        out.append("## Warnings the processes raised\n")
        for warning in evidence.warnings:
            out.append(f"- PID {warning.get('pid')}: {warning.get('category', 'Warning')}: "
                       f"{warning.get('message')}")
        out.append("")

    dbg = evidence.debugger
    if dbg:
        out.append(f"## {dbg.name} {dbg.version or ''}\n".replace("  ", " "))
        if dbg.error:
            out.append(f"Debugger error: {dbg.error}\n")
        for key in ("stop_reason", "signal", "instruction", "message"):
            value = getattr(dbg, key)
            if value:
                out.append(f"- {key.replace('_', ' ')}: `{value}`")
        out.append("")
        for thread in dbg.threads:
            out.append(f"### Thread {thread.tid} {thread.name or ''}\n")
            if thread.python_frames:
                out.append("Python stack (most recent call first):\n")
                out.append("```")
                for f in thread.python_frames:
                    out.append(f'File "{f.file}", line {f.line}, in {f.function}')
                out.append("```")
            out.append("Native stack:\n")
            out.append("```")
            for f in thread.frames[:TOP_FRAMES]:
                lib = f" ({f.library})" if f.library else ""
                out.append(f"#{f.index:<2} {f.pc or '?':>18} {f.function or '??'}{lib}")
            if len(thread.frames) > TOP_FRAMES:
                out.append(f"... {len(thread.frames) - TOP_FRAMES} more in evidence.json")
            out.append("```\n")
        if dbg.registers:
            regs = ", ".join(f"{k}={v}" for k, v in list(dbg.registers.items())[:18])
            out.append(f"Registers: {regs}\n")
        if dbg.transcript:
            out.append(f"Raw transcript: `{dbg.transcript}`\n")
    out.append("Files: `evidence.json` (all of it, machine-readable), `summary.md` (this), "
               "`output.txt` (the command's output)" +
               (f", `{dbg.transcript}`" if dbg and dbg.transcript else "") + ".\n")
    return "\n".join(out) + "\n"
