"""Parse an LLDB console transcript — saved by the lab or pasted from a terminal — into evidence.

Understood: ``(lldb)`` prompts with echoed commands, ``Process N stopped`` blocks, thread
headers (``thread list``, ``bt all``), ``frame #N`` lines, ``register read`` blocks and
``disassemble`` listings (their ``->`` line and string annotations). Anything else — the
shell, the program's own output, lldb's warnings — is skipped. Pure: text in, data out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.transcript import (
    Parsed,
    clean_lines,
    finish,
    normalise_instruction,
    platform_from_triple,
    signal_of,
    split_note,
    string_literal,
)

PROMPT = "(lldb)"
_PROCESS = re.compile(r"^Process (?P<pid>\d+) (?P<what>stopped|resuming|exited|detached|launched)")
_ATTACH = re.compile(r"\bprocess attach (?:--pid|-p) (?P<pid>\d+)")
_ATTACH_ARG = re.compile(r"\blldb\b.*?\s(?:--attach-pid|-p)\s+(?P<pid>\d+)")
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
class _Listing:
    """One disassembly listing: (address, instruction, annotation) lines and the pc's line."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)
    pc_line: int | None = None


@dataclass
class _State:
    info: DebuggerInfo
    system: str | None = None
    machine: str | None = None
    executable: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    threads: dict[int, DebugThread] = field(default_factory=dict)
    current: int | None = None  # the thread number whose frames are being listed
    command: str = ""
    registers: dict[str, str] = field(default_factory=dict)
    in_registers: bool = False
    listings: list[_Listing] = field(default_factory=list)
    in_listing: bool = False
    running: bool = False


def parse_lldb_transcript(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of an LLDB transcript (``name`` is ``"lldb"``)."""
    return read_lldb_transcript(text, transcript).info


def read_lldb_transcript(text: str, transcript: str | None = None) -> Parsed:
    """Everything an LLDB transcript says: the DebuggerInfo, platform, executable, lab notes."""
    state = _State(info=DebuggerInfo(name="lldb", transcript=transcript))
    for line in clean_lines(text):
        _line(state, line)
    info = state.info
    info.threads = [t for _, t in sorted(state.threads.items()) if t.frames or t.tid]
    info.registers = state.registers
    info.signal = signal_of(info.stop_reason)
    return finish(state, *_instruction_and_message(state.listings))


def _line(state: _State, line: str) -> None:
    note = split_note(line)
    if note is not None:
        state.notes[note[0]] = note[1]
        return
    if line.startswith(PROMPT):
        _command(state, line[len(PROMPT):].strip())
        return
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
        if state.current is not None:
            _frame(state.threads[state.current], frame)
        return
    process = _PROCESS.match(stripped)
    if process:
        info.pid = int(process["pid"])
        state.running = process["what"] in ("resuming", "launched")
        if process["what"] == "exited":  # "Process 7 exited with status = 0 (0x00000000)"
            info.stop_reason = stripped.split(" ", 2)[2].split(" (")[0]
        return
    for pattern in (_ATTACH, _ATTACH_ARG):
        attach = pattern.search(stripped)
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
    index = int(match["index"])
    if any(f.index == index for f in thread.frames):
        return
    frame = Frame(index=index, pc=match["pc"])
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
    if not state.in_listing:
        state.listings.append(_Listing())
        state.in_listing = True
    listing = state.listings[-1]
    text, _, comment = match["text"].partition(";")
    if match["arrow"]:
        listing.pc_line = len(listing.lines)
    listing.lines.append((match["address"], normalise_instruction(text), comment))
    return True


def _instruction_and_message(listings: list[_Listing]):
    """(instruction at pc, the one before it, the string the listing annotates) of the last
    listing that marks the pc, preferring one that shows what came before the pc."""
    marked = [listing for listing in listings if listing.pc_line is not None]
    if not marked:
        return None, None, None
    listing = next((x for x in reversed(marked) if x.pc_line), marked[-1])
    at_pc = listing.lines[listing.pc_line][1]
    before = listing.lines[listing.pc_line - 1][1] if listing.pc_line else None
    message = None
    # The string loaded closest before the trap is the one the crash reporter shows.
    for _address, _text, comment in listing.lines[: listing.pc_line + 1]:
        message = string_literal(comment) or message
    if message is None:
        message = next((string_literal(c) for _, _, c in listing.lines if string_literal(c)),
                       None)
    return at_pc, before, message
