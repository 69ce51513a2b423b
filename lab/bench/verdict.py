"""Time to verdict: the lab's proof against the /proc floor and a ``join(timeout=10)`` watchdog.

For each deadlocking scenario, N lab runs (``run_scenario(..., debugger="none")``) alternate
with N floor runs (``lab.bench.hung floor``), so that both see the same machine load. The
watchdog runs for real: ``join(timeout=10)`` in the full bench; ``--quick`` runs it with a 1 s
join and says that the 10 s figure is then computed from the measured overshoot.
"""

from __future__ import annotations

import shutil
from collections import Counter

from lab.bench.context import BenchContext
from lab.bench.probe import Probe
from lab.bench.stats import median_of, ratio, summary
from lab.errors import Interrupted, LabError
from lab.options import RunOptions
from lab.progress import Progress
from lab.runner import run_scenario

SCENARIOS = ("chromadb-tokio", "python-lock-held")
RUNS, QUICK_RUNS = 20, 3
WATCHDOG_TIMEOUT_S, QUICK_WATCHDOG_TIMEOUT_S = 10.0, 1.0
WATCHDOG_RUNS, QUICK_WATCHDOG_RUNS = 3, 1
TARGET_S = 0.3  # the target: a proven verdict at most this long after the child blocks
FLOOR_TIMEOUT_S = 120.0  # one floor program: imports, prepare, fork, block (a hang guard)


def measure(ctx: BenchContext) -> dict:
    """Return {target_s, runs, watchdog, scenarios: {name: {lab, floor, watchdog, ratios}}}."""
    runs = ctx.pick(RUNS, QUICK_RUNS)
    join_timeout = ctx.pick(WATCHDOG_TIMEOUT_S, QUICK_WATCHDOG_TIMEOUT_S)
    watchdog_runs = ctx.pick(WATCHDOG_RUNS, QUICK_WATCHDOG_RUNS)
    result = {"target_s": TARGET_S, "runs": runs,
              "watchdog": {"join_timeout_s": join_timeout, "runs": watchdog_runs,
                           "computed_10s": join_timeout != WATCHDOG_TIMEOUT_S},
              "scenarios": {}}
    for name in SCENARIOS:
        try:
            result["scenarios"][name] = _scenario(ctx, name, runs, join_timeout, watchdog_runs)
        except Interrupted:
            raise  # SIGINT/SIGTERM ends the bench; anything else skips one measurement
        except LabError as exc:
            ctx.say(f"time to verdict, {name}: skipped: {exc.line()}")
            result["scenarios"][name] = {"error": exc.line()}
    return result


def _scenario(ctx: BenchContext, name: str, runs: int, join_timeout: float,
              watchdog_runs: int) -> dict:
    lab_runs, floor_runs = [], []
    for index in range(1, runs + 1):
        lab_runs.append(_lab_run(ctx, name))
        floor_runs.append(_floor_run(ctx, name))
        ctx.say(f"time to verdict, {name} {index}/{runs}: lab "
                f"{_fmt(lab_runs[-1].get('fork_to_verdict_s'))} after fork "
                f"({lab_runs[-1]['verdict']}), floor "
                f"{_fmt(floor_runs[-1].get('fork_to_blocked_s'))}")
    watchdog_runs_done = []
    for index in range(1, watchdog_runs + 1):
        watchdog_runs_done.append(_watchdog_run(ctx, name, join_timeout))
        ctx.say(f"time to verdict, {name}: join(timeout={join_timeout:g}) watchdog "
                f"{index}/{watchdog_runs}: knew after "
                f"{_fmt(watchdog_runs_done[-1]['start_to_known_s'])}")
    lab = {
        "verdicts": dict(Counter(run["verdict"] for run in lab_runs)),
        "fork_to_verdict_s": summary(r.get("fork_to_verdict_s") for r in lab_runs),
        "fork_to_blocked_s": summary(r.get("fork_to_blocked_s") for r in lab_runs),
        "blocked_to_verdict_s": summary(r.get("blocked_to_verdict_s") for r in lab_runs),
        "launch_to_verdict_s": summary(r.get("launch_to_verdict_s") for r in lab_runs),
    }
    floor = {
        "fork_to_blocked_s": summary(r.get("fork_to_blocked_s") for r in floor_runs),
        "polls": summary(r.get("polls") for r in floor_runs),
        "fork_call_s": summary(r.get("fork_call_s") for r in floor_runs),
        "child_cpu_s": summary(r.get("child_cpu_s") for r in floor_runs),
        "unblocked_runs": sum(r.get("fork_to_blocked_s") is None for r in floor_runs),
    }
    overshoot = summary(r["start_to_known_s"] - join_timeout for r in watchdog_runs_done)
    watchdog = {
        "join_timeout_s": join_timeout,
        "start_to_known_s": summary(r["start_to_known_s"] for r in watchdog_runs_done),
        "alive_at_timeout": sum(bool(r["alive"]) for r in watchdog_runs_done),
        "overshoot_s": overshoot,
        # With the real 10 s join this is the measured median; with --quick's 1 s join it is
        # 10 s plus the measured overshoot (computed, and marked so in the results).
        "known_at_10s_s": round(WATCHDOG_TIMEOUT_S + (median_of(overshoot) or 0.0), 4),
    }
    lab_median = median_of(lab["fork_to_verdict_s"])
    floor_median = median_of(floor["fork_to_blocked_s"])
    # The child cannot block before it has run for the CPU time it needed to get there, so
    # "verdict minus that CPU time" bounds from above how long after the block the proof came.
    cpu = floor["child_cpu_s"]
    after_block = _minus(lab_median, median_of(cpu))
    worst_after_block = _minus(lab["fork_to_verdict_s"]["max"], cpu["min"])
    return {
        "lab": lab, "floor": floor, "watchdog": watchdog,
        "ratios": {
            "lab_to_floor": ratio(lab_median, floor_median),
            "lab_to_child_cpu": ratio(lab_median, median_of(cpu)),
            "watchdog_10s_to_lab": ratio(watchdog["known_at_10s_s"], lab_median),
            "lab_to_watchdog_10s": ratio(lab_median, watchdog["known_at_10s_s"], 4),
        },
        "verdict_after_block_s": after_block,
        "worst_verdict_after_block_s": worst_after_block,
        "target_met": worst_after_block is not None and worst_after_block <= TARGET_S,
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def _lab_run(ctx: BenchContext, name: str) -> dict:
    evidence = run_scenario(name, "fork", RunOptions(debugger="none", out_base=ctx.runs_dir,
                                                     echo_output=False), Progress(enabled=False))
    shutil.rmtree(evidence.evidence_dir, ignore_errors=True)
    record = {"verdict": evidence.verdict}
    if evidence.verdict == "deadlock":
        record.update(evidence.timings)
    return record


def _floor_run(ctx: BenchContext, name: str) -> dict:
    with Probe("lab.bench.hung", [name, "floor"], ctx.log("floor"), env=ctx.env()) as probe:
        return probe.read(FLOOR_TIMEOUT_S)


def _watchdog_run(ctx: BenchContext, name: str, join_timeout: float) -> dict:
    with Probe("lab.bench.hung", [name, "watchdog", "--join-timeout", str(join_timeout)],
               ctx.log("watchdog"), env=ctx.env()) as probe:
        return probe.read(FLOOR_TIMEOUT_S + join_timeout)


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"
