"""``python -m lab.celery_lab``: every pool and fix once under the lab, then a table.

Usage::

    python -m lab.celery_lab                         # the matrix (``make celery``)
    python -m lab.celery_lab --pool prefork          # one run, progress and worker output
    python -m lab.celery_lab --pool prefork --fix worker-process-init --json

The matrix runs each pool with the client made at import (the field's code), then prefork
with each fix, one trial each; gevent and eventlet only where they import (a skipped row says
why). A last row runs prefork once more *without* the lab, to show what Celery itself reports
when nobody proves the deadlock: nothing until the hard time limit SIGKILLs the pool child.
Exit status: 0 when every observed outcome is the expected one, 1 otherwise; a lab error
prints one line and exits with its own status (see ``python -m lab --help``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import arguments, celery_lab
from lab.arguments import OneLineParser
from lab.options import RunOptions
from lab.progress import Progress

ALONE_EXPECTED = "TimeLimitExceeded"  # Celery's own answer to the hang: the hard time limit
ALONE_MARGIN_S = 30.0  # past the driver's own deadlines, before it is killed from outside
STOP_GRACE_S = 20.0  # SIGTERM to the driver: its cold shutdown and SIGKILL deadlines fit


def _row(pool: str, fix: str, expected: str, observed: str, lab_s, report: dict,
         note: str = "") -> dict:
    return {"pool": pool, "fix": fix, "expected": expected, "observed": observed,
            "task_to_verdict_s": lab_s, "soft_time_limit_s": report.get("soft_time_limit_s"),
            "hard_time_limit_s": report.get("hard_time_limit_s"),
            "celery_reported": report.get("reported") or note, "evidence_dir": None}


def run_one(pool: str, fix: str, options: RunOptions, progress: Progress | None) -> dict:
    from lab.celery_lab.runner import celery_report, run_celery
    from lab.scenarios import MissingPackage

    soft, hard = celery_lab.time_limits()
    limits = {"soft_time_limit_s": soft, "hard_time_limit_s": hard}
    expected = celery_lab.expected(pool, fix)
    try:
        evidence = run_celery(pool, fix, options, progress)
    except MissingPackage as exc:
        return _row(pool, fix, expected, "skipped", None, limits, f"skipped: {exc.line()}")
    report = celery_report(evidence)
    row = _row(pool, fix, expected, evidence.verdict,
               evidence.timings.get("task_to_verdict_s"), {**limits, **report})
    row["evidence_dir"] = evidence.evidence_dir
    return row


def run_alone(args) -> dict:
    """prefork with the client made at import, no lab: what Celery itself says, and when."""
    soft, hard = celery_lab.time_limits()
    limits = {"soft_time_limit_s": soft, "hard_time_limit_s": hard}
    from lab.celery_lab import drive

    directory = Path(tempfile.mkdtemp(prefix="lab-celery-alone-"))
    argv = [sys.executable, "-m", "lab.celery_lab.drive", "--pool", "prefork", "--fix", "none",
            "--dir", str(directory)]
    budget = (drive.STARTUP_TIMEOUT_S + hard + drive.RESULT_GRACE_S + drive.WARM_SHUTDOWN_S
              + drive.KILL_DEADLINE_S + ALONE_MARGIN_S)
    sys.stderr.write(f"celery-lab: prefork/none without the lab: waiting for Celery's own "
                     f"hard time limit ({hard:g} s)\n")
    # Its own session: killpg reaches the driver, its worker and the pool child at once.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    try:
        proc.wait(timeout=budget)
        report = json.loads((directory / "celery.json").read_text())
    except (subprocess.TimeoutExpired, FileNotFoundError, ValueError):
        report = {}
    finally:
        _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)
    result = str(report.get("result") or "")
    observed = ("nothing" if not report.get("state") else
                result.split(":", 1)[0] if report.get("state") != "SUCCESS" else "SUCCESS")
    row = _row("prefork", "none (no lab)", ALONE_EXPECTED, observed, None, {**limits, **report},
               "nothing: the driver ended without a report")
    row["celery_s"] = report.get("task_s")
    return row


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the driver (it stops its worker), then SIGKILL its whole session; reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass


def table(rows: list[dict]) -> str:
    """The matrix as aligned text: one line per run, Celery's words last and unabridged."""
    head = ["pool", "fix", "expected", "observed", "lab knew after", "task limits",
            "what Celery reported"]
    lines = []
    for row in rows:
        lab_s = row["task_to_verdict_s"]
        knew = (f"{lab_s:.2f} s" if isinstance(lab_s, (int, float)) else
                "-" if row["observed"] == "skipped" else "no lab")
        limits = (f"{row['soft_time_limit_s']:g}/{row['hard_time_limit_s']:g} s"
                  if row.get("hard_time_limit_s") else "-")
        mark = "" if row["observed"] in (row["expected"], "skipped") else "  <-- MISMATCH"
        lines.append([row["pool"], row["fix"], row["expected"], row["observed"], knew, limits,
                      (row["celery_reported"] or "") + mark])
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for cells in [head, ["-" * w for w in widths] + ["-" * 20], *lines]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
    out.append("lab knew after: seconds from the task starting in its process to the lab's "
               "verdict (for ok, that includes Celery's warm shutdown); task limits: soft/hard")
    return "\n".join(out) + "\n"


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m lab.celery_lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=celery_lab.POOLS, help="run this pool only, once")
    parser.add_argument("--fix", choices=celery_lab.FIXES, default="none")
    arguments.add_debugger(parser, None, "the debugger attached to the culprit (default: auto "
                           "for one run, none for the matrix)")
    arguments.add_timeout(parser, "seconds before a run is a hang (default: the catalog's)")
    arguments.add_out(parser)
    parser.add_argument("--json", action="store_true", help="one run: the evidence document; "
                        "the matrix: its rows")
    arguments.add_quiet(parser)
    parser.add_argument("--no-alone", action="store_true",
                        help="skip the run without the lab (it lasts the hard time limit)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return arguments.main(lambda: _parser().parse_args(argv),
                          lambda args: _single(args) if args.pool else _matrix(args))


def _single(args) -> int:
    """One pool, once: what `python -m lab run celery-chromadb --pool P --fix F` does."""
    from lab.celery_lab.runner import run_celery

    args.debugger = args.debugger or "auto"
    evidence = run_celery(args.pool, args.fix, RunOptions.from_args(args),
                          Progress(enabled=not args.quiet))
    return arguments.run_status(evidence, args.json, args.quiet)


def _matrix(args) -> int:
    args.debugger = args.debugger or "none"
    options = dataclasses.replace(RunOptions.from_args(args), echo_output=False)
    rows = []
    started = time.monotonic()
    for pool, fix in celery_lab.combinations():
        sys.stderr.write(f"celery-lab: pool {pool}, fix {fix} ...\n")
        row = run_one(pool, fix, options, Progress(enabled=False))
        sys.stderr.write(f"celery-lab:   expected {row['expected']}, observed {row['observed']}; "
                         f"celery: {row['celery_reported']}\n")
        rows.append(row)
    if not args.no_alone:
        rows.append(run_alone(args))
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(table(rows))
        sys.stdout.write(f"{len(rows)} runs in {time.monotonic() - started:.0f} s; evidence "
                         f"under {options.out_base}/\n")
    bad = [r for r in rows if r["observed"] not in (r["expected"], "skipped")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
