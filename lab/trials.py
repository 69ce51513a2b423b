"""``lab run --trials N``: N independent trials of one cell, tallied. Never retried."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path

from lab import interrupts, reports
from lab.options import RunOptions
from lab.progress import Progress
from lab.runner import run_scenario


def fork_warning(warnings: list[dict]) -> dict | None:
    """CPython's fork DeprecationWarning in one run: how many forks drew it, and the largest
    thread count the process had when it did; None when it did not fire."""
    fired = [w for w in warnings if reports.is_fork_warning(w)]
    if not fired:
        return None
    counts = [w["threads"] for w in fired if isinstance(w.get("threads"), int)]
    return {"times": len(fired), "threads": max(counts) if counts else None}


def run_trials(scenario: str, launcher: str | None, trials: int,
               options: RunOptions | None = None, *, quiet: bool = False,
               python: str | None = None, on_trial=None) -> dict:
    """Run ``trials`` independent runs; return the tally document.

    ``rate`` is the share of trials whose observed verdict equals the expected one, and
    ``verdict`` the most frequent verdict. A trial that does not reproduce is counted, not
    retried: the rate is the result.
    """
    options = options or RunOptions(debugger="none")
    if quiet:
        options = dataclasses.replace(options, echo_output=False)
    runs = []
    expected = None
    for index in range(1, trials + 1):
        interrupts.check()  # swallowed during the last trial's end: no further trial
        started = time.monotonic()
        evidence = run_scenario(scenario, launcher, options, Progress(enabled=not quiet),
                                python=python)
        expected, launcher = evidence.expected, evidence.launcher
        runs.append({"trial": index, "verdict": evidence.verdict,
                     "seconds": round(time.monotonic() - started, 3),
                     "detect_s": evidence.detect_s,
                     "start_method": evidence.start_method,
                     "fork_warning": fork_warning(evidence.warnings),
                     "evidence": str(Path(evidence.evidence_dir) / "evidence.json")})
        if on_trial is not None:
            on_trial(index, trials, runs[-1])
    counts = Counter(run["verdict"] for run in runs)
    return {
        "scenario": scenario,
        "launcher": launcher,
        "expected": expected,
        "trials": trials,
        "counts": dict(counts),
        "rate": round(sum(run["verdict"] == expected for run in runs) / trials, 4),
        "verdict": counts.most_common(1)[0][0],
        "runs": runs,
    }
