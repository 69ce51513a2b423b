"""Parse a GDB console transcript — ``gdb --batch`` output or a terminal session — into evidence.

Understood: ``(gdb)`` prompts and ``+command`` echoes (``set trace-commands on``), the attach
and stop lines (``Program received signal SIGTRAP, Trace/breakpoint trap.``), ``Thread N
(...)`` headers with their ``#N`` frames (``bt``, ``thread apply all bt``), ``info
registers`` lines and ``x/i`` / ``disassemble`` listings (``=>`` marks the pc). GDB/MI
transcripts, which the lab's own GDB driver writes, are read by ``lab.parsers.gdb_mi``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.gdb_mi import lwp_from_target_id
from lab.parsers.transcript import (
    Parsed,
    clean_lines,
    finish,
    normalise_instruction,
    platform_from_triple,
    split_note,
    string_literal,
)

PROMPT = "(gdb)"
_TRACED_COMMAND = re.compile(r"^\++(?P<command>[a-z].*)$")
_VERSION = re.compile(r"^(?P<version>GNU gdb .+)$")
_CONFIGURED = re.compile(r'^This GDB was configured as "(?P<triple>[^"]+)"')
_ARCHITECTURE = re.compile(r'^The target architecture is set to "(?P<arch>[^"]+)"'
                           r'(?: \(currently "(?P<current>[^"]+)"\))?')
_ATTACHING = re.compile(r"^Attaching to (?:program: (?P<exe>.+), )?process (?P<pid>\d+)")
_DETACHING = re.compile(r"^Detaching from program: (?P<exe>.+), process (?P<pid>\d+)")
_INFERIOR = re.compile(r"^\[Inferior \d+ \(process (?P<pid>\d+)\) (?P<what>[^\]]+)\]")
_SIGNAL = re.compile(r"^(?:Program|Thread \d+(?: \"[^\"]*\")?) (?:received|terminated with) "
                     r"signal (?P<signal>SIG[A-Z0-9]+), (?P<description>.+?)\.?$")
_THREAD = re.compile(r"^Thread (?P<number>\d+) \((?P<target>.*)\):$")
_THREAD_NAME = re.compile(r'"(?P<name>[^"]*)"\)?$')
_FRAME = re.compile(r"^#(?P<index>\d+)\s+(?P<text>\S.*)$")
_FRAME_TEXT = re.compile(
    r"^(?:(?P<pc>0x[0-9a-fA-F]+) in )?(?P<function>.+?)(?: \((?P<args>.*)\))?"
    r"(?: at (?P<file>.+):(?P<line>\d+))?(?: from (?P<library>.+))?$"
)
_REGISTER = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\s+(?P<value>0x[0-9a-fA-F]+)(?:\s|$)")
_DISASSEMBLY = re.compile(
    r"^(?P<arrow>=>)?\s+(?P<address>0x[0-9a-fA-F]+)(?: <[^>]*>)?:\s+(?P<text>\S.*)$"
)
# What gdb appends to an instruction: "  # 0x7f.. <sym>" (x86), "  // #1" (aarch64).
_ANNOTATION = re.compile(r"\s{2,}(?:#|//)\s")
_BACKTRACE = ("bt", "backtrace", "where", "thread apply all bt", "thread apply all backtrace")
_RESUME = ("continue", "c", "cont", "run", "r", "start", "step", "next", "finish")
_GDB_MACHINES = {"i386:x86-64": "x86_64", "aarch64": "aarch64"}


@dataclass
class _State:
    info: DebuggerInfo
    system: str | None = None
    machine: str | None = None
    executable: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    threads: dict[int, DebugThread] = field(default_factory=dict)
    current: int | None = None
    command: str = ""
    registers: dict[str, str] = field(default_factory=dict)
    listings: list[list[tuple[bool, str, str]]] = field(default_factory=list)
    in_listing: bool = False
    attached: bool = False
    running: bool = False
    last_frame: Frame | None = None  # the frame a wrapped continuation line belongs to
    last_text: str = ""


def parse_gdb_console(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of a GDB console transcript (``name`` is ``"gdb"``)."""
    return read_gdb_console(text, transcript).info


def read_gdb_console(text: str, transcript: str | None = None) -> Parsed:
    """Everything a GDB console transcript says: DebuggerInfo, platform, executable, notes."""
    state = _State(info=DebuggerInfo(name="gdb", transcript=transcript))
    for line in clean_lines(text):
        _line(state, line)
    info = state.info
    info.threads = [t for _, t in sorted(state.threads.items())]
    if info.pid is None:
        info.pid = next((t.tid for t in info.threads if t.tid), None)
    if 0 in state.threads and state.threads[0].tid is None:
        state.threads[0].tid = info.pid  # a plain `bt`: the selected thread, pid when alone
    info.registers = state.registers
    pc = state.registers.get("rip") or state.registers.get("pc")
    if len(info.threads) == 1 and info.threads[0].frames:
        first = info.threads[0].frames[0]
        if first.index == 0 and first.pc is None:
            first.pc = pc  # gdb omits it at the start of a source line; one thread: its pc
    if info.stop_reason is None and state.attached:
        info.stop_reason = "attached"
    return finish(state, *_instruction_and_message(state.listings))


def _line(state: _State, line: str) -> None:
    note = split_note(line)
    if note is not None:
        state.notes[note[0]] = note[1]
        return
    if line.startswith(PROMPT):
        _command(state, line[len(PROMPT):].strip())
        return
    traced = _TRACED_COMMAND.match(line)
    if traced:
        _command(state, traced["command"].strip())
        return
    if not line.strip():
        state.in_listing = False
        state.last_frame = None
        return
    if _disassembly(state, line):
        return
    state.in_listing = False
    if line[:1].isspace() and state.last_frame is not None:
        _continue_frame(state, line)  # a frame wrapped onto the next line by the terminal
        return
    state.last_frame = None
    stripped = line.strip()
    for handler in (_frame, _thread, _register, _stop, _about):
        if handler(state, stripped):
            return


def _command(state: _State, command: str) -> None:
    state.command = command
    if command.split(" ", 1)[0] in _RESUME:
        state.running = True
    state.in_listing = False
    state.last_frame = None
    if command not in _BACKTRACE and not command.startswith(("bt ", "backtrace ")):
        state.current = None


def _frame(state: _State, line: str) -> bool:
    match = _FRAME.match(line)
    if not match:
        return False
    if state.current is None:
        if not state.command.startswith(_BACKTRACE):
            return True  # `frame`, `up`: one frame again, not a stack
        state.current = 0  # a plain `bt`: the thread gdb had selected
        state.threads.setdefault(0, DebugThread(tid=None)).frames = []
    thread = state.threads[state.current]
    index = int(match["index"])
    if any(f.index == index for f in thread.frames):
        return True
    frame = Frame(index=index)
    _fill_frame(frame, match["text"])
    thread.frames.append(frame)
    state.last_frame, state.last_text = frame, match["text"]
    return True


def _continue_frame(state: _State, line: str) -> None:
    state.last_text = f"{state.last_text} {line.strip()}"
    _fill_frame(state.last_frame, state.last_text)


def _fill_frame(frame: Frame, text: str) -> None:
    match = _FRAME_TEXT.match(text.strip())
    if not match:
        frame.function = text.strip()
        return
    frame.pc = match["pc"]
    frame.function = match["function"]
    frame.library = match["library"]
    frame.file = match["file"]
    frame.line = int(match["line"]) if match["line"] else None


def _thread(state: _State, line: str) -> bool:
    match = _THREAD.match(line)
    if not match:
        return False
    number = int(match["number"])
    target = match["target"]
    thread = state.threads.setdefault(number, DebugThread(tid=None))
    thread.tid = lwp_from_target_id(target)
    name = _THREAD_NAME.search(target)
    if name:
        thread.name = name["name"]
    thread.frames = []
    state.current = number
    return True


def _register(state: _State, line: str) -> bool:
    match = _REGISTER.match(line)
    if not match:
        return False
    state.registers[match["name"]] = match["value"]
    return True


def _stop(state: _State, line: str) -> bool:
    match = _SIGNAL.match(line)
    if not match:
        return False
    state.info.stop_reason = f"signal {match['signal']}, {match['description']}"
    state.info.signal = match["signal"]
    state.running = False
    return True


def _about(state: _State, line: str) -> bool:
    """Lines about the session: version, configuration, architecture, attach, detach."""
    info = state.info
    if (match := _VERSION.match(line)) and info.version is None:
        info.version = match["version"]
    elif match := _CONFIGURED.match(line):
        state.system, state.machine = platform_from_triple(match["triple"])
    elif match := _ARCHITECTURE.match(line):
        arch = match["current"] or match["arch"]
        state.machine = _GDB_MACHINES.get(arch, state.machine)
    elif match := _ATTACHING.match(line):
        info.pid = int(match["pid"])
        state.attached = True
        if match["exe"]:
            state.executable = match["exe"]
    elif match := _DETACHING.match(line):
        info.pid = info.pid or int(match["pid"])
        state.executable = state.executable or match["exe"]
    elif match := _INFERIOR.match(line):
        info.pid = info.pid or int(match["pid"])
        state.running = False
        if match["what"].startswith("exited"):  # "exited normally", "exited with code 01"
            info.stop_reason, info.signal = match["what"], None
    else:
        return False
    return True


def _disassembly(state: _State, line: str) -> bool:
    match = _DISASSEMBLY.match(line)
    if not match:
        if line.startswith("Dump of assembler code"):
            state.listings.append([])
            state.in_listing = True
            return True
        return line.startswith("End of assembler dump")
    if not state.in_listing:
        state.listings.append([])
        state.in_listing = True
    parts = _ANNOTATION.split(match["text"], maxsplit=1)
    text, comment = parts[0], parts[1] if len(parts) > 1 else ""
    state.listings[-1].append((bool(match["arrow"]), normalise_instruction(text), comment))
    return True


def _instruction_and_message(listings):
    """(at pc, before pc, annotated string) of the last listing with ``=>``; a listing that
    shows the instruction before the pc wins."""
    marked = [x for x in listings if any(arrow for arrow, _, _ in x)]
    if not marked:
        return None, None, None
    with_before = [x for x in marked if not x[0][0]]
    listing = (with_before or marked)[-1]
    pc_line = next(i for i, (arrow, _, _) in enumerate(listing) if arrow)
    before = listing[pc_line - 1][1] if pc_line else None
    message = None
    for _arrow, _text, comment in listing[: pc_line + 1]:
        message = string_literal(comment) or message
    return listing[pc_line][1], before, message
