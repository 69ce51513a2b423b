"""Cost of the fixes for chromadb-tokio: per-child start cost, and a subprocess per query.

Per start method, K children one after another (``lab.bench.fixprobe start``): from
``Process.start()`` to the child's first line (start) and to its first answered query (ready).
Then the alternative the seeds used: a fresh process per query, timed from outside (interpreter
start, imports, client, query), against a query on a long-lived client.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lab.bench.context import BenchContext
from lab.bench.fixprobe import METHODS
from lab.bench.probe import Probe
from lab.bench.stats import median_of, ratio, summary
from lab.errors import Interrupted, LabError

SCENARIO = "chromadb-tokio"
CHILDREN, QUICK_CHILDREN = 5, 2
FRESH_QUERIES, QUICK_FRESH_QUERIES = 10, 2
WARM_QUERIES, QUICK_WARM_QUERIES = 50, 10
PROGRAM_TIMEOUT_S = 300.0  # one fixprobe program, all its children included
SEEDS_PER_QUERY_S = (0.2, 0.3)  # what the seeds reported for a process per graph-db query


def measure(ctx: BenchContext) -> dict:
    """Return {scenario, start: {method: {...}}, per_query: {...}}."""
    path = ctx.scratch / "fixes-db"
    try:
        _run(ctx, ["seed", str(path)], "seed")
        start = {method: _start(ctx, method, path) for method in METHODS}
        per_query = _per_query(ctx, path)
    except Interrupted:
        raise  # SIGINT/SIGTERM ends the bench; anything else skips one measurement
    except LabError as exc:
        ctx.say(f"cost of the fixes: skipped: {exc.line()}")
        return {"scenario": SCENARIO, "error": exc.line()}
    return {"scenario": SCENARIO, "start": start, "per_query": per_query}


def _start(ctx: BenchContext, method: str, path: Path) -> dict:
    children = ctx.pick(CHILDREN, QUICK_CHILDREN)
    ctx.say(f"cost of the fixes: {children} children under {method}")
    records = _run(ctx, ["start", method, str(path), "--children", str(children)], method,
                   count=children)
    later = records[1:] or records
    result = {
        "children": len(records),
        "first_start_s": records[0]["start_s"],
        "first_ready_s": records[0]["ready_s"],
        "start_s": summary(r["start_s"] for r in later),
        "ready_s": summary(r["ready_s"] for r in later),
        "exit_codes": [r["exit_code"] for r in records],
        "answers_queries": method != "fork",
    }
    ctx.say(f"cost of the fixes: {method}: start {median_of(result['start_s'])} s, ready "
            f"{median_of(result['ready_s'])} s (median after the first child)")
    return result


def _per_query(ctx: BenchContext, path: Path) -> dict:
    fresh_n = ctx.pick(FRESH_QUERIES, QUICK_FRESH_QUERIES)
    ctx.say(f"cost of the fixes: {fresh_n} fresh processes, one query each")
    walls, parts = [], []
    for _ in range(fresh_n):
        began = time.monotonic()
        parts.append(_run(ctx, ["query", str(path)], "query")[0])
        walls.append(time.monotonic() - began)
    warm_n = ctx.pick(WARM_QUERIES, QUICK_WARM_QUERIES)
    warm = _run(ctx, ["warm", str(path), "--queries", str(warm_n)], "warm")[0]["query_s"]
    fresh = summary(walls)
    warm_summary = summary(warm[1:] or warm)  # the first query warms the client's caches
    ctx.say(f"cost of the fixes: a process per query {median_of(fresh)} s, a warm query "
            f"{median_of(warm_summary)} s")
    return {
        "fresh_process_s": fresh,
        "fresh_import_s": summary(p["import_s"] for p in parts),
        "fresh_open_s": summary(p["open_s"] for p in parts),
        "fresh_query_s": summary(p["query_s"] for p in parts),
        "warm_query_s": warm_summary,
        "warm_first_query_s": round(warm[0], 4),
        "fresh_to_warm": ratio(median_of(fresh), median_of(warm_summary), 0),
        "seeds_reported_s": list(SEEDS_PER_QUERY_S),
    }


def _run(ctx: BenchContext, args: list[str], label: str, count: int = 1) -> list[dict]:
    """Run one fixprobe program; return its ``count`` result lines; it is reaped in every case."""
    with Probe("lab.bench.fixprobe", args, ctx.log(f"fix-{label}"), env=ctx.env()) as probe:
        deadline = time.monotonic() + PROGRAM_TIMEOUT_S
        records = [probe.read(max(0.1, deadline - time.monotonic())) for _ in range(count)]
        try:
            probe.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass  # the records are in; close() kills it
        return records
