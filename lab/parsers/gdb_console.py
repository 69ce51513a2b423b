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
    ConsoleState,
    Listing,
    Parsed,
    finish,
    is_new_frame,
    listing_line,
    platform_from_triple,
    read_console,
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
# A frame's text is "[0xPC in ]FUNCTION[ (ARGS)][ at FILE:LINE][ from LIBRARY]", split by
# split_frame_text; the one regex that did it backtracked in time polynomial in its length.
_PC_IN = re.compile(r"(?P<pc>0x[0-9a-fA-F]+) in ")
_DIGITS = re.compile(r"\d*")
_REGISTER = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\s+(?P<value>0x[0-9a-fA-F]+)(?:\s|$)")
_DISASSEMBLY = re.compile(
    r"^(?P<arrow>=>)?\s+(?P<address>0x[0-9a-fA-F]+)(?: <[^>]*>)?:\s+(?P<text>\S.*)$"
)
# What gdb appends to an instruction: "  # 0x7f.. <sym>" (x86), "  // #1" (aarch64). Only
# from the start of a run of blanks: tried inside a long run, it rescanned the run each time.
_ANNOTATION = re.compile(r"(?<!\s)\s{2,}(?:#|//)\s")
_BACKTRACE = ("bt", "backtrace", "where", "thread apply all bt", "thread apply all backtrace")
_RESUME = ("continue", "c", "cont", "run", "r", "start", "step", "next", "finish")
_GDB_MACHINES = {"i386:x86-64": "x86_64", "aarch64": "aarch64"}


@dataclass
class _State(ConsoleState):
    attached: bool = False
    last_frame: Frame | None = None  # the frame a wrapped continuation line belongs to
    last_parts: list[str] = field(default_factory=list)  # its text, line by line


def parse_gdb_console(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of a GDB console transcript (``name`` is ``"gdb"``)."""
    return read_gdb_console(text, transcript).info


def read_gdb_console(text: str, transcript: str | None = None) -> Parsed:
    """Everything a GDB console transcript says: DebuggerInfo, platform, executable, notes."""
    state = _State(info=DebuggerInfo(name="gdb", transcript=transcript))
    read_console(state, text, PROMPT, _command, _line)
    _end_frame(state)
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
    return finish(state)


def _line(state: _State, line: str) -> None:
    traced = _TRACED_COMMAND.match(line)
    if traced:
        _command(state, traced["command"].strip())
        return
    if not line.strip():
        state.in_listing = False
        _end_frame(state)
        return
    if _disassembly(state, line):
        return
    state.in_listing = False
    if line[:1].isspace() and state.last_frame is not None:
        state.last_parts.append(line.strip())  # a frame wrapped onto the next line
        return
    _end_frame(state)
    stripped = line.strip()
    for handler in (_frame, _thread, _register, _stop, _about):
        if handler(state, stripped):
            return


def _command(state: _State, command: str) -> None:
    state.command = command
    if command.split(" ", 1)[0] in _RESUME:
        state.running = True
    state.in_listing = False
    _end_frame(state)
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
    index = int(match["index"])
    if not is_new_frame(state, state.current, index):
        return True
    frame = Frame(index=index)
    _fill_frame(frame, match["text"])
    state.threads[state.current].frames.append(frame)
    state.last_frame, state.last_parts = frame, [match["text"]]
    return True


def _end_frame(state: _State) -> None:
    """The frame's wrapped lines are over: read its text again, whole (once, not per line)."""
    if state.last_frame is not None and len(state.last_parts) > 1:
        _fill_frame(state.last_frame, " ".join(state.last_parts))
    state.last_frame, state.last_parts = None, []


def _fill_frame(frame: Frame, text: str) -> None:
    split = split_frame_text(text.strip())
    if split is None:
        frame.function = text.strip()
        return
    frame.pc, frame.function, _args, frame.file, line, frame.library = split
    frame.line = int(line) if line else None


def split_frame_text(text: str):
    r"""``(pc, function, args, file, line, library)`` of a frame's text (after ``#N``), each
    None where absent; None for an empty text.

    What ``^(?:(0x[0-9a-fA-F]+) in )?(.+?)(?: \((.*)\))?(?: at (.+):(\d+))?(?: from (.+))?$``
    matches, in one pass: the function is the shortest prefix after which the rest parses;
    the arguments run to the last ")" and the file to the last ":LINE" after which it still
    does.
    """
    pc_in = _PC_IN.match(text)
    pc = pc_in["pc"] if pc_in and len(text) > pc_in.end() else None
    rest = text[pc_in.end():] if pc else text
    if not rest:
        return None
    size = len(rest)

    def library_from(at: int) -> bool:  # "( from LIBRARY)?$" from here
        return at == size or (rest.startswith(" from ", at) and size - at > 6)

    colon, line_end = rest.rfind(":"), -1
    while colon >= 0:  # the last ":LINE" that a library or the end follows
        line_end = _DIGITS.match(rest, colon + 1).end()
        if line_end > colon + 1 and library_from(line_end):
            break
        colon = rest.rfind(":", 0, colon)

    def located_from(at: int) -> bool:  # "( at FILE:LINE)?( from LIBRARY)?$" from here
        return (rest.startswith(" at ", at) and colon >= at + 5) or library_from(at)

    close = rest.rfind(")")
    while close >= 0 and not located_from(close + 1):
        close = rest.rfind(")", 0, close)

    def tail_from(at: int) -> bool:
        return (rest.startswith(" (", at) and close >= at + 2) or located_from(at)

    cut = rest.find(" ", 1)
    while cut >= 0 and not tail_from(cut):
        cut = rest.find(" ", cut + 1)
    end = cut = size if cut < 0 else cut
    args = file = line = library = None
    if rest.startswith(" (", end) and close >= end + 2:
        args, end = rest[end + 2:close], close + 1
    if rest.startswith(" at ", end) and colon >= end + 5:
        file, line, end = rest[end + 4:colon], rest[colon + 1:line_end], line_end
    if end < size:
        library = rest[end + 6:]
    return pc, rest[:cut], args, file, line, library


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
            state.listings.append(Listing())
            state.in_listing = True
            return True
        return line.startswith("End of assembler dump")
    parts = _ANNOTATION.split(match["text"], maxsplit=1)
    text, comment = parts[0], parts[1] if len(parts) > 1 else ""
    listing_line(state, text, comment, at_pc=bool(match["arrow"]), first_pc=True)
    return True
