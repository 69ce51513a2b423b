"""Parse an LLDB console transcript — saved by the lab or pasted from a terminal — into evidence.

Understood: ``(lldb)`` prompts with echoed commands, ``Process N stopped`` blocks, thread
headers (``thread list``, ``bt all``), ``frame #N`` lines, ``register read`` blocks and
``disassemble`` listings (their ``->`` line and string annotations). Anything else — the
shell, the program's own output, lldb's warnings — is skipped. Pure: text in, data out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.transcript import (
    ConsoleState,
    Parsed,
    finish,
    is_new_frame,
    listing_line,
    platform_from_triple,
    read_console,
    signal_of,
)

PROMPT = "(lldb)"
_PROCESS = re.compile(r"^Process (?P<pid>\d+) (?P<what>stopped|resuming|exited|detached|launched)")
_ATTACH = re.compile(r"\bprocess attach (?:--pid|-p) (?P<pid>\d+)")
# "lldb ... -p PID" on a shell line: the pid option anywhere after the first word "lldb". Two
# searches: "\blldb\b.*?\s-p..." rescanned the rest of the line from every "lldb" in it.
_LLDB_WORD = re.compile(r"\blldb\b")
_ATTACH_ARG = re.compile(r"\s(?:--attach-pid|-p)\s+(?P<pid>\d+)")
_THREAD = re.compile(r"^(?P<selected>\*)?\s*thread #(?P<number>\d+)(?P<rest>[:,].*)?$")
_TID = re.compile(r"\btid = (?P<tid>0x[0-9a-fA-F]+|\d+)")
_NAME = re.compile(r"\bname = '(?P<name>[^']*)'")
_STOP_REASON = re.compile(r"\bstop reason = (?P<reason>.+)$")
_FRAME = re.compile(r"^(?:\*\s*)?frame #(?P<index>\d+): (?P<pc>0x[0-9a-fA-F]+)(?: (?P<where>.*))?$")
_WHERE_FILE = re.compile(r" at (?P<file>[^ ]+?):(?P<line>\d+)(?::\d+)?$")
_WHERE_OFFSET = re.compile(r" \+ (?P<offset>\d+)$")
_REGISTER = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.]*) = (?P<value>0x[0-9a-fA-F]+)(?:\s|$)")
_REGISTER_SET = re.compile(r"^[A-Z][A-Za-z ]*Registers:$")
_DISASSEMBLY = re.compile(
    r"^(?P<arrow>->)?\s+(?P<address>0x[0-9a-fA-F]+)(?: <[+-]?\d+>)?:\s+(?P<text>\S.*)$"
)
_ARCHITECTURE = re.compile(r"^Architecture set to: (?P<triple>\S+)")
_CURRENT_EXE = re.compile(r"^Current executable set to '(?P<path>[^']+)' \((?P<arch>[^)]+)\)")
_MODULE_EXE = re.compile(r'^Executable module set to "(?P<path>[^"]+)"')
_VERSION = re.compile(r"^(?P<version>lldb(?:-[0-9][\w.]*| version \S+).*)$")


@dataclass
class _State(ConsoleState):
    in_registers: bool = False


def parse_lldb_transcript(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of an LLDB transcript (``name`` is ``"lldb"``)."""
    return read_lldb_transcript(text, transcript).info


def read_lldb_transcript(text: str, transcript: str | None = None) -> Parsed:
    """Everything an LLDB transcript says: the DebuggerInfo, platform, executable, lab notes."""
    state = _State(info=DebuggerInfo(name="lldb", transcript=transcript))
    read_console(state, text, PROMPT, _command, _line)
    info = state.info
    info.threads = [t for _, t in sorted(state.threads.items()) if t.frames or t.tid]
    info.registers = state.registers
    info.signal = signal_of(info.stop_reason)
    return finish(state, message_after_pc=True)


def _line(state: _State, line: str) -> None:
    stripped = line.strip()
    if not stripped:
        state.in_listing = False
        return
    info = state.info
    if _disassembly(state, line):
        return
    state.in_listing = False
    if _REGISTER_SET.match(stripped):
        state.in_registers = True
        return
    register = _REGISTER.match(stripped)
    if register and (state.in_registers or state.command.startswith("register read")):
        state.registers[register["name"]] = register["value"]
        return
    thread = _THREAD.match(stripped)
    if thread:
        _thread_header(state, thread)
        return
    frame = _FRAME.match(stripped)
    if frame:
        if state.current is not None and is_new_frame(state, state.current,
                                                      int(frame["index"])):
            _frame(state.threads[state.current], frame)
        return
    process = _PROCESS.match(stripped)
    if process:
        info.pid = int(process["pid"])
        state.running = process["what"] in ("resuming", "launched")
        if process["what"] == "exited":  # "Process 7 exited with status = 0 (0x00000000)"
            info.stop_reason = stripped.split(" ", 2)[2].split(" (")[0]
        return
    attach = _ATTACH.search(stripped)
    if attach is None and (lldb := _LLDB_WORD.search(stripped)):
        attach = _ATTACH_ARG.search(stripped, lldb.end())
    if attach:
        info.pid = int(attach["pid"])
        return
    arch = _ARCHITECTURE.match(stripped)
    if arch:
        state.system, state.machine = platform_from_triple(arch["triple"])
        return
    exe = _CURRENT_EXE.match(stripped) or _MODULE_EXE.match(stripped)
    if exe:
        state.executable = exe["path"]
        if "arch" in exe.groupdict() and state.machine is None:
            state.machine = platform_from_triple(exe["arch"])[1]
        return
    version = _VERSION.match(stripped)
    if version and info.version is None:
        info.version = version["version"]


def _command(state: _State, command: str) -> None:
    """A prompt line: what follows is that command's output."""
    state.command = command
    state.in_registers = False
    state.in_listing = False
    state.current = None
    attach = _ATTACH.search(command)
    if attach:
        state.info.pid = int(attach["pid"])


def _thread_header(state: _State, match: re.Match) -> None:
    number = int(match["number"])
    rest = match["rest"] or ""
    thread = state.threads.setdefault(number, DebugThread(tid=None))
    tid = _TID.search(rest)
    if tid:
        thread.tid = int(tid["tid"], 0)
    name = _NAME.search(rest)
    if name:
        thread.name = name["name"]
    reason = _STOP_REASON.search(rest)
    if match["selected"] and reason:
        state.info.stop_reason = reason["reason"].strip()
    if rest.startswith(":"):
        return  # `thread list`: one line per thread, no frames follow
    thread.frames = []  # a new listing of this thread's stack replaces an older one
    state.current = number


def _frame(thread: DebugThread, match: re.Match) -> None:
    frame = Frame(index=int(match["index"]), pc=match["pc"])
    where = (match["where"] or "").strip()
    for suffix in (" [artificial]", " [opt]"):
        where = where.removesuffix(suffix)
    if "`" in where:
        library, _, where = where.partition("`")
        frame.library = library
    located = _WHERE_FILE.search(where)
    if located:
        frame.file, frame.line = located["file"], int(located["line"])
        where = where[: located.start()]
    offset = _WHERE_OFFSET.search(where)
    if offset:
        frame.offset = int(offset["offset"])
        where = where[: offset.start()]
    if where:
        frame.function = _function_name(where.rsplit(" [inlined] ", 1)[-1])
    thread.frames.append(frame)


def _function_name(text: str) -> str:
    """Drop the argument values lldb shows for frames with debug info: ``f(a=1)`` -> ``f``.

    A C++ signature without values (``f(int, char)``) is part of the name and stays.
    """
    if not text.endswith(")"):
        return text
    depth = 0
    for position in range(len(text) - 1, -1, -1):
        if text[position] == ")":
            depth += 1
        elif text[position] == "(":
            depth -= 1
            if depth == 0:
                arguments = text[position + 1 : -1]
                if "=" in arguments and position > 0:
                    return text[:position]
                return text
    return text


def _disassembly(state: _State, line: str) -> bool:
    match = _DISASSEMBLY.match(line)
    if not match:
        return False
    text, _, comment = match["text"].partition(";")
    listing_line(state, text, comment, at_pc=bool(match["arrow"]), first_pc=False)
    return True
