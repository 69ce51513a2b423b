"""Pure parsers for GDB/MI records (threads, frames, registers) and for a saved gdb.txt."""

from __future__ import annotations

import heapq
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.mi_records import is_prompt, parse_record
from lab.parsers.pybt import parse_py_bt

# A comment line the driver adds to gdb.txt: "# lab KEY: VALUE" (pid, message, seconds, error).
NOTE_PREFIX = "# lab "
# A command line in gdb.txt is the MI token followed by the command: "12-thread-info".
_COMMAND_LINE = re.compile(r"^(?P<token>\d+)(?P<command>-\S.*)$")
_LWP = re.compile(r"\bLWP (\d+)\b")
_PROCESS = re.compile(r"^process (\d+)$")
# "syscall + 25 in section .text of /lib/x86_64-linux-gnu/libc.so.6", "main in section .text".
_INFO_SYMBOL = re.compile(
    r"^(?P<function>.+?)(?: \+ (?P<offset>\d+))? in section (?P<section>\S+)"
    r"(?: of (?P<library>.+))?$"
)
_DISASSEMBLE = re.compile(r"^-data-disassemble -s \$pc(?P<back>-\d+)? ")
_CONSOLE = '-interpreter-exec console "'
_OK_RESULTS = ("done", "running", "connected", "exit")
_SCALAR = re.compile(r"^-?(0x[0-9a-fA-F]+|\d+)$")
# Instructions that enter the kernel; a thread blocked in a syscall has its pc just after one.
_SYSCALL_MNEMONICS = ("syscall", "sysenter", "svc")


@dataclass
class Exchange:
    """One MI command and every record gdb printed from its sending until the next command."""

    token: int | None
    command: str  # without the token, e.g. "-thread-info"
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any] | None:
        """The ``^done``/``^error`` record carrying this exchange's token, if it arrived."""
        for record in self.records:
            if record.get("type") == "result" and record.get("token") == self.token:
                return record
        return None

    @property
    def ok(self) -> bool:
        result = self.result
        return result is not None and result.get("message") in _OK_RESULTS

    @property
    def error(self) -> str | None:
        """The ``msg`` of an ``^error`` result (pygdbmi returns it, it does not raise)."""
        result = self.result
        if result is None or result.get("message") != "error":
            return None
        payload = result.get("payload") or {}
        return str(payload.get("msg", "error")) if isinstance(payload, dict) else str(payload)

    @property
    def payload(self) -> dict[str, Any]:
        result = self.result
        payload = result.get("payload") if result else None
        return payload if isinstance(payload, dict) else {}

    def console(self) -> str:
        """The text of the console stream (``~"..."``) records, joined."""
        return "".join(
            r["payload"]
            for r in self.records
            if r.get("type") == "console" and isinstance(r.get("payload"), str)
        )


@dataclass
class MiThread:
    gdb_id: str
    tid: int | None
    name: str | None


@dataclass
class SymbolInfo:
    function: str
    offset: int
    library: str | None


def mi_quote(text: str) -> str:
    """Quote ``text`` as an MI c-string argument."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def console_command(command: str) -> str:
    """The MI command that runs a console (CLI) command, e.g. ``py-bt``."""
    return "-interpreter-exec console " + mi_quote(command)


def console_command_of(command: str) -> str | None:
    """The CLI command inside ``-interpreter-exec console "..."``, or None for other commands."""
    if not (command.startswith(_CONSOLE) and command.endswith('"')):
        return None
    return re.sub(r"\\(.)", r"\1", command[len(_CONSOLE) : -1])


def lwp_from_target_id(target_id: str | None) -> int | None:
    """``"Thread 0x7f.. (LWP 123)"`` -> 123; ``"process 123"`` (no libthread_db) -> 123."""
    if not target_id:
        return None
    match = _LWP.search(target_id) or _PROCESS.match(target_id.strip())
    return int(match.group(1)) if match else None


def threads_from_info(payload: dict[str, Any]) -> list[MiThread]:
    """The threads of a ``-thread-info`` result, in gdb's order."""
    threads = []
    for entry in _entries(payload.get("threads")):
        threads.append(
            MiThread(
                gdb_id=str(entry.get("id")),
                tid=lwp_from_target_id(_text(entry.get("target-id"))),
                name=_text(entry.get("name")),
            )
        )
    return threads


def _int(value: Any, base: int = 10) -> int | None:
    try:
        return int(str(value), base)
    except (TypeError, ValueError):
        return None


def _entries(value: Any) -> list[dict[str, Any]]:
    """The tuples of an MI list. A damaged record, or gdb repeating a key (then pygdbmi and
    mi_records make a list of the values), can put anything where a list of tuples belongs."""
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """An MI string value; None for a missing one, or a tuple or list in its place."""
    return value if isinstance(value, str) else None


def frames_from_stack(payload: dict[str, Any]) -> list[Frame]:
    """The frames of a ``-stack-list-frames`` result; ``library`` is gdb's ``from`` path."""
    frames = []
    for entry in _entries(payload.get("stack")):
        frames.append(
            Frame(
                index=_int(entry.get("level")) or 0,
                pc=_text(entry.get("addr")),
                function=_text(entry.get("func")),
                library=_text(entry.get("from")),
                file=_text(entry.get("fullname")) or _text(entry.get("file")),
                line=_int(entry.get("line")),
            )
        )
    return frames


def parse_info_symbol(text: str) -> SymbolInfo | None:
    """Parse ``info symbol ADDR`` output; None for "No symbol matches ADDR."."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = _INFO_SYMBOL.match(line)
    if not match:
        return None
    return SymbolInfo(
        function=match["function"],
        offset=int(match["offset"] or 0),
        library=match["library"],
    )


def apply_symbol(frame: Frame, symbol: SymbolInfo | None) -> Frame:
    """Fill ``offset`` (and a missing library or function) from ``info symbol``.

    The offset is kept only when the symbol is the frame's function: for an inlined frame the
    enclosing symbol differs, and an offset into it would mislead. Unnamed frames (``??``) stay
    unnamed, as gdb reports them.
    """
    if symbol is None:
        return frame
    if frame.library is None and symbol.library:
        frame.library = symbol.library
    if frame.function is None:
        frame.function = symbol.function
    if frame.function == symbol.function:
        frame.offset = symbol.offset
    return frame


def libraries_from_records(records: Iterable[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """``(start, end, path)`` of each text range in the ``=library-loaded`` notifications."""
    libraries = []
    for record in records:
        if record.get("type") != "notify" or record.get("message") != "library-loaded":
            continue
        payload = record.get("payload")
        if not isinstance(payload, dict):
            continue
        path = _text(payload.get("target-name")) or _text(payload.get("id"))
        for span in _entries(payload.get("ranges")):
            start, end = _int(span.get("from"), 16), _int(span.get("to"), 16)
            if path and start is not None and end is not None:
                libraries.append((start, end, str(path)))
    return libraries


def library_at(pc: str | None, libraries: list[tuple[int, int, str]]) -> str | None:
    """The library whose loaded text range holds ``pc``, or None (the executable, a JIT)."""
    return library_finder(libraries)(pc)


def library_finder(libraries: list[tuple[int, int, str]]) -> Callable[[str | None], str | None]:
    """``library_at`` for many pcs: the same answer, by bisection instead of a scan of every
    range per frame (a transcript may list thousands of frames and of loaded ranges).

    The range boundaries cut the address space into pieces that each range covers whole or
    not at all; each piece belongs to the first-listed range covering it.
    """
    spans = sorted((start, index, end) for index, (start, end, _) in enumerate(libraries)
                   if start < end)
    bounds = sorted({b for start, _, end in spans for b in (start, end)})
    owners: list[int | None] = []
    active: list[tuple[int, int]] = []  # (index, end): a heap, the first-listed range on top
    next_span = 0
    for bound in bounds:
        while next_span < len(spans) and spans[next_span][0] == bound:
            _, index, end = spans[next_span]
            heapq.heappush(active, (index, end))
            next_span += 1
        while active and active[0][1] <= bound:
            heapq.heappop(active)  # a range ends here, or ended before and was hidden
        owners.append(active[0][0] if active else None)

    def find(pc: str | None) -> str | None:
        address = _int(pc, 16)
        piece = bisect_right(bounds, address) - 1 if address is not None else -1
        owner = owners[piece] if piece >= 0 else None
        return libraries[owner][2] if owner is not None else None

    return find


def registers_from_mi(names: list[str], values: Iterable[dict[str, Any]]) -> dict[str, str]:
    """``{name: "0x..."}`` from ``-data-list-register-names`` and ``-data-list-register-values x``.

    Registers with an empty name (gdb's gaps in the numbering) are skipped, and so are vector
    registers, whose value is a ``{...}`` union: they say nothing about a blocked call.
    """
    registers = {}
    for entry in _entries(list(values)):
        number = _int(entry.get("number"))
        value = str(entry.get("value", ""))
        if number is None or number >= len(names) or not names[number]:
            continue
        if _SCALAR.match(value):
            registers[names[number]] = value
    return registers


def disassembled_instruction(payload: dict[str, Any]) -> str | None:
    """The first instruction's text in a ``-data-disassemble ... -- 0`` result."""
    insns = payload.get("asm_insns")
    if not isinstance(insns, list) or not insns or not isinstance(insns[0], dict):
        return None
    inst = _text(insns[0].get("inst"))
    return " ".join(inst.split()) if inst else None


def is_syscall_instruction(text: str | None) -> bool:
    if not text:
        return False
    words = text.split()
    return words[0] in _SYSCALL_MNEMONICS or (words[0] == "int" and "0x80" in text)


def blocking_instruction(at_pc: str | None, before_pc: str | None) -> str | None:
    """The instruction to report: the one before pc when it entered the kernel, else pc's own."""
    return before_pc if is_syscall_instruction(before_pc) else at_pc


def stop_from_record(record: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """``(stop_reason, signal)`` from a ``*stopped`` record; an attach stop has no reason."""
    if record is None:
        return None, None
    payload = record.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    reason = _text(payload.get("reason"))
    signal = _text(payload.get("signal-name"))
    if reason is None:
        return "attached", signal
    return (f"{reason} {signal}" if signal else reason), signal


def _is_stopped(record: dict[str, Any]) -> bool:
    return record.get("type") == "notify" and record.get("message") == "stopped"


def build_debugger_info(
    exchanges: list[Exchange], notes: dict[str, str] | None = None
) -> DebuggerInfo:
    """Rebuild the evidence from the exchanges of one capture (live or from gdb.txt)."""
    notes = notes or {}
    info = DebuggerInfo(name="gdb")
    threads: dict[str, DebugThread] = {}
    current: str | None = None
    symbols: dict[str, SymbolInfo | None] = {}
    names: list[str] | None = None
    values: list[dict[str, Any]] | None = None
    at_pc = before_pc = None
    stop: dict[str, Any] | None = None
    attached = False

    for ex in exchanges:
        command = ex.command
        console = console_command_of(command)
        if stop is None:
            stop = next((r for r in ex.records if _is_stopped(r)), None)
        if command == "-gdb-version" and ex.ok:
            text = ex.console().strip()
            info.version = text.splitlines()[0] if text else None
        elif command.startswith("-target-attach"):
            info.pid = _int(command.split()[-1])
            attached = ex.ok
            if ex.error:
                info.error = ex.error
        elif command == "-thread-info" and ex.ok and not threads:
            for thread in threads_from_info(ex.payload):
                threads[thread.gdb_id] = DebugThread(tid=thread.tid, name=thread.name)
        elif command.startswith("-thread-select "):
            current = command.split()[-1] if ex.ok else None
        elif command.startswith("-stack-list-frames") and ex.ok and current in threads:
            threads[current].frames = frames_from_stack(ex.payload)
        elif console == "py-bt" and current in threads:
            threads[current].python_frames = parse_py_bt(ex.console())
        elif console is not None and console.startswith("info symbol ") and ex.ok:
            symbols[console.split()[-1]] = parse_info_symbol(ex.console())
        elif command.startswith("-data-list-register-names") and ex.ok and names is None:
            listed = ex.payload.get("register-names")
            names = [str(n) for n in listed] if isinstance(listed, list) else []
        elif command.startswith("-data-list-register-values") and ex.ok and values is None:
            values = _entries(ex.payload.get("register-values"))
        elif _DISASSEMBLE.match(command) and ex.ok:
            if _DISASSEMBLE.match(command)["back"]:
                before_pc = disassembled_instruction(ex.payload)
            else:
                at_pc = disassembled_instruction(ex.payload)

    # gdb names the library ("from") only for frames without debug info; `info symbol` names
    # it for exported symbols; the loaded ranges cover the static functions of the rest.
    library_of = library_finder(libraries_from_records(r for ex in exchanges for r in ex.records))
    for thread in threads.values():
        for frame in thread.frames:
            apply_symbol(frame, symbols.get(frame.pc or ""))
            if frame.library is None:
                frame.library = library_of(frame.pc)
    info.threads = list(threads.values())
    if names is not None and values is not None:
        info.registers = registers_from_mi(names, values)
    info.instruction = blocking_instruction(at_pc, before_pc)
    if attached:
        info.stop_reason, info.signal = stop_from_record(stop)
        info.stop_reason = info.stop_reason or "attached"
    if "pid" in notes:
        info.pid = _int(notes["pid"])
    info.message = notes.get("message", info.message)
    info.error = notes.get("error", info.error)
    if "seconds" in notes:
        try:
            info.seconds = float(notes["seconds"])
        except ValueError:
            pass
    return info


def exchanges_from_transcript(text: str) -> tuple[list[Exchange], dict[str, str]]:
    """Split a gdb.txt into exchanges (records after each command line) and its notes.

    Records printed before the first command (gdb's greeting) go to an exchange whose token
    is None and whose command is empty.
    """
    exchanges = [Exchange(token=None, command="")]
    notes: dict[str, str] = {}
    for line in text.splitlines():
        note = split_note(line)
        if note is not None:
            notes[note[0]] = note[1]
            continue
        match = _COMMAND_LINE.match(line)
        if match:
            exchanges.append(Exchange(token=int(match["token"]), command=match["command"]))
            continue
        if not line.strip() or is_prompt(line):
            continue
        exchanges[-1].records.append(parse_record(line))
    return exchanges, notes


def split_note(line: str) -> tuple[str, str] | None:
    """``# lab KEY: VALUE`` -> (KEY, VALUE); None for any other line."""
    if not line.startswith(NOTE_PREFIX):
        return None
    key, sep, value = line[len(NOTE_PREFIX):].partition(":")
    return (key.strip(), value.strip()) if sep else None


def parse_gdb_transcript(text: str, transcript: str | None = None) -> DebuggerInfo:
    """Rebuild the ``DebuggerInfo`` of a capture from the gdb.txt its driver wrote."""
    return read_gdb_transcript(text, transcript)[0]


def read_gdb_transcript(text: str, transcript: str | None = None
                        ) -> tuple[DebuggerInfo, dict[str, str]]:
    """The ``DebuggerInfo`` of a gdb.txt and the lab's notes in it (``# lab KEY: VALUE``)."""
    exchanges, notes = exchanges_from_transcript(text)
    info = build_debugger_info(exchanges, notes)
    info.transcript = transcript
    return info, notes
