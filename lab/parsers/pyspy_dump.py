"""Parse ``py-spy dump`` output, text or ``--json``, into evidence: threads, idle or not, frames."""

# The text (py-spy's dump.rs): "Process 16888: COMMAND", "Python v3.11.7 (EXECUTABLE)", then per
# thread 'Thread 16888 (idle): "MainThread"' (older versions: the pthread id in hex, and
# "active+gil" where it holds the GIL) and its frames, most recent call first, four spaces in:
# "task (pool_lock_held.py:27)" for Python, "PyThread_acquire_lock_timed (libpython3.11.so)" or
# "0x7fd153aa3f16 (libc.so.6)" for a native frame (--native). With --locals, "Arguments:" and
# "Locals:" under a frame, then "name: repr" lines: a wait's "timeout: None" is read from them.
# --json is a list of such threads, its frames with "module" set for native ones.

from __future__ import annotations

import re
from typing import Any

from lab import untrusted
from lab.evidence import DebuggerInfo, DebugThread, Frame, PythonFrame
from lab.parsers.transcript import Parsed, clean_lines

NAME = "py-spy"
_PROCESS = re.compile(r"^Process (?P<pid>\d+): ?(?P<command>.*)$")
_PYTHON = re.compile(r"^Python v(?P<version>\S+)(?: \((?P<executable>.*)\))?$")
_THREAD = re.compile(r'^Thread (?P<id>0x[0-9A-Fa-f]+|\d+) \((?P<state>[a-z+]+)\)'
                     r'(?:: "(?P<name>.*)")?$')
_LOCAL = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*): (?P<value>.*)$")


def looks_like_pyspy(text: str) -> bool:
    """A py-spy dump: its thread line, or its JSON (a list of threads with ``thread_id``)."""
    head = text.lstrip()[:1]
    if head == "[":
        return '"thread_id"' in text and '"frames"' in text
    return _SIGN.search(text) is not None


_SIGN = re.compile(r'^Thread (?:0x[0-9A-Fa-f]+|\d+) \((?:idle|active)(?:\+gil)?\)',
                   re.MULTILINE)


def read_pyspy(text: str, transcript: str | None = None) -> Parsed:
    """Everything a py-spy dump holds (the last process, when --subprocesses gave several)."""
    if text.lstrip().startswith("["):
        try:
            entries = untrusted.loads(text, "the py-spy dump", clamp=True)
        except ValueError:
            entries = None
        if isinstance(entries, list):
            return _from_json(entries, transcript)
    return _from_text(text, transcript)


def _from_text(text: str, transcript: str | None) -> Parsed:
    info = DebuggerInfo(name=NAME, transcript=transcript)
    facts: dict[str, Any] = {"format": "text", "threads": []}
    parsed = Parsed(info=info, kind="py-spy", format="py-spy dump", facts=facts)
    thread: DebugThread | None = None
    block: str | None = None  # "Arguments" or "Locals" under the last Python frame
    for line in clean_lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            block = None
            thread = None if _process(parsed, line) else _header(parsed, line)
            continue
        if thread is None:
            continue
        if indent <= 4:
            block = None
            _frame(parsed, thread, stripped)
        elif stripped in ("Arguments:", "Locals:"):
            block = stripped[:-1]
        elif block and thread.python_frames and (local := _LOCAL.match(stripped)):
            at = len(thread.python_frames) - 1
            position = len(info.threads) - 1
            args = parsed.python_args.setdefault(position, {})
            args[at] = f"{args[at]}, " if at in args else ""
            args[at] += f"{local['name']}={local['value']}"
    return parsed


def _process(parsed: Parsed, line: str) -> bool:
    """A ``Process N: COMMAND`` line. With --subprocesses a dump holds several: as with a
    debugger's stops, the last one is read, and the others are counted."""
    match = _PROCESS.match(line)
    if not match:
        return False
    info, facts = parsed.info, parsed.facts
    if info.pid is not None:
        facts.setdefault("other_processes", []).append(info.pid)
        info.threads, facts["threads"], parsed.python_args = [], [], {}
    info.pid = int(match["pid"])
    facts["command"] = match["command"]
    parsed.executable = match["command"].split(" ", 1)[0] or None
    return True


def _header(parsed: Parsed, line: str) -> DebugThread | None:
    python = _PYTHON.match(line)
    if python:
        parsed.facts["python"] = python["version"]
        parsed.facts["executable"] = python["executable"]
        return None
    match = _THREAD.match(line)
    if not match:
        return None
    ident = match["id"]
    thread = DebugThread(tid=int(ident, 16) if ident.startswith("0x") else int(ident),
                         name=match["name"], python_source=NAME)
    parsed.info.threads.append(thread)
    state = match["state"]
    parsed.facts["threads"].append({"tid": thread.tid, "name": thread.name,
                                    "active": state.startswith("active"),
                                    "owns_gil": state.endswith("+gil")})
    return thread


def _frame(parsed: Parsed, thread: DebugThread, text: str) -> None:
    """``f (file.py:12)`` is a Python frame; ``f (lib.so)`` or ``0x7f.. (lib.so)`` native."""
    name, paren, place = text.rpartition(" (")
    if not paren or not place.endswith(")"):
        return
    place = place[:-1]
    file, colon, number = place.rpartition(":")
    if colon and number.isdigit():
        thread.python_frames.append(PythonFrame(file=file, line=int(number), function=name))
        return
    function = None if name.startswith("0x") else name
    pc = name if name.startswith("0x") else None
    thread.frames.append(Frame(index=len(thread.frames), pc=pc, function=function,
                               library=place))


def _from_json(entries: list, transcript: str | None) -> Parsed:
    info = DebuggerInfo(name=NAME, transcript=transcript)
    facts: dict[str, Any] = {"format": "json", "threads": []}
    parsed = Parsed(info=info, kind="py-spy", format="py-spy dump (--json)", facts=facts)
    entries = [entry for entry in entries if isinstance(entry, dict)]
    pids = [entry.get("pid") for entry in entries if isinstance(entry.get("pid"), int)]
    info.pid = pids[-1] if pids else None  # the last process, as in the text form
    facts["other_processes"] = sorted(set(pids) - {info.pid})
    for entry in entries:
        pid = entry.get("pid") if isinstance(entry.get("pid"), int) else None
        if pid != info.pid:
            continue
        tid = entry.get("os_thread_id") if isinstance(entry.get("os_thread_id"), int) else \
            entry.get("thread_id") if isinstance(entry.get("thread_id"), int) else None
        thread = DebugThread(tid=tid, name=_text(entry.get("thread_name")), python_source=NAME)
        info.threads.append(thread)
        facts["threads"].append({"tid": tid, "name": thread.name,
                                 "active": bool(entry.get("active")),
                                 "owns_gil": bool(entry.get("owns_gil"))})
        position = len(info.threads) - 1
        for frame in entry.get("frames") or []:
            if isinstance(frame, dict):
                _json_frame(parsed, thread, position, frame)
    info_block = entries[0].get("process_info") if entries and isinstance(entries[0], dict) \
        else None
    if isinstance(info_block, dict):
        facts["command"] = _text(info_block.get("command_line"))
    return parsed


def _json_frame(parsed: Parsed, thread: DebugThread, position: int, frame: dict) -> None:
    name = _text(frame.get("name")) or "?"
    if frame.get("module"):  # a native frame names the object it is in
        thread.frames.append(Frame(index=len(thread.frames), function=name,
                                   library=str(frame["module"]).rsplit("/", 1)[-1]))
        return
    line = frame.get("line") if isinstance(frame.get("line"), int) else None
    thread.python_frames.append(PythonFrame(file=_text(frame.get("filename")) or "?",
                                            line=line, function=name))
    local_vars = frame.get("locals")
    if isinstance(local_vars, list) and local_vars:
        pairs = [f"{v.get('name')}={v.get('repr')}" for v in local_vars if isinstance(v, dict)]
        parsed.python_args.setdefault(position, {})[len(thread.python_frames) - 1] = \
            ", ".join(pairs)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
