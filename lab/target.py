"""What a run runs: a Target, resolved once from a raw command or a catalog entry + launcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WATCH_TIMEOUT_S = 60.0  # `lab watch` without --timeout


@dataclass
class Target:
    """A command, how to start it, and what the lab knows of it before it runs."""

    argv: list[str]
    label: str  # names the run directory
    env: dict[str, str] = field(default_factory=dict)  # added to the lab's own environment
    cwd: str | None = None
    timeout: float = WATCH_TIMEOUT_S  # the default; --timeout overrides it
    scenario: str | None = None
    launcher: str | None = None
    expected: str | None = None  # the verdict the catalog predicts; None for a raw command
    side_channel: bool = False  # give the command the report channel (lab.reports)
    scratch_env: str | None = None  # a per-run temporary directory, passed in this variable
    python_version: str | None = None  # the interpreter the target runs in, when not the lab's
    # Adds facts to the evidence before its final write (never after: nothing reopens it).
    # Called with the RunSession; typed Any so that what a run runs needs nothing of how.
    annotate: Callable[[Any], None] | None = None
    # The lab's startup hook in every Python process of the tree (lab.hook): threads and stacks
    # at each fork, faulthandler to a file; and /proc snapshots of other parents at fork events.
    fork_hook: bool = False
    # A process that already runs (`lab inspect PID`): nothing is launched, nothing stopped.
    pid: int | None = None


def existing(pid: int, argv: list[str]) -> Target:
    """The process ``pid`` as it runs now, ``argv`` its command line."""
    return Target(argv=list(argv), label=f"inspect-{pid}", pid=pid)


def command(argv: list[str], timeout: float | None = None) -> Target:
    """A raw command, as `lab watch -- CMD` runs it: with the report channel and the fork
    hook (``LAB_NO_FORK_HOOK=1`` turns the hook off)."""
    label = Path(argv[0]).name if argv else "run"
    return Target(argv=list(argv), label=label, timeout=timeout or WATCH_TIMEOUT_S,
                  side_channel=True, fork_hook=True)
