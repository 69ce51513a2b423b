"""``lab soak``: run a scenario many times in one process and report what leaked.

Counted before and after (after a warm-up run, so lazily opened files do not count): the
lab's own open file descriptors, threads and child processes, the temporary directories this
process's runs create (``lab-<run-id>-*`` in the temp dir), and the evidence directories
(expected: one per run, nothing else).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from lab.envinfo import platform_info, platform_key
from lab.evidence import write_atomic
from lab.linux import procfs
from lab.options import RunOptions
from lab.progress import Progress
from lab.runner import run_scenario

SOAK_RUNS = 200


def _snapshot() -> dict[str, int]:
    # Only this process's runs: their ids carry its PID (lab.rundir.new_run_id).
    scratch = list(Path(tempfile.gettempdir()).glob(f"lab-*-{os.getpid()}-*"))
    return {"fds": len(os.listdir("/proc/self/fd")),
            "children": len(procfs.children(os.getpid())),
            "threads": len(os.listdir("/proc/self/task")),
            "temp_dirs": len(scratch)}


def soak(scenario: str = "chromadb-tokio", launcher: str = "fork", runs: int = SOAK_RUNS, *,
         out_base: Path, results: Path | None = None, quiet: bool = False) -> dict:
    """Run ``runs`` trials, return the leak report; ``leaks`` is empty when nothing leaked."""
    say = Progress(enabled=not quiet)
    options = RunOptions(debugger="none", out_base=out_base, echo_output=False)
    run_scenario(scenario, launcher, options, Progress(enabled=False))  # warm-up: imports, caches
    before = _snapshot()
    verdicts: Counter[str] = Counter()
    seconds = []
    for index in range(1, runs + 1):
        started = time.monotonic()
        evidence = run_scenario(scenario, launcher, options, Progress(enabled=False))
        seconds.append(time.monotonic() - started)
        verdicts[evidence.verdict] += 1
        if index % 10 == 0 or index == runs:
            say.stage("soak", f"{index}/{runs}: {dict(verdicts)}, fds "
                      f"{_snapshot()['fds']} (started with {before['fds']})")
    after = _snapshot()
    leaks = {key: after[key] - before[key] for key in before if after[key] > before[key]}
    report = {
        "scenario": scenario, "launcher": launcher, "runs": runs,
        "platform": platform_key(platform_info()),
        "verdicts": dict(verdicts),
        "seconds": {"median": round(statistics.median(seconds), 3),
                    "max": round(max(seconds), 3), "total": round(sum(seconds), 1)},
        "before": before, "after": after, "leaks": leaks,
        "evidence_dirs": len([p for p in out_base.iterdir() if p.is_dir()]),
    }
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(results, json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=SOAK_RUNS)
    parser.add_argument("--scenario", default="chromadb-tokio")
    parser.add_argument("--launcher", default="fork")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lab-soak-evidence-") as out:
        report = soak(args.scenario, args.launcher, args.runs, out_base=Path(out),
                      results=Path("results") / f"soak-{platform_key(platform_info())}.json")
    print(json.dumps(report, indent=2))
    return 1 if report["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
