"""Processes, whatever the platform: the backend seam and the helpers every observer uses.

``backend()`` makes the platform's backend (Linux: /proc and cn_proc; elsewhere, or with
``LAB_BACKEND=portable``, psutil); the module-level helpers (``state``, ``alive``, ``send``,
``descendants``, ``wait_released``) answer through one shared reader of the same kind.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from lab.backend import Backend, Exited, Forked, Gone, ProcInfo
from lab.errors import BadInput

__all__ = ["Backend", "Exited", "Forked", "Gone", "ProcInfo", "alive", "backend",
           "backend_name", "descendants", "end_popen", "linux_sources", "reap_children", "send",
           "signal_name", "state", "wait_released"]

BACKEND_VAR = "LAB_BACKEND"
BACKENDS = ("linux", "portable")

TARGET_RELEASE_TIMEOUT_S = 5.0  # a target leaving ptrace-stop once its debugger is gone
STATE_POLL_S = 0.01  # interval when polling a process state, always under a deadline

_reader: Backend | None = None


def backend_name() -> str:
    """The backend in use: ``LAB_BACKEND`` when it is set, else "linux" on Linux and "portable"
    elsewhere. Raises BadInput for a name that is not a backend, or "linux" off Linux."""
    on_linux = sys.platform.startswith("linux")
    chosen = os.environ.get(BACKEND_VAR, "").strip()
    if not chosen:
        return "linux" if on_linux else "portable"
    if chosen not in BACKENDS:
        raise BadInput(f"{BACKEND_VAR}={chosen!r} names no process backend; the backends are: "
                       f"{', '.join(BACKENDS)}", f"unset {BACKEND_VAR} for this platform's own")
    if chosen == "linux" and not on_linux:
        raise BadInput(f"{BACKEND_VAR}=linux needs Linux (/proc, netlink); this is "
                       f"{sys.platform}", f"unset {BACKEND_VAR}, or set it to portable")
    return chosen


def linux_sources() -> bool:
    """May the lab read Linux-only sources (/proc/PID/task/TID/syscall, maps, comm; cn_proc)?
    Only with the Linux backend: the portable one must run here exactly as it runs on a Mac."""
    return backend_name() == "linux"


def backend() -> Backend:
    """A new backend of the kind ``backend_name()`` names (not opened yet)."""
    if backend_name() == "linux":
        from lab.linux.backend import LinuxBackend

        return LinuxBackend()
    from lab.portable.backend import PortableBackend

    return PortableBackend()


def reader() -> Backend:
    """This process's one backend for questions about other processes (never opened: it
    listens to no events)."""
    global _reader
    if _reader is None:
        _reader = backend()
    return _reader


def start_marker(pid: int) -> str | None:
    """What tells ``pid`` from a later process that reuses its PID (its start time); None when
    it is gone. On Linux the clock ticks since boot whatever the backend, since every lab of a
    user, on either backend, compares them in one registry (``lab.runs``); elsewhere psutil's
    creation time."""
    if sys.platform.startswith("linux"):
        from lab.linux import procfs

        return procfs.start_ticks(pid)
    import psutil

    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; ``SIG99`` for a number this system does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def state(pid: int) -> tuple[str, int] | None:
    """``(state letter, tracer pid)`` of ``pid``; None when it is gone."""
    source = reader()
    try:
        return source.info(pid).state, source.tracer(pid)
    except (Gone, PermissionError):
        return None


def left_as_found(found: dict[int, tuple[bool, int]]) -> dict[int, str]:
    """Of the processes ``found`` as ``{pid: (stopped, tracer)}``, each still alive that is now
    traced by another tracer, or stopped when it was not: ``{pid: problem}`` (empty when
    everything was left as it was found)."""
    problems = {}
    for pid, (was_stopped, was_traced_by) in found.items():
        now = state(pid)
        if now is None or now[0] in "ZX":
            continue
        letter, tracer = now
        if tracer and tracer != was_traced_by:
            problems[pid] = f"traced by process {tracer}"
        elif letter in "Tt" and not was_stopped:
            problems[pid] = f"stopped (state {letter})"
    return problems


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
    source = reader()
    found, frontier = [], [pid]
    while frontier:
        try:
            kids = sorted(source.children(frontier.pop(0)))
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
    if not hasattr(os, "WNOHANG"):
        return reaped  # Windows: no zombies; each Popen learns its own process's end
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
        time.sleep(STATE_POLL_S)  # polling a process state under a deadline
