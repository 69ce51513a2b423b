"""Drive the ``lldb`` executable in batch mode with the lab's command files; parse its text.

LLDB's Python module is often unusable outside the Xcode or distribution Python (Debian's
``lldb -P`` points at a module the venv cannot import), so the lab never imports ``lldb``: it
runs ``lldb --batch --no-lldbinit --attach-pid PID -s FILE`` with static command files shipped
as package data (``capture.lldb``, ``catch.lldb``) and parses the transcript.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lab import process
from lab.debuggers import batch, preflight
from lab.errors import DebuggerFailed, LabError
from lab.evidence import DebuggerInfo

EXECUTABLE = "lldb"
REMEDY = "install lldb: apt-get install lldb (macOS: xcode-select --install)"
TRANSCRIPT_NAME = "lldb.txt"
SCRIPTS = Path(__file__).resolve().parent
CAPTURE_SCRIPT = SCRIPTS / "capture.lldb"  # record the stopped process, detach
CATCH_SCRIPT = SCRIPTS / "catch.lldb"  # set up signal handling and continue

CAPTURE_TIMEOUT_S = 120.0  # the whole capture: the default of capture(timeout=)

Progress = Callable[[str], None]


def find() -> str:
    """The path of the lldb executable; raises DebuggerMissing."""
    return preflight.find(EXECUTABLE, REMEDY)


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
        if "attach failed" in line or "process attach" in line:
            return preflight.attach_failure("lldb", pid, line)
    return None


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
    was_stopped = preflight.check_target(pid)
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
        problem = process.wait_released(pid, was_stopped, "lldb")
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
    """``{"syscall TID": "the OS's line"}`` for each thread of ``pid``, from the process
    backend (empty where it shows none: off Linux, and on the portable backend)."""
    lines = process.reader().syscall_lines(pid)
    return {f"syscall {tid}": line for tid, line in sorted(lines.items())}
