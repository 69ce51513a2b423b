"""The watcher: follow every process of a run, judge each one, capture evidence of the culprit.

Every live process of the session's tree is sampled through the process backend; a proven
deadlock ends the run (see ``judge``). Sampling is adaptive: a process whose threads all wait
forever is sampled every ``FAST_S`` until the proof holds or fails; any other process every
``SLOW_S``, which keeps the watcher cheap on a quiet tree and the verdict within about 0.25 s
of the block. At the end each process gets a verdict, the run the worst of them, and the
culprit a debugger capture (and, on request, a core file).

Exit statuses mean what they say: the run's ``error`` comes from the root command's status. A
descendant its own parent reaped keeps its status in ``processes[]`` but no verdict of its own
when it exited non-zero or died of a signal of ordinary process control (SIGPIPE, SIGTERM,
SIGINT, SIGHUP): ``grep -q`` finding nothing, ``yes | head``. Fault signals and SIGKILL stay a
``crash``.
"""

from __future__ import annotations

import dataclasses
import os
import time

from lab import evidence as ev, forensics, forks, interrupts, redact
from lab.process import Gone
from lab.process.tree import POLL_INTERVAL_S, Member
from lab.session import Observer, RunSession
from lab.target import Target
from lab.verdicts import Verdict, worst
from lab.watch import capture, judge, stackproof, waits_for

__all__ = ["FAST_S", "POLL_INTERVAL_S", "SLOW_S", "Watcher", "watch"]

FAST_S = POLL_INTERVAL_S  # while a proof may be forming
SLOW_S = 0.1  # everything else; bounds the time from a block to the first look at it
ORDINARY_SIGNALS = ("SIGPIPE", "SIGTERM", "SIGINT", "SIGHUP")  # process control, not faults


def watch(target: Target, options, progress=None) -> ev.Evidence:
    """Run ``target`` under the watcher; return its evidence or raise a LabError."""
    return RunSession(target, options, progress).run(Watcher())


class Watcher(Observer):
    def __init__(self):
        self.samples: dict[int, judge.DeadlockWatch] = {}
        self.due: dict[int, float] = {}  # when each process is sampled next
        self.wakeups: dict[int, str] = {}  # what can still end a process's wait
        self.proven: list[int] = []  # deadlocked processes, the first one first
        self.deadlocked: int | None = None
        self.probed: dict[int, stackproof.StackProof] = {}  # a debugger's look at a quiet one
        self.looks: dict[int, ev.DebuggerInfo] = {}  # the captures of those looks that worked
        self.quiet: int | None = None  # the process follow() stopped for, to be probed
        self.probing = False  # set per run: no syscalls to prove from, and a debugger to ask

    def run(self, session: RunSession) -> None:
        prefix = capture.strace_prefix(session) if session.options.strace else None
        session.launch(argv_prefix=prefix)
        self.probing = (not session.backend.sees_syscalls and not session.options.strace
                        and capture.debugger_name(session) != "none")
        outcome = self.follow(session)
        while outcome == "quiet" and not self.probe(session, self.quiet):
            outcome = self.follow(session)
        self.judge(session, "deadlock" if outcome == "quiet" else outcome)
        target = self.debug_target(session)
        if target in self.looks:
            session.evidence.debugger = self.looks[target]
        else:
            capture.with_debugger(session, target)
            self.prove_from_stacks(session, target)
        capture.with_gcore(session, target)

    def probe(self, session: RunSession, pid: int) -> bool:
        """The debugger's look at a quiet process (it is left running); True when its stacks
        prove a deadlock. Each process is looked at once. A look is not the run's capture: one
        that fails (the process ended while the debugger attached: a quiet process may just be
        waiting for a slow child) is noted on the process, not made the run's error."""
        before = session.pending_error
        capture.with_debugger(session, pid)
        info, session.evidence.debugger = session.evidence.debugger, None
        if info is None or info.error:
            session.pending_error = before
            why = info.error if info is not None else "no capture"
            found = stackproof.StackProof(False, f"the debugger's look failed: {why}")
        else:
            self.looks[pid] = info
            found = stackproof.judge(info)
        self.probed[pid] = found
        if found.proven:
            self.proven.append(pid)
            self.deadlocked, session.verdict_at = pid, time.monotonic()
            session.evidence.debugger = info
        return found.proven

    def conclude(self, session: RunSession) -> None:
        if session.options.strace:
            capture.strace_tail(session, self.culprit(session))
        evidence = session.evidence
        if evidence.verdict not in (None, Verdict.INTERRUPTED.value):
            # A process that ended during the capture keeps the verdict it was judged with:
            # the run's verdict is recomputed so the two can never disagree.
            verdicts = [r.verdict for r in session.tree.records if r.verdict]
            evidence.verdict = worst(verdicts).value if verdicts else evidence.verdict

    # -- following --------------------------------------------------------------------------

    def follow(self, session: RunSession) -> str:
        """Until the tree finishes, a deadlock is proven, or the timeout passes: the outcome."""
        tree = session.tree
        deadline = session.launched_at + session.timeout
        grace_end = None  # after a first proof: time for other candidates to be proven too
        scanned = 0.0
        while True:
            # With fork events the scan of every member's children is only a safety net.
            scan = tree.backend.fileno() is None or time.monotonic() - scanned >= SLOW_S
            tree.update(discover=scan)
            scanned = time.monotonic() if scan else scanned
            session.read_reports()
            now = time.monotonic()
            for pid in tree.unfinished():
                if now >= self.due.get(pid, 0.0) and pid not in self.proven:
                    if self.sample(session, pid, now):
                        self.proven.append(pid)
                    self.due[pid] = now + (FAST_S if self._candidate(pid) else SLOW_S)
            if self.proven and grace_end is None:
                self.deadlocked, session.verdict_at = self.proven[0], now
                grace_end = now + judge.STABLE_S + 2 * FAST_S
            if grace_end is not None and (now >= grace_end or not self._candidates(tree)):
                return "deadlock"
            if grace_end is None and tree.all_finished() and not tree.adopt_strays():
                session.verdict_at = time.monotonic()
                return "finished"
            if grace_end is None and now >= deadline:
                session.verdict_at = now
                return "timeout"
            if grace_end is None and self.probing:
                # the newest first: a blocked child before the parent that waits for it
                self.quiet = next((pid for pid in reversed(tree.unfinished())
                                   if pid not in self.probed
                                   and judge.quiet_for(self.samples.get(
                                       pid, judge.DeadlockWatch())) >= judge.QUIET_S), None)
                if self.quiet is not None:
                    return "quiet"
            upcoming = [self.due.get(pid, now) for pid in tree.unfinished()]
            until = min([deadline, *upcoming, *([grace_end] if grace_end else [])])
            interrupts.check()  # one that something swallowed since the last wait
            tree.wait(max(0.0, min(until - now, SLOW_S)), extra=[session.channel])

    def sample(self, session: RunSession, pid: int, now: float) -> bool:
        """Sample one live process; return True once it is proven deadlocked."""
        tree = session.tree
        if tree.sample_exit(pid, now):
            return False
        try:
            threads = tree.backend.threads(pid)
        except (Gone, PermissionError):
            tree.sample_exit(pid, now)
            return False
        record = tree.members[pid].record
        record.threads = threads
        # At every look, not only while it still shows its parent's argv: an exec can come at
        # any time, and the last look before the end is the one the evidence keeps.
        self._describe_argv(tree.backend, record)
        if not self.samples.setdefault(pid, judge.DeadlockWatch()).feed(now, threads):
            self.wakeups.pop(pid, None)
            return False
        wakeup = judge.possible_wakeup(pid, threads, tree.backend.signals(pid))
        if wakeup is not None:
            self.wakeups[pid] = wakeup  # blocked, but it can still be woken: watched on
            return False
        self.wakeups.pop(pid, None)
        return True

    def _candidate(self, pid: int) -> bool:
        """Could a proof be forming: every thread waits forever, and nothing can wake it?"""
        seen = self.samples.get(pid)
        return seen is not None and seen.samples > 0 and pid not in self.wakeups

    def _candidates(self, tree) -> list[int]:
        return [pid for pid in tree.unfinished()
                if pid not in self.proven and self._candidate(pid)]

    # -- judging ----------------------------------------------------------------------------

    def judge(self, session: RunSession, outcome: str) -> None:
        tree, evidence = session.tree, session.evidence
        now = time.monotonic()
        root = tree.root.pid if tree.root is not None else None
        for pid, member in tree.members.items():
            if pid not in self.proven and not member.finished:
                self.sample(session, pid, now)  # a fresh look at what it waits in right now
            record = member.record
            self._describe(session, pid, record)
            if member.finished:
                if pid != root:
                    _handled_by_parent(member)
                continue
            seen = self.samples.get(pid, judge.DeadlockWatch())
            if pid in self.proven and pid in self.probed:
                record.verdict, record.proof = Verdict.DEADLOCK.value, self.probed[pid].proof
                record.detail = self.probed[pid].detail
                continue
            if pid in self.proven:
                record.verdict = Verdict.DEADLOCK.value
                record.detail = judge.describe_deadlock(record.threads)
                record.proof = judge.PROOF
                self._lock_forensics(session, pid, record)
                continue
            record.verdict = Verdict.HANG.value
            why = judge.describe_unfinished(seen, session.backend.sees_syscalls)
            if pid in self.probed:
                why = f"{why}; {self.probed[pid].detail}"
            elif not session.backend.sees_syscalls and not self.probing:
                why += "; with --debugger lldb (or gdb) its stacks can prove a deadlock"
            if pid in self.wakeups:
                why = f"blocked, not a proven deadlock: {self.wakeups[pid]}"
            if outcome == "timeout":
                record.detail = f"not finished after --timeout {session.timeout:g} s; {why}"
            else:
                record.detail = (f"{why}; stopped by the lab once PID {self.deadlocked} was "
                                 "proven deadlocked")
        session.apply_findings()
        _exclude_tool_probes(tree.members.values())
        stuck = [m.record for m in tree.members.values() if not m.finished
                 and m.record.verdict in (Verdict.DEADLOCK.value, Verdict.HANG.value)]
        waits_for.annotate(stuck, session.backend)  # before the tree is stopped
        evidence.wait_for_cycle = waits_for.prove(stuck, session.backend)
        verdicts = [r.verdict for r in tree.records if r.verdict]
        evidence.verdict = worst(verdicts).value if verdicts else Verdict.OK.value
        evidence.detect_s = round(session.verdict_at - session.launched_at, 4)
        self._timings(session)
        session.write()
        culprit = self.culprit(session)
        where = f" (PID {culprit})" if culprit else ""
        session.progress.stage("verdict", f"{evidence.verdict}{where} after "
                               f"{evidence.detect_s:.3f} s")

    def prove_from_stacks(self, session: RunSession, target: int | None) -> None:
        """Where /proc gave no proof (the portable backend sees no syscalls), the debugger's
        capture of a hanging process may: every thread in a wait without a timeout."""
        info, member = session.evidence.debugger, session.tree.members.get(target or -1)
        if session.backend.sees_syscalls:
            return  # /proc's proof, with its signal rules (judge), is the one that counts
        if info is None or info.error or member is None or self.deadlocked:
            return
        record = member.record
        if record.verdict != Verdict.HANG.value:
            return
        found = stackproof.judge(info)
        if not found.proven:
            record.detail += f"; {found.detail}"
            return
        record.verdict, record.proof = Verdict.DEADLOCK.value, found.proof
        record.detail = f"{found.detail} (watched {record.detail})"
        session.evidence.verdict = worst(r.verdict for r in session.tree.records
                                         if r.verdict).value
        session.write()
        session.progress.stage("verdict", f"{session.evidence.verdict} (PID {target}): "
                               f"{found.detail}")

    def _describe(self, session: RunSession, pid: int, record: ev.ProcessRecord) -> None:
        """The argv as it is now (after an exec) and the signals, for the evidence."""
        backend = session.tree.backend
        self._describe_argv(backend, record)
        state = backend.signals(pid)
        if state is not None:
            record.signals = {k: list(v) for k, v in dataclasses.asdict(state).items()}

    @staticmethod
    def _describe_argv(backend, record: ev.ProcessRecord) -> None:
        try:
            record.argv = redact.argv(backend.cmdline(record.pid)) or record.argv
        except (Gone, PermissionError):
            pass

    def _lock_forensics(self, session: RunSession, pid: int, record: ev.ProcessRecord) -> None:
        """Whose lock is it: the owner TID of a glibc mutex the deadlocked child waits on."""
        findings = forensics.orphaned_locks(pid, record.threads, session.evidence.parent,
                                            record.ppid)
        session.evidence.forensics.extend(findings)
        for finding in findings:
            if finding.get("orphaned"):
                session.progress.stage("forensics", finding["summary"])

    def culprit(self, session: RunSession) -> int | None:
        if self.deadlocked:
            return self.deadlocked
        for pid, member in session.tree.members.items():
            if member.record.verdict == session.evidence.verdict:
                return pid
        return None

    def debug_target(self, session: RunSession) -> int | None:
        """The deadlocked process; else the deepest process still hanging."""
        if self.deadlocked:
            return self.deadlocked
        members = session.tree.members
        hung = [pid for pid, m in members.items()
                if m.record.verdict == Verdict.HANG.value and not m.finished]
        parents = {members[pid].record.ppid for pid in hung}
        leaves = [pid for pid in hung if pid not in parents]
        return (leaves or hung or [None])[0]

    def _timings(self, session: RunSession) -> None:
        timings, verdict_at = session.evidence.timings, session.verdict_at
        timings["launch_to_verdict_s"] = session.evidence.detect_s
        culprit = self.culprit(session)
        lead = session.tree.members.get(culprit or -1)
        fork_s = None
        if lead is not None and lead.forked_ns is not None:
            fork_s = lead.forked_ns / 1e9
        elif lead is not None:  # polling: the fork report of the culprit's own parent
            info = session.forks.for_child(lead.record.pid, lead.record.ppid)
            fork_s = info.t_ns / 1e9 if info is not None and info.t_ns else None
        if fork_s is not None:
            timings["fork_to_verdict_s"] = round(verdict_at - fork_s, 4)
        seen = self.samples.get(culprit or -1)
        if lead is not None and seen is not None and seen.first_blocked_at is not None:
            timings["blocked_to_verdict_s"] = round(verdict_at - seen.first_blocked_at, 4)
            if fork_s is not None:
                timings["fork_to_blocked_s"] = round(seen.first_blocked_at - fork_s, 4)


def _handled_by_parent(member: Member) -> None:
    """A descendant its own parent reaped: a non-zero exit, or a signal of ordinary process
    control, is the parent's to handle; the run's verdict follows the root's status."""
    record = member.record
    if member.reaped_by_lab or record.killed_by_lab:
        return  # an orphan (the lab reaped it) has no parent left to handle its end
    ordinary = record.verdict == Verdict.CRASH.value and record.signal in ORDINARY_SIGNALS
    if ordinary and record.signal == "SIGTERM" and forks.looks_python(record):
        # multiprocessing stops its workers so: Pool.terminate() (a `with Pool()` block's
        # end), Process.terminate(); the parent reaped it and goes on
        record.verdict = Verdict.OK.value
        record.detail = (f"stopped with SIGTERM and reaped by its parent, PID {record.ppid}: "
                         "how a multiprocessing pool's terminate() (the end of a `with Pool()` "
                         "block) or Process.terminate() ends a worker; not sent by the lab")
    elif record.verdict == Verdict.ERROR.value or ordinary:
        record.verdict = None
        record.detail += ("; reaped by its parent, which handles its end: the run's verdict "
                          "follows the root's exit status")


def _exclude_tool_probes(members) -> None:
    """strace forks probe children of its own (and SIGKILLs them): they are not judged.

    Whether the lab added strace (--strace) or the watched command is strace itself, a probe is
    a child of strace that never exec'd: its argv is strace's own, or unreadable (it was
    already a zombie when the lab first saw it).
    """
    members: list[Member] = list(members)
    argv_of = {m.record.pid: m.record.argv for m in members}

    def is_strace(argv: list[str]) -> bool:
        return bool(argv) and os.path.basename(argv[0]) == "strace"

    for member in members:
        record = member.record
        if (is_strace(argv_of.get(record.ppid or -1, []))
                and (not record.argv or is_strace(record.argv))):
            record.verdict = None
            record.detail = "strace's own probe process (part of the tooling; not judged)"
