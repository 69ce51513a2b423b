"""The watcher: follow every process of a run, judge each one, capture evidence of the culprit.

Every live process of the session's tree is sampled through the process backend; a proven
deadlock ends the run at once (see ``judge``). At the end each process gets a verdict, the run
the worst of them, and the culprit a debugger capture (and, on request, a core file).
"""

from __future__ import annotations

import os
import time

from lab import evidence as ev, forensics, redact
from lab.process import Gone
from lab.process.tree import POLL_INTERVAL_S, Member
from lab.session import Observer, RunSession
from lab.target import Target
from lab.verdicts import Verdict, worst
from lab.watch import capture, judge

__all__ = ["POLL_INTERVAL_S", "Watcher", "watch"]


def watch(target: Target, options, progress=None) -> ev.Evidence:
    """Run ``target`` under the watcher; return its evidence or raise a LabError."""
    return RunSession(target, options, progress).run(Watcher())


class Watcher(Observer):
    def __init__(self):
        self.samples: dict[int, judge.DeadlockWatch] = {}
        self.deadlocked: int | None = None

    def run(self, session: RunSession) -> None:
        prefix = capture.strace_prefix(session) if session.options.strace else None
        session.launch(argv_prefix=prefix)
        outcome = self.follow(session)
        self.judge(session, outcome)
        target = self.debug_target(session)
        capture.with_debugger(session, target)
        capture.with_gcore(session, target)

    def conclude(self, session: RunSession) -> None:
        if session.options.strace:
            capture.strace_tail(session, self.culprit(session))

    # -- following --------------------------------------------------------------------------

    def follow(self, session: RunSession) -> str:
        """Until the tree finishes, a deadlock is proven, or the timeout passes: the outcome."""
        tree = session.tree
        deadline = session.launched_at + session.timeout
        while True:
            tree.update()
            session.read_reports()
            now = time.monotonic()
            for pid in tree.unfinished():
                if self.sample(session, pid, now):
                    self.deadlocked = pid
                    session.verdict_at = now
                    return "deadlock"
            if tree.all_finished():
                session.verdict_at = time.monotonic()
                return "finished"
            if now >= deadline:
                session.verdict_at = now
                return "timeout"
            tree.wait(min(POLL_INTERVAL_S, deadline - now), extra=[session.channel])

    def sample(self, session: RunSession, pid: int, now: float) -> bool:
        """Sample one live process; return True once it is proven deadlocked."""
        tree = session.tree
        if tree.sample_exit(pid, now):
            return False
        member = tree.members[pid]
        try:
            threads = tree.backend.threads(pid)
            argv = tree.backend.cmdline(pid)
        except (Gone, PermissionError):
            tree.sample_exit(pid, now)
            return False
        member.record.threads = threads
        member.record.argv = redact.argv(argv) or member.record.argv
        return self.samples.setdefault(pid, judge.DeadlockWatch()).feed(now, threads)

    # -- judging ----------------------------------------------------------------------------

    def judge(self, session: RunSession, outcome: str) -> None:
        tree, evidence = session.tree, session.evidence
        lead = self.deadlocked
        now = time.monotonic()
        for pid, member in tree.members.items():
            if pid != lead and not member.finished:
                self.sample(session, pid, now)  # a fresh look at what it waits in right now
            if member.finished:
                continue
            record = member.record
            seen = self.samples.get(pid, judge.DeadlockWatch())
            if pid == lead:
                record.verdict = Verdict.DEADLOCK.value
                record.detail = judge.describe_deadlock(record.threads)
                self._lock_forensics(session, pid, record)
            elif outcome == "timeout":
                record.verdict = Verdict.HANG.value
                record.detail = (f"not finished after --timeout {session.timeout:g} s; "
                                 + judge.describe_unfinished(seen))
            else:
                record.verdict = Verdict.HANG.value
                record.detail = (judge.describe_unfinished(seen) + f"; stopped by the lab once "
                                 f"PID {lead} was proven deadlocked")
        session.apply_findings()
        _exclude_tool_probes(tree.members.values())
        evidence.verdict = worst(r.verdict for r in tree.records if r.verdict).value
        evidence.detect_s = round(session.verdict_at - session.launched_at, 4)
        self._timings(session)
        session.write()
        culprit = self.culprit(session)
        where = f" (PID {culprit})" if culprit else ""
        session.progress.stage("verdict", f"{evidence.verdict}{where} after "
                               f"{evidence.detect_s:.3f} s")

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
        elif session.reports:
            fork_s = session.reports[0].get("t_ns", 0) / 1e9 or None
        if fork_s is not None:
            timings["fork_to_verdict_s"] = round(verdict_at - fork_s, 4)
        seen = self.samples.get(culprit or -1)
        if lead is not None and seen is not None and seen.first_blocked_at is not None:
            timings["blocked_to_verdict_s"] = round(verdict_at - seen.first_blocked_at, 4)
            if fork_s is not None:
                timings["fork_to_blocked_s"] = round(seen.first_blocked_at - fork_s, 4)


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
