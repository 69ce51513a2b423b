"""What every console transcript parser shares: the result type, notes, platform, instructions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lab.evidence import DebuggerInfo
from lab.parsers.gdb_mi import NOTE_PREFIX, is_syscall_instruction

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
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours of a terminal session saved by script(1)
_STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')

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


def finish(state, at_pc: str | None, before_pc: str | None, message: str | None) -> Parsed:
    """The common end of a console parser: the instruction at the stop, the lab's notes (pid,
    error) over what the text said, and the machine. ``state`` has the attributes both
    parsers' states share: info, notes, system, machine, executable, running."""
    info = state.info
    info.message = message
    info.instruction = blocking_instruction(at_pc, before_pc, info.signal)
    if state.notes.get("pid", "").isdigit():
        info.pid = int(state.notes["pid"])
    info.error = state.notes.get("error", info.error)
    machine = state.machine or machine_from_registers(info.registers)
    return Parsed(info=info, system=state.system, machine=machine,
                  executable=state.executable, notes=state.notes, running=state.running)


def clean_lines(text: str) -> list[str]:
    """The transcript's lines without terminal colour codes or trailing whitespace."""
    return [_ANSI.sub("", line).rstrip() for line in text.splitlines()]


def split_note(line: str) -> tuple[str, str] | None:
    """``# lab KEY: VALUE`` -> (KEY, VALUE); None for any other line."""
    if not line.startswith(NOTE_PREFIX):
        return None
    key, sep, value = line[len(NOTE_PREFIX):].partition(":")
    return (key.strip(), value.strip()) if sep else None


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
    """The string literal a disassembler annotates an address with, e.g. ``; "BUG IN ..."``."""
    match = _STRING_LITERAL.search(comment)
    return match.group(1) if match else None
