"""The processes of one run: start the root, follow every descendant, stop and reap them all.

The ProcessTree is the one owner of a run's processes. It starts the root in a session of its
own, registers each descendant the backend reports (fork events, children it lists, orphans
re-parented to the lab as subreaper), normalises each exit status once, and at the end stops
what still runs (resume, terminate, a grace, kill: the backend's signals) and reaps it all. An
``atexit`` backstop kills whatever a tree still held when the lab dies of its own bug before
its cleanup ran.

Where waitpid(2) cannot reap (Windows: no WNOHANG, no zombies), the root's end comes from
``Popen.poll``; the portable backend takes it from there on every OS, so Linux runs that path.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lab import evidence as ev, interrupts, redact
from lab.backend import POSIX_SIGNALS, Backend, Exited, Forked, Gone
from lab.errors import BadInput, CommandNotFound
from lab.process import exits, reap_children

POLL_INTERVAL_S = 0.02  # the longest wait for an event before /proc is sampled again
TERM_GRACE_S = 1.0
KILL_DEADLINE_S = 10.0

CAN_WAITPID = hasattr(os, "WNOHANG")  # POSIX: reap any child without blocking

# Every tracked pid and every root (a session leader) of every live tree: the backstop's list.
_LIVE_PIDS: set[int] = set()
_SESSIONS: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    """The backstop when the lab dies of its own bug before its cleanup ran. Plain os.kill:
    a backend may be half torn down by now. Windows has no SIGCONT or process groups, and its
    os.kill ends a process with TerminateProcess whatever the signal."""
    signals = [sig for sig in (POSIX_SIGNALS["resume"], POSIX_SIGNALS["kill"]) if sig]
    for pid in list(_LIVE_PIDS):
        for sig in signals:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, OSError):
                break
    if not hasattr(os, "killpg"):
        return
    for leader in list(_SESSIONS):  # what was forked after the last scan
        for sig in signals:
            try:
                os.killpg(leader, sig)
            except (ProcessLookupError, PermissionError):
                break


def _pause(timeout: float, waitables: list) -> None:
    """Until a waitable is readable, at most ``timeout`` s. With nothing to wait on, the poll
    interval itself (select() of no descriptors fails on Windows)."""
    if waitables:
        select.select(waitables, [], [], max(0.0, timeout))
    else:
        time.sleep(max(0.0, timeout))  # polling: no event source to wait on


@dataclass
class Member:
    """One process of the tree and what is known of its end."""

    record: ev.ProcessRecord
    forked_ns: int | None = None
    finished: bool = False
    wait_status: int | None = None
    finished_at: float | None = None
    reaped_by_lab: bool = False  # False: its own parent reaped it (and could handle its end)


class ProcessTree:
    """Register, follow, stop, reap. ``members`` is in the order the processes were seen."""

    def __init__(self, backend: Backend, run_id: str | None = None):
        self.backend = backend
        self.run_id = run_id  # the marker every process of this tree inherits
        self.members: dict[int, Member] = {}
        self.root: subprocess.Popen | None = None
        self.on_stop: Callable[[list[int]], None] | None = None  # told what stop() signals

    # -- starting and registering --------------------------------------------------------------

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: str | None) -> subprocess.Popen:
        """Start the root in a new session, its output on one pipe; raises CommandNotFound,
        BadInput (not executable)."""
        with interrupts.deferred():  # stop() must know every process that was started
            try:
                self.root = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=self.backend.child_setup())
            except FileNotFoundError as exc:
                raise CommandNotFound(f"command not found: {argv[0]}") from exc
            except PermissionError as exc:
                raise BadInput(f"command is not executable: {argv[0]}") from exc
            _SESSIONS.add(self.root.pid)
            self.add(self.root.pid, os.getpid())
        return self.root

    def add(self, pid: int, ppid: int | None, forked_ns: int | None = None) -> Member:
        member = self.members.get(pid)
        if member is None:
            try:
                argv = self.backend.cmdline(pid)
            except (Gone, PermissionError):
                argv = []
            member = Member(ev.ProcessRecord(pid=pid, ppid=ppid, argv=redact.argv(argv)),
                            forked_ns=forked_ns)
            self.members[pid] = member
            _LIVE_PIDS.add(pid)
        return member

    @property
    def records(self) -> list[ev.ProcessRecord]:
        return [member.record for member in self.members.values()]

    def unfinished(self) -> list[int]:
        return [pid for pid, member in self.members.items() if not member.finished]

    def all_finished(self) -> bool:
        return all(member.finished for member in self.members.values())

    # -- following -------------------------------------------------------------------------------

    def update(self, discover: bool = True) -> None:
        """One step: take the backend's events, reap our children, find new descendants (a
        scan of every member's children: with fork events, ``discover`` can be rarer)."""
        self._take_events()
        self._reap_members()
        if discover:
            self.discover()

    def wait(self, timeout: float, extra: Iterable = ()) -> None:
        """Block until an event or ``extra`` is readable, at most ``timeout`` s (an ``extra``
        whose fileno() is None, a report directory, is polled by the caller)."""
        fd = self.backend.fileno()
        waitables = [w for w in (fd, *extra)
                     if w is not None and (isinstance(w, int) or w.fileno() is not None)]
        _pause(timeout, waitables)

    def discover(self) -> None:
        for parent in self.unfinished():
            try:
                kids = self.backend.children(parent)
            except Gone:
                continue
            for kid in kids:
                if kid not in self.members:
                    self.add(kid, parent)
        # Orphans re-parented to us, the subreaper: ours only when they are of this run (its
        # session, or its marker: a daemon that called setsid() keeps the marker). A process
        # that runs several trees in turn (trials, the matrix) may still have another tree's
        # children, or children of its own, that are none of ours.
        try:
            adopted = self.backend.children(os.getpid())
        except Gone:
            return
        for kid in adopted - self.members.keys():
            if self._ours(kid):
                self.add(kid, os.getpid())

    def sample_exit(self, pid: int, when: float) -> bool:
        """Note the exit of a member the backend shows as a zombie or as gone; True if so."""
        member = self.members[pid]
        try:
            info = self.backend.info(pid)
        except Gone:
            if self.root is not None and pid == self.root.pid:
                self._poll_root()  # gone without a zombie (Windows): Popen's handle knows
            if self.backend.fileno() is None and not member.finished:
                # Polling: it exited and was reaped by its own parent between two polls.
                self.finished(pid, None, when)
            return True
        if info.state == "Z":
            if member.wait_status is None and info.exit_code is not None:
                self.finished(pid, info.exit_code, when)
            elif not member.finished and info.ppid != os.getpid():
                # Ended, and its status is not the lab's to collect: an orphan left a zombie
                # under an init that does not reap (a container without --init) stays one, and
                # this backend cannot read a zombie's status (a report or a later reap may).
                self.finished(pid, None, when)
                if member.record.verdict is None and not member.record.killed_by_lab:
                    member.record.detail = (f"exited; a zombie that its parent (PID "
                                            f"{info.ppid}) has not reaped, so its exit status "
                                            "is not seen")
            return True
        return False

    def finished(self, pid: int, wait_status: int | None, when: float) -> None:
        """Record the end of ``pid`` once: exit code or signal, and what that alone says.

        A process the lab killed, or one an observer already judged (a trap its debugger
        stopped on), keeps its verdict: the exit adds only the status.
        """
        member = self.members[pid]
        if member.finished:
            return
        member.finished, member.wait_status, member.finished_at = True, wait_status, when
        record = member.record
        if wait_status is None:
            if not (record.killed_by_lab or record.verdict is not None):
                record.detail = ("exited; its exit status was not observed (reaped by its own "
                                 "parent between two polls: no exit events here, from a "
                                 "process connector)")
            return
        self._ended(record, exits.from_wait_status(wait_status))

    def reported(self, pid: int, ppid: int | None, code: int, when: float) -> None:
        """The end of a descendant as its own parent reported it (``Popen.returncode``), for a
        backend without exit events: it would see the process without its status, or not at
        all when it ended between two polls. A status seen by the lab itself wins."""
        if self.backend.fileno() is not None:
            return  # the process connector reports every exit itself, with the wait status
        member = self.members.get(pid)
        if member is None:
            member = self.add(pid, ppid)
            _LIVE_PIDS.discard(pid)  # it has ended: its PID is nothing for the backstop to kill
        if member.finished and member.wait_status is not None:
            return
        member.finished, member.finished_at = True, member.finished_at or when
        self._ended(member.record, exits.from_returncode(code))

    @staticmethod
    def _ended(record: ev.ProcessRecord, ending: exits.Ending) -> None:
        record.exit_code = ending.exit_code
        if record.killed_by_lab or record.verdict is not None:
            record.signal = record.signal or ending.signal
            return
        record.signal, record.verdict, record.detail = (ending.signal, ending.verdict.value,
                                                        ending.detail)

    # -- stopping --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Resume then terminate every live member, kill it after a grace, reap them all."""
        if self.root is None:
            self.backend.close()
            return
        live = self.live()
        if live and self.on_stop is not None:
            self.on_stop(live)
        for action in ("resume", "terminate"):
            self._signal_all(live, action)
        self.backend.signal_group(self.root.pid, "resume")
        self._wait_gone(TERM_GRACE_S)
        self._signal_all(self.live() + self._strays(), "kill")
        self.backend.signal_group(self.root.pid, "kill")
        self._wait_gone(KILL_DEADLINE_S)
        self._wait_reaped(KILL_DEADLINE_S)
        self._take_events()
        self.backend.close()
        for pid in self.members:
            _LIVE_PIDS.discard(pid)
        _SESSIONS.discard(self.root.pid)

    def adopt_strays(self) -> bool:
        """Where orphans do not come back to the lab (no subreaper: the portable backend),
        register the run's processes that left the tree (a double-fork daemon) by the run's
        marker; True when there were any. For the end of a run: it reads every process."""
        if self.backend.adopts_orphans:
            return False
        return bool(self._strays("found by the run's marker: it left the tree (a daemon)"))

    def _strays(self, why: str = "found by the run's marker when the run ended") -> list[int]:
        """Processes with this run's marker that the tree never saw (a daemon in a session of
        its own, missed between two polls): registered now, so that they are stopped too."""
        if not self.run_id:
            return []
        found = [pid for pid in self.backend.marked(self.run_id) if pid not in self.members]
        for pid in found:
            self.add(pid, None).record.detail = why
        return found

    def live(self) -> list[int]:
        """Members still running (not finished, not zombies)."""
        self.discover()
        found = []
        for pid in self.unfinished():
            try:
                if self.backend.info(pid).state != "Z":
                    found.append(pid)
            except Gone:
                continue
        return found

    def _signal_all(self, pids: list[int], action: str) -> None:
        for pid in pids:
            self.members[pid].record.killed_by_lab = True
            self.backend.signal(pid, action)

    def _wait_gone(self, limit: float) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            self._take_events()
            self._reap_members()
            if not self.live():
                return
            self.wait(POLL_INTERVAL_S)

    def _wait_reaped(self, limit: float) -> None:
        """Until no member is left, even as a zombie: a dead grandchild whose parent dies after
        it is re-parented to us, and must be reaped here, not by the next run of this process."""
        end = time.monotonic() + limit
        while True:
            self._reap_any()
            left = [pid for pid in self.members if self._ours(pid) and not self._unreapable(pid)]
            if not left or time.monotonic() >= end:
                return
            for pid in left:
                self.backend.signal(pid, "kill")
            _pause(POLL_INTERVAL_S, [])

    # -- events and reaping ----------------------------------------------------------------------

    def _take_events(self) -> None:
        for event in self.backend.events():
            if isinstance(event, Forked):
                if event.parent in self.members:
                    self.add(event.child, event.parent, event.timestamp_ns)
            elif isinstance(event, Exited) and event.pid in self.members:
                self.finished(event.pid, event.wait_status, event.timestamp_ns / 1e9)

    def _reap_members(self) -> None:
        if not self.backend.adopts_orphans:
            self._poll_root()
        if not CAN_WAITPID:
            return  # Windows: no zombies to reap, and the root's end is Popen's
        for pid in list(self.members):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # not our child (its own parent reaps it) or already reaped
            if done:
                self._reaped(pid, status)

    def _reap_any(self) -> None:
        if not self.backend.adopts_orphans:
            self._poll_root()
        for pid, status in reap_children():
            if pid in self.members:
                self._reaped(pid, status)

    def _poll_root(self) -> None:
        """The root's end from ``Popen.poll``: the one way every OS offers (a process handle
        on Windows). It gives the exit code or the signal, not the raw wait status (so no
        "core dumped")."""
        if self.root is None or self.root.returncode is not None:
            return
        code = self.root.poll()
        if code is None:
            return
        member = self.members[self.root.pid]
        member.reaped_by_lab = True
        if member.wait_status is None:
            member.finished, member.finished_at = True, member.finished_at or time.monotonic()
            self._ended(member.record, exits.from_returncode(code))

    def _reaped(self, pid: int, status: int) -> None:
        self.members[pid].reaped_by_lab = True
        if self.root is not None and pid == self.root.pid:
            self.root.returncode = os.waitstatus_to_exitcode(status)
        self.finished(pid, status, time.monotonic())

    def _unreapable(self, pid: int) -> bool:
        """A zombie whose parent is not the lab: only that parent (or init) can reap it, and an
        init that does not reap (a container without --init) never will."""
        try:
            info = self.backend.info(pid)
        except Gone:
            return True
        return info.state == "Z" and info.ppid != os.getpid()

    def _ours(self, pid: int) -> bool:
        """Is ``pid`` a live process of this run (the root's session, or the run's marker in
        its environment), not a reused PID?"""
        if self.root is None:
            return False
        try:
            if self.backend.info(pid).session == self.root.pid:
                return True
        except Gone:
            return False
        return self.run_id is not None and self.backend.run_id(pid) == self.run_id
