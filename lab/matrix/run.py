"""``lab matrix``: run every cell N times here, write results/<platform>.json after each cell."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lab import matrix, redact
from lab.errors import (
    DebuggerMissing,
    Interrupted,
    LabError,
    OutputNotWritable,
    PtraceRefused,
)
from lab.evidence import write_atomic
from lab.matrix.cells import Cell, all_cells, patterns, select
from lab.options import RunOptions

# Errors of the environment, not of one cell: every later cell would fail the same way.
FATAL = (DebuggerMissing, PtraceRefused, OutputNotWritable, Interrupted)


@dataclass
class MatrixOptions:
    trials: int = 5
    only: str | None = None
    debugger: str = "none"
    timeout: float | None = None
    out_base: Path = Path("crash_dumps")  # the runs' evidence directories
    results_dir: Path = Path("results")
    docs_dir: Path = Path("docs")
    command: str = "python -m lab matrix"  # as typed, secrets redacted
    stream: object = field(default=None)  # progress lines (default: stderr)


def platform_doc() -> dict:
    """This machine as the matrix names it: ``id`` (e.g. linux-x86_64-py3.11) and the details."""
    from lab.envinfo import platform_info, platform_key

    info = platform_info()
    return {"id": platform_key(info).lower(), "system": info.system, "machine": info.machine,
            "python": info.python, "libc": info.libc, "kernel": platform.release(),
            "cpus": os.cpu_count(), "packages": info.packages}


def tally(expected: str, runs: list[dict]) -> dict:
    """Counts, rate (share of runs whose verdict is ``expected``) and the most frequent verdict;
    the same fields as ``lab.trials.run_trials`` returns."""
    counts = Counter(run["verdict"] for run in runs)
    return {"counts": dict(counts),
            "rate": round(sum(r["verdict"] == expected for r in runs) / len(runs), 4)
            if runs else None,
            "verdict": counts.most_common(1)[0][0] if runs else None}


def _display_path(path: str | Path | None) -> str | None:
    if path is None:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def row_for(cell: Cell, status: str, runs: list[dict] | None = None, why: str | None = None,
            example: str | None = None) -> dict:
    """One row of a results file: the cell, what happened, and where one example is."""
    runs = runs or []
    counted = tally(cell.expected, runs) if runs else {"counts": {}, "rate": None,
                                                          "verdict": None}
    detect = [r["detect_s"] for r in runs if r.get("detect_s") is not None]
    pick = next((r for r in runs if r["verdict"] == counted["verdict"]), None)
    return {"scenario": cell.scenario, "launcher": cell.launcher, "expected": cell.expected,
            "status": status, "why": why, "trials": len(runs), "counts": counted["counts"],
            "observed": counted["verdict"], "rate": counted["rate"],
            "median_detect_s": round(statistics.median(detect), 4) if detect else None,
            "median_seconds": round(statistics.median(r["seconds"] for r in runs), 4)
            if runs else None,
            "evidence": _display_path(pick["evidence"]) if pick else None,
            "example": example, "fixed_of": cell.fixed_of, "fix": cell.fix}


def _run_cell(cell: Cell, options: MatrixOptions, say) -> tuple[str, list[dict], str | None]:
    """Run ``cell``'s trials; return (status, runs, why). Fatal errors propagate with the runs
    done so far attached as ``exc.matrix_runs``."""
    from lab.scenarios import MissingPackage
    from lab.trials import run_trials

    runs: list[dict] = []

    def on_trial(index: int, total: int, run: dict) -> None:
        runs.append(run)
        say(f"{cell.key} trial {index}/{total}: {run['verdict']} in {run['seconds']:.2f} s")

    try:
        run_trials(cell.scenario, cell.launcher, options.trials,
                   RunOptions(debugger=options.debugger, timeout=options.timeout,
                              out_base=options.out_base), quiet=True, on_trial=on_trial)
    except MissingPackage as exc:
        return matrix.NOT_RUN, runs, exc.line()
    except FATAL as exc:
        exc.matrix_runs = runs
        raise
    except LabError as exc:
        return matrix.ERROR, runs, exc.line()
    return matrix.RUN, runs, None


class _Results:
    """The results file of this run, rewritten atomically after every cell."""

    def __init__(self, options: MatrixOptions, cells: list[Cell], chosen: list[Cell]):
        self.options = options
        self.platform = platform_doc()
        self.path = Path(options.results_dir) / f"{self.platform['id']}.json"
        self.examples = Path(options.docs_dir) / "examples" / self.platform["id"]
        self.started = time.monotonic()
        only = options.only
        picked = {c.key for c in chosen}
        self.rows = {c.key: row_for(c, matrix.PENDING if c.key in picked and not c.why_not
                                    else matrix.NOT_RUN,
                                    why=c.why_not or (None if c.key in picked
                                                      else "not selected by --only"))
                     for c in cells}
        self.run = {"command": options.command,
                    "trials": options.trials, "only": only, "debugger": options.debugger,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": 0.0,
                    "complete": False}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.examples.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot write results under {self.path.parent}: "
                                    f"{exc.strerror}") from exc
        if not patterns(only):  # a full run replaces every example of this platform
            for old in self.examples.glob("*.md"):
                old.unlink()

    def keep_example(self, cell: Cell, row: dict) -> None:
        """Copy the example run's summary.md under docs/examples/<platform>/ (the committed
        docs link there: crash_dumps/ is not committed)."""
        if not row["evidence"]:
            return
        summary = Path(row["evidence"]).with_name("summary.md")
        if not summary.is_file():
            return
        target = self.examples / f"{cell.scenario}--{cell.launcher}.md"
        write_atomic(target, redact.text(summary.read_text(errors="replace")))
        row["example"] = os.path.relpath(target, self.options.docs_dir)

    def set(self, cell: Cell, row: dict) -> None:
        self.rows[cell.key] = row
        self.write()

    def write(self, complete: bool = False) -> Path:
        self.run["seconds"] = round(time.monotonic() - self.started, 1)
        self.run["complete"] = complete
        doc = {"schema": matrix.SCHEMA, "platform": self.platform, "run": self.run,
               "rows": list(self.rows.values())}
        write_atomic(self.path, json.dumps(doc, indent=2) + "\n")
        return self.path


def run_matrix(options: MatrixOptions) -> dict:
    """Run the selected cells ``options.trials`` times each; return the results document.

    The results file is rewritten after every cell, so an interrupted matrix keeps what it
    measured: ``Interrupted`` (and the other errors that would fail every cell) propagate after
    that file says which cells did not run and why. Raises BadInput for an ``--only`` that
    matches nothing.
    """
    stream = options.stream or sys.stderr
    cells = all_cells()
    chosen = select(cells, options.only)
    results = _Results(options, cells, chosen)
    results.write()
    total = len(chosen)
    cell = None
    try:
        for number, cell in enumerate(chosen, 1):
            say = functools.partial(_say, stream, f"[{number:>{len(str(total))}}/{total}]")
            if cell.why_not:
                say(f"{cell.key}: not run ({cell.why_not})")
                continue
            status, runs, why = _run_cell(cell, options, say)
            row = row_for(cell, status, runs, why=why)
            results.keep_example(cell, row)
            results.set(cell, row)
            say(f"{cell.key}: " + (_match_line(row) if status == matrix.RUN else
                                   f"{status} ({why})"))
    except FATAL as exc:
        # Wherever the signal landed, the file must end up saying what ran and what did not.
        if cell is not None and results.rows[cell.key]["status"] == matrix.PENDING:
            state = matrix.INTERRUPTED if isinstance(exc, Interrupted) else matrix.ERROR
            results.rows[cell.key] = row_for(cell, state, getattr(exc, "matrix_runs", []),
                                             why=exc.line())
        for row in results.rows.values():
            if row["status"] == matrix.PENDING:
                row.update(status=matrix.NOT_RUN, why=f"not reached: {exc}")
        results.write()
        _say(stream, "stopped:", f"{exc}; results so far in {results.path}")
        raise
    path = results.write(complete=True)
    stream.write(f"lab: matrix: {total} cell(s) in {results.run['seconds']:.0f} s; "
                 f"results in {path}\n")
    return json.loads(path.read_text())


def _say(stream, where: str, text: str) -> None:
    stream.write(f"lab: matrix {where} {text}\n")
    stream.flush()


def _match_line(row: dict) -> str:
    hits = row["counts"].get(row["expected"], 0)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items()))
    tag = "as expected" if hits == row["trials"] else "NOT as expected"
    median = row["median_detect_s"]
    return (f"{hits}/{row['trials']} {row['expected']} ({tag}: {counts})"
            + ("" if median is None else f", median {median:.2f} s to the verdict"))
