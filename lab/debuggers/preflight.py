"""Before and at a debugger's attach: find it, refuse targets it cannot attach to, name failures.

Every driver (gdb over MI, gdb and lldb in batch mode) asks the same questions before it starts
a debugger, and reads the same few kinds of failed attach from its output.
"""

from __future__ import annotations

import os
import shutil

from lab import process
from lab.errors import (
    BadInput,
    DebuggerFailed,
    DebuggerMissing,
    LabError,
    PtraceRefused,
    TargetExited,
)

TARGET_REMEDY = "the process must still run while the debugger attaches"
# Yama's "no attach" mode (Documentation/admin-guide/LSM/Yama.rst): no sysctl undoes it.
YAMA_PTRACE_DISABLED = 3
_GONE_WORDS = ("No such process", "does not exist")
_REFUSED_WORDS = ("Operation not permitted", "ptrace", "permission", "Could not attach")


def find(executable: str, remedy: str) -> str:
    """The path of ``executable`` on PATH; raises DebuggerMissing with ``remedy``."""
    path = shutil.which(executable)
    if path is None:
        raise DebuggerMissing(f"{executable} was not found on PATH", remedy)
    return path


def check_target(pid: int) -> bool:
    """Refuse a target no debugger can attach to; return whether it is stopped (state T).

    Raises BadInput (this very process: the debugger would stop the process that waits for
    its output, and both would hang), PtraceRefused (Yama mode 3, another tracer),
    TargetExited (gone, or a zombie).
    """
    if pid == os.getpid():
        raise BadInput("the lab cannot attach a debugger to itself", "pass another process id")
    if ptrace_scope() == YAMA_PTRACE_DISABLED:
        raise PtraceRefused("kernel.yama.ptrace_scope is 3: ptrace is disabled until reboot")
    found = process.state(pid)
    if found is None:
        raise TargetExited(f"process {pid} does not exist", TARGET_REMEDY)
    letter, tracer = found
    if letter in "ZX":
        raise TargetExited(f"process {pid} has exited (zombie)", TARGET_REMEDY)
    if tracer:
        raise PtraceRefused(f"process {pid} is already traced by process {tracer}",
                            "detach the other tracer (gdb, strace) first")
    return letter in "Tt"


def attach_failure(debugger: str, pid: int, message: str) -> LabError:
    """The lab error for a failed attach that ``debugger`` described in ``message``."""
    if any(word in message for word in _GONE_WORDS) or not process.alive(pid):
        return TargetExited(f"process {pid} exited before {debugger} attached: {message}",
                            TARGET_REMEDY)
    if any(word in message for word in _REFUSED_WORDS):
        return PtraceRefused(f"{debugger} may not attach to process {pid}: {message}")
    return DebuggerFailed(f"{debugger} could not attach to process {pid}: {message}")


def ptrace_scope() -> int | None:
    """Yama's mode, from the process backend; None without Yama."""
    return process.reader().ptrace_scope()
