"""The process a scenario runs in: prepare in the parent, report the threads at fork, launch.

Run by the lab as ``python -m lab.scenarios.host NAME --launcher L`` under a watch. It reports
on the lab's channel (``lab.reports``): per fork, the forking thread and every other thread of
the parent at that instant (the ones the child will not have); findings /proc cannot see (data
loss, a swallowed exception); warnings.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from lab import launchers, reports, scenarios
from lab.reports import Event


def report_finding(pid: int, verdict: str, detail: str) -> None:
    """A verdict /proc cannot see, e.g. ("data-loss", "the child's commit is not on disk")."""
    reports.send(Event.FINDING, pid=pid, verdict=verdict, detail=detail)


def _tap_future_exceptions() -> None:
    """Report every exception a Future receives: a caller that swallows one can't hide it."""
    from concurrent.futures import Future

    original = Future.set_exception
    if getattr(original, "lab_tap", False):
        return

    def set_exception(self, exception):
        reports.send(Event.EXCEPTION, pid=os.getpid(), type=type(exception).__name__,
                     message=str(exception))
        return original(self, exception)

    set_exception.lab_tap = True
    Future.set_exception = set_exception


def _tap_warnings() -> None:
    """Report warnings, CPython >= 3.12's "multi-threaded, use of fork()" one above all."""
    warnings.simplefilter("default", DeprecationWarning)
    original = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        reports.send(Event.WARNING, pid=os.getpid(), category=category.__name__,
                     message=str(message), file=filename, line=lineno, threads=_os_threads())
        return original(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _os_threads() -> int | None:
    """This process's thread count where CPython >= 3.12 reads it for its fork warning
    (Modules/posixmodule.c, warn_about_fork_with_threads: field 20 of /proc/self/stat on
    Linux); the warning is shown from inside that function, so the count is the one it saw.
    None where there is no /proc."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            # the name (field 2) may hold spaces and parentheses: count from the last ")"
            return int(stat.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, IndexError, ValueError):
        return None


def _reaped(pid: int) -> bool:
    """Is ``pid`` gone, its status the one ``wait()`` returned? Not so for a pool's worker,
    whose ``wait()`` says how the job ended while the worker may still run."""
    if sys.platform == "win32":
        return False  # os.kill(pid, 0) would send CTRL_C_EVENT there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_child(name: str, state) -> None:
    """The child's entry point under every launcher (module level, so spawn can pickle it).

    With ``LAB_HOLD_CHILD=1`` the child stops itself with SIGSTOP before it acts: the lab sees
    it in state T, attaches a debugger, and continues it (a handshake, never a sleep).
    """
    if os.environ.get("LAB_HOLD_CHILD") == "1":
        os.kill(os.getpid(), signal.SIGSTOP)
    _tap_future_exceptions()  # a spawned child is a fresh interpreter: tap it too
    scenarios.get(name).child(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.scenarios.host")
    parser.add_argument("scenario")
    parser.add_argument("--launcher", default="fork")
    args = parser.parse_args(argv)
    scenario = scenarios.get(args.scenario)
    launcher = launchers.get(args.launcher)
    _tap_warnings()
    _tap_future_exceptions()
    state = scenario.prepare()
    if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
        os.register_at_fork(before=reports.send_fork)
    payload = scenario.handoff(state, launcher.PICKLES_ARGS) if scenario.handoff else state
    try:
        child = launcher.Popen(run_child, (scenario.name, payload))
    except Exception as exc:  # e.g. TypeError: cannot pickle 'builtins.Bindings' object
        report_finding(os.getpid(), "error", f"launch failed: {type(exc).__name__}: {exc}")
        raise
    reports.send(Event.LAUNCH, pid=os.getpid(), launcher=args.launcher,
                 method=getattr(child, "started_with", launcher.method))
    code = child.wait()
    if _reaped(child.pid):  # for a lab that cannot see the child's end (no exit events)
        reports.send(Event.EXIT, pid=child.pid, ppid=os.getpid(), code=code)
    print(f"parent: child {child.pid} ended with {code}", flush=True)
    if scenario.check is not None:
        finding = scenario.check(state, code)
        if finding is not None:
            report_finding(os.getpid(), *finding)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
