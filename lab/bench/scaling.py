"""Scaling: detection time and the watcher's CPU as the tree and the parent's threads grow.

Each size runs ``lab.bench.tree`` under the lab's watcher, in this process, twice: with a
deadlocking last child (time from its fork to the proven verdict, and the watcher's CPU while
it followed the tree), and without one for a fixed window (the watcher's steady CPU share).
Then the watcher's overhead on a command that is ok: watched wall time minus bare wall time.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab.bench.context import BenchContext, BenchFailed
from lab.bench.stats import median_of, summary
from lab.envinfo import platform_info
from lab.evidence import write_atomic
from lab.options import RunOptions
from lab.progress import Progress
from lab.session import RunSession
from lab.target import command
from lab.watch.watcher import POLL_INTERVAL_S, SLOW_S, Watcher, watch as watch_target

REPO = Path(__file__).resolve().parents[2]
CHILDREN, QUICK_CHILDREN = (1, 8, 32, 128), (1, 8)
THREADS, QUICK_THREADS = (2, 8, 32, 128), (2, 8)  # the parent's threads, lock holder included
REPEATS, QUICK_REPEATS = 3, 1  # deadlock runs per size
WINDOW_S, QUICK_WINDOW_S = 3.0, 1.5  # the steady run: the watcher follows a tree this long
IDLE_CHILDREN = 9  # with the parent: a 10-process tree, every process idle
IDLE_S, QUICK_IDLE_S = 60.0, 5.0
TARGET_IDLE_SHARE = 0.02  # of one core
DEADLOCK_TIMEOUT_S = 60.0
OVERHEAD_RUNS, QUICK_OVERHEAD_RUNS = 20, 5
CLI_RUNS, QUICK_CLI_RUNS = 5, 2
BARE_TIMEOUT_S = 30.0
TARGET_OVERHEAD_S = 0.05
# A watch writes evidence.json at launch, verdict and end, and summary.md: four atomic writes.
WRITES_PER_WATCH = 4
WRITE_PROBE_BYTES = 4096


class _TimedWatcher(Watcher):
    """A Watcher that also records its own CPU and wall time while following the tree."""

    follow_cpu_s = 0.0
    follow_wall_s = 0.0

    def follow(self, session: RunSession) -> str:
        cpu, wall = time.process_time(), time.monotonic()
        try:
            return super().follow(session)
        finally:
            self.follow_cpu_s = time.process_time() - cpu
            self.follow_wall_s = time.monotonic() - wall


def measure(ctx: BenchContext) -> dict:
    """Return {children: [...], threads: [...], watch_overhead: {...}}."""
    rows: dict[tuple[int, int], dict] = {}

    def row(children: int, threads: int) -> dict:
        if (children, threads) not in rows:  # 1 child, 2 threads is on both axes
            rows[children, threads] = _size(ctx, children, threads)
        return rows[children, threads]

    children = [row(n, THREADS[0]) for n in ctx.pick(CHILDREN, QUICK_CHILDREN)]
    threads = [row(1, t) for t in ctx.pick(THREADS, QUICK_THREADS)]
    return {"children": children, "threads": threads, "idle": _idle(ctx),
            "watch_overhead": _overhead(ctx), "poll_interval_s": POLL_INTERVAL_S,
            "slow_interval_s": SLOW_S}


def _idle(ctx: BenchContext) -> dict:
    """The watcher's CPU on a quiet 10-process tree (nothing proving anything) for a while."""
    window = ctx.pick(IDLE_S, QUICK_IDLE_S)
    ctx.say(f"scaling: watcher CPU on an idle {IDLE_CHILDREN + 1}-process tree for {window:g} s")
    run = _watch(ctx, IDLE_CHILDREN, 1, deadlock=False, timeout=window)
    return {"processes": run["processes"], "window_s": run["wall_s"], "cpu_s": run["cpu_s"],
            "cpu_share": run["cpu_share"], "target_share": TARGET_IDLE_SHARE,
            "target_met": run["cpu_share"] is not None
            and run["cpu_share"] <= TARGET_IDLE_SHARE, "watch_mode": run["watch_mode"]}


def _size(ctx: BenchContext, children: int, threads: int) -> dict:
    repeats = ctx.pick(REPEATS, QUICK_REPEATS)
    window = ctx.pick(WINDOW_S, QUICK_WINDOW_S)
    ctx.say(f"scaling: {children} child(ren), parent with {threads} threads: {repeats} "
            f"deadlock run(s), then {window:g} s steady")
    runs = [_watch(ctx, children, threads, deadlock=True, timeout=DEADLOCK_TIMEOUT_S)
            for _ in range(repeats)]
    steady = _watch(ctx, children, threads, deadlock=False, timeout=window)
    result = {
        "children": children, "threads": threads,
        "verdicts": [r["verdict"] for r in runs],
        "fork_to_verdict_s": summary(r["timings"].get("fork_to_verdict_s") for r in runs),
        "blocked_to_verdict_s": summary(r["timings"].get("blocked_to_verdict_s") for r in runs),
        "launch_to_verdict_s": summary(r["timings"].get("launch_to_verdict_s") for r in runs),
        "follow_cpu_share": summary(r["cpu_share"] for r in runs),
        "steady_cpu_share": steady["cpu_share"],
        "steady_cpu_s": steady["cpu_s"],
        "steady_wall_s": steady["wall_s"],
        "steady_verdict": steady["verdict"],
        "processes_followed": steady["processes"],
        "watch_mode": steady["watch_mode"],
    }
    ctx.say(f"scaling: {children}/{threads}: verdict "
            f"{median_of(result['fork_to_verdict_s'])} s after fork, watcher CPU "
            f"{result['steady_cpu_share']:.0%} of a core steady")
    return result


def _watch(ctx: BenchContext, children: int, threads: int, *, deadlock: bool,
           timeout: float) -> dict:
    argv = [sys.executable, "-m", "lab.bench.tree", "--children", str(children),
            "--threads", str(threads)] + (["--deadlock"] if deadlock else [])
    watch = _TimedWatcher()
    target = dataclasses.replace(command(argv, timeout), cwd=str(REPO))
    evidence = RunSession(target, RunOptions(debugger="none", out_base=ctx.runs_dir,
                                             echo_output=False),
                          Progress(enabled=False)).run(watch)
    shutil.rmtree(evidence.evidence_dir, ignore_errors=True)
    wall = watch.follow_wall_s
    return {"verdict": evidence.verdict, "timings": dict(evidence.timings),
            "cpu_s": round(watch.follow_cpu_s, 4), "wall_s": round(wall, 4),
            "cpu_share": round(watch.follow_cpu_s / wall, 4) if wall else None,
            "processes": len(evidence.processes), "watch_mode": evidence.watch_mode}


def _overhead(ctx: BenchContext) -> dict:
    runs = ctx.pick(OVERHEAD_RUNS, QUICK_OVERHEAD_RUNS)
    cli_runs = ctx.pick(CLI_RUNS, QUICK_CLI_RUNS)
    result = {"target_s": TARGET_OVERHEAD_S, "runs": runs, "commands": {}}
    for label, argv in (("true", ["true"]), ("python -c pass", [sys.executable, "-c", "pass"])):
        ctx.say(f"scaling: watch overhead on `{label}`, {runs} runs each")
        bare = summary(_bare(argv) for _ in range(runs))
        watched = summary(_watched(ctx, argv) for _ in range(runs))
        overhead = round(watched["median"] - bare["median"], 4)
        result["commands"][label] = {"bare_s": bare, "watched_s": watched,
                                     "overhead_s": overhead,
                                     "target_met": overhead <= TARGET_OVERHEAD_S}
        ctx.say(f"scaling: `{label}`: bare {bare['median']} s, watched {watched['median']} s, "
                f"overhead {overhead} s")
    # Where a watch of a command that is ok spends its time besides the command itself.
    result["parts"] = {
        "write_atomic_s": summary(_write_once(ctx) for _ in range(runs)),
        "writes_per_watch": WRITES_PER_WATCH,
        "platform_info_s": summary(_platform_once() for _ in range(runs)),
    }
    ctx.say(f"scaling: `python -m lab watch -- true` end to end, {cli_runs} runs")
    cli = [sys.executable, "-m", "lab", "watch", "--quiet", "--debugger", "none",
           "--out", str(ctx.runs_dir), "--", "true"]
    bare = summary(_bare(["true"]) for _ in range(cli_runs))
    whole = summary(_bare(cli, cwd=REPO) for _ in range(cli_runs))
    result["cli_true"] = {"bare_s": bare, "watched_s": whole,
                          "overhead_s": round(whole["median"] - bare["median"], 4),
                          "note": "includes starting the interpreter and importing the lab"}
    return result


def _write_once(ctx: BenchContext) -> float:
    began = time.monotonic()
    write_atomic(ctx.scratch / "write-probe.json", "x" * WRITE_PROBE_BYTES)
    return time.monotonic() - began


def _platform_once() -> float:
    began = time.monotonic()
    platform_info()
    return time.monotonic() - began


def _bare(argv: list[str], cwd: Path | None = None) -> float:
    began = time.monotonic()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=BARE_TIMEOUT_S, cwd=cwd)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise BenchFailed(f"{argv[0]} exited with {done.returncode}")
    return seconds


def _watched(ctx: BenchContext, argv: list[str]) -> float:
    began = time.monotonic()
    evidence = watch_target(command(argv, BARE_TIMEOUT_S),
                            RunOptions(debugger="none", out_base=ctx.runs_dir, echo_output=False),
                            Progress(enabled=False))
    seconds = time.monotonic() - began
    shutil.rmtree(evidence.evidence_dir, ignore_errors=True)
    if evidence.verdict != "ok":
        raise BenchFailed(f"{argv[0]} watched: verdict {evidence.verdict}, not ok")
    return seconds
