"""The report channel between a watched program and the lab, both sides: one module, one protocol.

The lab creates a FIFO and passes its path in ``LAB_REPORT_FIFO``; a scenario (or any program
that wants to) writes one JSON object per line there. A FIFO path, not an inherited fd, so that
spawned and forkserver children, which inherit no descriptors, report too. Every object has an
``event`` (one of ``Event``) and the ``pid`` it is about.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import time
from typing import Any

from lab import evidence as ev

ENV_VAR = "LAB_REPORT_FIFO"
READ_CHUNK = 65536


class Event(str, enum.Enum):
    FORK = "fork"  # the forking thread and the parent's other threads at that instant
    FINDING = "finding"  # a verdict /proc cannot see, e.g. data loss
    EXCEPTION = "exception"  # an exception a Future received (a caller may swallow it)
    WARNING = "warning"  # a Python warning, CPython >= 3.12's fork warning above all


# CPython >= 3.12 (Modules/posixmodule.c, warn_about_fork_with_threads) counts the OS threads
# alive at the moment of fork(): it cannot see a lock whose holder already exited, threads a
# library starts after the fork, or which lock is at risk.
FORK_WARNING_NOTE = ("CPython counts only the threads alive at the moment of fork(); a lock "
                     "left held by a thread that already exited, or threads started later, "
                     "draw no warning, and it does not say which lock is at risk")


# -- the program's side -----------------------------------------------------------------------

def send(event: Event, **fields: Any) -> None:
    """Send one report to the lab (nothing when the program does not run under a lab).

    One open and one write per report: lines up to PIPE_BUF bytes never interleave with
    another writer's.
    """
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # the lab went away; the program still runs
    try:
        os.write(fd, json.dumps({"event": event.value, **fields}, default=str).encode() + b"\n")
    except OSError:
        pass
    finally:
        os.close(fd)


def send_fork() -> None:
    """Report this process's threads at the instant of a fork: register it with
    ``os.register_at_fork(before=send_fork)``. The child will have none of the others."""
    from lab import inventory

    tid, others = inventory.threads_at_fork()
    send(Event.FORK, pid=os.getpid(), tid=tid, t_ns=time.monotonic_ns(),
         threads=[t.__dict__ for t in others])


# -- the lab's side ---------------------------------------------------------------------------

class ReportChannel:
    """A FIFO in ``directory`` (created, and removed by ``close`` when ``owns_directory``)."""

    def __init__(self, directory: str, *, owns_directory: bool = False):
        self.directory = directory
        self.owns_directory = owns_directory
        self.path = os.path.join(directory, "reports")
        os.mkfifo(self.path, 0o600)
        self.fd: int | None = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer keeps the FIFO from reading as EOF between the scenario's writers.
        self._keepalive: int | None = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def fileno(self) -> int | None:
        return self.fd

    def read(self) -> list[dict[str, Any]]:
        """The complete reports that arrived since the last call (never blocks)."""
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        reports = []
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # not a report: a program's stray write
            if isinstance(report, dict) and report.get("event") in _KINDS:
                reports.append(annotate(report))
        return reports

    def close(self) -> None:
        for fd in (self.fd, self._keepalive):
            if fd is not None:
                os.close(fd)
        self.fd = self._keepalive = None
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


_KINDS = {kind.value for kind in Event}


def annotate(report: dict[str, Any]) -> dict[str, Any]:
    """Add what the lab knows about a report, e.g. the limits of CPython's fork warning."""
    if (report.get("event") == Event.WARNING
            and "use of fork() may lead to deadlocks" in str(report.get("message"))):
        report["note"] = FORK_WARNING_NOTE
    return report


def parent_info(report: dict[str, Any]) -> ev.ParentInfo:
    """The parent at fork, from a ``fork`` report: the threads the child did not inherit."""
    return ev.ParentInfo(pid=report["pid"], forking_tid=report.get("tid"),
                         threads_at_fork=[ev.ThreadAtFork(**t) for t in report["threads"]])
