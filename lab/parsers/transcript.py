"""What the console transcript parsers share: state, line loop, listings, notes, platform."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.gdb_mi import is_syscall_instruction, split_note

# macOS reports a Mach exception, not a signal; the BSD signal each one becomes (the kernel's
# ux_exception() in bsd/uxkern/ux_exception.c).
EXCEPTION_SIGNALS = {
    "EXC_BREAKPOINT": "SIGTRAP",
    "EXC_BAD_ACCESS": "SIGSEGV",
    "EXC_BAD_INSTRUCTION": "SIGILL",
    "EXC_ARITHMETIC": "SIGFPE",
    "EXC_CRASH": "SIGABRT",
    "EXC_SOFTWARE": "SIGABRT",
}
TRAP_MNEMONICS = ("int3", "brk", "bkpt", "udf", "ud2")
_SIGNAL = re.compile(r"\b(SIG[A-Z0-9]+)\b")
_PAGER_WORD = "Type <"  # in both of GDB's pager prompts: one search skips a line without one
# What begins a line of its own after a pager's prompt, rather than continuing the cut one.
_LINE_STARTS = ("#", "Thread ", "(gdb)", "[", "Traceback ")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours of a terminal session saved by script(1)
# A c-string, its loop unrolled: "(?:[^"\\]|\\.)*" tried from every quote of a line full
# of quotes and backslashes took time quadratic in the line's length.
_STRING_LITERAL = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"')

# Target triples ("x86_64-pc-linux-gnu", "arm64-apple-macosx-") and GDB's architecture names.
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "i386:x86-64": "x86_64",
             "aarch64": "aarch64", "arm64": "arm64", "arm64e": "arm64"}
_SYSTEMS = (("linux", "Linux"), ("apple", "Darwin"), ("macos", "Darwin"), ("darwin", "Darwin"),
            ("freebsd", "FreeBSD"), ("windows", "Windows"))


@dataclass
class Parsed:
    """A transcript's DebuggerInfo and what else it says about where it was taken."""

    info: DebuggerInfo
    system: str | None = None  # as platform.system() names it: "Linux", "Darwin"
    machine: str | None = None  # as the transcript names it: "x86_64", "aarch64", "arm64"
    executable: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    running: bool = False  # the transcript ends after a `continue`, before any stop: truncated
    kind: str = ""  # "gdb", "lldb", "crash" or "py-spy": which parser read it
    format: str = ""  # in words, e.g. "GDB console", "LLDB (thread #N: tid = ... format)"
    # The argument text of native frames, per thread (its position in info.threads) and frame
    # index: what a futex wait's timeout is read from (``abstime=0x0``). The Frame dataclass of
    # the evidence has no place for it, and needs none: it is read here, not kept.
    args: dict[int, dict[int, str]] = field(default_factory=dict)
    # The same for Python frames (py-spy --locals: ``timeout=None``).
    python_args: dict[int, dict[int, str]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # what else the text holds (a report's)
    text_signs: list[str] = field(default_factory=list)  # fork phrases found in the text


@dataclass
class Listing:
    """One disassembly listing: (instruction, annotation) lines and the line of the pc."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    pc_line: int | None = None


@dataclass
class ConsoleState:
    """What a console parser knows while it reads a transcript, line by line."""

    info: DebuggerInfo
    system: str | None = None
    machine: str | None = None
    executable: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    threads: dict[int, DebugThread] = field(default_factory=dict)
    current: int | None = None  # the thread number whose frames are being listed
    command: str = ""
    registers: dict[str, str] = field(default_factory=dict)
    listings: list[Listing] = field(default_factory=list)
    in_listing: bool = False
    running: bool = False
    # Per thread number: its frame list and the indexes in it, so that a repeated frame line
    # is found in a set, not by a scan of the thread's frames per line.
    indexes: dict[int, tuple[list[Frame], set[int]]] = field(default_factory=dict)
    args: dict[int, dict[int, str]] = field(default_factory=dict)  # thread number -> index -> args


def read_console(state: ConsoleState, text: str, prompt: str,
                 command: Callable[[ConsoleState, str], None],
                 other: Callable[[ConsoleState, str], None],
                 pagers: tuple[str, ...] = ()) -> None:
    """Feed every line of ``text`` to ``state``: the lab's notes are kept, a line starting with
    ``prompt`` goes to ``command`` (what follows the prompt), any other line to ``other``.
    The ``pagers`` prompts of a paged terminal session are taken out first (``unpaged``)."""
    lines = clean_lines(text)
    for line in unpaged(lines, pagers) if pagers else lines:
        note = split_note(line)
        if note is not None:
            state.notes[note[0]] = note[1]
        elif line.startswith(prompt):
            command(state, line[len(prompt):].strip())
        else:
            other(state, line)


def unpaged(lines: Iterable[str], pagers: tuple[str, ...]) -> Iterator[str]:
    """``lines`` without a pager's prompts (``--Type <RET> for more...``), and without the
    answer typed after one. A prompt that cut a line in two (a long line reached the bottom of
    the screen) glues the two halves together again; one on a line of its own just goes."""
    carry = ""
    for line in lines:
        found = _first_pager(line, pagers) if _PAGER_WORD in line else None
        while found is not None:
            at, size = found
            if line[:at].strip():
                carry += line[:at]
            line = line[at + size:]
            if len(line.strip()) <= 1:  # nothing, or the "c" / "q" answered to it
                line = None
                break
            found = _first_pager(line, pagers)
        if line is None:
            continue
        if carry:
            if not line.strip() or line.startswith(_LINE_STARTS):
                yield carry.rstrip()
            else:
                line = carry + line
            carry = ""
        yield line
    if carry:
        yield carry.rstrip()


def _first_pager(line: str, pagers: tuple[str, ...]) -> tuple[int, int] | None:
    hits = [(at, len(pager)) for pager in pagers if (at := line.find(pager)) >= 0]
    return min(hits) if hits else None


def is_new_frame(state: ConsoleState, number: int, index: int) -> bool:
    """Whether thread ``number``'s current stack listing lacks frame ``index`` (a repeated
    line keeps the first); the index is remembered as taken."""
    frames = state.threads[number].frames
    known = state.indexes.get(number)
    if known is None or known[0] is not frames:  # a new listing replaced the thread's frames
        known = state.indexes[number] = (frames, {frame.index for frame in frames})
    if index in known[1]:
        return False
    known[1].add(index)
    return True


def listing_line(state: ConsoleState, instruction: str, annotation: str, at_pc: bool,
                 first_pc: bool) -> None:
    """Add one disassembled instruction to the open listing (opening one if none is).
    ``first_pc``: a listing with two pc marks keeps the first, else the last."""
    if not state.in_listing:
        state.listings.append(Listing())
        state.in_listing = True
    listing = state.listings[-1]
    if at_pc and (listing.pc_line is None or not first_pc):
        listing.pc_line = len(listing.lines)
    listing.lines.append((normalise_instruction(instruction), annotation))


def instruction_and_message(listings: list[Listing], message_after_pc: bool):
    """(instruction at pc, the one before it, the string the listing annotates) of the last
    listing that marks the pc, preferring one that shows what came before the pc. The string
    loaded closest before the pc is the one a crash reporter shows; with ``message_after_pc``
    a listing without one there gives its first string after the pc."""
    marked = [listing for listing in listings if listing.pc_line is not None]
    if not marked:
        return None, None, None
    listing = next((x for x in reversed(marked) if x.pc_line), marked[-1])
    at_pc = listing.lines[listing.pc_line][0]
    before = listing.lines[listing.pc_line - 1][0] if listing.pc_line else None
    message = None
    for _text, annotation in listing.lines[: listing.pc_line + 1]:
        message = string_literal(annotation) or message
    if message is None and message_after_pc:
        message = next((string_literal(a) for _, a in listing.lines if string_literal(a)), None)
    return at_pc, before, message


def finish(state: ConsoleState, message_after_pc: bool = False) -> Parsed:
    """The common end of a console parser: the instruction at the stop, the lab's notes (pid,
    error) over what the text said, and the machine."""
    at_pc, before_pc, message = instruction_and_message(state.listings, message_after_pc)
    info = state.info
    info.message = message
    info.instruction = blocking_instruction(at_pc, before_pc, info.signal)
    if state.notes.get("pid", "").isdigit():
        info.pid = int(state.notes["pid"])
    info.error = state.notes.get("error", info.error)
    machine = state.machine or machine_from_registers(info.registers)
    return Parsed(info=info, system=state.system, machine=machine,
                  executable=state.executable, notes=state.notes, running=state.running,
                  args=args_by_position(state.threads, info.threads, state.args))


def args_by_position(numbered: dict[int, DebugThread], threads: list[DebugThread],
                     args: dict[int, dict[int, str]]) -> dict[int, dict[int, str]]:
    """``args`` keyed by thread number, re-keyed by each thread's position in ``threads``."""
    position = {id(thread): at for at, thread in enumerate(threads)}
    return {position[id(thread)]: args[number] for number, thread in numbered.items()
            if number in args and id(thread) in position}


def frame_arguments(text: str) -> str | None:
    """The argument list of a frame's function text, ``f(a=1, b=2)`` -> ``a=1, b=2``; None when
    it shows none. The last balanced parenthesis pair that holds a ``=`` (one pass)."""
    if not text.endswith(")"):
        return None
    depth = 0
    for position in range(len(text) - 1, -1, -1):
        if text[position] == ")":
            depth += 1
        elif text[position] == "(":
            depth -= 1
            if depth == 0:
                inner = text[position + 1:-1]
                return inner if "=" in inner else None
    return None


def clean_lines(text: str) -> Iterator[str]:
    """The transcript's lines as a terminal showed them: without colour codes or trailing
    whitespace, and where a carriage return went back to the line's start (a terminal's
    bracketed-paste codes then the next output: ``ESC[?2004l\r    nargsf=...``), the text
    written last. A text with no newline at all has carriage returns for line ends."""
    for line in text.split("\n") if "\n" in text else text.splitlines():
        line = _ANSI.sub("", line) if "\x1b" in line else line
        if "\r" in line:
            line = next((part for part in reversed(line.split("\r")) if part.strip()), "")
        yield line.rstrip()


def platform_from_triple(triple: str) -> tuple[str | None, str | None]:
    """``"arm64-apple-macosx-"`` -> ("Darwin", "arm64"); unknown parts are None."""
    triple = triple.strip().strip(".").lower()
    arch = triple.split("-")[0]
    machine = _MACHINES.get(triple) or _MACHINES.get(arch)
    system = next((name for key, name in _SYSTEMS if key in triple), None)
    return system, machine


def machine_from_registers(registers: dict[str, str]) -> str | None:
    """Guess the machine from register names alone (rip: x86_64; x8 and pc: an arm64 CPU)."""
    if "rip" in registers:
        return "x86_64"
    if "x8" in registers and "pc" in registers:
        return "aarch64"
    return None


def signal_of(stop_reason: str | None) -> str | None:
    """``"signal SIGTRAP"`` -> SIGTRAP, ``"EXC_BREAKPOINT (code=1, ...)"`` -> SIGTRAP."""
    if not stop_reason:
        return None
    exception = stop_reason.split()[0]
    if exception in EXCEPTION_SIGNALS:
        return EXCEPTION_SIGNALS[exception]
    match = _SIGNAL.search(stop_reason)
    return match.group(1) if match and "signal" in stop_reason.lower() else None


def normalise_instruction(text: str) -> str:
    """``"brk    #0x1 ; comment"`` -> ``"brk #0x1"``: one space, no debugger annotation."""
    return " ".join(text.split(";", 1)[0].split())


def is_trap_instruction(text: str | None) -> bool:
    if not text:
        return False
    words = text.split()
    return words[0] in TRAP_MNEMONICS or (words[0] == "int" and "$0x3" in text)


def blocking_instruction(at_pc: str | None, before_pc: str | None,
                         signal: str | None) -> str | None:
    """The instruction to report for a stop at pc.

    x86 reports a trap and a thread blocked in a syscall with pc *after* the instruction that
    did it (int3 is one byte, syscall two): that one is the instruction that matters. arm64
    reports brk's own address, so there the instruction at pc is right.
    """
    if is_syscall_instruction(before_pc):
        return before_pc
    if signal == "SIGTRAP" and is_trap_instruction(before_pc) and not is_trap_instruction(at_pc):
        return before_pc
    return at_pc


def string_literal(comment: str) -> str | None:
    """The string literal a disassembler annotates an address with, e.g. ``; "BUG IN ..."``.

    Tried from the first quote only: where the string opened there finds no closing quote,
    none opened by a later quote does (each later quote lies inside an escape of that one).
    """
    first = comment.find('"')
    match = _STRING_LITERAL.match(comment, first) if first >= 0 else None
    return match.group(1) if match else None
