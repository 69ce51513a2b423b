"""Parse a GDB console transcript — ``gdb --batch`` output or a terminal session — into evidence.

Understood: ``(gdb)`` prompts and ``+command`` echoes (``set trace-commands on``), the attach
and stop lines (``Program received signal SIGTRAP, Trace/breakpoint trap.``), ``Thread N
(...)`` headers with their ``#N`` frames (``bt``, ``bt full``, ``thread apply all bt [full]``),
frames wrapped onto indented lines and cut by the pager's prompt, ``info threads`` tables,
``py-bt`` / ``py-bt-full`` (alone, after a thread header, or mixed with the rest), ``info
registers`` lines and ``x/i`` / ``disassemble`` listings (``=>`` marks the pc). GDB/MI
transcripts, which the lab's own GDB driver writes, are read by ``lab.parsers.gdb_mi``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lab.evidence import DebuggerInfo, DebugThread, Frame, PythonFrame
from lab.parsers.gdb_mi import lwp_from_target_id
from lab.parsers.pybt import py_bt_full_frame, python_frame_of_line
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
_INFO_THREADS = re.compile(r"^\s*Id\s+Target Id\s+Frame\s*$")
_INFO_ROW = re.compile(r"^(?P<selected>\*)?\s*(?P<number>\d+)\s+(?P<target>Thread 0x[0-9a-fA-F]+"
                       r"(?: \(LWP \d+\))?|LWP \d+|process \d+)(?: \"(?P<name>[^\"]*)\")?"
                       r"\s+(?P<frame>\S.*)$")
_SELECT = re.compile(r"^(?:thread|t) (?P<number>\d+)$")
_PY_TRACEBACK = "Traceback (most recent call first):"
# What python-gdb.py writes where it has no frame to show: no frame, not the end of a listing.
_PY_NOT_FRAMES = ("Waiting for the GIL", "Garbage-collecting", "(unable to read python",
                  "Unable to locate python frame", "(frame information optimized out)")
# The two pager prompts a pasted terminal session holds: GDB 9 and later, and older ones.
PAGERS = ("--Type <RET> for more, q to quit, c to continue without paging--",
          "---Type <return> to continue, or q <return> to quit---")
# gdb wraps a long frame line onto lines indented by 4 spaces; `bt full` indents locals by 8.
LOCALS_INDENT = 8
_BACKTRACE = ("bt", "backtrace", "where", "thread apply all bt", "thread apply all backtrace")
_RESUME = ("continue", "c", "cont", "run", "r", "start", "step", "next", "finish")
_GDB_MACHINES = {"i386:x86-64": "x86_64", "aarch64": "aarch64"}


@dataclass
class _State(ConsoleState):
    attached: bool = False
    last_frame: Frame | None = None  # the frame a wrapped continuation line belongs to
    last_parts: list[str] = field(default_factory=list)  # its text, line by line
    last_args: dict[int, str] | None = None  # where the frame's arguments go once whole
    fresh: bool = False  # a thread header was read and none of its native frames yet
    header: int | None = None  # that header's thread, for a py-bt that follows it
    selected: int | None = None  # the thread gdb had selected (`*` in info threads, `thread N`)
    in_info_threads: bool = False
    info_frames: dict[int, Frame] = field(default_factory=dict)  # info threads' frame per thread
    info_args: dict[int, dict[int, str]] = field(default_factory=dict)
    in_python: bool = False  # inside a py-bt listing: its indented lines are not frame wraps
    python_open: bool = False  # a Python listing is being read (py-bt-full has no header)
    python: dict[int | None, list[PythonFrame]] = field(default_factory=dict)  # None: selected
    python_target: int | None = None


def parse_gdb_console(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of a GDB console transcript (``name`` is ``"gdb"``)."""
    return read_gdb_console(text, transcript).info


def read_gdb_console(text: str, transcript: str | None = None) -> Parsed:
    """Everything a GDB console transcript says: DebuggerInfo, platform, executable, notes."""
    state = _State(info=DebuggerInfo(name="gdb", transcript=transcript))
    read_console(state, text, PROMPT, _command, _line, pagers=PAGERS)
    _end_frame(state)
    info = state.info
    _gather(state)
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
    parsed = finish(state)
    parsed.kind, parsed.format = "gdb", "GDB console"
    return parsed


def _gather(state: _State) -> None:
    """Give each listing to its thread: a plain `bt` (thread 0 here) and a bare py-bt belong to
    the thread gdb had selected; info threads' frame stands for a thread with no backtrace."""
    threads = state.threads
    for number in state.info_frames:
        threads.setdefault(number, DebugThread(tid=None))
    selected = _selected(state)
    plain = threads.get(0)
    if plain is not None and selected not in (None, 0):
        own = threads[selected]
        args = state.args.pop(0, {})
        if not own.frames:
            own.frames = plain.frames
        state.args[selected] = {**args, **state.args.get(selected, {})}
        del threads[0]
    for number, frame in state.info_frames.items():
        if not threads[number].frames:
            threads[number].frames = [frame]
            state.args[number] = state.info_args.get(number, {})
    for number, frames in state.python.items():
        key = (selected if selected is not None else 0) if number is None else number
        threads.setdefault(key, DebugThread(tid=None)).python_frames = frames


def _selected(state: _State) -> int | None:
    """The selected thread's number: as gdb marked or was told, else the one whose LWP is the
    process (the thread gdb selects on attach), else the lowest number."""
    numbered = [number for number in state.threads if number]
    if state.selected in numbered:
        return state.selected
    pid = state.info.pid
    own = next((n for n in numbered if pid and state.threads[n].tid == pid), None)
    return own if own is not None else min(numbered, default=None)


def _line(state: _State, line: str) -> None:
    traced = _TRACED_COMMAND.match(line)
    if traced:
        _command(state, traced["command"].strip())
        return
    if not line.strip():
        state.in_listing = state.in_info_threads = state.in_python = False
        state.python_open = False
        _end_frame(state)
        return
    if _disassembly(state, line):
        return
    state.in_listing = False
    if state.in_python and line.startswith("  "):
        _python_line(state, line)  # a frame of py-bt, or the source line under one
        return
    state.in_python = False
    indent = len(line) - len(line.lstrip())
    if 0 < indent < LOCALS_INDENT and state.last_frame is not None:
        state.last_parts.append(line.strip())  # a frame wrapped onto the next line
        return
    _end_frame(state)
    if indent >= LOCALS_INDENT:
        return  # a local variable of `bt full`, or a piece of its value
    stripped = line.strip()
    if stripped == _PY_TRACEBACK:
        _python_start(state)
        return
    for handler in (_frame, _thread, _info_thread, _register, _stop, _about):
        if handler(state, stripped):
            return


def _command(state: _State, command: str) -> None:
    state.command = command
    if command.split(" ", 1)[0] in _RESUME:
        state.running = True
    state.in_listing = state.in_info_threads = state.in_python = False
    state.header, state.python_open = None, False
    _end_frame(state)
    if select := _SELECT.match(command):
        state.selected = int(select["number"])
    if command not in _BACKTRACE and not command.startswith(("bt ", "backtrace ")):
        state.current = None


def _frame(state: _State, line: str) -> bool:
    match = _FRAME.match(line)
    if not match:
        return False
    text = match["text"]
    python = py_bt_full_frame(text)
    if python is not None or text.startswith(_PY_NOT_FRAMES):
        if python is not None:
            _python_frame(state, python, start=not state.python_open)
        state.in_python = True  # the source line under it is indented: not a frame's wrap
        return True
    if state.current is None:
        if state.command and not state.command.startswith(_BACKTRACE):
            return True  # `frame`, `up`: one frame again, not a stack
        state.current = 0  # a plain `bt` (or pasted frames alone): the selected thread
        state.threads.setdefault(0, DebugThread(tid=None)).frames = []
    thread = state.threads[state.current]
    if state.fresh:
        thread.frames, state.fresh = [], False  # a new listing of this thread's stack
    state.header, state.python_open = None, False
    index = int(match["index"])
    if not is_new_frame(state, state.current, index):
        return True
    frame = Frame(index=index)
    thread.frames.append(frame)
    _open_frame(state, frame, text, state.args.setdefault(state.current, {}))
    return True


def _open_frame(state: _State, frame: Frame, text: str, args: dict[int, str]) -> None:
    _fill_frame(frame, text, args)
    state.last_frame, state.last_parts, state.last_args = frame, [text], args


def _end_frame(state: _State) -> None:
    """The frame's wrapped lines are over: read its text again, whole (once, not per line)."""
    if state.last_frame is not None and len(state.last_parts) > 1:
        _fill_frame(state.last_frame, " ".join(state.last_parts), state.last_args)
    state.last_frame, state.last_parts, state.last_args = None, [], None


def _fill_frame(frame: Frame, text: str, args: dict[int, str] | None = None) -> None:
    split = split_frame_text(text.strip())
    if split is None:
        frame.function = text.strip()
        return
    frame.pc, frame.function, arguments, frame.file, line, frame.library = split
    frame.line = int(line) if line else None
    if args is not None and arguments:
        args[frame.index] = arguments


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
    # Its frames are replaced when frames follow: `thread apply all py-bt` lists the threads
    # again with no native frame, and must not wipe what `thread apply all bt` gave.
    state.current, state.fresh, state.header = number, True, number
    state.python_open = False
    return True


def _info_thread(state: _State, line: str) -> bool:
    """A row of ``info threads``: the thread, its name, and its innermost frame."""
    if _INFO_THREADS.match(line):
        state.in_info_threads = True
        return True
    match = _INFO_ROW.match(line) if state.in_info_threads else None
    if not match:
        state.in_info_threads = False
        return False
    number = int(match["number"])
    thread = state.threads.setdefault(number, DebugThread(tid=None))
    thread.tid = thread.tid or lwp_from_target_id(match["target"])
    thread.name = thread.name or match["name"]
    if match["selected"]:
        state.selected = number
    frame = state.info_frames[number] = Frame(index=0)
    _open_frame(state, frame, match["frame"], state.info_args.setdefault(number, {}))
    return True


def _python_start(state: _State) -> None:
    """``Traceback (most recent call first):``: py-bt of the thread whose header it follows,
    or of the selected thread."""
    state.in_python = state.python_open = True
    state.python_target = state.header
    state.python[state.header] = []


def _python_line(state: _State, line: str) -> None:
    frame = python_frame_of_line(line)
    if frame is not None:
        _python_frame(state, frame, start=False)


def _python_frame(state: _State, frame: PythonFrame, start: bool) -> None:
    if start:  # a py-bt-full listing has no Traceback line: its first frame opens it
        state.python_target = state.header
        state.python[state.header] = []
        state.python_open = True
    state.python.setdefault(state.python_target, []).append(frame)


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
