"""Processes, whatever the platform: the backend seam and the helpers every observer uses.

``backend()`` makes the platform's backend (Linux: /proc and cn_proc); the module-level helpers
(``state``, ``alive``, ``send``, ``descendants``, ``wait_released``) answer through one shared
reader of the same kind.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from lab.process.backend import Backend, Exited, Forked, Gone, ProcInfo

__all__ = ["Backend", "Exited", "Forked", "Gone", "ProcInfo", "alive", "backend",
           "descendants", "end_popen", "reap_children", "send", "signal_name", "state",
           "wait_released"]

TARGET_RELEASE_TIMEOUT_S = 5.0  # a target leaving ptrace-stop once its debugger is gone
STATE_POLL_S = 0.01  # interval when polling a process state, always under a deadline

_reader: Backend | None = None


def backend() -> Backend:
    """A new backend for this platform (not opened yet)."""
    if sys.platform.startswith("linux"):
        from lab.linux.backend import LinuxBackend

        return LinuxBackend()
    from lab.process.ps import PsBackend

    return PsBackend()


def _shared() -> Backend:
    global _reader
    if _reader is None:
        _reader = backend()
    return _reader


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; ``SIG99`` for a number this system does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def state(pid: int) -> tuple[str, int] | None:
    """``(state letter, tracer pid)`` of ``pid``; None when it is gone."""
    reader = _shared()
    try:
        return reader.info(pid).state, reader.tracer(pid)
    except (Gone, PermissionError):
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    found = state(pid)
    return found is not None and found[0] not in "ZX"


def send(pid: int, signum: int) -> None:
    """``kill(pid, signum)``; a process that is already gone is not an error."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    reader = _shared()
    found, frontier = [], [pid]
    while frontier:
        try:
            kids = sorted(reader.children(frontier.pop(0)))
        except Gone:
            continue
        found.extend(kids)
        frontier.extend(kids)
    return found


def end_popen(popen, timeout: float) -> bool:
    """Terminate ``popen``, then kill it, waiting up to ``timeout`` s after each; True when it
    had already exited."""
    import subprocess

    if popen.poll() is not None:
        return True
    for stop in (popen.terminate, popen.kill):
        if popen.poll() is not None:
            break
        stop()
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    return False


def reap_children() -> list[tuple[int, int]]:
    """Reap every child of this process that has ended (never blocks): ``(pid, wait status)``
    of each."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def wait_released(pid: int, was_stopped: bool, name: str) -> str | None:
    """Wait until ``pid`` is untraced and, unless it was stopped before, running again.

    A debugger that detaches from a process that was in a group-stop when it attached leaves
    it stopped again (the kernel reinstates the stop on detach; memray's attach.py works around
    the same lldb behaviour): SIGCONT ends that. Returns a problem, or None.
    """
    end = time.monotonic() + TARGET_RELEASE_TIMEOUT_S
    continued = False
    while True:
        found = state(pid)
        if found is None or found[0] in "ZX":
            return None
        letter, tracer = found
        stopped = letter in "Tt"
        if not tracer and stopped and not was_stopped and not continued:
            send(pid, signal.SIGCONT)
            continued = True
        if not tracer and (was_stopped or not stopped):
            return None
        if time.monotonic() > end:
            held = f"traced by process {tracer}" if tracer else "stopped"
            return f"process {pid} is still {held} after {name} exited"
        time.sleep(STATE_POLL_S)  # polling a /proc state under a deadline
