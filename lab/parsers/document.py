"""A saved debugger transcript in, the lab's evidence document out (``python -m lab parse``).

The verdict comes from the transcript alone: ``crash`` when the process stopped on a crash
signal or a Mach exception (SIGTRAP, EXC_BREAKPOINT, SIGSEGV...), ``deadlock`` when the
stopped thread sits in a process-private futex wait with no timeout (decoded from its
registers, or from the /proc line the lab noted before it attached), else none.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.errors import BadInput
from lab.evidence import Evidence, PlatformInfo, ProcessRecord, Syscall, ThreadState
from lab.linux import syscalls
from lab.parsers.transcript import Parsed

DEBUGGERS = ("gdb", "lldb")
CRASH_SIGNALS = frozenset({"SIGTRAP", "SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE",
                           "SIGSYS"})
BINARY_SHARE = 0.01  # more undecodable characters than this: not a text transcript
# x86_64: what rax holds when a debugger stops a thread inside a blocking syscall
# (include/linux/errno.h): ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK,
# and EINTR.
INTERRUPTED_SYSCALL = {-512, -513, -514, -516, -4}
X86_64_FUTEX = 202

# Searched in the whole text, so each branch stays on one line and can fail in one pass over
# it: "^\s*\*?\s*frame" crossed newlines and tried every split of a run of blank lines
# between its two "\s*" (4,000 blank lines: 16 s).
_LLDB_SIGNS = re.compile(r"^\(lldb\)|stop reason = |^[^\S\n]*(?:\*[^\S\n]*)?frame #\d+: 0x"
                         r"|^Architecture set to: |^lldb(?:-\d| version )", re.MULTILINE)
_GDB_SIGNS = re.compile(r"^\(gdb\)|^GNU gdb |^#\d+[^\S\n]+(?:0x[0-9a-fA-F]+ in )?\S+ \("
                        r"|received signal SIG|^Thread \d+ \(.*\):$", re.MULTILINE)
_MI_SIGNS = re.compile(r'^(?:\d*\^(?:done|error|running|connected)|~"|\*stopped'
                       r"|=thread-group-added)", re.MULTILINE)
_MI_CONFIGURED = re.compile(r'configured as \\"(?P<triple>[^"\\]+)\\"')


def evidence_from_transcript(debugger: str, path: Path) -> Evidence:
    """Read ``path`` as a ``debugger`` ("gdb" or "lldb") transcript; return its evidence.

    Raises BadInput (one line) for a file that cannot be read, is empty or binary, comes from
    the other debugger, or holds no stack frame (truncated).
    """
    path = Path(path)
    parsed = parse_text(debugger, read_text(path), path.name)
    return evidence_from_parsed(parsed, path.name)


def read_text(path: Path) -> str:
    """The transcript's text; raises BadInput for a missing, unreadable, empty or binary file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror or error}") from None
    if not data.strip():
        raise BadInput(f"{path} is empty: not a debugger transcript")
    text = data.decode("utf-8", errors="replace")
    if b"\0" in data or text.count("\ufffd") > BINARY_SHARE * len(text):
        raise BadInput(f"{path} is binary, not a text transcript")
    return text


def parse_text(debugger: str, text: str, name: str) -> Parsed:
    """Parse ``text`` with the parser for ``debugger``; raises BadInput as documented above."""
    from lab.parsers.gdb_console import read_gdb_console
    from lab.parsers.lldb import read_lldb_transcript

    if debugger not in DEBUGGERS:
        raise BadInput(f"unknown debugger {debugger!r}", f"choose one of: {', '.join(DEBUGGERS)}")
    lldb, gdb, mi = (bool(p.search(text)) for p in (_LLDB_SIGNS, _GDB_SIGNS, _MI_SIGNS))
    if debugger == "lldb":
        if not lldb:
            _wrong(name, "LLDB", "GDB" if gdb or mi else None)
        parsed = read_lldb_transcript(text, name)
    elif mi:
        parsed = _read_mi(text, name)
    elif gdb:
        parsed = read_gdb_console(text, name)
    else:
        _wrong(name, "GDB", "LLDB" if lldb else None)
    if parsed.running:
        raise BadInput(f"{name} ends while the process runs (after a continue, before any "
                       "stop): a truncated transcript")
    if not any(thread.frames for thread in parsed.info.threads):
        raise BadInput(f"{name} holds no stack frame: a truncated transcript, or one without a "
                       "backtrace (`bt all` in lldb, `thread apply all bt` in gdb)")
    return parsed


def _wrong(name: str, wanted: str, found: str | None):
    if found:
        raise BadInput(f"{name} is {_a(found)} transcript, not {_a(wanted)} one",
                       f"python -m lab parse {found.lower()} {name}")
    raise BadInput(f"{name} is not {_a(wanted)} transcript: no prompt, stop, frame or register "
                   "line found")


def _a(name: str) -> str:
    return f"an {name}" if name.startswith("L") else f"a {name}"


def _read_mi(text: str, name: str) -> Parsed:
    from lab.parsers.gdb_mi import read_gdb_transcript
    from lab.parsers.transcript import machine_from_registers, platform_from_triple

    info, notes = read_gdb_transcript(text, transcript=name)
    configured = _MI_CONFIGURED.search(text)
    system, machine = platform_from_triple(configured["triple"]) if configured else (None, None)
    return Parsed(info=info, system=system,
                  machine=machine or machine_from_registers(info.registers), notes=notes)


def evidence_from_parsed(parsed: Parsed, name: str) -> Evidence:
    """The evidence document of one parsed transcript (no run: no run directory, no timings)."""
    info = parsed.info
    verdict, detail, thread = judge(parsed)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "transcript"
    evidence = Evidence(
        run_id=f"transcript-{slug}",
        command=[parsed.executable] if parsed.executable else [],
        platform=PlatformInfo(system=parsed.system, machine=parsed.machine, python=None,
                              libc=None),
        verdict=verdict,
        debugger=info,
        complete=True,
    )
    if info.pid is not None:
        evidence.processes.append(ProcessRecord(
            pid=info.pid, ppid=None, argv=list(evidence.command), verdict=verdict,
            signal=info.signal if verdict == "crash" else None, detail=detail,
            threads=[thread] if thread else []))
    return evidence


def judge(parsed: Parsed) -> tuple[str | None, str, ThreadState | None]:
    """``(verdict, detail, the stopped thread's decoded wait)`` of a parsed transcript."""
    info = parsed.info
    thread = stopped_thread(parsed)
    exception = (info.stop_reason or "").startswith("EXC_")
    if info.signal in CRASH_SIGNALS or exception:
        where = f" at `{info.instruction}`" if info.instruction else ""
        said = f": \"{info.message}\"" if info.message else ""
        return "crash", f"stopped by {info.stop_reason}{where}{said}", thread
    futex = thread.syscall.futex if thread and thread.syscall else None
    if futex and futex.is_wait and futex.private and futex.timeout is None:
        uaddr = futex.uaddr or "<uaddr: x0 now holds the result>"
        return ("deadlock", f"thread {thread.tid} waits forever: futex({uaddr}, "
                f"{futex.op}, {futex.val}, NULL), process-private", thread)
    reason = info.stop_reason or "no stop"
    return None, f"{reason}: no crash signal and no futex wait without a timeout", thread


def stopped_thread(parsed: Parsed) -> ThreadState | None:
    """The stopped thread's syscall, decoded: from the lab's /proc note for it, else from the
    registers (Linux only: a macOS x8 is no syscall number)."""
    info = parsed.info
    first = info.threads[0] if info.threads else None
    tid = next((t.tid for t in info.threads if t.tid == info.pid), first.tid if first else None)
    name = next((t.name for t in info.threads if t.tid == tid), None) or ""
    arch = parsed.machine
    call = None
    line = parsed.notes.get(f"syscall {tid}")
    if line:
        call = syscalls.parse_proc_syscall(line, arch)
    elif parsed.system in (None, "Linux") and arch and info.registers:
        call = syscalls.decode_registers(info.registers, arch) or _x86_64_futex(parsed)
        if call and call.futex and arch in ("aarch64", "arm64"):
            if _signed(info.registers.get("x0")) in INTERRUPTED_SYSCALL:
                call.futex.uaddr = None  # x0 carried uaddr in, the call's result out
    if call is None:
        return None
    return ThreadState(tid=tid or 0, name=name, state="t", wchan="", syscall=call)


def _signed(value: str | None) -> int | None:
    try:
        number = int(value or "", 16)
    except ValueError:
        return None
    return number - (1 << 64) if number >= 1 << 63 else number


def _x86_64_futex(parsed: Parsed) -> Syscall | None:
    """LLDB shows no ``orig_rax`` on x86_64, and rax then holds the interrupted call's result.

    The call is taken as futex(2) only when the instruction before pc is ``syscall``, rax holds
    an interrupted-syscall code and one of the innermost frames is named after futex.
    """
    info = parsed.info
    registers = info.registers
    if parsed.machine != "x86_64" or "orig_rax" in registers or info.instruction != "syscall":
        return None
    rax = _signed(registers.get("rax"))
    frames = info.threads[0].frames[:3] if info.threads else []
    if rax not in INTERRUPTED_SYSCALL or not any("futex" in (f.function or "").lower()
                                                 for f in frames):
        return None
    return syscalls.decode_registers({**registers, "orig_rax": hex(X86_64_FUTEX)}, "x86_64")
