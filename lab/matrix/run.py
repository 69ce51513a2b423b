"""``lab matrix``: run every cell N times here, write results/<platform>.json after each cell."""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
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
from lab.matrix import partial
from lab.matrix.cells import Cell, all_cells, patterns, select
from lab.matrix.envs import Runtime, prepare
from lab.options import RunOptions, run_fields

# Errors of the environment, not of one cell: every later cell would fail the same way.
FATAL = (DebuggerMissing, PtraceRefused, OutputNotWritable, Interrupted)


@dataclass
class MatrixOptions(RunOptions):
    """The matrix is many runs: ``out_base`` holds their evidence directories; each trial runs
    with these options as they are (``RunOptions``), quietly."""

    debugger: str = "none"
    trials: int = 5
    only: str | None = None
    results_dir: Path = Path("results")
    docs_dir: Path = Path("docs")
    command: str = "python -m lab matrix"  # as typed, secrets redacted
    stream: object = field(default=None)  # progress lines (default: stderr)
    python: str | None = None  # the interpreter to run the cells in (default: the lab's own)
    env_dir: Path = Path(".lab-envs")  # the interpreters' environments (lab.matrix.envs)

    @classmethod
    def from_args(cls, args) -> MatrixOptions:
        """From ``python -m lab matrix``'s arguments; ``command`` is the line as typed, with
        its secrets redacted."""
        return cls(**run_fields(args), trials=args.trials, only=args.only,
                   results_dir=Path(args.results_dir), docs_dir=Path(args.docs_dir),
                   env_dir=Path(args.env_dir),
                   command=shlex.join(redact.argv(["python", "-m", "lab", *sys.argv[1:]])))


def platform_doc(runtime: Runtime | None = None) -> dict:
    """This machine and interpreter as the matrix names them: ``id`` (e.g.
    linux-x86_64-py3.11) and the details; ``runtime``: another interpreter (lab.matrix.envs)."""
    from lab.envinfo import INTERESTING, platform_info, platform_key

    info = platform_info()
    if runtime is not None and not runtime.own:
        found = runtime.interpreter
        info.python = found.version
        info.packages = {"lab": info.packages["lab"], **{
            name: found.packages[name] for name in INTERESTING if name in found.packages}}
    doc = {"id": platform_key(info).lower(), "system": info.system, "machine": info.machine,
           "python": info.python, "libc": info.libc, "kernel": platform.release(),
           "cpus": os.cpu_count(), "packages": info.packages}
    if runtime is not None:
        python = Path(runtime.python or sys.executable)  # not resolved: a venv's is a symlink
        doc.update(interpreter=str(python.relative_to(Path.cwd()))
                   if python.is_relative_to(Path.cwd()) else str(python),
                   start_method=runtime.interpreter.start_method)
    return doc


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


def _fork_warning(runs: list[dict]) -> dict | None:
    """In how many trials CPython's fork DeprecationWarning fired, and the most threads it
    counted (None: no trial, or it never fired)."""
    if not runs:
        return None
    fired = [run["fork_warning"] for run in runs if run.get("fork_warning")]
    counts = [w["threads"] for w in fired if w.get("threads") is not None]
    return {"fired": len(fired), "threads": max(counts) if counts else None}


def row_for(cell: Cell, status: str, runs: list[dict] | None = None, why: str | None = None,
            example: str | None = None, ran: dict | None = None) -> dict:
    """One row of a results file: the cell, what happened, and where one example is; ``ran``:
    the run's start, Python and package versions, kept with the row (lab.matrix.partial)."""
    runs = runs or []
    methods = Counter(r["start_method"] for r in runs if r.get("start_method"))
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
            "example": example, "fixed_of": cell.fixed_of, "fix": cell.fix,
            "fork_warning": _fork_warning(runs),
            "start_method": methods.most_common(1)[0][0] if methods else None,
            **({"ran": ran["started"], "python": ran["python"],
                "packages": partial.cell_versions(cell.requires, ran["packages"])}
               if ran else {})}


def _run_cell(cell: Cell, options: MatrixOptions, say,
              python: str | None = None) -> tuple[str, list[dict], str | None]:
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
                   options, quiet=True, on_trial=on_trial, python=python)
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

    def __init__(self, options: MatrixOptions, cells: list[Cell], chosen: list[Cell],
                 runtime: Runtime):
        self.options = options
        self.platform = platform_doc(runtime)
        self.path = Path(options.results_dir) / f"{self.platform['id']}.json"
        self.examples = Path(options.docs_dir) / "examples" / self.platform["id"]
        self.started = time.monotonic()
        only = options.only
        picked = {c.key for c in chosen}
        # Measured cells of an earlier run stay, each with its own trials, date and versions,
        # unless this run measures them again (lab.matrix.partial).
        self.before, earlier = partial.previous(self.path, self.platform["id"])
        self.rows = {c.key: row_for(c, matrix.PENDING if c.key in picked and not c.why_not
                                    else matrix.NOT_RUN,
                                    why=c.why_not or (None if c.key in picked
                                                      else "not selected by --only"))
                     for c in cells}
        for key, row in self.rows.items():
            if row["status"] == matrix.NOT_RUN and key in self.before:
                self.rows[key] = self.before[key]
        self.run = {"command": options.command,
                    "trials": options.trials, "only": only, "debugger": options.debugger,
                    # to the millisecond: it names the run a row came from (lab.matrix.partial)
                    "started": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                    "seconds": 0.0,
                    "complete": False, "python": self.platform["python"]}
        if runtime.why_not:  # its environment could not be made: the panel is "not run here"
            self.run["why_not"] = runtime.why_not
        if runtime.env:
            self.run["env"] = {k: runtime.env.get(k) for k in ("path", "create_s",
                                                               "install_s")}
        self.earlier = [run for run in earlier if run.get("started") != self.run["started"]]
        self.ran = {"started": self.run["started"], "python": self.platform["python"],
                    "packages": self.platform["packages"]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.examples.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot write results under {self.path.parent}: "
                                    f"{exc.strerror}") from exc
        if not patterns(only):  # a full run replaces every example of this platform
            kept = {Path(options.docs_dir, row["example"]).resolve()
                    for key, row in self.rows.items()
                    if row.get("example") and row is self.before.get(key)}
            for old in self.examples.glob("*.md"):
                if old.resolve() not in kept:  # but those of cells it could not run again
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
        rows = list(self.rows.values())
        doc = {"schema": matrix.SCHEMA, "platform": self.platform, "run": self.run,
               "runs": partial.runs_in_use([*self.earlier, self.run], rows), "rows": rows}
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
    # Only the packages of the chosen cells are installed (a subset needs few or none).
    needed = sorted({m for cell in select(all_cells(), options.only) for m in cell.requires})
    runtime = prepare(options.python or sys.executable, needed, options.env_dir,
                      functools.partial(_say, stream, "env:"))
    cells = all_cells(runtime)
    chosen = select(cells, options.only)
    results = _Results(options, cells, chosen, runtime)
    results.write()
    total = len(chosen)
    cell = None
    try:
        for number, cell in enumerate(chosen, 1):
            say = functools.partial(_say, stream, f"[{number:>{len(str(total))}}/{total}]")
            if cell.why_not:
                say(f"{cell.key}: not run ({cell.why_not})")
                continue
            status, runs, why = _run_cell(cell, options, say, runtime.python)
            row = row_for(cell, status, runs, why=why, ran=results.ran)
            results.keep_example(cell, row)
            results.set(cell, row)
            say(f"{cell.key}: " + (_match_line(row) if status == matrix.RUN else
                                   f"{status} ({why})"))
    except FATAL as exc:
        # Wherever the signal landed, the file must end up saying what ran and what did not.
        if cell is not None and results.rows[cell.key]["status"] == matrix.PENDING:
            state = matrix.INTERRUPTED if isinstance(exc, Interrupted) else matrix.ERROR
            results.rows[cell.key] = row_for(cell, state, getattr(exc, "matrix_runs", []),
                                             why=exc.line(), ran=results.ran)
        for key, row in results.rows.items():
            if row["status"] == matrix.PENDING:
                row.update(status=matrix.NOT_RUN, why=f"not reached: {exc}")
                results.rows[key] = results.before.get(key, row)
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
