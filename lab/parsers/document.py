"""A saved or pasted text in, the lab's evidence document out (``python -m lab parse``).

The text is a GDB or LLDB transcript, a macOS crash report or a py-spy dump (lab.parsers.kinds
tells which). Its verdict is what one snapshot supports: ``crash`` for a crash report, or for a
stop on a crash signal or a Mach exception (SIGTRAP, EXC_BREAKPOINT, SIGSEGV...); ``deadlock``
only where the lab's own note in the transcript says it proved one from /proc before it
stopped the process; otherwise none, and the detail says what the threads wait in: every
thread in an untimed wait is "blocked in untimed waits (one snapshot: consistent with a
deadlock, not a proof)", since one snapshot cannot show that nothing will ever wake them.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab import untrusted
from lab.errors import BadInput
from lab.evidence import Evidence, PlatformInfo, ProcessRecord, Syscall, ThreadState
from lab.linux import syscalls
from lab.parsers.transcript import Parsed

CRASH_SIGNALS = frozenset({"SIGTRAP", "SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE",
                           "SIGSYS"})
BINARY_SHARE = 0.01  # more undecodable characters than this: not a text transcript
MAX_TRANSCRIPT_BYTES = 32 << 20  # read of a transcript; the rest is cut, and said so
MAX_THREADS = 4096  # threads of one document
MAX_FRAMES = 1024  # native (and Python) frames of one thread
# x86_64: what rax holds when a debugger stops a thread inside a blocking syscall
# (include/linux/errno.h): ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK,
# and EINTR.
INTERRUPTED_SYSCALL = {-512, -513, -514, -516, -4}
X86_64_FUTEX = 202
# The note lab.catch writes when it interrupts a child it proved deadlocked from /proc.
PROVEN_NOTE = ("interrupt", "SIGINT: deadlock")


def evidence_from_transcript(debugger: str, path: Path) -> Evidence:
    """Read ``path`` as ``debugger`` ("gdb", "lldb", "crash", "py-spy", or "auto" to detect
    it); return its evidence.

    Raises BadInput (one line) for a file that cannot be read, is empty or binary, is another
    kind of text or none, or holds no stack frame (truncated).
    """
    path = Path(path)
    read = untrusted.read_regular(path, MAX_TRANSCRIPT_BYTES, "a transcript")
    text = _text(path, read.data)
    parsed = parse_text(debugger, text, path.name)
    dropped = _bound(parsed)
    evidence = evidence_from_parsed(parsed, path.name, text)
    evidence.parsed = evidence.parsed or {}
    evidence.parsed["input"] = {"bytes": read.size, "bytes_read": len(read.data),
                                "cut": read.cut, **dropped}
    return evidence


def _bound(parsed: Parsed) -> dict:
    """Keep at most MAX_THREADS threads and MAX_FRAMES frames of each; the counts dropped."""
    info = parsed.info
    threads = info.threads if info is not None else []
    dropped_threads = max(0, len(threads) - MAX_THREADS)
    dropped_frames = 0
    if dropped_threads:
        del threads[MAX_THREADS:]
    for thread in threads:
        for attribute in ("frames", "python_frames"):
            frames = getattr(thread, attribute)
            if len(frames) > MAX_FRAMES:
                dropped_frames += len(frames) - MAX_FRAMES
                del frames[MAX_FRAMES:]
    return {"threads_dropped": dropped_threads, "frames_dropped": dropped_frames}


def read_text(path: Path) -> str:
    """The transcript's text (its first MAX_TRANSCRIPT_BYTES); raises BadInput for a missing,
    unreadable, empty or binary file, or one that is not a regular file."""
    return _text(Path(path), untrusted.read_regular(path, MAX_TRANSCRIPT_BYTES,
                                                    "a transcript").data)


def _text(path: Path, data: bytes) -> str:
    if not data.strip():
        raise BadInput(f"{path} is empty: not a debugger transcript")
    text = data.decode("utf-8", errors="replace")
    if b"\0" in data or text.count("\ufffd") > BINARY_SHARE * len(text):
        raise BadInput(f"{path} is binary, not a text transcript")
    return text


def parse_text(debugger: str, text: str, name: str) -> Parsed:
    """Parse ``text`` as ``debugger`` (a kind of lab.parsers.kinds); raises BadInput as
    documented above."""
    from lab.parsers.kinds import parse_kind

    parsed = parse_kind(debugger, text, name)
    if parsed.running:
        raise BadInput(f"{name} ends while the process runs (after a continue, before any "
                       "stop): a truncated transcript")
    if parsed.kind == "crash":
        if not parsed.info.threads and not parsed.info.stop_reason and len(parsed.facts) <= 1:
            raise BadInput(f"{name} holds no crash report header and no frame: nothing to read")
    elif not any(t.frames or t.python_frames for t in parsed.info.threads):
        raise BadInput(f"{name} holds no stack frame: a truncated transcript, or one without a "
                       "backtrace (`bt all` in lldb, `thread apply all bt` in gdb)")
    return parsed


def evidence_from_parsed(parsed: Parsed, name: str, text: str = "") -> Evidence:
    """The evidence document of one parsed text (no run: no run directory, no timings);
    ``text``, when given, is searched for the phrases that show a fork."""
    from lab.parsers.diagnosis import text_signs
    from lab.parsers.findings import diagnose

    info = parsed.info
    verdict, detail, thread = judge(parsed)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "transcript"
    facts = parsed.facts
    evidence = Evidence(
        run_id=f"transcript-{slug}",
        command=[parsed.executable] if parsed.executable else [],
        platform=PlatformInfo(system=parsed.system, machine=parsed.machine,
                              python=facts.get("python") if parsed.kind == "py-spy" else None,
                              libc=None),
        verdict=verdict,
        debugger=info,
        complete=True,
    )
    parsed.text_signs = text_signs(text) if text else parsed.text_signs
    evidence.parsed = diagnose(parsed, thread)
    if verdict is None and evidence.parsed.get("snapshot"):
        detail = evidence.parsed["snapshot"]
    if info.pid is not None:
        evidence.processes.append(ProcessRecord(
            pid=info.pid, ppid=facts.get("parent_pid") if parsed.kind == "crash" else None,
            argv=list(evidence.command), verdict=verdict,
            signal=info.signal if verdict == "crash" else None, detail=detail,
            threads=[thread] if thread else []))
    if parsed.kind == "py-spy":
        evidence.python_stacks.append(_python_stack(parsed))
    return evidence


def judge(parsed: Parsed) -> tuple[str | None, str, ThreadState | None]:
    """``(verdict, detail, the stopped thread's decoded wait)`` of a parsed text."""
    info = parsed.info
    if parsed.kind == "crash":
        return _judge_report(parsed), _report_detail(parsed), None
    thread = stopped_thread(parsed)
    exception = (info.stop_reason or "").startswith("EXC_")
    if info.signal in CRASH_SIGNALS or exception:
        where = f" at `{info.instruction}`" if info.instruction else ""
        said = f": \"{info.message}\"" if info.message else ""
        return "crash", f"stopped by {info.stop_reason}{where}{said}", thread
    futex = thread.syscall.futex if thread and thread.syscall else None
    call = ""
    if futex and futex.is_wait and futex.timeout is None:
        uaddr = futex.uaddr or "<uaddr: x0 now holds the result>"
        scope = "process-private" if futex.private else "shared"
        call = f"futex({uaddr}, {futex.op}, {futex.val}, NULL), {scope}"
    if parsed.notes.get(PROVEN_NOTE[0]) == PROVEN_NOTE[1]:
        waits = f"; thread {thread.tid} waits forever: {call}" if call else ""
        return ("deadlock", "proven by the lab from /proc before it interrupted the process "
                f"(its note in the transcript){waits}", thread)
    if call:
        return None, (f"thread {thread.tid} waits in {call}: one snapshot of an untimed wait, "
                      "consistent with a deadlock, not a proof"), thread
    reason = info.stop_reason or "no stop"
    return None, f"{reason}: no crash signal and no futex wait without a timeout", thread


def _judge_report(parsed: Parsed) -> str | None:
    """A crash report is written because the process crashed; a piece of one without its
    exception, termination or crashed thread does not say how the process ended."""
    facts = parsed.facts
    if facts.get("exception_type") or facts.get("termination_reason") or \
            facts.get("crashed_thread") is not None:
        return "crash"
    return None


def _report_detail(parsed: Parsed) -> str:
    facts = parsed.facts
    parts = [facts.get("exception_type"), facts.get("exception_subtype"),
             facts.get("termination_reason") and f"termination {facts['termination_reason']}"]
    said = "; ".join(facts.get("application_specific") or [])
    if said:
        parts.append(f'"{said}"')
    threads = parsed.info.threads
    frame = threads[0].frames[0] if threads and threads[0].frames else None
    if frame is not None and facts.get("crashed_thread") is not None:
        parts.append(f"in {frame.function or frame.pc or '?'} ({frame.library or '?'})")
    found = ", ".join(str(part) for part in parts if part)
    return f"macOS crash report: {found}" if found else "a piece of a macOS crash report"


def _python_stack(parsed: Parsed) -> dict:
    """The dump as a ``python_stacks`` entry, in lab.stacks.pyspy's shape."""
    states = {entry["tid"]: entry for entry in parsed.facts.get("threads", [])}
    threads = []
    for thread in parsed.info.threads:
        state = states.get(thread.tid, {})
        threads.append({"tid": thread.tid, "name": thread.name, "active": state.get("active"),
                        "owns_gil": state.get("owns_gil"),
                        "python_frames": [vars(f).copy() for f in thread.python_frames]})
    return {"source": "py-spy", "pid": parsed.info.pid, "mode": "recorded", "version": None,
            "threads": threads, "error": None, "reason": None,
            "command": parsed.facts.get("command")}


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
