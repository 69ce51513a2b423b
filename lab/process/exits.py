"""A process's end, normalised once: exit code, the signal or exception that ended it, verdict.

CPython's convention (``Popen.returncode``, ``os.waitstatus_to_exitcode``): a negative code is
the signal that killed the process on POSIX. On Windows there are no signals: a process that
dies of an unhandled exception exits with the exception's NTSTATUS code as its exit status
(``GetExitCodeProcess`` gives the DWORD, e.g. 3221225477 = 0xC0000005, ACCESS_VIOLATION). Such a
code is a crash named after the exception, not an error exit. A POSIX exit status has 8 bits,
so no POSIX process can exit with one: on POSIX this branch is reached only through
``from_returncode`` with a Windows status (the tests feed it the values Windows reports).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from lab.verdicts import Verdict

# Exception codes of ntstatus.h a process dies with (severity 3: STATUS_SEVERITY_ERROR), by
# the names Windows Error Reporting and the debuggers show.
NTSTATUS = {
    0xC0000005: "ACCESS_VIOLATION",
    0xC0000006: "IN_PAGE_ERROR",
    0xC000001D: "ILLEGAL_INSTRUCTION",
    0xC0000025: "NONCONTINUABLE_EXCEPTION",
    0xC000008C: "ARRAY_BOUNDS_EXCEEDED",
    0xC000008E: "FLOAT_DIVIDE_BY_ZERO",
    0xC0000094: "INTEGER_DIVIDE_BY_ZERO",
    0xC0000095: "INTEGER_OVERFLOW",
    0xC0000096: "PRIVILEGED_INSTRUCTION",
    0xC00000FD: "STACK_OVERFLOW",
    0xC0000135: "DLL_NOT_FOUND",
    0xC0000374: "HEAP_CORRUPTION",
    0xC0000409: "STACK_BUFFER_OVERRUN",  # also __fastfail: abort() of the MSVC runtime
    0xC0000417: "INVALID_CRUNTIME_PARAMETER",
    0x80000003: "BREAKPOINT",  # int3 / __debugbreak() with no debugger attached
}
# macOS: a hardware fault is a Mach exception first; the kernel turns it into the signal the
# process dies of (xnu bsd/uxkern/ux_exception.c), so the wait status shows only the signal.
MACH_EXCEPTIONS = {"SIGTRAP": "EXC_BREAKPOINT", "SIGSEGV": "EXC_BAD_ACCESS",
                   "SIGBUS": "EXC_BAD_ACCESS", "SIGILL": "EXC_BAD_INSTRUCTION",
                   "SIGFPE": "EXC_ARITHMETIC"}
_SEVERITY_ERROR = 0xC0000000  # the top two bits: an error status, never a program's own code
_SIGNALS = 128  # a negative code of smaller magnitude is a POSIX signal number


@dataclass(frozen=True)
class Ending:
    exit_code: int  # as Popen.returncode gives it: negative = a POSIX signal
    signal: str | None  # "SIGSEGV", or an NTSTATUS name such as "ACCESS_VIOLATION"
    verdict: Verdict
    detail: str


def ntstatus_name(code: int) -> str | None:
    """``ACCESS_VIOLATION`` for 3221225477 (or its signed form -1073741819); ``NTSTATUS
    0xC0000123`` for another error status; None for an ordinary exit code."""
    unsigned = code & 0xFFFFFFFF if code < -_SIGNALS else code
    if unsigned in NTSTATUS:
        return NTSTATUS[unsigned]
    if unsigned > 0xFFFFFFFF or unsigned & _SEVERITY_ERROR != _SEVERITY_ERROR:
        return None
    return f"NTSTATUS 0x{unsigned:08X}"


def from_returncode(code: int, core_dumped: bool = False, system: str = sys.platform) -> Ending:
    """The end of a process whose ``Popen.returncode`` (or normalised wait status) is ``code``,
    on ``system`` (``sys.platform``)."""
    from lab.process import signal_name

    if -_SIGNALS < code < 0:
        name = signal_name(-code)
        core = " (core dumped)" if core_dumped else ""
        mach = MACH_EXCEPTIONS.get(name) if system == "darwin" else None
        mach = f" (the Mach exception {mach}, as LLDB and the crash report name it)" if mach \
            else ""
        return Ending(code, name, Verdict.CRASH,
                      f"killed by {name}{core}{mach}, a signal the lab did not send")
    exception = ntstatus_name(code)
    if exception is not None:
        return Ending(code, exception, Verdict.CRASH,
                      f"exited with status {code} = 0x{code & 0xFFFFFFFF:08X}, {exception}: "
                      "the process died of an unhandled exception (Windows)")
    verdict = Verdict.OK if code == 0 else Verdict.ERROR
    return Ending(code, None, verdict, f"exited with status {code}")


def from_wait_status(status: int) -> Ending:
    """The end a waitpid(2) status describes (POSIX)."""
    return from_returncode(os.waitstatus_to_exitcode(status),
                           os.WIFSIGNALED(status) and os.WCOREDUMP(status))
