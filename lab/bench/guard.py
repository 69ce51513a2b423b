"""The cost of the fork guard: what a guarded ``fork()`` adds, with 1, 10 and 100 other threads.

Measured as the guard's own work at a fork (``Guard.check``: every other thread's stack read
and judged, the process's threads and libraries listed), in this process, with N other
threads idle in ``Event.wait`` (the commonest shape: nothing to flag). Off, the guard costs
nothing: ``os.fork`` is the interpreter's own function.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

from lab.bench.context import BenchContext

THREADS = (1, 10, 100)
GOAL_MS = 1.0  # with 10 threads (the goal; reported whatever it is)


def measure(ctx: BenchContext) -> dict:
    from lab import guard

    rounds = 20 if ctx.quick else 200
    import posix

    off = os.fork is posix.fork  # the guard off: the interpreter's own fork, nothing added
    rows = []
    for count in THREADS:
        stop = threading.Event()
        threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        checker = guard.Guard("warn")
        try:
            checker.check()  # the first reads each source file once (cached after)
            seconds = []
            for _ in range(rounds):
                began = time.perf_counter()
                checker.check()
                seconds.append(time.perf_counter() - began)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
        rows.append({"threads": count, "rounds": rounds,
                     "median_ms": round(statistics.median(seconds) * 1000, 4),
                     "max_ms": round(max(seconds) * 1000, 4)})
        ctx.say(f"fork guard with {count} other thread(s): {rows[-1]['median_ms']:.3f} ms "
                "added per fork (median)")
    ten = next(row for row in rows if row["threads"] == 10)
    return {"rows": rows, "goal_ms": GOAL_MS, "meets_goal": ten["median_ms"] < GOAL_MS,
            "off_is_os_fork": off}
