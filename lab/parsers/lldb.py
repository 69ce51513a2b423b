"""Parse an LLDB console transcript — saved by the lab or pasted from a terminal — into evidence.

Understood: ``(lldb)`` prompts with echoed commands, ``Process N stopped`` blocks, thread
headers (``thread list``, ``bt all``) in today's format (``* thread #1, name = 'python', stop
reason = ...``), in the older one (``* thread #1: tid = 18364, 0x... libc.so.6`raise(sig=6) +
55 at raise.c:55, name = 'python', stop reason = signal SIGABRT``, frames following) and in
Xcode's (``queue = 'com.apple.main-thread'``), ``frame #N`` lines (with ``at file:line``),
``register read`` blocks and ``disassemble`` listings (their ``->`` line and string
annotations). Anything else — the shell, the program's own output, lldb's warnings — is
skipped. Pure: text in, data out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.transcript import (
    ConsoleState,
    Parsed,
    finish,
    frame_arguments,
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
_QUEUE = re.compile(r"\bqueue = '(?P<queue>[^']*)'")
# Where the older header's frame text ends: the first of these after "tid = N, ".
_HEADER_FIELDS = (", name = '", ", queue = '", ", activity = '", ", stop reason = ")
_STOP_REASON = re.compile(r"\bstop reason = (?P<reason>.+)$")
_EXCEPTION = re.compile(r"^(?P<type>EXC_[A-Z_]+) \((?P<codes>[^()]*)\)")
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
    fresh: bool = False  # an older-format header was read and none of its frames yet
    header_frames: dict[int, Frame] = field(default_factory=dict)  # the frame in that header
    old_format: bool = False  # frames followed a `thread #N: tid = ...` header
    queues: dict[int, str] = field(default_factory=dict)  # Xcode's queue = '...', per thread


def parse_lldb_transcript(text: str, transcript: str | None = None) -> DebuggerInfo:
    """The DebuggerInfo of an LLDB transcript (``name`` is ``"lldb"``)."""
    return read_lldb_transcript(text, transcript).info


def read_lldb_transcript(text: str, transcript: str | None = None) -> Parsed:
    """Everything an LLDB transcript says: the DebuggerInfo, platform, executable, lab notes."""
    state = _State(info=DebuggerInfo(name="lldb", transcript=transcript))
    read_console(state, text, PROMPT, _command, _line)
    info = state.info
    for number, frame in state.header_frames.items():
        if not state.threads[number].frames:  # `thread list` alone: the header's frame
            state.threads[number].frames = [frame]
    info.threads = [t for _, t in sorted(state.threads.items()) if t.frames or t.tid]
    info.registers = state.registers
    info.signal = signal_of(info.stop_reason)
    parsed = finish(state, message_after_pc=True)
    if parsed.system is None and any((f.library or "").endswith(".dylib")
                                     for t in info.threads for f in t.frames[:3]):
        parsed.system = "Darwin"  # an Xcode console names no architecture; its images do
    lone = info.threads[0] if len(info.threads) == 1 else None
    if lone and lone.tid is None and info.pid and parsed.system != "Darwin":
        lone.tid = info.pid  # `bt all` shows no tid; on Linux a lone thread's tid is the pid
    parsed.kind = "lldb"
    parsed.format = "LLDB (older format: thread #N: tid = ...)" if state.old_format else "LLDB"
    if state.queues:
        parsed.facts["queues"] = {str(state.threads[n].tid): q for n, q in state.queues.items()}
    exception = _EXCEPTION.match(info.stop_reason or "")
    if exception:  # "EXC_BAD_ACCESS (code=1, address=0x10)": its type and codes apart
        codes = dict(part.partition("=")[::2] for part in exception["codes"].split(", ")
                     if "=" in part)
        parsed.facts["exception"] = {"type": exception["type"], **codes}
    return parsed


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
        if state.current is not None:
            thread = state.threads[state.current]
            if state.fresh:
                thread.frames, state.fresh, state.old_format = [], False, True
            if is_new_frame(state, state.current, int(frame["index"])):
                _frame(thread, frame, state.args.setdefault(state.current, {}))
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
    state.in_registers = state.fresh = False
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
    fields = _fields_at(rest)
    name = _NAME.search(rest, fields)
    if name:
        thread.name = name["name"]
    queue = _QUEUE.search(rest, fields)
    if queue:
        state.queues[number] = queue["queue"]
    reason = _STOP_REASON.search(rest, fields)
    if match["selected"] and reason:
        state.info.stop_reason = reason["reason"].strip()
    state.current = number
    if rest.startswith(":"):
        # `thread list`, or a backtrace in the older format: the header holds frame 0, and
        # the frames that follow (if any) replace the thread's listing.
        state.fresh = True
        _header_frame(state, number, rest, fields)
        return
    thread.frames, state.fresh = [], False  # a new listing replaces an older one


def _fields_at(rest: str) -> int:
    """Where the thread's own fields (name, queue, stop reason) start in a header: after the
    frame an older-format header holds, whose arguments may contain anything."""
    ends = [at for field_ in _HEADER_FIELDS if (at := rest.find(field_)) >= 0]
    return min(ends) if ends else len(rest)


def _header_frame(state: _State, number: int, rest: str, fields: int) -> None:
    """``: tid = 18364, 0x00007f... libc.so.6`raise(sig=6) + 55 at raise.c:55``: frame 0."""
    _, _, where = rest[:fields].partition(", ")
    match = _FRAME.match(f"frame #0: {where.strip()}") if where.startswith("0x") else None
    if match:
        frame_args: dict[int, str] = {}
        holder = DebugThread(tid=None)
        _frame(holder, match, frame_args)
        state.header_frames[number] = holder.frames[0]
        if frame_args:
            state.args.setdefault(number, {}).setdefault(0, frame_args[0])


def _frame(thread: DebugThread, match: re.Match, args: dict[int, str]) -> None:
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
        function = where.rsplit(" [inlined] ", 1)[-1]
        arguments = frame_arguments(function)
        if arguments:
            args[frame.index] = arguments
        frame.function = _function_name(function)
    thread.frames.append(frame)


def _function_name(text: str) -> str:
    """Drop the argument values lldb shows for frames with debug info: ``f(a=1)`` -> ``f``.

    A C++ signature without values (``f(int, char)``) is part of the name and stays.
    """
    arguments = frame_arguments(text)
    if arguments is None or len(arguments) + 2 >= len(text):
        return text  # no values shown, or nothing but the parentheses
    return text[:len(text) - len(arguments) - 2]


def _disassembly(state: _State, line: str) -> bool:
    match = _DISASSEMBLY.match(line)
    if not match:
        return False
    text, _, comment = match["text"].partition(";")
    listing_line(state, text, comment, at_pc=bool(match["arrow"]), first_pc=False)
    return True
