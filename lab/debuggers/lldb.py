"""Drive the ``lldb`` executable in batch mode with the lab's command files; parse its text.

LLDB's Python module is often unusable outside the Xcode or distribution Python (Debian's
``lldb -P`` points at a module the venv cannot import), so the lab never imports ``lldb``: it
runs ``lldb --batch --no-lldbinit --attach-pid PID -s FILE`` with static command files shipped
as package data (``capture.lldb``, ``catch.lldb``) and parses the transcript.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lab.debuggers import batch
from lab.errors import (
    BadInput,
    DebuggerFailed,
    DebuggerMissing,
    LabError,
    PtraceRefused,
    TargetExited,
)
from lab.evidence import DebuggerInfo

EXECUTABLE = "lldb"
REMEDY = "install lldb: apt-get install lldb (macOS: xcode-select --install)"
TARGET_REMEDY = "the process must still run while the debugger attaches"
TRANSCRIPT_NAME = "lldb.txt"
SCRIPTS = Path(__file__).resolve().parent
CAPTURE_SCRIPT = SCRIPTS / "capture.lldb"  # record the stopped process, detach
CATCH_SCRIPT = SCRIPTS / "catch.lldb"  # set up signal handling and continue

CAPTURE_TIMEOUT_S = 120.0  # the whole capture: the default of capture(timeout=)
# Yama's "no attach" mode (Documentation/admin-guide/LSM/Yama.rst): no sysctl undoes it.
YAMA_PTRACE_DISABLED = 3

Progress = Callable[[str], None]


def find() -> str:
    """The path of the lldb executable; raises DebuggerMissing."""
    path = shutil.which(EXECUTABLE)
    if path is None:
        raise DebuggerMissing("lldb was not found on PATH", REMEDY)
    return path


def capture_argv(lldb: str, pid: int) -> list[str]:
    """Attach to ``pid``, record it, detach: the target is left running."""
    return [lldb, "--batch", "--no-lldbinit", "--attach-pid", str(pid),
            "--source", str(CAPTURE_SCRIPT)]


def catch_argv(lldb: str, pid: int) -> list[str]:
    """Attach to ``pid`` and continue it; record it at the first stop that counts, detach.

    In batch mode lldb stops running commands when the process stops abnormally (a crash, an
    EXC_BREAKPOINT) and then sources the ``--source-on-crash`` file: the capture runs either
    way, exactly once.
    """
    return [lldb, "--batch", "--no-lldbinit", "--attach-pid", str(pid),
            "--source", str(CATCH_SCRIPT), "--source", str(CAPTURE_SCRIPT),
            "--source-on-crash", str(CAPTURE_SCRIPT)]


def parse(text: str, transcript: str | None = TRANSCRIPT_NAME) -> DebuggerInfo:
    from lab.parsers.lldb import parse_lldb_transcript

    return parse_lldb_transcript(text, transcript)


def attach_error(session: batch.Session, pid: int) -> LabError | None:
    """The error an attach that failed printed, as a LabError; None when it attached."""
    for line in session.errors():
        if "attach failed" not in line and "process attach" not in line:
            continue
        if not batch.alive(pid) or "No such process" in line or "does not exist" in line:
            return TargetExited(f"process {pid} exited before lldb attached: {line}",
                                TARGET_REMEDY)
        if "Operation not permitted" in line or "ptrace" in line or "permission" in line:
            return PtraceRefused(f"lldb may not attach to process {pid}: {line}")
        return DebuggerFailed(f"lldb could not attach to process {pid}: {line}")
    return None


def check_target(pid: int) -> bool:
    """Refuse a target lldb cannot attach to; return whether it is stopped (state T).

    Raises BadInput (this process), PtraceRefused, TargetExited.
    """
    if pid == os.getpid():
        # lldb would stop the very process that waits for its output: both would hang.
        raise BadInput("the lab cannot attach a debugger to itself", "pass another process id")
    if _ptrace_scope() == YAMA_PTRACE_DISABLED:
        raise PtraceRefused("kernel.yama.ptrace_scope is 3: ptrace is disabled until reboot")
    state = batch.proc_state(pid)
    if state is None:
        raise TargetExited(f"process {pid} does not exist", TARGET_REMEDY)
    letter, tracer = state
    if letter in "ZX":
        raise TargetExited(f"process {pid} has exited (zombie)", TARGET_REMEDY)
    if tracer:
        raise PtraceRefused(f"process {pid} is already traced by process {tracer}",
                            "detach the other tracer (gdb, strace) first")
    return letter in "Tt"


def capture(
    pid: int,
    out_dir: Path,
    *,
    timeout: float = CAPTURE_TIMEOUT_S,
    progress: Progress | None = None,
) -> DebuggerInfo:
    """Attach lldb to ``pid``, record threads, frames, registers and the instruction, detach.

    lldb's output goes to ``out_dir/lldb.txt`` as it comes, with the lab's notes (the pid and,
    on Linux, each thread's /proc syscall line: lldb shows no ``orig_rax`` on x86_64, so this is
    what names the call a thread is blocked in). The target is left running and untraced.
    Returns the DebuggerInfo; raises DebuggerMissing, TargetExited, PtraceRefused, BadInput,
    DebuggerFailed (lldb failed, or did not finish within ``timeout`` s), OutputNotWritable.
    """
    started = time.monotonic()
    report = progress or (lambda _message: None)
    lldb = find()
    was_stopped = check_target(pid)
    session = batch.Session(capture_argv(lldb, pid), Path(out_dir) / TRANSCRIPT_NAME,
                            {"pid": str(pid), **syscall_notes(pid)})
    try:
        report(f"lldb: attaching to process {pid}")
        session.start()
        if session.wait(timeout) is None:
            raise DebuggerFailed(f"lldb did not finish within {timeout:.1f} s "
                                 f"(last step: {session.last_step or 'attach'})")
        error = attach_error(session, pid)
        if error is not None:
            raise error
    except LabError as error:
        session.note("error", str(error))
        raise
    finally:
        session.close()
        report(f"lldb: exited after step {session.last_step or 'attach'}")
        problem = batch.wait_released(pid, was_stopped, "lldb")
    info = parse(session.path.read_text(encoding="utf-8", errors="replace"))
    info.seconds = round(time.monotonic() - started, 3)
    if not session.reached("done"):
        failed = f"lldb stopped at step {session.last_step or 'attach'}"
        errors = session.errors()
        info.error = f"{failed}: {errors[-1]}" if errors else failed
    if problem:
        raise DebuggerFailed(problem)
    if not info.threads:
        raise DebuggerFailed(info.error or f"lldb recorded no thread of process {pid}")
    return info


def syscall_notes(pid: int) -> dict[str, str]:
    """``{"syscall TID": "/proc line"}`` for each thread of ``pid`` (empty off Linux)."""
    notes = {}
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return notes
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall", encoding="ascii") as handle:
                notes[f"syscall {tid}"] = handle.read().strip()
        except OSError:
            continue
    return notes


def _ptrace_scope() -> int | None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None  # no Yama: only the classic same-uid / CAP_SYS_PTRACE rules apply
