"""Errors the lab reports as one line and a distinct exit status; each carries its remedy.

Only ``lab.cli.main`` prints them and exits: the rest of the lab raises.
"""

from __future__ import annotations


class LabError(Exception):
    """Base class: ``str(error)`` is the one line shown to the user."""

    exit_status = 3
    remedy = ""
    evidence = None  # the evidence collected before the error, when a run had started

    def __init__(self, message: str, remedy: str | None = None):
        super().__init__(message)
        if remedy is not None:
            self.remedy = remedy

    def line(self) -> str:
        text = str(self)
        return f"{text} ({self.remedy})" if self.remedy else text


class BadInput(LabError):
    """Unknown scenario, launcher or debugger; a bad number; an unusable path."""

    exit_status = 2


class CommandNotFound(LabError):
    exit_status = 4
    remedy = "check the command name and PATH"


class DebuggerMissing(LabError):
    exit_status = 5


class PtraceRefused(LabError):
    exit_status = 6
    remedy = (
        "run as root, add `cap_add: [SYS_PTRACE]` to the container, "
        "or allow it with `sysctl kernel.yama.ptrace_scope=0`"
    )


class TargetExited(LabError):
    """The process to inspect was gone before (or while) the debugger attached."""

    exit_status = 7


class DebuggerFailed(LabError):
    """The debugger crashed, answered with an error, or did not answer in time."""

    exit_status = 8


class OutputNotWritable(BadInput):
    remedy = "pass --out with a directory you can write to"


class EvidenceNotWritten(LabError):
    """The run reached its verdict, but its evidence could not all be written (a full disk)."""

    exit_status = 15
    remedy = "free some space, or pass --out on another file system"


class Interrupted(LabError):
    """SIGINT or SIGTERM reached the lab; ``exit_status`` is 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_status = 128 + signum


# `lab inspect PID`: a process the lab cannot (or must not) inspect. Each has its own status.


class ProcessNotFound(BadInput):
    """No process has that PID (it never existed, or it exited and was reaped)."""

    exit_status = 16
    remedy = "check the PID with `ps -ef`; a process that exited cannot be inspected"


class ProcessIsZombie(BadInput):
    """The process has exited; its parent has not reaped it yet. Nothing is left to inspect."""

    exit_status = 17
    remedy = ("it has already exited: its parent never called wait(); inspect the parent "
              "instead")


class InspectingSelf(BadInput):
    """The PID is the lab itself: attaching would stop the process that waits for the answer."""

    exit_status = 18
    remedy = "pass the PID of another process"
