"""The process a scenario runs in: prepare in the parent, report the threads at fork, launch.

Run by the lab as ``python -m lab.scenarios.host NAME --launcher L`` under a watch. When the
lab passes ``LAB_REPORT_FD``, a JSON line per fork goes there: the forking thread and every
other thread of the parent at that instant (the ones the child will not have).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lab import inventory, launchers, scenarios


def _report_forks(fd: int) -> None:
    def before_fork() -> None:
        tid, others = inventory.threads_at_fork()
        line = json.dumps({
            "event": "fork", "pid": os.getpid(), "tid": tid, "t_ns": time.monotonic_ns(),
            "threads": [t.__dict__ for t in others],
        })
        try:
            os.write(fd, line.encode() + b"\n")
        except OSError:
            pass  # the lab went away; the scenario still runs

    os.register_at_fork(before=before_fork)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.scenarios.host")
    parser.add_argument("scenario")
    parser.add_argument("--launcher", default="fork")
    args = parser.parse_args(argv)
    scenario = scenarios.get(args.scenario)
    launcher = launchers.get(args.launcher)
    state = scenario.prepare()
    fd = os.environ.get("LAB_REPORT_FD")
    if fd:
        _report_forks(int(fd))
    child = launcher.Popen(scenario.child, (state,))
    code = child.wait()
    print(f"parent: child {child.pid} ended with {code}", flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
