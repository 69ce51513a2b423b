"""A scenario's forked child watched without the lab: the /proc floor, a join() watchdog, a hold.

``python -m lab.bench.hung SCENARIO floor``: fork the child, poll ``/proc/CHILD/task/*/syscall``
as fast as Python can until every thread of the child sleeps in a private futex wait with no
timeout (the first moment the hang is observable at all), report, kill the child.
``... watchdog --join-timeout S``: what users have today, ``Process.start()`` then
``join(timeout=S)`` and ``is_alive()``.
``... hold``: wait until the child is blocked as ``floor`` does, report its pid, then keep it
until stdin closes (the bench attaches debuggers to it meanwhile).
Results go to the bench as JSON lines (``lab.bench.probe.emit``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from lab import launchers, scenarios
from lab.bench.probe import emit
from lab.evidence import ThreadState
from lab.linux import syscalls
from lab.scenarios.host import run_child
from lab.watch.judge import waits_forever

BLOCK_DEADLINE_S = 60.0  # a child that is not blocked by then is reported as such


def blocked_forever(pid: int) -> bool | None:
    """True when every thread of ``pid`` sleeps in a private futex wait without a timeout.

    Reads only ``/proc/PID/task/TID/syscall`` (a sleeping thread shows its syscall there, a
    running one shows ``running``): the least a poll can read. None once the process is gone.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall", "rb") as handle:
                line = handle.read().decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        call = syscalls.parse_proc_syscall(line)
        if not waits_forever(ThreadState(tid=int(tid), name="", state="S", wchan="",
                                         syscall=call)):
            return False
    return bool(tids)


def _prepare(name: str):
    scenario = scenarios.get(name)
    state = scenario.prepare()
    payload = scenario.handoff(state, False) if scenario.handoff else state
    return scenario, state, payload


def _poll_until_blocked(pid: int) -> tuple[int | None, int]:
    """Return (monotonic ns when first seen blocked, or None, polls made)."""
    polls = 0
    deadline = time.monotonic_ns() + int(BLOCK_DEADLINE_S * 1e9)
    while time.monotonic_ns() < deadline:
        polls += 1
        seen = blocked_forever(pid)
        if seen:
            return time.monotonic_ns(), polls
        if seen is None or _exited(pid):
            return None, polls
    return None, polls


def _cpu_seconds(pid: int) -> float | None:
    """CPU time the child has run since fork (schedstat, ns): its time to block, uncontended."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as handle:
            return int(handle.read().split()[0]) / 1e9
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def floor(name: str, hold: bool) -> None:
    _scenario, _state, payload = _prepare(name)
    fork = launchers.get("fork")
    called_ns = time.monotonic_ns()
    child = fork.Popen(run_child, (name, payload))
    # The origin is fork()'s return in the parent: the kernel's fork event, which the lab's
    # own timings start from, is sent at the end of copy_process(), after the memory copy.
    forked_ns = time.monotonic_ns()
    blocked_ns, polls = _poll_until_blocked(child.pid)
    cpu_s = _cpu_seconds(child.pid) if blocked_ns is not None else None
    record = {"pid": child.pid, "forked_ns": forked_ns, "blocked_ns": blocked_ns,
              "fork_call_s": (forked_ns - called_ns) / 1e9,
              "fork_to_blocked_s": None if blocked_ns is None else (blocked_ns - forked_ns) / 1e9,
              "polls": polls, "child_cpu_s": cpu_s}
    if hold and blocked_ns is not None:
        emit(record)
        sys.stdin.buffer.read()  # until the bench closes our stdin
    _kill(child.pid)
    if not hold or blocked_ns is None:
        emit(record)


def watchdog(name: str, join_timeout: float) -> None:
    _scenario, _state, payload = _prepare(name)
    started_ns = time.monotonic_ns()
    child = launchers.get("mp-fork").Popen(run_child, (name, payload))
    child.process.join(timeout=join_timeout)
    known_ns = time.monotonic_ns()
    alive = child.process.is_alive()
    emit({"pid": child.pid, "join_timeout_s": join_timeout, "alive": alive,
          "start_to_known_s": (known_ns - started_ns) / 1e9})
    child.process.kill()
    child.process.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.hung")
    parser.add_argument("scenario")
    parser.add_argument("mode", choices=("floor", "watchdog", "hold"))
    parser.add_argument("--join-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.mode == "watchdog":
        watchdog(args.scenario, args.join_timeout)
    else:
        floor(args.scenario, hold=args.mode == "hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
