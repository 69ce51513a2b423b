"""Cells the lab cannot run here but has a recorded transcript of (macOS: the LLDB trap)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab import matrix
from lab.errors import LabError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO / "tests" / "data" / "lldb-arm64-macos-trap.txt"

_STOP_REASON = re.compile(r"stop reason = ([^\n]+)")
# A transcript whose header says it was written by hand is not an observation.
_HAND_BUILT = re.compile(r"hand-built|not captured|illustrative", re.IGNORECASE)
# What LLDB says when the process was stopped by a fault or a trap rather than by the attach.
_CRASH_WORDS = re.compile(r"EXC_BREAKPOINT|EXC_BAD_ACCESS|EXC_BAD_INSTRUCTION|EXC_CRASH|"
                          r"SIGTRAP|SIGSEGV|SIGABRT|SIGBUS|SIGILL")


@dataclass(frozen=True)
class Recording:
    family: str  # platform id without the Python version, e.g. "darwin-arm64"
    scenario: str
    launcher: str
    expected: str
    note: str


MACOS_TRAP = Recording(
    family="darwin-arm64", scenario="chromadb-tokio", launcher="fork", expected="crash",
    note="on macOS the child is expected to trap, not hang: libdispatch finds the semaphore "
         "it inherited and traps (brk #0x1, SIGTRAP, EXC_BREAKPOINT); recorded with LLDB, not "
         "run by this lab here")


def _stop_reason(text: str) -> str | None:
    match = _STOP_REASON.search(text)
    return match.group(1).strip() if match else None


def _observed(source: Path, text: str) -> tuple[str | None, str | None]:
    """(verdict, stop reason) of a recorded LLDB transcript: the lab's parser when it has one
    for LLDB, else LLDB's own ``stop reason`` line."""
    try:
        from lab.parsers.document import evidence_from_transcript

        evidence = evidence_from_transcript("lldb", source)
        reason = evidence.debugger.stop_reason if evidence.debugger else None
        if evidence.verdict:
            return evidence.verdict, reason or _stop_reason(text)
    except (ImportError, LabError, ValueError, KeyError):
        pass
    reason = _stop_reason(text)
    if reason and _CRASH_WORDS.search(reason):
        return "crash", reason
    return None, reason


def hand_built(text: str) -> bool:
    """True when the transcript's leading comment says it was written by hand, not captured."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return bool(_HAND_BUILT.search("\n".join(header)))


def recorded_row(source: Path | None, recording: Recording = MACOS_TRAP) -> dict | None:
    """The row a transcript supports, or None when there is no such file or it shows no verdict
    (then nothing is claimed). A captured transcript gives a ``recorded`` row with its verdict
    counted; a hand-built one only an ``illustrative`` row: what it shows, counted as nothing."""
    if source is None or not Path(source).is_file():
        return None
    text = Path(source).read_text(errors="replace")
    verdict, reason = _observed(Path(source), text)
    if verdict is None:
        return None
    row = {"scenario": recording.scenario, "launcher": recording.launcher,
           "expected": recording.expected, "status": matrix.RECORDED, "why": recording.note,
           "trials": 1, "counts": {verdict: 1}, "observed": verdict,
           "rate": 1.0 if verdict == recording.expected else 0.0, "median_detect_s": None,
           "median_seconds": None, "evidence": None, "example": None,
           "source": _shown(Path(source)), "shows": verdict, "stop_reason": reason,
           "fixed_of": None, "fix": None}
    if hand_built(text):
        row.update(status=matrix.ILLUSTRATIVE, trials=0, counts={}, observed=None, rate=None,
                   why="a hand-built transcript (its header says so: no Mac was available), "
                       "not a capture: it shows the shape of the trap LLDB would print, and "
                       "observes nothing. " + _sentence(recording.note.split(";")[0]))
    return row


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
