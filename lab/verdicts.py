"""Verdicts for one process and for a whole run, their ranking and exit statuses."""

from __future__ import annotations

import enum


class Verdict(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    DATA_LOSS = "data-loss"  # exited fine, but a write it made is not there
    HANG = "hang"
    DEADLOCK = "deadlock"
    CRASH = "crash"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


# Worst wins when a run is judged from its processes.
_RANK = {
    Verdict.OK: 0,
    Verdict.ERROR: 1,
    Verdict.DATA_LOSS: 2,
    Verdict.HANG: 3,
    Verdict.DEADLOCK: 4,
    Verdict.CRASH: 5,
    Verdict.INTERRUPTED: 6,
}

# `lab watch` exit statuses: 0 only for ok; one distinct status per other verdict.
# 1-9 are left to errors of the lab itself (see lab.errors); 130/143 are the shell's
# convention for SIGINT/SIGTERM.
WATCH_EXIT_STATUS = {
    Verdict.OK: 0,
    Verdict.ERROR: 10,
    Verdict.CRASH: 11,
    Verdict.DEADLOCK: 12,
    Verdict.HANG: 13,
    Verdict.DATA_LOSS: 14,
    Verdict.INTERRUPTED: 130,
}

# `lab run` exits 0 when observed == expected and with this status when they differ.
RUN_MISMATCH_STATUS = 1
# `lab guard` exits with this status when the fork guard saw a risky fork (stopped or not).
GUARD_STATUS = 19


def worst(verdicts) -> Verdict:
    """Return the worst verdict of an iterable (ok when it is empty)."""
    result = Verdict.OK
    for verdict in verdicts:
        verdict = Verdict(verdict)
        if _RANK[verdict] > _RANK[result]:
            result = verdict
    return result
