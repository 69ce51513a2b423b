"""The matrix's cells: every catalog entry × each of its launchers."""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass

from lab import scenarios
from lab.errors import BadInput


@dataclass(frozen=True)
class Cell:
    scenario: str
    launcher: str
    expected: str
    why_not: str | None = None  # None: it can run here
    fixed_of: str | None = None
    fix: str | None = None

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.launcher}"


def _why_not(missing: list[str]) -> str | None:
    if sys.platform != "linux":
        return "needs Linux (/proc, ptrace)"
    return f"missing: {', '.join(missing)}" if missing else None


def all_cells() -> list[Cell]:
    """Every cell in catalog order; ``why_not`` set where it cannot run."""
    cells = []
    for name in scenarios.names():
        entry = scenarios.get(name)
        for launcher, expected in entry.expected.items():
            cells.append(Cell(name, launcher, expected, _why_not(entry.missing(launcher)),
                              *entry.fixes(launcher)))
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
