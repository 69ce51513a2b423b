"""The matrix's cells: every catalog entry × each of its launchers."""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass

from lab import scenarios
from lab.errors import BadInput
from lab.matrix.envs import Runtime


@dataclass(frozen=True)
class Cell:
    scenario: str
    launcher: str
    expected: str
    why_not: str | None = None  # None: it can run here
    fixed_of: str | None = None
    fix: str | None = None
    requires: tuple[str, ...] = ()  # the modules its scenario imports

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.launcher}"


def _why_not(entry, launcher: str, runtime: Runtime | None) -> str | None:
    if entry.needs_linux and not sys.platform.startswith("linux"):
        return f"needs Linux: {entry.needs_linux}"  # the portable backend runs the rest
    if runtime is not None and runtime.why_not:
        return runtime.why_not
    if runtime is None or runtime.own:
        missing = entry.missing(launcher)
    elif not entry.any_interpreter:
        return "runs in the lab's own interpreter only"
    else:
        failed = [runtime.failed[m] for m in entry.requires if m in runtime.failed]
        if failed:
            return failed[0]
        missing = [m for m in entry.requires if m in runtime.interpreter.missing]
    return f"missing: {', '.join(missing)}" if missing else None


def all_cells(runtime: Runtime | None = None) -> list[Cell]:
    """Every cell in catalog order, as ``runtime`` (default: the lab's own interpreter) runs
    it: ``why_not`` set where it cannot run, ``mp-default`` expecting what its interpreter's
    default start method expects."""
    method = runtime.interpreter.start_method if runtime else None
    cells = []
    for name in scenarios.names():
        entry = scenarios.get(name)
        for launcher in entry.expected:
            cells.append(Cell(name, launcher, entry.expectation(launcher, method),
                              _why_not(entry, launcher, runtime), *entry.fixes(launcher),
                              requires=tuple(entry.requires)))
    return cells


def patterns(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def matches(cell: Cell, pats: list[str]) -> bool:
    """True when a pattern (fnmatch) matches ``scenario/launcher`` or the scenario alone."""
    return any(fnmatch.fnmatchcase(cell.key, p) or fnmatch.fnmatchcase(cell.scenario, p)
               for p in pats)


def select(cells: list[Cell], only: str | None) -> list[Cell]:
    """The cells ``--only`` selects (all of them without it); raises BadInput when none does."""
    pats = patterns(only)
    if not pats:
        return list(cells)
    chosen = [c for c in cells if matches(c, pats)]
    if not chosen:
        raise BadInput(f"--only {only!r} matches no cell; cells are SCENARIO/LAUNCHER, e.g. "
                       "'chromadb-tokio/fork', '*/mp-spawn', 'python-lock-*' "
                       "(`python -m lab list` shows them)")
    return chosen
