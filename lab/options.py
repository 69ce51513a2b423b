"""How to run and observe a target: the options every run command shares, declared once."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

DEBUGGERS = ("auto", "gdb", "lldb", "none")


def default_out_base() -> Path:
    return Path(os.environ.get("LAB_CRASH_DUMPS", "crash_dumps"))


@dataclass
class RunOptions:
    debugger: str = "auto"  # auto | gdb | lldb | none
    timeout: float | None = None  # None: the target's own
    out_base: Path = Path("crash_dumps")
    run_id: str | None = None
    echo_output: bool = True  # the processes' output on stderr as `  | line`
    strace: bool = False  # run under strace -f; keep the blocked process's last syscalls
    debugger_timeout: float | None = None  # the whole capture; None: the driver's default
    gcore_limit_mb: float | None = None  # write a core of the culprit when below this size

    @classmethod
    def from_args(cls, args) -> RunOptions:
        """From the command line's common options (see ``lab.cli``)."""
        no_limit = getattr(args, "no_timeout", False)
        return cls(debugger=getattr(args, "debugger", "auto"),
                   timeout=math.inf if no_limit else getattr(args, "timeout", None),
                   out_base=Path(args.out) if getattr(args, "out", None) else default_out_base(),
                   echo_output=not getattr(args, "quiet", False),
                   strace=getattr(args, "strace", False),
                   debugger_timeout=getattr(args, "debugger_timeout", None),
                   gcore_limit_mb=(args.gcore_limit if getattr(args, "gcore", False) else None))
