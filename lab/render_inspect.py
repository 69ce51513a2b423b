"""summary.md of ``lab inspect``: the shared sections of ``lab.render``, plus what inspect adds."""

# The processes, the blocked calls, the forensics and the debugger sections are the generators
# ``summary.md`` of a run is made of; the parent's threads now, the fork story, py-spy's stacks
# and what inspect did to each process are inspect's own.

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lab import markdown as md, render
from lab.evidence import DebuggerInfo, DebugThread, Evidence, PythonFrame


def summary(evidence: Evidence) -> str:
    """The text of summary.md for an inspection's evidence."""
    return "\n".join(format_inspect_summary(evidence)) + "\n"


def format_inspect_summary(evidence: Evidence) -> Iterator[str]:
    info = evidence.inspect or {}
    yield from render.format_summary_header(evidence)
    yield from format_touch(info)
    yield from render.format_processes(evidence.processes)
    culprit = render.culprit(evidence)
    if culprit is not None and culprit.threads and evidence.verdict != "ok":
        yield f"## What PID {culprit.pid} is blocked in (from /proc)"
        yield ""
        yield from render.format_blocking_calls(culprit)
        yield ""
    yield from render.format_waits_for(evidence)
    if info.get("parent"):
        yield from format_parent(info["parent"])
    if info.get("fork_story"):
        yield "## The fork story"
        yield ""
        for entry in info["fork_story"]:
            yield f"- {md.text(entry['summary'])}"
        yield ""
    if evidence.forensics:
        yield "## Whose lock is it (read from the child's memory)"
        yield ""
        yield from render.format_forensics(evidence.forensics)
        yield ""
    for stacks in evidence.python_stacks:
        yield from format_stacks(stacks)
    if evidence.debugger:
        yield from render.format_debugger(evidence.debugger)
    parent = info.get("parent") or {}
    if parent.get("debugger"):
        yield f"## The parent (PID {parent['pid']}) in the debugger"
        yield ""
        yield from render.format_debugger(_debugger(parent["debugger"]))
    files = ["`evidence.json` (all of it, machine-readable)", "`summary.md` (this)"]
    for dbg in (evidence.debugger, _debugger(parent["debugger"]) if parent.get("debugger")
                else None):
        if dbg is not None and dbg.transcript:
            files.append(f"{md.code(dbg.transcript)} (the debugger's transcript)")
    yield f"Files: {', '.join(files)}."
    yield ""


def format_touch(info: dict[str, Any]) -> Iterator[str]:
    """What the inspection did to the processes: every pause, and how they were left."""
    yield "## What inspect did to the processes"
    yield ""
    yield (f"- read /proc for {info.get('window_s', 0):g} s ({info.get('samples', 0)} samples "
           "per process), and the processes' memory (py-spy, non-blocking; the lock words): "
           "no pause")
    for pause in info.get("pauses", []):
        yield (f"- PID {pause['pid']}: paused by {md.text(pause['by'])} (ptrace) for at most "
               f"{pause['seconds']:.2f} s, then detached")
    left = info.get("left_as_found")
    if left is not None:
        yield ("- afterwards: every process as found (none traced, none stopped by the lab)"
               if left else "- afterwards: **not** every process as found (see the notes)")
    for note in info.get("notes", []):
        yield f"- {md.text(note)}"
    yield ""


def format_parent(parent: dict[str, Any]) -> Iterator[str]:
    """The parent's threads now: the ones the child lacks, named, with what each does."""
    yield f"## The parent now (PID {parent['pid']}): threads the child does not have"
    yield ""
    yield (f"Why: {md.text(parent['why'])}. Only the thread that called `fork()` is copied "
           "into a child; a lock any other thread held at that moment stays locked there "
           f"forever. These are {md.text(parent['note'])}.")
    yield ""
    yield "| TID | name | started by | doing now | Python frame |"
    yield "|---|---|---|---|---|"
    for thread in parent["threads"]:
        main = " (main)" if thread["tid"] == parent["pid"] else ""
        top = (thread.get("python_frames") or [None])[0]
        frame = (md.code(f"{top['file']}:{top['line']} {top['function']}", cell=True)
                 if top else "")
        yield (f"| {thread['tid']}{main} | {md.code(thread['name'], cell=True)} | "
               f"{md.text(thread['library'])} | {md.text(thread['doing'])} | {frame} |")
    yield ""


def format_stacks(stacks: dict[str, Any]) -> Iterator[str]:
    """One process's Python stacks from py-spy or pystack, and where they agree with py-bt."""
    mode = md.text(stacks.get("mode") or "")
    yield f"## Python stacks of PID {stacks.get('pid')} ({md.text(stacks['source'])}, {mode})"
    yield ""
    if stacks.get("error") or stacks.get("skipped"):
        yield f"Not read: {md.text(stacks.get('error') or stacks.get('skipped'))}"
        yield ""
        return
    for thread in stacks["threads"]:
        name = f" {md.code(thread['name'])}" if thread.get("name") else ""
        yield f"Thread {thread['tid']}{name} (most recent call first):"
        yield ""
        frames = [PythonFrame(file=f["file"], line=f["line"], function=f["function"])
                  for f in thread["python_frames"]]
        yield from render.format_python_stack(DebugThread(tid=thread["tid"],
                                                          python_frames=frames))
    for entry in stacks.get("agreement", []):
        verdict = "agree" if entry["agree"] else "**disagree**"
        yield (f"- thread {entry['tid']}: the debugger's py-bt and {md.text(stacks['source'])} "
               f"{verdict} on the innermost Python frame ({md.code(entry['debugger'])})")
    yield ""


def _debugger(data: dict[str, Any]) -> DebuggerInfo:
    from lab.evidence import from_dict

    shell = {"run_id": "", "command": [], "platform": {"system": "", "machine": "",
                                                       "python": "", "libc": ""},
             "debugger": data}
    return from_dict(shell).debugger
