"""How to run and observe a target: one options object per run kind, built once from the
command line (``from_args``) and passed down unchanged."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

INSPECT_WINDOW_S = 0.3  # default `lab inspect --window`: see lab.inspector.sample


def default_out_base() -> Path:
    return Path(os.environ.get("LAB_CRASH_DUMPS", "crash_dumps"))


@dataclass
class RunOptions:
    debugger: str = "auto"  # "auto", "none", or a name of lab.debuggers' registry
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
        return cls(**run_fields(args))


@dataclass
class InspectOptions(RunOptions):
    """``lab inspect PID``: a run whose target is a process that already exists."""

    pid: int = 0
    tree: bool = True  # judge the descendants too
    parent: bool = False  # also the parent's native stacks (a second ptrace capture)
    window: float = INSPECT_WINDOW_S

    @classmethod
    def from_args(cls, args) -> InspectOptions:
        return cls(**run_fields(args), pid=args.pid, tree=getattr(args, "tree", True),
                   parent=getattr(args, "parent", False),
                   window=getattr(args, "window", INSPECT_WINDOW_S))


def run_fields(args) -> dict:
    """``RunOptions``' fields from the command line's common options; a run kind's own
    ``from_args`` adds its fields to these."""
    no_limit = getattr(args, "no_timeout", False)
    return dict(debugger=getattr(args, "debugger", None) or "auto",
                timeout=math.inf if no_limit else getattr(args, "timeout", None),
                out_base=Path(args.out) if getattr(args, "out", None) else default_out_base(),
                echo_output=not getattr(args, "quiet", False),
                strace=getattr(args, "strace", False),
                debugger_timeout=getattr(args, "debugger_timeout", None),
                gcore_limit_mb=(args.gcore_limit if getattr(args, "gcore", False) else None))
