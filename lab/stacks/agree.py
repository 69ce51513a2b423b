"""Two sources of one Python stack: the debugger's ``py-bt`` and py-spy's, compared and merged."""

# Both read the same interpreter frames, so where both have a thread's stack they must name the
# same innermost Python frame (file, line, function). A disagreement is kept in the evidence:
# it means one of the two read a frame that was changing, or misread it. Where the debugger
# has no Python frames (no ``pythonX.Y-gdb.py``, no debug package, LLDB), the thread gets
# py-spy's, marked with their source.

from __future__ import annotations

import os
from typing import Any

from lab.evidence import DebuggerInfo, PythonFrame
from lab.parsers.pybt import BUILTIN_FILE


def innermost(frames: list) -> tuple[str, int | None, str] | None:
    """``(file, line, function)`` of the most recent frame that has a source file."""
    for frame in frames:
        file, line, function = _fields(frame)
        if file and file != BUILTIN_FILE:
            return file, line, function
    return None


def _fields(frame) -> tuple[str | None, int | None, str]:
    if isinstance(frame, PythonFrame):
        return frame.file, frame.line, frame.function
    return frame.get("file"), frame.get("line"), frame.get("function") or ""


def same_frame(a: tuple[str, int | None, str], b: tuple[str, int | None, str]) -> bool:
    """Same file (by name: one tool may print a path the other shortens), line and function
    (py-spy qualifies methods, ``Thread.run``, where py-bt writes ``run``)."""
    (file_a, line_a, func_a), (file_b, line_b, func_b) = a, b
    short_a, short_b = func_a.rsplit(".", 1)[-1], func_b.rsplit(".", 1)[-1]
    return (os.path.basename(file_a) == os.path.basename(file_b) and line_a == line_b
            and short_a == short_b)


def describe(frame: tuple[str, int | None, str] | None) -> str | None:
    if frame is None:
        return None
    file, line, function = frame
    return f"{file}:{line} in {function}"


def reconcile(info: DebuggerInfo, stacks: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare ``info``'s Python frames with ``stacks`` (a py-spy entry) thread by thread;
    fill the threads the debugger left without Python frames; mark each thread's source.

    Returns the comparisons (``tid``, ``debugger``, ``py_spy``, ``agree``) and stores them in
    ``stacks["agreement"]``.
    """
    by_tid = {t.get("tid"): t for t in stacks.get("threads", [])}
    source = f"{info.name} py-bt"
    compared = []
    for thread in info.threads:
        spied = by_tid.get(thread.tid)
        if thread.python_frames:
            thread.python_source = source
        if spied is None or not spied.get("python_frames"):
            continue
        if not thread.python_frames:
            thread.python_frames = [PythonFrame(file=f["file"], line=f["line"],
                                                function=f["function"])
                                    for f in spied["python_frames"]]
            thread.python_source = stacks.get("source", "py-spy")
            continue
        ours, theirs = innermost(thread.python_frames), innermost(spied["python_frames"])
        if ours is None or theirs is None:
            continue
        agree = same_frame(ours, theirs)
        entry = {"tid": thread.tid, "debugger": describe(ours),
                 stacks.get("source", "py-spy").replace("-", "_"): describe(theirs),
                 "agree": agree}
        if not agree:
            entry["note"] = (f"{source} and {stacks.get('source')} name different innermost "
                             "Python frames: one of them read a frame that was changing, or "
                             "misread it; both are kept")
        compared.append(entry)
    stacks["agreement"] = compared
    return compared
