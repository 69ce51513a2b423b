"""Which kind of text a file is (GDB, LLDB, macOS crash report, py-spy dump) and its parser."""

from __future__ import annotations

import re

from lab.debugger_registry import DEBUGGERS
from lab.errors import BadInput
from lab.parsers.transcript import Parsed

OTHER_KINDS = ("crash", "py-spy")  # the texts that are no debugger's transcript
KINDS = ("auto", *DEBUGGERS, *OTHER_KINDS)
NAMES = {"gdb": "a GDB transcript", "lldb": "an LLDB transcript",
         "crash": "a macOS crash report", "py-spy": "a py-spy dump"}

# Searched in the whole text, so each branch stays on one line and can fail in one pass over
# it: "^\s*\*?\s*frame" crossed newlines and tried every split of a run of blank lines
# between its two "\s*" (4,000 blank lines: 16 s).
_LLDB_SIGNS = re.compile(r"^\(lldb\)|stop reason = |^[^\S\n]*(?:\*[^\S\n]*)?frame #\d+: 0x"
                         r"|^Architecture set to: |^lldb(?:-\d| version )"
                         r"|^[^\S\n]*(?:\*[^\S\n]*)?thread #\d+: tid = ", re.MULTILINE)
_GDB_SIGNS = re.compile(r"^\(gdb\)|^GNU gdb |^#\d+[^\S\n]+(?:0x[0-9a-fA-F]+ in )?\S+ \("
                        r"|received signal SIG|^Thread \d+ \(.*\):$"
                        r"|^Traceback \(most recent call first\):$"
                        r"|^[^\S\n]*Id[^\S\n]+Target Id[^\S\n]+Frame", re.MULTILINE)
_MI_SIGNS = re.compile(r'^(?:\d*\^(?:done|error|running|connected)|~"|\*stopped'
                       r"|=thread-group-added)", re.MULTILINE)
# A crash report's header or section lines (each a fixed start: nothing to backtrack over).
_CRASH_SIGNS = re.compile(r"^(?:Exception Type: |Crashed Thread: |Triggered by Thread: "
                          r"|Translated Report|Application Specific Information:"
                          r"|Thread \d+ Crashed:|Termination Reason: |Incident Identifier: "
                          r"|Code Type: )", re.MULTILINE)
# One crashed thread's frames pasted alone: "0   libdispatch.dylib   0x19da0660c sym + 32".
_CRASH_FRAME = re.compile(r"^\d+ +[\w.+-]+[ \t]+0x[0-9a-fA-F]{6,} [^(\s]", re.MULTILINE)


def detect(text: str) -> str | None:
    """The kind of ``text``, or None when it is none of them. Crash reports and py-spy dumps
    have their own headers and are told first; then the debuggers."""
    from lab.parsers.crash_ips import looks_like_ips
    from lab.parsers.pyspy_dump import looks_like_pyspy

    if looks_like_ips(text) or _CRASH_SIGNS.search(text):
        return "crash"
    if looks_like_pyspy(text):
        return "py-spy"
    lldb, gdb = _LLDB_SIGNS.search(text), _GDB_SIGNS.search(text) or _MI_SIGNS.search(text)
    if lldb and gdb:  # both seen: the earlier sign tells (a paste may quote the other's words)
        return "lldb" if lldb.start() < gdb.start() else "gdb"
    if lldb or gdb:
        return "lldb" if lldb else "gdb"
    return "crash" if _CRASH_FRAME.search(text) else None


def parse_kind(kind: str, text: str, name: str) -> Parsed:
    """Parse ``text`` as ``kind`` ("auto" detects it); raises BadInput (one line) when it is
    another kind or none."""
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}", f"choose one of: {', '.join(KINDS)}")
    found = detect(text)
    if kind == "auto":
        if found is None:
            raise BadInput(f"{name} is not a debugger transcript, crash report or py-spy dump: "
                           "no prompt, frame, thread, stop, report header or dump line found")
        kind = found
    elif found != kind and not (kind == "crash" and found is None):
        if found is None:
            raise BadInput(f"{name} is not {NAMES[kind]}: no prompt, stop, frame, thread, "
                           "register or header line found")
        raise BadInput(f"{name} is {NAMES[found]}, not {NAMES[kind]}",
                       f"python -m lab parse {found} {name}")
    if kind == "crash":
        from lab.parsers.crash_ips import looks_like_ips, read_ips
        from lab.parsers.crash_report import read_crash_report

        return (read_ips if looks_like_ips(text) else read_crash_report)(text, name)
    if kind == "py-spy":
        from lab.parsers.pyspy_dump import read_pyspy

        return read_pyspy(text, name)
    if kind == "lldb":
        from lab.parsers.lldb import read_lldb_transcript

        return read_lldb_transcript(text, name)
    if _MI_SIGNS.search(text):
        return _read_mi(text, name)
    from lab.parsers.gdb_console import read_gdb_console

    return read_gdb_console(text, name)


_MI_CONFIGURED = re.compile(r'configured as \\"(?P<triple>[^"\\]+)\\"')


def _read_mi(text: str, name: str) -> Parsed:
    from lab.parsers.gdb_mi import read_gdb_transcript
    from lab.parsers.transcript import machine_from_registers, platform_from_triple

    info, notes = read_gdb_transcript(text, transcript=name)
    configured = _MI_CONFIGURED.search(text)
    system, machine = platform_from_triple(configured["triple"]) if configured else (None, None)
    return Parsed(info=info, system=system, machine=machine or machine_from_registers(
        info.registers), notes=notes, kind="gdb", format="GDB/MI (the lab's GDB driver)")
