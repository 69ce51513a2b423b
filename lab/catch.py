"""Catch a scenario's child in a debugger: hold it before it acts, attach, let it fail, capture.

The child stops itself before the scenario's code runs (``LAB_HOLD_CHILD=1``: a SIGSTOP
handshake, never a sleep); the lab sees it stopped, attaches lldb (or gdb) with a static
command file and lets it run. A breakpoint instruction — libdispatch's ``brk #0x1`` on macOS,
the breakpoint-trap scenario anywhere — stops it with SIGTRAP inside the debugger. On Linux
the ChromaDB child deadlocks instead: the lab proves that from /proc, notes the proof in the
transcript and interrupts the child with SIGINT, which the debugger stops on and never
delivers. At either stop the debugger records the stop reason, every thread's stack, the frame,
its disassembly and the registers. The run itself (run dir, reports, output, processes, the
final write) is a RunSession's; this module is the observer.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from dataclasses import dataclass
from types import ModuleType

from lab import debuggers, evidence as ev, process, scenarios
from lab.debuggers import batch
from lab.errors import BadInput, DebuggerFailed, TargetExited
from lab.options import RunOptions
from lab.process import Gone
from lab.process.tree import POLL_INTERVAL_S
from lab.progress import Progress, shown
from lab.session import Observer, RunSession
from lab.verdicts import Verdict, worst

FAILURES = (Verdict.CRASH.value, Verdict.DEADLOCK.value)  # what the catch came for
ATTACH_TIMEOUT_S = 60.0  # attach and load the symbols of every mapped library (ChromaDB: ~1 s)
CAPTURE_TIMEOUT_S = 120.0  # from the stop to the debugger's exit (frames, disassembly, detach)
EXIT_TIMEOUT_S = 10.0  # the scenario's parent ending once its child is gone


@dataclass
class CatchOptions(RunOptions):
    """A catch is a run (``timeout``: seconds the child may run under the debugger) of one
    catalog entry, under one named debugger from its first instruction."""

    debugger: str = "lldb"
    scenario: str = "chromadb-tokio"
    launcher: str = "fork"


def catch(options: CatchOptions, progress: Progress | None = None) -> ev.Evidence:
    """Run the catch; return the evidence (also written under ``out_base/<run-id>/``).

    Raises BadInput, MissingPackage, DebuggerMissing, PtraceRefused, TargetExited (the child
    never stopped itself or vanished before the attach), DebuggerFailed; the evidence gathered
    until then is attached to the error and on disk, and no process is left behind.
    """
    if options.debugger not in debuggers.names():
        raise BadInput(f"unknown debugger {options.debugger!r}",
                       f"choose one of: {', '.join(debuggers.names())}")
    if options.timeout is not None and options.timeout <= 0:
        raise BadInput(f"--timeout must be > 0, got {options.timeout:g}")
    target = scenarios.get(options.scenario).target(options.launcher)
    driver = debuggers.get(options.debugger, "catch")
    path = driver.find()
    target = dataclasses.replace(
        target, label=f"{options.scenario}-{options.launcher}-{options.debugger}")
    session = RunSession(target, options, progress)
    session.evidence.watch_mode = "debugger"
    session.evidence.watch_note = (f"the child runs under {options.debugger} from its first "
                                   "instruction; on Linux /proc is sampled to prove a deadlock, "
                                   "on the portable backend its stacks once it is quiet")
    return session.run(Catch(options.debugger, driver, path))


def outcome(evidence: ev.Evidence) -> str | None:
    """None when the catch captured what it came for (a crash or a proven deadlock, with the
    debugger's stop and stacks); else the one-line reason."""
    dbg = evidence.debugger
    if evidence.verdict not in FAILURES:
        return (f"the child did not crash or deadlock (verdict {evidence.verdict}); "
                f"evidence: {shown(evidence.evidence_dir)}")
    if dbg is None or not any(t.frames for t in dbg.threads):
        why = dbg.error if dbg and dbg.error else "no stack was recorded"
        return (f"{evidence.verdict} seen but not captured: {why}; evidence: "
                f"{shown(evidence.evidence_dir)}")
    return None


class Catch(Observer):
    def __init__(self, name: str, driver: ModuleType, debugger_path: str):
        self.name, self.driver, self.debugger_path = name, driver, debugger_path
        self.debugger: batch.Session | None = None
        self.child: int | None = None
        self.attach_started = 0.0
        self.interrupted_for: str | None = None
        self.by_stacks = False  # interrupted because it was quiet: its stacks decide
        self.captured = False

    def run(self, session: RunSession) -> None:
        session.launch(extra_env={"LAB_HOLD_CHILD": "1"},
                       note="the child stops itself before it runs the scenario")
        session.tree.members[session.tree.root.pid].record.detail = "the scenario's parent"
        self._hold(session)
        self._attach(session)
        self._follow(session)
        self._capture(session)

    def release(self, session: RunSession) -> None:
        """The debugger gone, the child killed if it still runs, and the scenario's parent
        given the time to end by itself: its last reports (a data-loss finding) come then."""
        if self.debugger is not None:
            self.debugger.close()
        tree = session.tree
        if self.child is not None and process.alive(self.child):
            tree.members[self.child].record.killed_by_lab = True
            for signum in (signal.SIGCONT, signal.SIGKILL):  # SIGCONT: a stopped one can die
                process.send(self.child, signum)
        root = tree.members.get(tree.root.pid) if tree.root is not None else None
        end = time.monotonic() + EXIT_TIMEOUT_S
        while root is not None and not root.finished and time.monotonic() < end:
            tree.update()
            session.read_reports()
            tree.wait(POLL_INTERVAL_S, extra=[session.channel])

    def conclude(self, session: RunSession) -> None:
        """Fold in the findings of the scenario's parent; the run's verdict is the worst."""
        if not self.captured:
            return
        session.apply_findings()
        verdicts = [r.verdict for r in session.tree.records if r.verdict]
        session.evidence.verdict = worst(verdicts).value if verdicts else None

    # -- stages -----------------------------------------------------------------------------

    def _hold(self, session: RunSession) -> None:
        """Wait (with a deadline) for the child to stop itself; that is the handshake."""
        tree = session.tree
        root = tree.members[tree.root.pid]
        limit = session.target.timeout
        end = time.monotonic() + limit
        while self.child is None:
            tree.update()
            session.read_reports()
            self.child = next((pid for pid in tree.members if pid != root.record.pid
                               and (process.state(pid) or ("",))[0] == "T"), None)
            if self.child is not None:
                break
            if root.finished:
                raise TargetExited(f"the scenario's parent exited with status "
                                   f"{root.record.exit_code} before its child stopped itself",
                                   "see output.txt")
            if time.monotonic() > end:
                raise TargetExited(f"no child of process {root.record.pid} stopped itself "
                                   f"within {limit:g} s")
            tree.wait(POLL_INTERVAL_S)
        session.progress.stage("hold", f"child {self.child} stopped itself before the scenario "
                               "ran")
        session.write()

    def _attach(self, session: RunSession) -> None:
        notes = {"pid": str(self.child), "scenario": session.target.scenario}
        self.debugger = batch.Session(self.driver.catch_argv(self.debugger_path, self.child),
                                      session.rundir.path / self.driver.TRANSCRIPT_NAME, notes)
        session.progress.stage("debugger", f"attaching {self.name} to PID {self.child}")
        self.attach_started = time.monotonic()
        self.debugger.start()
        if not self.debugger.wait_for(lambda: self.debugger.reached("continue"),
                                      ATTACH_TIMEOUT_S):
            raise self.driver.attach_error(self.debugger, self.child) or DebuggerFailed(
                f"{self.name} did not attach to process {self.child} within "
                f"{ATTACH_TIMEOUT_S:g} s (last step: {self.debugger.last_step or 'attach'})")
        # The self-stop's group-stop must end, or the child stops again once the debugger
        # lets go (the kernel reinstates a group-stop on detach); the debugger passes it on.
        process.send(self.child, signal.SIGCONT)
        session.progress.stage("debugger", f"{self.name} attached in "
                               f"{time.monotonic() - self.attach_started:.2f} s; child continued")

    def _follow(self, session: RunSession) -> None:
        """Until the debugger reports a stop: sample the child, prove a deadlock, interrupt."""
        from lab.watch import judge

        debugger = self.debugger
        record = session.tree.members[self.child].record
        limit = session.timeout
        end = time.monotonic() + limit
        proof = judge.DeadlockWatch()
        # No syscalls to prove from (the portable backend): once the child is quiet, interrupt
        # it and let its stacks tell (lab.watch.stackproof).
        syscalls = session.backend.sees_syscalls
        while not debugger.wait_for(lambda: debugger.reached("version"), POLL_INTERVAL_S):
            session.read_reports()
            now = time.monotonic()
            stuck = session.verdict_at is not None and now > session.verdict_at + CAPTURE_TIMEOUT_S
            if debugger.finished or stuck:
                break
            if self.interrupted_for is None:
                try:
                    threads = session.backend.threads(self.child)
                except Gone:
                    break
                record.threads = threads
                if proof.feed(now, threads) and syscalls:
                    self._interrupt(session, Verdict.DEADLOCK.value, now, threads)
                    record.detail, record.proof = judge.describe_deadlock(threads), judge.PROOF
                    continue
                if not syscalls and judge.quiet_for(proof) >= judge.QUIET_S:
                    self.by_stacks = True
                    self._interrupt(session, Verdict.HANG.value, now, None)
                    record.detail = (f"quiet for {judge.QUIET_S:g} s (asleep, no CPU time): "
                                     "interrupted for its stacks")
                    continue
            if now > end and self.interrupted_for is None:
                self._interrupt(session, Verdict.HANG.value, now, None)
                record.detail = f"not stopped or finished after {limit:g} s"
        if debugger.reached("version") and session.verdict_at is None:
            session.verdict_at = time.monotonic()  # the stop the debugger reported

    def _interrupt(self, session: RunSession, why: str, now: float, threads) -> None:
        """Stop the child in the debugger: SIGINT, which the command file stops on."""
        self.interrupted_for = why
        session.verdict_at = now
        for thread in threads or []:
            if thread.syscall is not None:
                call = thread.syscall
                self.debugger.note(f"syscall {thread.tid}", f"{call.nr} {' '.join(call.args)}")
        self.debugger.note("interrupt", f"SIGINT: {why}")
        session.progress.stage("verdict", f"{why} (PID {self.child}) after "
                               f"{now - session.launched_at:.3f} s; interrupting it in "
                               f"{self.name}")
        process.send(self.child, signal.SIGINT)

    def _capture(self, session: RunSession) -> None:
        debugger = self.debugger
        if debugger.wait(CAPTURE_TIMEOUT_S) is None:
            debugger.note("error", f"{self.name} did not finish within {CAPTURE_TIMEOUT_S:g} s")
        debugger.close()
        text = debugger.path.read_text(encoding="utf-8", errors="replace")
        info = self.driver.parse(text, self.driver.TRANSCRIPT_NAME)
        info.seconds = round(time.monotonic() - self.attach_started, 3)
        if not debugger.reached("done"):
            errors = debugger.errors()
            info.error = (f"{self.name} stopped at step {debugger.last_step or 'attach'}"
                          + (f": {errors[-1]}" if errors else ""))
        session.evidence.debugger = info
        self._judge(session, info)
        self.captured = True
        frames = sum(len(t.frames) for t in info.threads)
        session.progress.stage("debugger", f"{info.stop_reason or 'no stop'}; "
                               f"{len(info.threads)} thread(s), {frames} frames in "
                               f"{info.seconds:.2f} s")

    def _judge(self, session: RunSession, info: ev.DebuggerInfo) -> None:
        from lab.parsers.document import CRASH_SIGNALS

        record, evidence = session.tree.members[self.child].record, session.evidence
        stopped_by = info.signal if info.signal in CRASH_SIGNALS else None
        if stopped_by or (info.stop_reason or "").startswith("EXC_"):
            record.verdict = Verdict.CRASH.value
            record.signal = stopped_by
            where = f" at `{info.instruction}`" if info.instruction else ""
            said = f": \"{info.message}\"" if info.message else ""
            record.detail = f"stopped by {info.stop_reason} under {info.name}{where}{said}"
            session.progress.stage("verdict", f"crash (PID {self.child}): {record.detail}")
        elif self.by_stacks:
            from lab.watch import stackproof

            found = stackproof.judge(info, own_stop="SIGINT")
            record.verdict = (Verdict.DEADLOCK if found.proven else Verdict.HANG).value
            record.proof = found.proof if found.proven else None
            record.detail = f"{record.detail}; {found.detail}"
        elif self.interrupted_for:
            record.verdict = self.interrupted_for
        elif (info.stop_reason or "").startswith("exited"):
            clean = info.stop_reason in ("exited with status = 0", "exited normally")
            record.verdict = Verdict.OK.value if clean else Verdict.ERROR.value
            record.detail = f"{info.stop_reason} under {info.name}, without stopping"
        elif not process.alive(self.child):
            record.detail = "ended; its exit status was not seen"
        evidence.verdict = record.verdict
        if session.verdict_at is not None:
            evidence.detect_s = round(session.verdict_at - session.launched_at, 4)
            evidence.timings["launch_to_verdict_s"] = evidence.detect_s
        evidence.timings["debugger_s"] = info.seconds
        session.write()
