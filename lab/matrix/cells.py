"""The matrix's cells: every catalog scenario × launcher, and the Celery pools and fixes."""

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
    pool: str | None = None  # celery-chromadb only
    celery_fix: str | None = None

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.launcher}"


def _why_not(missing: list[str]) -> str | None:
    if sys.platform != "linux":
        return "needs Linux (/proc, ptrace)"
    return f"missing: {', '.join(missing)}" if missing else None


def all_cells() -> list[Cell]:
    """Every cell in catalog order, then celery-chromadb; ``why_not`` set where it cannot run."""
    import lab.celery_lab as celery

    cells = []
    for name in scenarios.names():
        scenario = scenarios.get(name)
        why = _why_not(scenario.missing())
        for launcher, expected in scenario.expected.items():
            cells.append(Cell(name, launcher, expected, why, scenario.fixed_of,
                              scenario.fix or None))
    for pool, fix in celery.combinations():
        cells.append(Cell(celery.SCENARIO, celery.launcher_name(pool, fix),
                          celery.expected(pool, fix), _why_not(celery.missing(pool)),
                          celery.SCENARIO if fix != "none" else None,
                          None if fix == "none" else f"create the client {_CELERY_FIX[fix]}",
                          pool=pool, celery_fix=fix))
    return cells


_CELERY_FIX = {"worker-process-init": "in a worker_process_init handler",
               "lazy": "lazily, on first use in the pool child"}


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
