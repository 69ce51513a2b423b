"""The side channel a scenario reports on (``LAB_REPORT_FIFO``): a FIFO the lab reads without
blocking, one JSON object per line (see ``lab.scenarios.host.report``)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from lab import evidence as ev

ENV_VAR = "LAB_REPORT_FIFO"
READ_CHUNK = 65536

# CPython >= 3.12 (Modules/posixmodule.c, warn_about_fork_with_threads) counts the OS threads
# alive at the moment of fork(): it cannot see a lock whose holder already exited, threads a
# library starts after the fork, or which lock is at risk.
FORK_WARNING_NOTE = ("CPython counts only the threads alive at the moment of fork(); a lock "
                     "left held by a thread that already exited, or threads started later, "
                     "draw no warning, and it does not say which lock is at risk")


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
                reports.append(annotate(json.loads(line)))
            except ValueError:
                continue  # not a report: a scenario's stray write
        return reports

    def close(self) -> None:
        for fd in (self.fd, self._keepalive):
            if fd is not None:
                os.close(fd)
        self.fd = self._keepalive = None
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def annotate(report: dict[str, Any]) -> dict[str, Any]:
    """Add what the lab knows about a report, e.g. the limits of CPython's fork warning."""
    if (report.get("event") == "warning"
            and "use of fork() may lead to deadlocks" in str(report.get("message"))):
        report["note"] = FORK_WARNING_NOTE
    return report


def parent_info(report: dict[str, Any]) -> ev.ParentInfo:
    """The parent at fork, from a ``fork`` report: the threads the child did not inherit."""
    return ev.ParentInfo(pid=report["pid"], forking_tid=report.get("tid"),
                         threads_at_fork=[ev.ThreadAtFork(**t) for t in report["threads"]])
