"""The report channel between a watched program and the lab, both sides: one module, one protocol.

The lab creates a FIFO and passes its path in ``LAB_REPORT_FIFO``; a scenario (or any program
that wants to) writes one JSON object per line there. A FIFO path, not an inherited fd, so that
spawned and forkserver children, which inherit no descriptors, report too. Every object has an
``event`` (one of ``Event``) and the ``pid`` it is about. A report longer than ``PIPE_BUF``
(a fork report with every thread's stack) is spooled: its JSON goes to a file beside the FIFO,
renamed into place, and the line names the file, so that no two writers' lines interleave.

Where there are no FIFOs (Windows), and on the portable backend everywhere so that Linux runs
the code Windows runs, the channel is a directory, passed in ``LAB_REPORT_DIR``: every report
is spooled there, and the lab reads the files in the order they were written.

The program's side must stay importable on its own (stdlib only, Python >= 3.7): the lab's
startup hook (``lab/hook``) loads this file by path into processes that cannot import ``lab``.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab import evidence as ev

ENV_VAR = "LAB_REPORT_FIFO"
DIR_VAR = "LAB_REPORT_DIR"  # the channel without a FIFO: one file per report
READ_CHUNK = 65536
PIPE_BUF = 4096  # POSIX: a write of at most this many bytes to a pipe is atomic (pipe(7))
SPOOL_MAX = 8 * 1024 * 1024  # a spooled report longer than this is not read
_SPOOLED = re.compile(r"spool-([0-9]+)-([0-9]+)\.json")
# os.O_CLOEXEC and os.O_NONBLOCK are POSIX's; os.O_BINARY is Windows' (no newline translation)
_CLOEXEC, _NONBLOCK, _BINARY = (getattr(os, name, 0)
                                for name in ("O_CLOEXEC", "O_NONBLOCK", "O_BINARY"))


class Event(str, enum.Enum):
    FORK = "fork"  # the forking thread and the parent's other threads at that instant
    FINDING = "finding"  # a verdict /proc cannot see, e.g. data loss
    EXCEPTION = "exception"  # an exception a Future received (a caller may swallow it)
    WARNING = "warning"  # a Python warning, CPython >= 3.12's fork warning above all
    LAUNCH = "launch"  # how the host started its child: the launcher and its start method
    EXIT = "exit"  # a child's end as its parent saw it: pid, ppid, code (Popen.returncode)
    GUARD = "guard"  # a risky fork the fork guard saw (lab.guard): pid, fork {caller, risks}


# CPython >= 3.12 (Modules/posixmodule.c, warn_about_fork_with_threads) counts the OS threads
# alive at the moment of fork(): it cannot see a lock whose holder already exited, threads a
# library starts after the fork, or which lock is at risk.
FORK_WARNING_NOTE = ("CPython counts only the threads alive at the moment of fork(); a lock "
                     "left held by a thread that already exited, or threads started later, "
                     "draw no warning, and it does not say which lock is at risk")


# -- the program's side -----------------------------------------------------------------------

def active() -> bool:
    """Does this process run under a lab that listens for reports?"""
    return bool(os.environ.get(ENV_VAR) or os.environ.get(DIR_VAR))


def send(event: Event, **fields: Any) -> None:
    """Send one report to the lab (nothing when the program does not run under a lab).

    One open and one write per report: lines up to PIPE_BUF bytes never interleave with
    another writer's.
    """
    line = json.dumps({"event": event.value, **fields}, default=str).encode() + b"\n"
    directory = os.environ.get(DIR_VAR)
    if directory:
        _spool(directory, event, fields.get("pid"), line)  # the file is the report
        return
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    if len(line) > PIPE_BUF:
        line = _spool(os.path.dirname(path), event, fields.get("pid"), line)
        if line is None:
            return
    try:
        fd = os.open(path, os.O_WRONLY | _NONBLOCK)
    except OSError:
        return  # the lab went away; the program still runs
    try:
        os.write(fd, line)
    except OSError:
        pass
    finally:
        os.close(fd)


def _spool(directory: str, event: Event, pid: Any, line: bytes) -> bytes | None:
    """Write a report to a file of the channel's directory; return the short line that names
    it. The name starts with the monotonic time (one clock for every process of the machine),
    so the lab reads the files in the order they were written."""
    name = f"spool-{time.monotonic_ns()}-{os.getpid()}.json"
    temporary = os.path.join(directory, "." + name)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _BINARY,
                     0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        os.rename(temporary, os.path.join(directory, name))  # the lab never reads half of it
    except OSError:
        return None
    return json.dumps({"event": event.value, "pid": pid, "spooled": name}).encode() + b"\n"


def send_fork() -> None:
    """Report this process's threads at the instant of a fork: register it with
    ``os.register_at_fork(before=send_fork)``. The child will have none of the others."""
    from lab import inventory

    tid, others = inventory.threads_at_fork()
    send(Event.FORK, pid=os.getpid(), tid=tid, t_ns=time.monotonic_ns(),
         threads=[t.__dict__ for t in others])


# -- the lab's side ---------------------------------------------------------------------------

class ReportChannel:
    """A FIFO in ``directory`` (created, and removed by ``close`` when ``owns_directory``);
    with ``fifo=False``, the directory alone: one spooled file per report."""

    def __init__(self, directory: str, *, owns_directory: bool = False, fifo: bool = True):
        self.directory = directory
        self.owns_directory = owns_directory
        self.path: str | None = None
        self.fd: int | None = None
        self._keepalive: int | None = None
        if fifo:
            self.path = os.path.join(directory, "reports")
            os.mkfifo(self.path, 0o600)
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            # Our own writer keeps the FIFO from reading as EOF between the scenario's writers.
            self._keepalive = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def environment(self) -> dict[str, str]:
        """What a program's environment needs to report here."""
        return {ENV_VAR: self.path} if self.path else {DIR_VAR: self.directory}

    def fileno(self) -> int | None:
        """Readable when a line arrived; None for a directory channel (the lab polls it)."""
        return self.fd

    def read(self) -> list[dict[str, Any]]:
        """The complete reports that arrived since the last call (never blocks)."""
        if self.path is None:
            return [annotate(report) for report in self._read_directory()]
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
            except (ValueError, RecursionError):
                continue  # not a report: a program's stray write (or a hostile one)
            if isinstance(report, dict) and "spooled" in report:
                report = self._unspool(report)
            if isinstance(report, dict) and report.get("event") in _KINDS:
                reports.append(annotate(report))
        return reports

    def _read_directory(self) -> list[dict[str, Any]]:
        """Every report file written since the last call, oldest first, each read once."""
        try:
            matches = [_SPOOLED.fullmatch(name) for name in os.listdir(self.directory)]
        except OSError:
            return []
        reports = []
        for match in sorted(filter(None, matches), key=lambda m: (int(m[1]), int(m[2]))):
            report = self._take(match[0])
            if isinstance(report, dict) and report.get("event") in _KINDS:
                reports.append(report)
        return reports

    def _take(self, name: str) -> Any:
        """The JSON of a spool file of this channel's directory, which is then removed."""
        path = os.path.join(self.directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read(SPOOL_MAX + 1)
            os.unlink(path)
            return json.loads(data) if len(data) <= SPOOL_MAX else None
        except (OSError, ValueError, RecursionError):
            return None

    def _unspool(self, line: dict[str, Any]) -> dict[str, Any] | None:
        """The report a short line names (a file of this channel's directory, then removed)."""
        name = line.get("spooled")
        if not isinstance(name, str) or not _SPOOLED.fullmatch(name):
            return None  # only our own spool files, never a path a writer chose
        report = self._take(name)
        if not isinstance(report, dict) or report.get("event") != line.get("event"):
            return None
        return report

    def close(self) -> None:
        for fd in (self.fd, self._keepalive):
            if fd is not None:
                os.close(fd)
        self.fd = self._keepalive = None
        if self.owns_directory:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)


_KINDS = {kind.value for kind in Event}


def is_fork_warning(report: dict[str, Any]) -> bool:
    """True for CPython >= 3.12's "multi-threaded, use of fork() may lead to deadlocks"."""
    return (report.get("event") == Event.WARNING
            and "use of fork() may lead to deadlocks" in str(report.get("message")))


def annotate(report: dict[str, Any]) -> dict[str, Any]:
    """Add what the lab knows about a report, e.g. the limits of CPython's fork warning."""
    if is_fork_warning(report):
        report["note"] = FORK_WARNING_NOTE
    return report


def parent_info(report: dict[str, Any]) -> ev.ParentInfo:
    """The parent at fork, from a ``fork`` report: the threads the child did not inherit."""
    from lab import evidence as ev, forks

    return forks.parse_report(report) or ev.ParentInfo()
